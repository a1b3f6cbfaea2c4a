package certs

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// parseCerts decodes every CERTIFICATE block in data; there must be at least
// one and nothing else.
func parseCerts(name string, data []byte) ([]*x509.Certificate, error) {
	return parseBlocks(name, data, "CERTIFICATE", "CERTIFICATE", func(der []byte) (*x509.Certificate, error) {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidMaterial, err)
		}
		return c, nil
	})
}

// parseKeys decodes every PKCS#8 PRIVATE KEY block in data; there must be
// at least one and nothing else.
func parseKeys(name string, data []byte) ([]crypto.Signer, error) {
	return parseBlocks(name, data, "PRIVATE KEY", "PRIVATE KEY (PKCS#8)", func(der []byte) (crypto.Signer, error) {
		k, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidMaterial, err)
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%T is not a signing key: %w", k, ErrInvalidMaterial)
		}
		return signer, nil
	})
}

// parseBlocks decodes every PEM block in data, each of type typ (want
// names it in errors), with parse; there must be at least one and nothing
// else.
func parseBlocks[T any](name string, data []byte, typ, want string, parse func(der []byte) (T, error)) ([]T, error) {
	var out []T
	for i := 1; ; i++ {
		block, rest := pem.Decode(data)
		if block == nil {
			break
		}
		data = rest
		if block.Type != typ {
			return nil, fmt.Errorf("certs: %s: block %d is %q, want %s: %w", name, i, block.Type, want, ErrInvalidMaterial)
		}
		v, err := parse(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: %s: block %d: %w", name, i, err)
		}
		out = append(out, v)
	}
	if err := checkRest(name, len(out), data); err != nil {
		return nil, err
	}
	return out, nil
}

func checkRest(name string, n int, rest []byte) error {
	if n == 0 {
		return fmt.Errorf("certs: %s: no PEM block found (%d bytes): %w", name, len(rest), ErrInvalidMaterial)
	}
	for _, b := range rest {
		if b != ' ' && b != '\t' && b != '\n' && b != '\r' {
			return fmt.Errorf("certs: %s: %d bytes of non-PEM data after block %d: %w", name, len(rest), n, ErrInvalidMaterial)
		}
	}
	return nil
}

// keyMatches checks that key's public half is cert's public key.
func keyMatches(name string, key crypto.Signer, cert *x509.Certificate) error {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("certs: %s: %T key does not match certificate %q (serial %x): %w", name, key, cert.Subject, cert.SerialNumber, ErrInvalidMaterial)
	}
	return nil
}
