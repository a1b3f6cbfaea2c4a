package testutil

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/certs"
)

// CertService is a fake of the control plane's certificate service backed
// by a real [certs.CA]. Instead of a TokenReview it looks the bearer token
// up in a map: an unknown or missing token gets codes.Unauthenticated. It
// can be told to fail the next calls with codes.Unavailable, and it counts
// calls. Safe for concurrent use.
type CertService struct {
	certificatev1.UnimplementedCertificateServiceServer

	ca *certs.CA

	mu        sync.Mutex
	tokens    map[string]spiffeid.ID
	failNext  int
	calls     int
	lastToken string
}

// NewCertService returns a CertService signing with ca for the given
// token → ID map (copied).
func NewCertService(ca *certs.CA, tokens map[string]spiffeid.ID) *CertService {
	s := &CertService{ca: ca, tokens: make(map[string]spiffeid.ID, len(tokens))}
	for tok, id := range tokens {
		s.tokens[tok] = id
	}
	return s
}

// SetToken maps token to id from now on.
func (s *CertService) SetToken(token string, id spiffeid.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = id
}

// FailNext makes the next n calls fail with codes.Unavailable, as an
// unreachable control plane would.
func (s *CertService) FailNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = n
}

// Calls counts every Sign call received, failed ones included.
func (s *CertService) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// LastToken is the bearer token of the latest call ("" if it had none).
func (s *CertService) LastToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastToken
}

// Sign implements certificatev1.CertificateServiceServer.
func (s *CertService) Sign(ctx context.Context, req *certificatev1.SignRequest) (*certificatev1.SignResponse, error) {
	token := bearerToken(ctx)
	s.mu.Lock()
	s.calls++
	s.lastToken = token
	fail := s.failNext > 0
	if fail {
		s.failNext--
	}
	id, known := s.tokens[token]
	s.mu.Unlock()

	switch {
	case fail:
		return nil, status.Error(codes.Unavailable, "testutil: CertService: failing as told")
	case token == "":
		return nil, status.Error(codes.Unauthenticated, "testutil: CertService: no bearer token")
	case !known:
		return nil, status.Errorf(codes.Unauthenticated, "testutil: CertService: unknown token %q", token)
	case req.GetTtlSeconds() < 0:
		return nil, status.Errorf(codes.InvalidArgument, "testutil: CertService: negative ttl_seconds %d", req.GetTtlSeconds())
	}
	chain, err := s.ca.Sign(certs.SignRequest{
		CSR: req.GetCsr(),
		ID:  id,
		TTL: time.Duration(req.GetTtlSeconds()) * time.Second,
	})
	if errors.Is(err, certs.ErrInvalidCSR) || errors.Is(err, certs.ErrInvalidRequest) {
		return nil, status.Errorf(codes.InvalidArgument, "testutil: CertService: %v", err)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "testutil: CertService: %v", err)
	}
	resp := &certificatev1.SignResponse{SpiffeId: id.String()}
	for _, c := range chain {
		resp.CertChain = append(resp.CertChain, c.Raw)
	}
	for _, c := range s.ca.Bundle().X509Authorities() {
		resp.TrustBundle = append(resp.TrustBundle, c.Raw)
	}
	return resp, nil
}

func bearerToken(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := strings.CutPrefix(v, "Bearer "); ok {
			return tok
		}
	}
	return ""
}

// StartCertService serves a CertService over an in-memory gRPC connection
// (bufconn) and returns it, a client for it, and stop, which shuts the
// server down (later calls fail with codes.Unavailable). stop is also
// registered with t.Cleanup; calling it more than once is fine.
func StartCertService(t testing.TB, ca *certs.CA, tokens map[string]spiffeid.ID) (*CertService, certificatev1.CertificateServiceClient, func()) {
	t.Helper()
	svc := NewCertService(ca, tokens)
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	certificatev1.RegisterCertificateServiceServer(srv, svc)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		srv.Stop()
		t.Fatalf("testutil: StartCertService: %v", err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Stop()
			<-served
		})
	}
	t.Cleanup(func() {
		stop()
		conn.Close()
	})
	return svc, certificatev1.NewCertificateServiceClient(conn), stop
}
