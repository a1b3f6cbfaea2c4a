package certs_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/weftmesh/weft/certs"
)

// BenchmarkSign: one X.509-SVID per op for a P-256 CSR (parse, checks,
// certificate creation with one ECDSA P-256 signature, re-parse).
func BenchmarkSign(b *testing.B) {
	ca := newTestCA(b, nil)
	req := certs.SignRequest{CSR: makeCSR(b, p256Key(b)), ID: idA}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.Sign(req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "SVIDs/s")
}

// BenchmarkSignParallel: Sign from all CPUs (the CA takes a read lock).
func BenchmarkSignParallel(b *testing.B) {
	ca := newTestCA(b, nil)
	req := certs.SignRequest{CSR: makeCSR(b, p256Key(b)), ID: idA}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ca.Sign(req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "SVIDs/s")
}

func BenchmarkParseCSR(b *testing.B) {
	der := makeCSR(b, p256Key(b))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := certs.ParseCSR(der); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkECDSASignP256 is the floor: one bare P-256 signature of a digest.
func BenchmarkECDSASignP256(b *testing.B) {
	key := p256Key(b)
	digest := sha256.Sum256([]byte("weft"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkECDSAVerifyP256: one bare P-256 verification (ParseCSR does one).
func BenchmarkECDSAVerifyP256(b *testing.B) {
	key := p256Key(b)
	digest := sha256.Sum256([]byte("weft"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
			b.Fatal("verify failed")
		}
	}
}
