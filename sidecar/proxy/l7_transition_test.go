package proxy

import (
	"testing"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestL7TransitionTCPProxyToHTTPCluster: while a Service port turns HTTP,
// the client sidecar can hold the new HTTP cluster (ALPN h2) while its
// chain is still a tcp_proxy (sidecar/xds accepts the mix: crossCheck).
// The bytes it copies must reach the server's app through the port's L4
// chain, not land in the server's h2 chain as if they were HTTP/2.
func TestL7TransitionTCPProxyToHTTPCluster(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	b.pod.cfg.Store(l7ServerConfig(b.port, model.HTTP1))
	cfg := l7ClientConfig(nil, map[string][]model.Endpoint{l7Route: {b.endpoint()}})
	// The chain of before: tcp_proxy to the cluster, no route configuration.
	cfg.Outbound.Chains[0].Target = model.Target{Cluster: l7Route}
	delete(cfg.Routes, l7Route)
	a := startL7Client(t, ca, cfg)
	if code, body := doReq(t, httpClient(t, a), "GET", "/l4"); code != 200 || body != "b HTTP/1.1 GET web.demo /l4 from=127.0.0.6 body=" {
		t.Fatalf("tcp_proxy to an HTTP cluster: %d %q", code, body)
	}
	if n := a.value("weft_sidecar_http_requests_total"); n != 0 {
		t.Fatalf("the client sidecar routed %v requests on a tcp_proxy chain", n)
	}
}

// TestBytesOnly: the L4 path never offers h2 and never changes the
// cluster's own configuration.
func TestBytesOnly(t *testing.T) {
	u := &model.UpstreamTLS{SNI: "x", ALPN: []string{"h2"}}
	if got := bytesOnly(u); len(got.ALPN) != 0 || got.SNI != "x" || len(u.ALPN) != 1 {
		t.Fatalf("bytesOnly(%+v) = %+v", u, got)
	}
	plain := &model.UpstreamTLS{ALPN: []string{"weft"}}
	if bytesOnly(plain) != plain {
		t.Fatal("a cluster without h2 is copied")
	}
}
