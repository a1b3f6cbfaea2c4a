package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
)

// staticAuth accepts every token as one caller: the benchmark measures the
// service without the TokenReview round trip to the API server.
type staticAuth struct{ c Caller }

func (a staticAuth) Authenticate(context.Context, string) (Caller, error) { return a.c, nil }

// BenchmarkCASign is the baseline: CSR check and signing alone.
func BenchmarkCASign(b *testing.B) {
	ca := testutil.NewCA(b, td, nil)
	csr := newCSR(b)
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/app")
	b.ResetTimer()
	for b.Loop() {
		if _, err := certs.ParseCSR(csr); err != nil {
			b.Fatal(err)
		}
		if _, err := ca.Sign(certs.SignRequest{CSR: csr, ID: id}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "svids/s")
}

// BenchmarkServiceRoundTrip is one Sign call through gRPC over TLS on
// loopback (connection reused, TokenReview stubbed out).
func BenchmarkServiceRoundTrip(b *testing.B) {
	ca := testutil.NewCA(b, td, nil)
	svc, err := New(Config{CA: ca, Authenticator: staticAuth{Caller{Namespace: "demo", ServiceAccount: "app", PodName: "p", PodUID: "u"}}, RateLimit: rate.Inf})
	if err != nil {
		b.Fatal(err)
	}
	serverID := spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-controlplane")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	chain, err := ca.Sign(certs.SignRequest{CSR: csr, ID: serverID})
	if err != nil {
		b.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	certificatev1.RegisterCertificateServiceServer(gs, svc)
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(ca.Bundle(), tlsconfig.AuthorizeID(serverID)))))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := certificatev1.NewCertificateServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer x")
	wcsr := newCSR(b)
	if _, err := client.Sign(ctx, &certificatev1.SignRequest{Csr: wcsr}); err != nil {
		b.Fatal(err) // warm the connection
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := client.Sign(ctx, &certificatev1.SignRequest{Csr: wcsr}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "svids/s")
}
