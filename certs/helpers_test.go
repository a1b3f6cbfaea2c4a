package certs_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
)

// fakeClock is a Clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// newFakeClock starts at testutil.Epoch(t), decades from the wall clock.
func newFakeClock(t testing.TB) *fakeClock {
	return &fakeClock{now: testutil.Epoch(t)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var _ certs.Clock = (*fakeClock)(nil)

var (
	td      = spiffeid.RequireTrustDomainFromString("cluster.local")
	otherTD = spiffeid.RequireTrustDomainFromString("other.example")
	idA     = spiffeid.RequireFromPath(td, "/ns/demo/sa/a")
	idB     = spiffeid.RequireFromPath(td, "/ns/demo/sa/b")
)

func newTestCA(t testing.TB, clock certs.Clock) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td, Clock: clock})
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func p256Key(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rsaKeys caches RSA keys by size: generating them is slow.
var rsaKeys sync.Map

func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	if k, ok := rsaKeys.Load(bits); ok {
		return k.(*rsa.PrivateKey)
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	rsaKeys.Store(bits, k)
	return k
}

// makeCSR makes a DER CSR signed by key, with the given extra extensions.
func makeCSR(t testing.TB, key crypto.Signer, exts ...pkix.Extension) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: "ignored"},
		ExtraExtensions: exts,
	}, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest(%T): %v", key, err)
	}
	return der
}

type spki struct {
	Algorithm pkix.AlgorithmIdentifier
	PublicKey asn1.BitString
}

// rawCSR builds a CSR by hand for keys Go cannot put in one (P-224, DSA,
// unknown algorithms). sign may be nil: the signature is then garbage.
func rawCSR(t testing.TB, pub spki, sigAlg asn1.ObjectIdentifier, sign func(digest []byte) []byte) []byte {
	t.Helper()
	subject, err := asn1.Marshal(pkix.Name{CommonName: "hand-made"}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	tbs, err := asn1.Marshal(struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  spki
		Attributes []asn1.RawValue `asn1:"tag:0"`
	}{0, asn1.RawValue{FullBytes: subject}, pub, []asn1.RawValue{}})
	if err != nil {
		t.Fatal(err)
	}
	sig := []byte{0x30, 0x00}
	if sign != nil {
		d := sha256.Sum256(tbs)
		sig = sign(d[:])
	}
	der, err := asn1.Marshal(struct {
		TBS    asn1.RawValue
		SigAlg pkix.AlgorithmIdentifier
		Sig    asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, pkix.AlgorithmIdentifier{Algorithm: sigAlg}, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var (
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidDSAWithSHA256   = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 2}
)

func p224CSR(t testing.TB) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	point, err := k.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	curve, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 3, 132, 0, 33})
	pub := spki{
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}, Parameters: asn1.RawValue{FullBytes: curve}},
		PublicKey: asn1.BitString{Bytes: point, BitLength: 8 * len(point)},
	}
	return rawCSR(t, pub, oidECDSAWithSHA256, func(d []byte) []byte {
		sig, err := ecdsa.SignASN1(rand.Reader, k, d)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	})
}

func dsaCSR(t testing.TB) []byte {
	t.Helper()
	params, _ := asn1.Marshal(struct{ P, Q, G *big.Int }{big.NewInt(23), big.NewInt(11), big.NewInt(4)})
	y, _ := asn1.Marshal(big.NewInt(8))
	pub := spki{
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10040, 4, 1}, Parameters: asn1.RawValue{FullBytes: params}},
		PublicKey: asn1.BitString{Bytes: y, BitLength: 8 * len(y)},
	}
	return rawCSR(t, pub, oidDSAWithSHA256, nil)
}

func x25519CSR(t testing.TB) []byte {
	t.Helper()
	pub := spki{
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 3, 101, 110}},
		PublicKey: asn1.BitString{Bytes: make([]byte, 32), BitLength: 256},
	}
	return rawCSR(t, pub, oidECDSAWithSHA256, nil)
}

func ed25519Key(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sign issues an SVID for id over a fresh P-256 key.
func sign(t testing.TB, ca *certs.CA, id spiffeid.ID) []*x509.Certificate {
	t.Helper()
	chain, err := ca.Sign(certs.SignRequest{CSR: makeCSR(t, p256Key(t)), ID: id})
	if err != nil {
		t.Fatalf("Sign(%s): %v", id, err)
	}
	return chain
}

// verifies reports whether chain verifies against bundle at now.
func verifies(chain []*x509.Certificate, bundle *x509bundle.Bundle, now time.Time) error {
	_, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(now))
	return err
}

// checkErr fails unless err matches: nil when want is "", else err wraps
// sentinel (if any) and its message contains want.
func checkErr(t testing.TB, err error, sentinel error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want == "":
	case err == nil:
		t.Fatalf("got no error, want one containing %q", want)
	case !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	case sentinel != nil && !errors.Is(err, sentinel):
		t.Fatalf("error %q does not wrap %v", err, sentinel)
	}
}
