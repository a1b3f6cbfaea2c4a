package ads

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/streamauth"
	"github.com/weftmesh/weft/controlplane/streamauth/streamauthtest"
)

// refusal opens a stream of each flavour as id, sends a first request as
// nodeID, and returns the errors the streams end with.
func refusals(t *testing.T, h *harness, id spiffeid.ID, nodeID string) map[string]error {
	t.Helper()
	s := openSotW(h, id)
	s.send(&discovery.DiscoveryRequest{Node: node(nodeID), TypeUrl: resource.ListenerType})
	d := openDelta(h, id)
	d.send(&discovery.DeltaDiscoveryRequest{Node: node(nodeID), TypeUrl: resource.ListenerType})
	return map[string]error{"sotw": s.refused(), "delta": d.refused()}
}

func TestStreamsAreRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cases := []struct {
		name   string
		id     spiffeid.ID
		node   string
		code   codes.Code
		reason string
	}{
		{"no client certificate", spiffeid.ID{}, "app-1.demo", codes.Unauthenticated, "a client certificate (the sidecar's X.509-SVID) is required"},
		{"another service account", saID("demo", "other"), "app-1.demo", codes.PermissionDenied,
			`xds: the token is ServiceAccount demo/app's, the client certificate is spiffe://cluster.local/ns/demo/sa/other`},
		{"another pod", saID("demo", "app"), "ghost.demo", codes.PermissionDenied, `xds: node "ghost.demo" refused: the stream's token is pod demo/app-1's`},
		{"malformed node ID", saID("demo", "app"), "app-1", codes.InvalidArgument, "is not <pod>.<namespace>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.id == saID("demo", "other") {
				h.pods.SetDefaultToken(tc.id, h.pods.DefaultToken(saID("demo", "app"))) // app-1's token with another certificate
			}
			for flavour, err := range refusals(t, h, tc.id, tc.node) {
				st := status.Convert(err)
				if st.Code() != tc.code || !strings.Contains(st.Message(), tc.reason) {
					t.Errorf("%s: got %v %q, want %v with %q", flavour, st.Code(), st.Message(), tc.code, tc.reason)
				}
			}
		})
	}
	if n := len(h.srv.Status()); n != 0 {
		t.Fatalf("%d nodes connected after refusals", n)
	}
	if v := testutil.ToFloat64(h.srv.metrics.refused.WithLabelValues("PermissionDenied")); v != 4 {
		t.Fatalf("refused PermissionDenied = %v, want 4", v)
	}
}

func TestNodeIDChangeIsRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.pods.Add("demo", "app-2", saID("demo", "app"))
	t.Run("sotw", func(t *testing.T) {
		c, _ := connectSotW(h, saID("demo", "app"), "app-1.demo")
		c.send(&discovery.DiscoveryRequest{Node: node("app-2.demo"), TypeUrl: resource.ClusterType})
		if st := status.Convert(c.refused()); st.Code() != codes.PermissionDenied ||
			st.Message() != `xds: stream of node "app-1.demo" sent a request as node "app-2.demo"` {
			t.Fatalf("got %v %q", st.Code(), st.Message())
		}
	})
	t.Run("delta", func(t *testing.T) {
		c := openDelta(h, saID("demo", "app"))
		c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
		c.next()
		c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-2.demo"), TypeUrl: resource.ClusterType})
		if st := status.Convert(c.refused()); st.Code() != codes.PermissionDenied {
			t.Fatalf("got %v %q", st.Code(), st.Message())
		}
	})
}

// The server verifies the chain itself, whatever the TLS layer accepted.
func TestPeerIDVerifiesTheChain(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	other, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	foreign, err := other.Sign(certs.SignRequest{CSR: csr, ID: saID("demo", "app")})
	if err != nil {
		t.Fatal(err)
	}
	ours := h.cert(saID("demo", "app")).Leaf
	inter := h.ca.Intermediate()

	cases := []struct {
		name string
		auth credentials.AuthInfo
		want string
	}{
		{"no TLS", nil, "xds: the stream is not over TLS"},
		{"no certificate", credentials.TLSInfo{}, "xds: a client certificate"},
		{"another CA", credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: foreign}}, "xds: client certificate: "},
		{"ours", credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{ours, inter}}}, ""},
	}
	for _, tc := range cases {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{}, AuthInfo: tc.auth})
		id, err := h.srv.peerID(ctx)
		switch {
		case tc.want == "" && (err != nil || id != saID("demo", "app")):
			t.Errorf("%s: got %v, %v", tc.name, id, err)
		case tc.want != "" && (status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), tc.want)):
			t.Errorf("%s: got %v, want Unauthenticated with %q", tc.name, err, tc.want)
		}
	}
	if _, err := h.srv.peerID(context.Background()); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no peer: got %v", err)
	}
}

// The interceptor leaves the other services on the port (the certificate
// service) alone.
func TestInterceptorOnlyGuardsADS(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	icpt := h.srv.StreamInterceptor()
	called := false
	handler := func(any, grpc.ServerStream) error { called = true; return nil }
	ss := &fakeServerStream{ctx: context.Background()}
	if err := icpt(nil, ss, &grpc.StreamServerInfo{FullMethod: "/weft.certificate.v1.CertificateService/Watch"}, handler); err != nil || !called {
		t.Fatalf("certificate service: err %v, handler called %v", err, called)
	}
	called = false
	err := icpt(nil, ss, &grpc.StreamServerInfo{FullMethod: discovery.AggregatedDiscoveryService_DeltaAggregatedResources_FullMethodName}, handler)
	if status.Code(err) != codes.Unauthenticated || called {
		t.Fatalf("ADS without certificate: err %v, handler called %v", err, called)
	}
}

type fakeServerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f *fakeServerStream) Context() context.Context { return f.ctx }

func TestNewRequires(t *testing.T) {
	full := requiredConfig(t)
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"generator", func(c *Config) { c.Generator = nil }, "xds: Config.Generator is required"},
		{"authorizer", func(c *Config) { c.Authorizer = nil }, "xds: Config.Authorizer is required"},
		{"bundle", func(c *Config) { c.Bundle = nil }, "xds: Config.Bundle is required: ADS streams verify client certificates themselves"},
		{"negative", func(c *Config) { c.Debounce = -1 }, "xds: Debounce -1ns and MaxDelay 0s must not be negative"},
	} {
		c := full
		tc.edit(&c)
		if _, err := New(c); err == nil || err.Error() != tc.want {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := New(full); err != nil {
		t.Fatal(err)
	}
}

// requiredConfig is a Config with only what New requires: a generator, a
// stream authorizer over a fake pod registry, and a CA's bundle.
func requiredConfig(t *testing.T) Config {
	t.Helper()
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	pods := streamauthtest.New()
	auth, err := streamauth.New(streamauth.Config{Authenticator: pods, Pods: pods, Bundle: ca.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	return Config{Generator: newFakeGen(), Authorizer: auth, Bundle: ca.Bundle()}
}
