package certs_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/weftmesh/weft/certs"
)

func material(t *testing.T, ca *certs.CA) certs.Material {
	t.Helper()
	m, err := ca.Material()
	if err != nil {
		t.Fatalf("Material: %v", err)
	}
	return m
}

func TestMaterialRoundTrip(t *testing.T) {
	clock := newFakeClock(t)
	ca := newTestCA(t, clock)
	m := material(t, ca)
	clock.Add(time.Hour)
	loaded, err := certs.LoadCA(certs.CAConfig{TrustDomain: td, Clock: clock}, m)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !loaded.Bundle().Equal(ca.Bundle()) || !bytes.Equal(loaded.BundlePEM(), m.RootsPEM) {
		t.Errorf("loaded bundle differs from the original")
	}
	if !loaded.Intermediate().Equal(ca.Intermediate()) {
		t.Errorf("loaded intermediate differs from the original")
	}
	if m2 := material(t, loaded); !bytes.Equal(m2.RootsPEM, m.RootsPEM) || !bytes.Equal(m2.RootKeyPEM, m.RootKeyPEM) ||
		!bytes.Equal(m2.IntermediatePEM, m.IntermediatePEM) || !bytes.Equal(m2.IntermediateKeyPEM, m.IntermediateKeyPEM) {
		t.Errorf("Material after LoadCA differs from the stored one")
	}
	// The restored CA signs SVIDs the original bundle trusts, and can rotate.
	if err := verifies(sign(t, loaded, idA), ca.Bundle(), clock.Now()); err != nil {
		t.Errorf("SVID from the loaded CA: %v", err)
	}
	if err := loaded.RenewIntermediate(); err != nil {
		t.Errorf("RenewIntermediate on the loaded CA: %v", err)
	}
}

func TestLoadCARefuses(t *testing.T) {
	clock := newFakeClock(t)
	ca := newTestCA(t, clock)
	other := newTestCA(t, clock)
	good, foreign := material(t, ca), material(t, other)
	with := func(f func(m *certs.Material)) certs.Material { m := good; f(&m); return m }
	at := func(d time.Duration) string { return clock.Now().Add(d).Format(time.RFC3339) }
	withIntermediate := func(uris ...*url.URL) certs.Material {
		m := good
		m.IntermediatePEM, m.IntermediateKeyPEM = handMadeIntermediate(t, good, clock.Now(), uris)
		return m
	}

	tests := []struct {
		name     string
		m        certs.Material
		advance  time.Duration
		sentinel error
		want     string
	}{
		{"good", good, 0, nil, ""},
		{"intermediate key of another CA", with(func(m *certs.Material) { m.IntermediateKeyPEM = foreign.IntermediateKeyPEM }), 0, certs.ErrInvalidMaterial,
			`certs: intermediate-key.pem: *ecdsa.PrivateKey key does not match certificate "CN=weft intermediate CA `},
		{"root key of another CA", with(func(m *certs.Material) { m.RootKeyPEM = foreign.RootKeyPEM }), 0, certs.ErrInvalidMaterial,
			`certs: root-key.pem: *ecdsa.PrivateKey key does not match certificate "CN=weft root CA `},
		{"intermediate of another CA", with(func(m *certs.Material) {
			m.IntermediatePEM, m.IntermediateKeyPEM = foreign.IntermediatePEM, foreign.IntermediateKeyPEM
		}), 0, certs.ErrInvalidMaterial, `is not signed by any of the 1 roots in roots.pem: invalid CA material`},
		{"expired intermediate", good, 366 * 24 * time.Hour, certs.ErrExpired,
			"expired at " + at(365*24*time.Hour) + " (now " + at(366*24*time.Hour) + "): certificate expired"},
		{"not yet valid", good, -time.Hour, certs.ErrInvalidMaterial, "is not valid before " + at(-time.Minute) + " (now " + at(-time.Hour) + "): invalid CA material"},
		{"garbage roots", with(func(m *certs.Material) { m.RootsPEM = []byte("garbage") }), 0, certs.ErrInvalidMaterial,
			"certs: roots.pem: no PEM block found (7 bytes): invalid CA material"},
		// Without a root key the CA is intermediate-only
		// (TestIntermediateOnly); a root key that is not PEM is refused.
		{"no root key", with(func(m *certs.Material) { m.RootKeyPEM = nil }), 0, nil, ""},
		{"garbage root key", with(func(m *certs.Material) { m.RootKeyPEM = []byte("garbage") }), 0, certs.ErrInvalidMaterial,
			"certs: root-key.pem: no PEM block found (7 bytes): invalid CA material"},
		{"trailing garbage", with(func(m *certs.Material) { m.IntermediatePEM = append(bytes.Clone(good.IntermediatePEM), "junk"...) }), 0, certs.ErrInvalidMaterial,
			"certs: intermediate.pem: 4 bytes of non-PEM data after block 1: invalid CA material"},
		{"key where a certificate belongs", with(func(m *certs.Material) { m.IntermediatePEM = good.IntermediateKeyPEM }), 0, certs.ErrInvalidMaterial,
			`certs: intermediate.pem: block 1 is "PRIVATE KEY", want CERTIFICATE: invalid CA material`},
		{"two intermediates", with(func(m *certs.Material) {
			m.IntermediatePEM = append(bytes.Clone(good.IntermediatePEM), good.IntermediatePEM...)
		}), 0, certs.ErrInvalidMaterial,
			"certs: intermediate.pem: holds 2 certificates, want 1: invalid CA material"},
		{"intermediate as root", with(func(m *certs.Material) { m.RootsPEM = good.IntermediatePEM }), 0, certs.ErrInvalidMaterial,
			`certs: roots.pem: certificate 0 ("CN=weft intermediate CA `},
		{"corrupt certificate", with(func(m *certs.Material) {
			m.RootsPEM = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
		}), 0, certs.ErrInvalidMaterial, "certs: roots.pem: block 1: invalid CA material: x509: malformed certificate"},
		{"corrupt key", with(func(m *certs.Material) {
			m.IntermediateKeyPEM = []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
		}), 0, certs.ErrInvalidMaterial, "certs: intermediate-key.pem: block 1: invalid CA material: "},
		// Blocks are counted from 1 in every file, past the first too.
		{"key after the root", with(func(m *certs.Material) { m.RootsPEM = append(bytes.Clone(good.RootsPEM), good.RootKeyPEM...) }), 0, certs.ErrInvalidMaterial,
			`certs: roots.pem: block 2 is "PRIVATE KEY", want CERTIFICATE: invalid CA material`},
		{"certificate after the root key", with(func(m *certs.Material) { m.RootKeyPEM = append(bytes.Clone(good.RootKeyPEM), good.RootsPEM...) }), 0, certs.ErrInvalidMaterial,
			`certs: root-key.pem: block 2 is "CERTIFICATE", want PRIVATE KEY (PKCS#8): invalid CA material`},
		{"second root key of another CA", with(func(m *certs.Material) { m.RootKeyPEM = append(bytes.Clone(good.RootKeyPEM), foreign.RootKeyPEM...) }), 0, certs.ErrInvalidMaterial,
			`certs: root-key.pem block 2: *ecdsa.PrivateKey key does not match certificate "CN=weft root CA `},
		// An intermediate need not carry a URI SAN, but one it carries must
		// be the trust domain's ID.
		{"intermediate without URI SANs", withIntermediate(), 0, nil, ""},
		{"intermediate with the trust domain's URI", withIntermediate(td.ID().URL()), 0, nil, ""},
		{"intermediate of another trust domain", withIntermediate(otherTD.ID().URL()), 0, certs.ErrInvalidMaterial,
			"certs: intermediate.pem: URI SANs [spiffe://other.example], want spiffe://cluster.local: invalid CA material"},
		{"intermediate with two URI SANs", withIntermediate(td.ID().URL(), idA.URL()), 0, certs.ErrInvalidMaterial,
			"certs: intermediate.pem: URI SANs [spiffe://cluster.local spiffe://cluster.local/ns/demo/sa/a], want spiffe://cluster.local: invalid CA material"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &fakeClock{now: clock.Now().Add(tc.advance)}
			loaded, err := certs.LoadCA(certs.CAConfig{TrustDomain: td, Clock: c}, tc.m)
			checkErr(t, err, tc.sentinel, tc.want)
			if err != nil && loaded != nil {
				t.Errorf("got a CA with an error")
			}
		})
	}
}

// TestIntermediateOnly: material without a root key (the root's key kept
// offline) loads as an intermediate-only CA that signs SVIDs the bundle
// trusts, stores without a root key, refuses to renew its intermediate or
// rotate roots with a reason, and takes a new intermediate under the same
// root (signed offline) without changing what workloads trust.
func TestIntermediateOnly(t *testing.T) {
	clock := newFakeClock(t)
	offline := newTestCA(t, clock) // where the root key lives
	full := material(t, offline)
	m := full
	m.RootKeyPEM = nil
	cfg := certs.CAConfig{TrustDomain: td, Clock: clock}
	ca, err := certs.LoadCA(cfg, m)
	if err != nil {
		t.Fatalf("LoadCA without a root key: %v", err)
	}
	if !ca.IntermediateOnly() || offline.IntermediateOnly() {
		t.Fatalf("IntermediateOnly: %v for the CA without a root key, %v for the one with it", ca.IntermediateOnly(), offline.IntermediateOnly())
	}
	if err := verifies(sign(t, ca, idA), offline.Bundle(), clock.Now()); err != nil {
		t.Fatalf("SVID from the intermediate-only CA: %v", err)
	}
	stored := material(t, ca)
	if len(stored.RootKeyPEM) != 0 || !bytes.Equal(stored.RootsPEM, full.RootsPEM) || !bytes.Equal(stored.IntermediatePEM, full.IntermediatePEM) {
		t.Fatalf("Material of the intermediate-only CA: root key %d bytes, roots equal %v, intermediate equal %v",
			len(stored.RootKeyPEM), bytes.Equal(stored.RootsPEM, full.RootsPEM), bytes.Equal(stored.IntermediatePEM, full.IntermediatePEM))
	}
	if again, err := certs.LoadCA(cfg, stored); err != nil || !again.IntermediateOnly() {
		t.Fatalf("reloading the stored material: %v (intermediate-only %v)", err, again != nil && again.IntermediateOnly())
	}
	before := ca.Intermediate()
	checkErr(t, ca.RenewIntermediate(), certs.ErrRotation, "this CA is intermediate-only (no root key)")
	checkErr(t, ca.PrepareRoot(), certs.ErrRotation, "this CA is intermediate-only (no root key)")
	if !ca.Intermediate().Equal(before) || !ca.IntermediateOnly() || len(ca.Roots()) != 1 {
		t.Fatalf("a refused renewal or rotation changed the CA")
	}

	// The intermediate is renewed where the root key lives and loaded: an
	// SVID signed before it and one signed after both verify.
	oldSVID := sign(t, ca, idA)
	clock.Add(time.Hour)
	if err := offline.RenewIntermediate(); err != nil {
		t.Fatal(err)
	}
	next := material(t, offline)
	next.RootKeyPEM = nil
	renewed, err := certs.LoadCA(cfg, next)
	if err != nil {
		t.Fatalf("LoadCA of the renewed intermediate: %v", err)
	}
	if renewed.Intermediate().Equal(before) {
		t.Fatal("the renewed material holds the old intermediate")
	}
	for what, chain := range map[string][]*x509.Certificate{"before": oldSVID, "after": sign(t, renewed, idA)} {
		if err := verifies(chain, renewed.Bundle(), clock.Now()); err != nil {
			t.Errorf("SVID signed %s the renewal: %v", what, err)
		}
	}
}

// handMadeIntermediate signs, under m's root, an intermediate (PEM) with the
// given URI SANs and a fresh key (PKCS#8 PEM), valid for a day from now.
func handMadeIntermediate(t *testing.T, m certs.Material, now time.Time, uris []*url.URL) (certPEM, keyPEM []byte) {
	t.Helper()
	rootBlock, _ := pem.Decode(m.RootsPEM)
	keyBlock, _ := pem.Decode(m.RootKeyPEM)
	if rootBlock == nil || keyBlock == nil {
		t.Fatal("material without a root or its key")
	}
	root, err := x509.ParseCertificate(rootBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key := p256Key(t)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber:          big.NewInt(42),
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		URIs:                  uris,
	}, root, key.Public(), rootKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// Zero TTLs get the documented defaults: a 10-year root, a 1-year
// intermediate and 24-hour SVIDs. The want values are spelt in hours, not
// through the exported constants, so a wrong constant shows.
func TestDefaultLifetimes(t *testing.T) {
	clock := newFakeClock(t)
	ca := newTestCA(t, clock)
	now := clock.Now()
	for _, c := range []struct {
		name string
		cert *x509.Certificate
		want time.Duration
	}{
		{"root", ca.ActiveRoot(), 87600 * time.Hour},
		{"intermediate", ca.Intermediate(), 8760 * time.Hour},
		{"SVID", sign(t, ca, idA)[0], 24 * time.Hour},
	} {
		if got := c.cert.NotAfter.Sub(now); got != c.want {
			t.Errorf("%s NotAfter is now + %v, want now + %v", c.name, got, c.want)
		}
	}
	if certs.DefaultRootTTL != 87600*time.Hour || certs.DefaultIntermediateTTL != 8760*time.Hour || certs.DefaultWorkloadTTL != 24*time.Hour {
		t.Errorf("defaults %v, %v, %v; want 87600h, 8760h, 24h", certs.DefaultRootTTL, certs.DefaultIntermediateTTL, certs.DefaultWorkloadTTL)
	}
}

func TestConfigRefuses(t *testing.T) {
	_, err := certs.NewCA(certs.CAConfig{})
	checkErr(t, err, nil, "certs: CAConfig: trust domain is empty")
	_, err = certs.NewCA(certs.CAConfig{TrustDomain: td, WorkloadTTL: -time.Hour})
	checkErr(t, err, nil, "certs: CAConfig: WorkloadTTL is negative (-1h0m0s)")
	_, err = certs.LoadCA(certs.CAConfig{}, certs.Material{})
	checkErr(t, err, nil, "certs: CAConfig: trust domain is empty")
	if errors.Is(err, certs.ErrInvalidMaterial) {
		t.Errorf("config error %q should not claim the material is invalid", err)
	}
}
