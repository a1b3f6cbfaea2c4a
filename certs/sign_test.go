package certs_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"io"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/certs"
)

func TestSignIssuesValidSVIDs(t *testing.T) {
	clock := newFakeClock(t)
	ca := newTestCA(t, clock)
	clock.Add(time.Hour)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		key     crypto.Signer
		dns     []string
		ttl     time.Duration
		wantTTL time.Duration
	}{
		{"P-256 default TTL", p256Key(t), nil, 0, 24 * time.Hour},
		{"P-384 with DNS", p384, []string{"weft-controlplane.weft-system.svc", "localhost"}, time.Hour, time.Hour},
		{"RSA 2048", rsaKey(t, 2048), nil, 2 * time.Hour, 2 * time.Hour},
		{"Ed25519", ed25519Key(t), nil, time.Minute, time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := ca.Sign(certs.SignRequest{CSR: makeCSR(t, tc.key), ID: idA, DNSNames: tc.dns, TTL: tc.ttl})
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if len(chain) != 2 || chain[1] != ca.Intermediate() {
				t.Fatalf("chain has %d certificates, want leaf + the intermediate", len(chain))
			}
			leaf, now := chain[0], clock.Now()
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != idA.String() {
				t.Errorf("URI SANs = %v, want exactly [%s]", leaf.URIs, idA)
			}
			if !slices.Equal(leaf.DNSNames, tc.dns) {
				t.Errorf("DNSNames = %v, want %v", leaf.DNSNames, tc.dns)
			}
			if !leaf.BasicConstraintsValid || leaf.IsCA {
				t.Errorf("BasicConstraintsValid=%v IsCA=%v, want true, false", leaf.BasicConstraintsValid, leaf.IsCA)
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage = %v, want digitalSignature only", leaf.KeyUsage)
			}
			if want := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}; !slices.Equal(leaf.ExtKeyUsage, want) {
				t.Errorf("ExtKeyUsage = %v, want %v", leaf.ExtKeyUsage, want)
			}
			if n := leaf.SerialNumber; n.Sign() <= 0 || n.BitLen() > 128 {
				t.Errorf("serial %x is not a positive 128-bit number", n)
			}
			if !leaf.NotBefore.Equal(now.Add(-certs.Backdate)) || !leaf.NotAfter.Equal(now.Add(tc.wantTTL)) {
				t.Errorf("validity %v..%v, want %v..%v", leaf.NotBefore, leaf.NotAfter, now.Add(-certs.Backdate), now.Add(tc.wantTTL))
			}
			if len(leaf.SubjectKeyId) != 20 || !bytes.Equal(leaf.AuthorityKeyId, chain[1].SubjectKeyId) {
				t.Errorf("SubjectKeyId %x, AuthorityKeyId %x, want 20 bytes and the intermediate's %x", leaf.SubjectKeyId, leaf.AuthorityKeyId, chain[1].SubjectKeyId)
			}
			id, _, err := x509svid.Verify(chain, ca.Bundle(), x509svid.WithTime(now))
			if err != nil || id != idA {
				t.Fatalf("x509svid.Verify = %v, %v; want %s", id, err, idA)
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			svid, err := x509svid.ParseRaw(slices.Concat(leaf.Raw, chain[1].Raw), keyDER)
			if err != nil || svid.ID != idA {
				t.Fatalf("x509svid.ParseRaw = %v; want an SVID for %s", err, idA)
			}
		})
	}
}

func TestSignRefuses(t *testing.T) {
	ca := newTestCA(t, newFakeClock(t))
	good := makeCSR(t, p256Key(t))
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 0xff
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caBC, _ := asn1.Marshal(struct{ IsCA bool }{true})
	notCABC, _ := asn1.Marshal(struct{}{})
	ext := func(oid asn1.ObjectIdentifier, v []byte) pkix.Extension { return pkix.Extension{Id: oid, Value: v} }
	bc, ku := asn1.ObjectIdentifier{2, 5, 29, 19}, asn1.ObjectIdentifier{2, 5, 29, 15}
	kuBits := func(b byte, n int) []byte {
		v, _ := asn1.Marshal(asn1.BitString{Bytes: []byte{b}, BitLength: n})
		return v
	}

	tests := []struct {
		name     string
		csr      []byte
		id       spiffeid.ID
		dns      []string
		ttl      time.Duration
		sentinel error
		want     string // substring of the error; "" means accepted
	}{
		{"good", good, idA, nil, 0, nil, ""},
		{"CSR basicConstraints CA=false is fine", makeCSR(t, p256Key(t), ext(bc, notCABC)), idA, nil, 0, nil, ""},
		{"CSR keyUsage digitalSignature is fine", makeCSR(t, p256Key(t), ext(ku, kuBits(0x80, 1))), idA, nil, 0, nil, ""},
		{"empty CSR", nil, idA, nil, 0, certs.ErrInvalidCSR, "certs: parse CSR (0 bytes): invalid CSR: asn1: syntax error: sequence truncated"},
		{"garbage CSR", []byte("not a CSR"), idA, nil, 0, certs.ErrInvalidCSR, "certs: parse CSR (9 bytes): invalid CSR: "},
		{"flipped signature", flipped, idA, nil, 0, certs.ErrInvalidCSR, "certs: CSR signature (ECDSA-SHA256) does not verify: invalid CSR: x509: ECDSA verification failure"},
		{"RSA 1024", makeCSR(t, rsaKey(t, 1024)), idA, nil, 0, certs.ErrInvalidCSR, "certs: CSR key: RSA key of 1024 bits is refused (want at least 2048): invalid CSR"},
		{"P-521", makeCSR(t, p521), idA, nil, 0, certs.ErrInvalidCSR, "certs: CSR key: ECDSA curve P-521 is refused (want P-256 or P-384): invalid CSR"},
		{"P-224", p224CSR(t), idA, nil, 0, certs.ErrInvalidCSR, "certs: CSR key: ECDSA curve P-224 is refused (want P-256 or P-384): invalid CSR"},
		{"DSA", dsaCSR(t), idA, nil, 0, certs.ErrInvalidCSR, "certs: CSR key: DSA key (*dsa.PublicKey) is refused (want ECDSA P-256/P-384, RSA or Ed25519): invalid CSR"},
		{"unknown key (X25519)", x25519CSR(t), idA, nil, 0, certs.ErrInvalidCSR, "certs: CSR key: unknown public key algorithm is refused (want ECDSA P-256/P-384, RSA or Ed25519): invalid CSR"},
		{"CSR asks CA=true", makeCSR(t, p256Key(t), ext(bc, caBC)), idA, nil, 0, certs.ErrInvalidCSR, "certs: CSR requests basicConstraints CA=true: invalid CSR"},
		{"CSR asks keyCertSign", makeCSR(t, p256Key(t), ext(ku, kuBits(0x04, 6))), idA, nil, 0, certs.ErrInvalidCSR, "certs: CSR requests keyUsage keyCertSign or cRLSign: invalid CSR"},
		{"CSR asks cRLSign", makeCSR(t, p256Key(t), ext(ku, kuBits(0x02, 7))), idA, nil, 0, certs.ErrInvalidCSR, "certs: CSR requests keyUsage keyCertSign or cRLSign: invalid CSR"},
		{"CSR malformed basicConstraints", makeCSR(t, p256Key(t), ext(bc, []byte{0x05})), idA, nil, 0, certs.ErrInvalidCSR, "certs: CSR basicConstraints extension is malformed: invalid CSR"},
		{"zero ID", good, spiffeid.ID{}, nil, 0, certs.ErrInvalidRequest, "certs: Sign: SPIFFE ID is empty: invalid sign request"},
		{"other trust domain", good, spiffeid.RequireFromPath(otherTD, "/ns/demo/sa/a"), nil, 0, certs.ErrInvalidRequest, `certs: Sign spiffe://other.example/ns/demo/sa/a: ID is outside trust domain "cluster.local": invalid sign request`},
		{"trust domain ID", good, td.ID(), nil, 0, certs.ErrInvalidRequest, "certs: Sign spiffe://cluster.local: ID is the trust domain itself; a workload ID needs a path: invalid sign request"},
		{"negative TTL", good, idA, nil, -time.Second, certs.ErrInvalidRequest, "certs: Sign spiffe://cluster.local/ns/demo/sa/a: TTL -1s is negative: invalid sign request"},
		{"empty DNS name", good, idA, []string{""}, 0, certs.ErrInvalidRequest, `DNS name "": length 0 is not in 1..253: invalid sign request`},
		{"wildcard DNS name", good, idA, []string{"*.svc"}, 0, certs.ErrInvalidRequest, `DNS name "*.svc": label "*" has invalid character '*': invalid sign request`},
		{"IP as DNS name", good, idA, []string{"198.18.200.1"}, 0, certs.ErrInvalidRequest, `DNS name "198.18.200.1": is an IP address, not a host name: invalid sign request`},
		{"empty label", good, idA, []string{"a..svc"}, 0, certs.ErrInvalidRequest, `DNS name "a..svc": label "" length 0 is not in 1..63`},
		{"trailing dot", good, idA, []string{"a.svc."}, 0, certs.ErrInvalidRequest, `label "" length 0 is not in 1..63`},
		{"leading hyphen", good, idA, []string{"-a.svc"}, 0, certs.ErrInvalidRequest, `label "-a" starts or ends with '-'`},
		{"underscore", good, idA, []string{"a_b.svc"}, 0, certs.ErrInvalidRequest, `label "a_b" has invalid character '_'`},
		{"long label", good, idA, []string{strings.Repeat("a", 64) + ".svc"}, 0, certs.ErrInvalidRequest, "length 64 is not in 1..63"},
		{"long name", good, idA, []string{strings.Repeat("a.", 127) + "ab"}, 0, certs.ErrInvalidRequest, "length 256 is not in 1..253"},
		// The limits themselves are allowed.
		{"name of 253 characters", good, idA, []string{strings.Repeat("a.", 126) + "a"}, 0, nil, ""},
		{"name of 254 characters", good, idA, []string{strings.Repeat("a.", 126) + "ab"}, 0, certs.ErrInvalidRequest, "length 254 is not in 1..253"},
		{"label of 63 characters", good, idA, []string{strings.Repeat("a", 63) + ".svc"}, 0, nil, ""},
		{"first and last letters and digits", good, idA, []string{"a.z.A.Z.0.9.svc", "az-AZ-09"}, 0, nil, ""},
		{"just past z", good, idA, []string{"a{.svc"}, 0, certs.ErrInvalidRequest, `label "a{" has invalid character '{'`},
		{"just before A", good, idA, []string{"a@.svc"}, 0, certs.ErrInvalidRequest, `label "a@" has invalid character '@'`},
		{"just past 9", good, idA, []string{"a:.svc"}, 0, certs.ErrInvalidRequest, `label "a:" has invalid character ':'`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := ca.Sign(certs.SignRequest{CSR: tc.csr, ID: tc.id, DNSNames: tc.dns, TTL: tc.ttl})
			checkErr(t, err, tc.sentinel, tc.want)
			if err != nil && chain != nil {
				t.Errorf("got a chain with an error")
			}
			if tc.sentinel == certs.ErrInvalidCSR { // ParseCSR alone refuses the same
				_, err := certs.ParseCSR(tc.csr)
				checkErr(t, err, tc.sentinel, tc.want)
			}
		})
	}
}

// The CSR's own SANs and subject never reach the SVID.
func TestSignIgnoresCSRIdentity(t *testing.T) {
	ca := newTestCA(t, newFakeClock(t))
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "admin"},
		URIs:     []*url.URL{idB.URL()},
		DNSNames: []string{"evil.example"},
	}, p256Key(t))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.Sign(certs.SignRequest{CSR: csr, ID: idA})
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != idA.String() || len(leaf.DNSNames) != 0 || leaf.Subject.CommonName != "" {
		t.Fatalf("leaf URIs %v DNS %v CN %q: the CSR's identity leaked in", leaf.URIs, leaf.DNSNames, leaf.Subject.CommonName)
	}
}

func TestSignClampsToIntermediate(t *testing.T) {
	clock := newFakeClock(t)
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td, Clock: clock, IntermediateTTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	inter := ca.Intermediate()
	clock.Add(47 * time.Hour)
	chain := sign(t, ca, idA)
	if !chain[0].NotAfter.Equal(inter.NotAfter) {
		t.Fatalf("leaf NotAfter %v, want the intermediate's %v", chain[0].NotAfter, inter.NotAfter)
	}
	if err := verifies(chain, ca.Bundle(), clock.Now()); err != nil {
		t.Fatalf("clamped SVID does not verify: %v", err)
	}
	clock.Add(time.Hour)
	_, err = ca.Sign(certs.SignRequest{CSR: makeCSR(t, p256Key(t)), ID: idA})
	checkErr(t, err, certs.ErrExpired, "certs: Sign spiffe://cluster.local/ns/demo/sa/a: intermediate ")
	end, now := inter.NotAfter.UTC().Format(time.RFC3339), clock.Now().UTC().Format(time.RFC3339)
	checkErr(t, err, certs.ErrExpired, " expired at "+end+" (now "+now+"); renew it: certificate expired")
	if err := ca.RenewIntermediate(); err != nil {
		t.Fatal(err)
	}
	if err := verifies(sign(t, ca, idA), ca.Bundle(), clock.Now()); err != nil {
		t.Fatalf("SVID after RenewIntermediate does not verify: %v", err)
	}
}

// Right after NewCA, a leaf's backdated NotBefore stays inside the issuer's.
func TestSignNotBeforeInsideIssuer(t *testing.T) {
	ca := newTestCA(t, newFakeClock(t))
	leaf := sign(t, ca, idA)[0]
	if leaf.NotBefore.Before(ca.Intermediate().NotBefore) {
		t.Fatalf("leaf NotBefore %v precedes intermediate NotBefore %v", leaf.NotBefore, ca.Intermediate().NotBefore)
	}
}

// zerosFirst reads n zero bytes, then from r.
type zerosFirst struct {
	n int
	r io.Reader
}

func (z *zerosFirst) Read(p []byte) (int, error) {
	if z.n == 0 {
		return z.r.Read(p)
	}
	k := min(len(p), z.n)
	clear(p[:k])
	z.n -= k
	return k, nil
}

// A serial number is positive (RFC 5280 4.1.2.2): a random draw of zero is
// drawn again. Sign's first read of rand.Reader is the 16-byte serial draw,
// so this test hands it zeros. It swaps the package-level rand.Reader, so
// it must not run in parallel.
func TestSignRedrawsZeroSerial(t *testing.T) {
	ca := newTestCA(t, newFakeClock(t))
	csr := makeCSR(t, p256Key(t))
	orig := rand.Reader
	t.Cleanup(func() { rand.Reader = orig })
	zeros := &zerosFirst{n: 16, r: orig}
	rand.Reader = zeros
	chain, err := ca.Sign(certs.SignRequest{CSR: csr, ID: idA})
	rand.Reader = orig
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if zeros.n != 0 {
		t.Fatalf("Sign read %d of the 16 zero bytes; the test no longer feeds the serial draw", 16-zeros.n)
	}
	if n := chain[0].SerialNumber; n.Sign() <= 0 || n.BitLen() > 128 {
		t.Fatalf("serial %x after a zero draw, want a positive 128-bit number", n)
	}
}
