package proxy

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// TestL7GRPCUnavailableRetriedElsewhere: with the route the translator
// emits by default (retry_on connect-failure, refused-stream, unavailable,
// retriable-status-codes 503; two retries on other hosts), a replica that
// answers every call UNAVAILABLE costs the caller nothing: each such call
// is retried on another replica (gRPC calls are POSTs: UNAVAILABLE is
// retried whatever the method, as gRPC says the server did not process it).
func TestL7GRPCUnavailableRetriedElsewhere(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	backends, eps := startGRPCBackends(t, ca, 3)
	broken := startGRPCBackendErr(t, ca, status.Error(codes.Unavailable, "broken replica"))
	eps = append(eps, model.Endpoint{Addr: broken.pod.inboundAddr()})
	route := toCluster(l7Route)
	route.Retry = &model.RetryPolicy{
		On:         model.RetryConnectFailure | model.RetryRefusedStream | model.RetryUnavailable | model.RetryRetriableStatusCodes,
		NumRetries: 2, PreviousHosts: true, StatusCodes: []int{503},
	}
	cfg := l7ClientConfig([]*model.Route{route}, map[string][]model.Endpoint{l7Route: eps})
	// grpcCalls' four callers can all be answered UNAVAILABLE at once, and
	// the fixture's budget (at least 3 retries in flight) would then refuse
	// the fourth retry, as it should (TestRetryBudget's subject): its floor
	// is the callers' number here, so every UNAVAILABLE may be retried.
	cfg.Clusters[l7Route].RetryBudget = &model.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 4}
	a := startL7Client(t, ca, cfg)
	counts := grpcCalls(t, a, 300, backends) // fails on any failed call
	t.Logf("calls per healthy backend %v, UNAVAILABLE answers %d", counts, broken.calls.Load())
	if broken.calls.Load() == 0 {
		t.Fatal("the broken replica was never tried: the test proves nothing")
	}
	if n := a.value("weft_sidecar_http_retries_total", "default", l7Route); n < float64(broken.calls.Load()) {
		t.Errorf("A retried %v times for %d UNAVAILABLE answers", n, broken.calls.Load())
	}
}
