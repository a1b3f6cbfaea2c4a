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
	var out []*x509.Certificate
	for i := 1; ; i++ {
		block, rest := pem.Decode(data)
		if block == nil {
			break
		}
		data = rest
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("certs: %s: block %d is %q, want CERTIFICATE: %w", name, i, block.Type, ErrInvalidMaterial)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: %s: block %d: %w: %w", name, i, ErrInvalidMaterial, err)
		}
		out = append(out, c)
	}
	if err := checkRest(name, len(out), data); err != nil {
		return nil, err
	}
	return out, nil
}

// parseKeys decodes every PKCS#8 PRIVATE KEY block in data; there must be
// at least one and nothing else.
func parseKeys(name string, data []byte) ([]crypto.Signer, error) {
	var out []crypto.Signer
	for i := 1; ; i++ {
		block, rest := pem.Decode(data)
		if block == nil {
			break
		}
		data = rest
		if block.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("certs: %s: block %d is %q, want PRIVATE KEY (PKCS#8): %w", name, i, block.Type, ErrInvalidMaterial)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: %s: block %d: %w: %w", name, i, ErrInvalidMaterial, err)
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("certs: %s: block %d: %T is not a signing key: %w", name, i, k, ErrInvalidMaterial)
		}
		out = append(out, signer)
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
