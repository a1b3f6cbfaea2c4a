package translate

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/weftmesh/weft/internal/testutil/golden"
)

// The golden secrets carry testdata/root.pem verbatim, so it is committed,
// and a committed certificate must hold on any day a test runs: it is valid
// from 1970 to 99991231235959Z, RFC 5280's "no well-defined expiration".
// `go test ./controlplane/xds/translate -update -run TestRootFixture` makes a new one
// (then run -update once more for the goldens).
var (
	rootNotBefore = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	rootNotAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

func TestRootFixture(t *testing.T) {
	if *golden.Update {
		if err := os.WriteFile("testdata/root.pem", newTimelessRoot(t), 0o644); err != nil {
			t.Fatal(err)
		}
		testBundle = mustRead("testdata/root.pem")
	}
	b, err := x509bundle.Parse(meshTD, []byte(testBundle))
	if err != nil {
		t.Fatalf("testdata/root.pem: %v", err)
	}
	roots := b.X509Authorities()
	if len(roots) != 1 {
		t.Fatalf("testdata/root.pem holds %d certificates, want 1", len(roots))
	}
	r := roots[0]
	if !r.IsCA || r.CheckSignatureFrom(r) != nil || len(r.URIs) != 1 || r.URIs[0].String() != meshTD.IDString() {
		t.Fatalf("testdata/root.pem is not a self-signed CA for %s: CA %v, URIs %v", meshTD, r.IsCA, r.URIs)
	}
	if !r.NotBefore.Equal(rootNotBefore) || !r.NotAfter.Equal(rootNotAfter) {
		t.Fatalf("testdata/root.pem valid %v to %v, want %v to %v (regenerate it: -update)", r.NotBefore, r.NotAfter, rootNotBefore, rootNotAfter)
	}
}

// newTimelessRoot is a root shaped like the ones certs.NewCA makes (the
// same subject form, key usage, path length and trust-domain URI SAN).
func newTimelessRoot(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	ski := sha1.Sum(pub)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	tdURL, _ := url.Parse(meshTD.IDString())
	tpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"weft"}, CommonName: fmt.Sprintf("weft root CA %x", ski[:4])},
		NotBefore:             rootNotBefore,
		NotAfter:              rootNotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		SubjectKeyId:          ski[:],
		URIs:                  []*url.URL{tdURL},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
