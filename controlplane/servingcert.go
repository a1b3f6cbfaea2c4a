package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/sleep"
)

// servingCert is the control plane's own certificate, signed by its own CA
// directly (it holds the CA, so it needs no token) and renewed at half-life.
type servingCert struct {
	ca    *certs.CA
	id    spiffeid.ID
	dns   []string
	ttl   time.Duration
	clock clock.WithTicker
	log   *slog.Logger
	cur   atomic.Pointer[tls.Certificate]
}

func (s *servingCert) issue() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("controlplane: serving key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return fmt.Errorf("controlplane: serving CSR: %w", err)
	}
	chain, err := s.ca.Sign(certs.SignRequest{CSR: csr, ID: s.id, DNSNames: s.dns, TTL: s.ttl})
	if err != nil {
		return fmt.Errorf("controlplane: sign serving certificate: %w", err)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	s.cur.Store(c)
	s.log.Info("serving certificate issued", "spiffe_id", s.id.String(), "dns", s.dns, "not_after", chain[0].NotAfter)
	return nil
}

func (s *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cur.Load(), nil }

// renew reissues the certificate at half-life until ctx ends.
func (s *servingCert) renew(ctx context.Context) {
	for {
		leaf := s.cur.Load().Leaf
		at := certs.RenewalTime(leaf.NotBefore, leaf.NotAfter, mrand.Float64())
		if !sleep.For(ctx, s.clock, at.Sub(s.clock.Now())) {
			return
		}
		if err := s.issue(); err != nil {
			s.log.Error("renewing serving certificate", "err", err)
			if !sleep.For(ctx, s.clock, 10*time.Second) {
				return
			}
		}
	}
}

// serverTLS asks for, but does not require, a client certificate; one that
// is presented must be an X.509-SVID of the trust domain, valid on the
// control plane's clock (the one the CA signs on).
func serverTLS(ca *certs.CA, cert *servingCert) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		Time:           cert.clock.Now,
		GetCertificate: cert.get,
		ClientAuth:     tls.RequestClientCert,
		NextProtos:     []string{"h2"},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			if _, _, err := x509svid.ParseAndVerify(raw, ca.Bundle(), x509svid.WithTime(cert.clock.Now())); err != nil {
				return fmt.Errorf("controlplane: client certificate: %w", err)
			}
			return nil
		},
	}
}
