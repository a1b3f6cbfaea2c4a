package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/certs"
)

// Certificate issues a fresh key and an X.509-SVID for id (plus DNS names)
// from ca, as a tls.Certificate with its chain.
func Certificate(t testing.TB, ca *certs.CA, id spiffeid.ID, dns ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.Sign(certs.SignRequest{CSR: csr, ID: id, DNSNames: dns})
	if err != nil {
		t.Fatal(err)
	}
	out := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		out.Certificate = append(out.Certificate, x.Raw)
	}
	return out
}
