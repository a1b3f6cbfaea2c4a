package certs

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
)

// MinRSABits is the smallest RSA modulus a CSR may carry.
const MinRSABits = 2048

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
)

// ParseCSR parses a DER PKCS#10 CSR and refuses what weft never signs: a
// bad signature, keys other than ECDSA P-256/P-384, RSA >= 2048 bits and
// Ed25519, and requests to be a CA (basicConstraints CA=true, keyUsage
// keyCertSign or cRLSign). Errors wrap ErrInvalidCSR. Anything else the CSR
// asks for (subject, SANs, extensions) is ignored by Sign.
func ParseCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse CSR (%d bytes): %w: %w", len(der), ErrInvalidCSR, err)
	}
	if err := checkCSRKey(csr); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certs: CSR signature (%v) does not verify: %w: %w", csr.SignatureAlgorithm, ErrInvalidCSR, err)
	}
	if err := checkCSRExtensions(csr); err != nil {
		return nil, err
	}
	return csr, nil
}

func checkCSRKey(csr *x509.CertificateRequest) error {
	switch pub := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if c := pub.Curve; c != elliptic.P256() && c != elliptic.P384() {
			return fmt.Errorf("certs: CSR key: ECDSA curve %s is refused (want P-256 or P-384): %w", c.Params().Name, ErrInvalidCSR)
		}
	case *rsa.PublicKey:
		if n := pub.N.BitLen(); n < MinRSABits {
			return fmt.Errorf("certs: CSR key: RSA key of %d bits is refused (want at least %d): %w", n, MinRSABits, ErrInvalidCSR)
		}
	case ed25519.PublicKey:
	case nil:
		return fmt.Errorf("certs: CSR key: unknown public key algorithm is refused (want ECDSA P-256/P-384, RSA or Ed25519): %w", ErrInvalidCSR)
	default:
		return fmt.Errorf("certs: CSR key: %v key (%T) is refused (want ECDSA P-256/P-384, RSA or Ed25519): %w", csr.PublicKeyAlgorithm, pub, ErrInvalidCSR)
	}
	return nil
}

func checkCSRExtensions(csr *x509.CertificateRequest) error {
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if rest, err := asn1.Unmarshal(ext.Value, &bc); err != nil || len(rest) > 0 {
				return fmt.Errorf("certs: CSR basicConstraints extension is malformed: %w: %v", ErrInvalidCSR, err)
			}
			if bc.IsCA {
				return fmt.Errorf("certs: CSR requests basicConstraints CA=true: %w", ErrInvalidCSR)
			}
		case ext.Id.Equal(oidKeyUsage):
			var ku asn1.BitString
			if rest, err := asn1.Unmarshal(ext.Value, &ku); err != nil || len(rest) > 0 {
				return fmt.Errorf("certs: CSR keyUsage extension is malformed: %w: %v", ErrInvalidCSR, err)
			}
			// Bits per RFC 5280 4.2.1.3: 5 keyCertSign, 6 cRLSign.
			if ku.At(5) == 1 || ku.At(6) == 1 {
				return fmt.Errorf("certs: CSR requests keyUsage keyCertSign or cRLSign: %w", ErrInvalidCSR)
			}
		}
	}
	return nil
}
