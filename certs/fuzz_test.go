package certs_test

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"testing"

	"github.com/weftmesh/weft/certs"
)

// FuzzParseCSR: ParseCSR never panics, refusals wrap ErrInvalidCSR, and
// whatever it accepts Sign handles without panicking.
func FuzzParseCSR(f *testing.F) {
	caBC, _ := asn1.Marshal(struct{ IsCA bool }{true})
	good := makeCSR(f, p256Key(f))
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)-1] ^= 0xff
	for _, seed := range [][]byte{
		good,
		makeCSR(f, rsaKey(f, 2048)),
		makeCSR(f, ed25519Key(f)),
		makeCSR(f, rsaKey(f, 1024)),
		makeCSR(f, p256Key(f), pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Value: caBC}),
		flipped,
		p224CSR(f),
		dsaCSR(f),
		x25519CSR(f),
		nil,
		[]byte("garbage"),
		good[:len(good)/2],
	} {
		f.Add(seed)
	}
	ca := newTestCA(f, nil)
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := certs.ParseCSR(der)
		if err != nil {
			if !errors.Is(err, certs.ErrInvalidCSR) {
				t.Fatalf("ParseCSR error %q does not wrap ErrInvalidCSR", err)
			}
			return
		}
		if csr == nil {
			t.Fatal("ParseCSR returned nil and no error")
		}
		chain, err := ca.Sign(certs.SignRequest{CSR: der, ID: idA})
		if err == nil && (len(chain) != 2 || chain[0].URIs[0].String() != idA.String()) {
			t.Fatalf("Sign accepted but returned %d certificates", len(chain))
		}
	})
}
