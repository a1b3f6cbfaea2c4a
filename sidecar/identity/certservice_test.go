package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/internal/testutil"
)

// TestCertServiceFake pins the contract of testutil.CertService, the fake
// these tests (and others) stand on.
func TestCertServiceFake(t *testing.T) {
	e := newEnv(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	sign := func(token string, csr []byte) (*certificatev1.SignResponse, error) {
		ctx := context.Background()
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		return e.client.Sign(ctx, &certificatev1.SignRequest{Csr: csr})
	}
	for _, tc := range []struct {
		name     string
		before   func()
		token    string
		csr      []byte
		wantCode codes.Code
		wantMsg  string
	}{
		{"signs for the token's ID", nil, "tok-b", csr, codes.OK, ""},
		{"no token", nil, "", csr, codes.Unauthenticated, "testutil: CertService: no bearer token"},
		{"unknown token", nil, "tok-x", csr, codes.Unauthenticated, `testutil: CertService: unknown token "tok-x"`},
		{"bad CSR", nil, "tok-a", []byte("junk"), codes.InvalidArgument, ""},
		{"told to fail", func() { e.svc.FailNext(1) }, "tok-a", csr, codes.Unavailable, "testutil: CertService: failing as told"},
		{"fails only as often as told", nil, "tok-a", csr, codes.OK, ""},
		{"stopped", e.stop, "tok-a", csr, codes.Unavailable, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			calls := e.svc.Calls()
			resp, err := sign(tc.token, tc.csr)
			s := status.Convert(err)
			if s.Code() != tc.wantCode || (tc.wantMsg != "" && s.Message() != tc.wantMsg) {
				t.Fatalf("got %v, want code %s message %q", err, tc.wantCode, tc.wantMsg)
			}
			if tc.name != "stopped" && e.svc.Calls() != calls+1 {
				t.Errorf("calls: got %d, want %d", e.svc.Calls(), calls+1)
			}
			if err != nil {
				return
			}
			id, _, err := x509svid.ParseAndVerify(resp.CertChain, e.ca.Bundle(), x509svid.WithTime(e.start))
			if err != nil || id.String() != resp.SpiffeId || len(resp.TrustBundle) != 1 {
				t.Errorf("response: id %s (err %v), spiffe_id %s, %d roots", id, err, resp.SpiffeId, len(resp.TrustBundle))
			}
		})
	}
}

func TestRunTwice(t *testing.T) {
	e := newEnv(t)
	m, _ := e.manager(t, "tok-a", Config{})
	testutil.Run(t, m.Run)
	<-m.Ready() // the first Run is under way
	if err := m.Run(t.Context()); err == nil || err.Error() != "identity: Run called twice" {
		t.Fatalf("second Run: got %v", err)
	}
}
