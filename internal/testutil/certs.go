package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/certs"
)

// Roots is ca's roots as a pool, what a client that trusts ca verifies
// servers with.
func Roots(ca *certs.CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range ca.Roots() {
		p.AddCert(r)
	}
	return p
}

// Certificate issues a fresh key and an X.509-SVID for id (plus DNS names)
// from ca, as a tls.Certificate with its chain.
func Certificate(t testing.TB, ca *certs.CA, id spiffeid.ID, dns ...string) tls.Certificate {
	t.Helper()
	key, chain := sign(t, ca, certs.SignRequest{ID: id, DNSNames: dns})
	out := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		out.Certificate = append(out.Certificate, x.Raw)
	}
	return out
}

// SVID issues a fresh key and an X.509-SVID for id from ca, valid for ttl
// (0: the CA's default), as go-spiffe's SVID.
func SVID(t testing.TB, ca *certs.CA, id spiffeid.ID, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	key, chain := sign(t, ca, certs.SignRequest{ID: id, TTL: ttl})
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

// sign makes a P-256 key and has ca sign req (its CSR filled in) for it.
func sign(t testing.TB, ca *certs.CA, req certs.SignRequest) (*ecdsa.PrivateKey, []*x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	req.CSR, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.Sign(req)
	if err != nil {
		t.Fatal(err)
	}
	return key, chain
}

// NewCA is a fresh certs.CA for td on clk (nil: the real clock).
func NewCA(t testing.TB, td spiffeid.TrustDomain, clk certs.Clock) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// ClientCA is a self-signed CA such as a cluster's client CA (CN
// "kubernetes"), valid from an hour before now to an hour after, with its
// key: for the X.509 client certificates the API server accepts, which are
// not SVIDs.
func ClientCA(t testing.TB, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}
