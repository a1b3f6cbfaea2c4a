package certs

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// SignRequest asks the CA for an X.509-SVID.
type SignRequest struct {
	CSR      []byte        // DER PKCS#10; only its public key is used
	ID       spiffeid.ID   // given by the caller, NEVER read from the CSR; must be in the CA's trust domain
	DNSNames []string      // only for weft's own servers (e.g. "weft-controlplane.weft-system.svc")
	TTL      time.Duration // 0: WorkloadTTL
}

// Sign issues an X.509-SVID for req.ID over the CSR's public key. The chain
// is leaf, intermediate (the root is not included). NotAfter is clamped to
// the intermediate's NotAfter. Errors wrap ErrInvalidCSR, ErrInvalidRequest
// or ErrExpired.
func (ca *CA) Sign(req SignRequest) ([]*x509.Certificate, error) {
	if err := ca.checkRequest(req); err != nil {
		return nil, err
	}
	csr, err := ParseCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(csr.RawSubjectPublicKeyInfo)
	if err != nil {
		return nil, fmt.Errorf("certs: Sign %s: %w: %w", req.ID, ErrInvalidCSR, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = ca.cfg.WorkloadTTL
	}

	ca.mu.RLock()
	defer ca.mu.RUnlock()
	now := ca.cfg.Clock.Now()
	if !now.Before(ca.inter.NotAfter) {
		return nil, fmt.Errorf("certs: Sign %s: intermediate %x expired at %s (now %s); renew it: %w", req.ID, ca.inter.SerialNumber, ca.inter.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrExpired)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"weft"}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          skid,
		URIs:                  []*url.URL{req.ID.URL()},
		DNSNames:              req.DNSNames,
	}
	clampValidity(tmpl, ca.inter)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.inter, csr.PublicKey, ca.interKey)
	if err != nil {
		return nil, fmt.Errorf("certs: Sign %s: create certificate: %w", req.ID, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: Sign %s: parse new certificate: %w", req.ID, err)
	}
	return []*x509.Certificate{leaf, ca.inter}, nil
}

func (ca *CA) checkRequest(req SignRequest) error {
	switch {
	case req.ID.IsZero():
		return fmt.Errorf("certs: Sign: SPIFFE ID is empty: %w", ErrInvalidRequest)
	case !req.ID.MemberOf(ca.cfg.TrustDomain):
		return fmt.Errorf("certs: Sign %s: ID is outside trust domain %q: %w", req.ID, ca.cfg.TrustDomain, ErrInvalidRequest)
	case req.ID.Path() == "":
		return fmt.Errorf("certs: Sign %s: ID is the trust domain itself; a workload ID needs a path: %w", req.ID, ErrInvalidRequest)
	case req.TTL < 0:
		return fmt.Errorf("certs: Sign %s: TTL %v is negative: %w", req.ID, req.TTL, ErrInvalidRequest)
	}
	for _, name := range req.DNSNames {
		if err := checkHostname(name); err != nil {
			return fmt.Errorf("certs: Sign %s: DNS name %q: %v: %w", req.ID, name, err, ErrInvalidRequest)
		}
	}
	return nil
}

// checkHostname accepts RFC 1123 host names: dot-separated labels of 1-63
// letters, digits and hyphens, not starting or ending with a hyphen, 253
// characters at most. No wildcards, no IP addresses, no trailing dot.
func checkHostname(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("length %d is not in 1..253", len(name))
	}
	if net.ParseIP(name) != nil {
		return fmt.Errorf("is an IP address, not a host name")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("label %q length %d is not in 1..63", label, len(label))
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with '-'", label)
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("label %q has invalid character %q", label, c)
			}
		}
	}
	return nil
}
