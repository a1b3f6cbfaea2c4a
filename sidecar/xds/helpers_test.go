package xds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

var (
	rootOnce sync.Once
	rootPEM  []byte
)

// testRootPEM is a self-signed CA certificate for trust_bundle secrets.
func testRootPEM(t testing.TB) []byte {
	t.Helper()
	rootOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weft test root"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
			URIs: []*url.URL{{Scheme: "spiffe", Host: "cluster.local"}},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		rootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	})
	return rootPEM
}

// envoySet is a set of resources as go-control-plane builds them (Envoy's
// own types): by type URL, then by name.
type envoySet map[string]map[string]proto.Message

// toSubset converts a resource built with go-control-plane into the
// sidecar's subset type the way the client does: marshalled into an Any of
// its Envoy type URL, then decoded.
func toSubset(m proto.Message) (proto.Message, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	return decode(a.GetTypeUrl(), a)
}

// subset converts every resource of s with toSubset. The first error (in
// type, then name order) reads as Build's would: `xds: listener "inbound":
// ...`.
func (s envoySet) subset() (Resources, error) {
	out := Resources{}
	for _, t := range slices.Sorted(maps.Keys(s)) {
		out[t] = map[string]proto.Message{}
		for _, name := range slices.Sorted(maps.Keys(s[t])) {
			m, err := toSubset(s[t][name])
			if err != nil {
				return nil, fmt.Errorf("xds: %w", err)
			}
			out[t][name] = m
		}
	}
	return out, nil
}

// mustSubset is subset for sets that must convert.
func (s envoySet) mustSubset(t testing.TB) Resources {
	t.Helper()
	r, err := s.subset()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// buildEnvoy is what the client does with go-control-plane resources:
// decode, then Build.
func buildEnvoy(s envoySet) (*model.Config, error) {
	r, err := s.subset()
	if err != nil {
		return nil, err
	}
	return Build(td, r)
}

// refusal is a change to a valid set of resources that Build refuses,
// with an error containing want.
type refusal struct {
	name   string
	mutate func(envoySet)
	want   string
}

// checkRefusals applies each refusal to a fresh set from valid and checks
// Build's error.
func checkRefusals(t *testing.T, valid func(testing.TB) envoySet, cases []refusal) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := valid(t)
			tc.mutate(r)
			_, err := buildEnvoy(r)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build() error = %v\nwant it to contain %s", err, tc.want)
			}
		})
	}
}
