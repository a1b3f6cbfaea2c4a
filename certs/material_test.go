package certs_test

import (
	"bytes"
	"errors"
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
		{"empty root key", with(func(m *certs.Material) { m.RootKeyPEM = nil }), 0, certs.ErrInvalidMaterial,
			"certs: root-key.pem: no PEM block found (0 bytes): invalid CA material"},
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
