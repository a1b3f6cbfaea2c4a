package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Edges of the HTTP data plane's wiring to the configuration (l7.go): what
// a cluster that leaves settings out gets, and what a push of a cluster's
// outlier detection and retry budget keeps or changes.

// TestL7ClusterWithoutOptionalSettings: a cluster that sets neither a
// connect timeout nor a retry budget (both optional in xDS) connects
// within the proxy's ConnectTimeout and serves requests.
func TestL7ClusterWithoutOptionalSettings(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	cfg := l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {b.endpoint()}})
	cl := cfg.Clusters[l7Route]
	cl.ConnectTimeout, cl.RetryBudget, cl.Outlier = 0, nil, nil
	a := startL7Client(t, ca, cfg)
	c := httpClient(t, a)
	for i := range 3 {
		if code, body := doReq(t, c, "GET", "/x"); code != 200 || !strings.HasPrefix(body, "b HTTP/1.1 GET web.demo /x") {
			t.Fatalf("GET %d: %d %q", i, code, body)
		}
	}
}

// failuresOf is what A's balancer for l7Route knows of the endpoint at i:
// its consecutive failures (-1 with no such endpoint).
func failuresOf(a *pod, i int) int {
	a.p.l7.mu.Lock()
	defer a.p.l7.mu.Unlock()
	mc := a.p.l7.out[l7Route]
	if mc == nil {
		return -1
	}
	eps := mc.c.Balancer.State()
	if i >= len(eps) {
		return -1
	}
	return eps[i].Failures
}

// TestL7OutlierSettingsAcrossPushes: a push that leaves a cluster's outlier
// detection as it was (equal settings, as every push carries them anew)
// keeps what the balancer has learned of its endpoints, so an endpoint
// failing across pushes is still ejected at its fifth consecutive 5xx; a
// push that changes the settings, removes them or adds them starts afresh
// under the new ones.
func TestL7OutlierSettingsAcrossPushes(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	b.set(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	push := func(mod func(*model.OutlierDetection) *model.OutlierDetection) *model.Config {
		cfg := l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {b.endpoint()}})
		cl := cfg.Clusters[l7Route]
		cl.Outlier = mod(cl.Outlier)
		return cfg
	}
	same := func(o *model.OutlierDetection) *model.OutlierDetection { return o }
	a := startL7Client(t, ca, push(same))
	c := httpClient(t, a)
	fail := func(step string, want int) {
		t.Helper()
		if code, _ := doReq(t, c, "GET", "/"); code != 503 {
			t.Fatalf("%s: status %d, want the backend's 503", step, code)
		}
		if got := failuresOf(a, 0); got != want {
			t.Fatalf("%s: the endpoint has %d consecutive failures, want %d", step, got, want)
		}
	}
	fail("first request", 1)
	fail("second request", 2)

	// Equal settings in a new configuration: the record is kept.
	a.cfg.Store(push(same))
	fail("after a push of equal outlier settings", 3)
	a.cfg.Store(push(same))
	fail("after a second push of equal outlier settings", 4)

	// Changed settings: a balancer under the new ones, with no record.
	a.cfg.Store(push(func(o *model.OutlierDetection) *model.OutlierDetection { o.Consecutive5xx = 7; return o }))
	fail("after a push that changes consecutive_5xx", 1)
	// Removed, then added back: each a change.
	a.cfg.Store(push(func(*model.OutlierDetection) *model.OutlierDetection { return nil }))
	fail("after a push that removes outlier detection", 1)
	a.cfg.Store(push(func(*model.OutlierDetection) *model.OutlierDetection { return nil }))
	fail("after a second push without outlier detection", 2)
	a.cfg.Store(push(same))
	fail("after a push that adds outlier detection back", 1)
}

// TestL7RetryBudgetAcrossPushes: a push that changes a cluster's retry
// budget applies to the next request. Under a budget that allows no
// retry, a request that meets the failing endpoint gets its 503; once
// the budget is Envoy's default again, it is retried on the good one.
func TestL7RetryBudgetAcrossPushes(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	good, bad := startHTTPBackend(t, ca, "good"), startHTTPBackend(t, ca, "bad")
	bad.set(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})
	config := func(budget *model.RetryBudget) *model.Config {
		route := toCluster(l7Route)
		route.Retry = &model.RetryPolicy{On: model.RetryRetriableStatusCodes, NumRetries: 1, PreviousHosts: true, StatusCodes: []int{503}}
		cfg := l7ClientConfig([]*model.Route{route}, map[string][]model.Endpoint{l7Route: {good.endpoint(), bad.endpoint()}})
		cfg.Clusters[l7Route].Outlier = nil // keep the bad one in rotation
		cfg.Clusters[l7Route].RetryBudget = budget
		return cfg
	}
	// No retry: at most 0.001 % of the requests in flight, and no minimum.
	none := &model.RetryBudget{BudgetPercent: 0.001}
	a := startL7Client(t, ca, config(none))
	c := httpClient(t, a)
	// untilBad sends requests until one reaches the failing endpoint (the
	// balancer picks by chance) and returns that request's answer.
	untilBad := func(step string) (int, string) {
		t.Helper()
		for range 200 {
			before := bad.hits.Load()
			code, body := doReq(t, c, "GET", "/")
			if bad.hits.Load() > before {
				return code, body
			}
		}
		t.Fatalf("%s: 200 requests and none reached the failing endpoint", step)
		return 0, ""
	}
	if code, body := untilBad("no retry budget"); code != 503 {
		t.Fatalf("with no retry budget: %d %q, want the failing endpoint's 503", code, body)
	}
	a.cfg.Store(config(&model.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}))
	if code, body := untilBad("default retry budget"); code != 200 || !strings.HasPrefix(body, "good ") {
		t.Fatalf("with a retry budget: %d %q, want good's 200 (retried)", code, body)
	}
	a.cfg.Store(config(none))
	if code, body := untilBad("no retry budget again"); code != 503 {
		t.Fatalf("with no retry budget again: %d %q, want the failing endpoint's 503", code, body)
	}
}

// TestL7ConnectionDenyFiltersDecideFirst: a request on a pooled mesh
// connection meets its chain's connection-level filters as the current
// configuration has them, DENY filters before ALLOW filters (as the
// network filters are run, whatever their order in the chain): a peer
// that a DENY filter refuses and no ALLOW filter admits is refused, and
// the denial is counted under the DENY filter's policy.
func TestL7ConnectionDenyFiltersDecideFirst(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {b.endpoint()}}))
	c := httpClient(t, a)
	if code, _ := doReq(t, c, "GET", "/x"); code != 200 {
		t.Fatalf("GET /x: %d, want 200", code)
	}
	cfg := l7ServerConfig(b.port, model.HTTP1)
	cfg.Inbound.Chains[0].RBAC = []model.RBACFilter{
		{Action: model.RBACAllow, Policies: []model.RBACPolicy{{Name: "demo/others#0",
			Principals: []model.Principal{{Exact: workloadID("demo", "other").String()}}}}},
		{Action: model.RBACDeny, Policies: []model.RBACPolicy{{Name: "demo/rejected#fail-closed",
			Principals: []model.Principal{{Any: true}}}}},
	}
	b.pod.cfg.Store(cfg)
	hits := b.hits.Load()
	if code, body := doReq(t, c, "GET", "/x"); code != 403 {
		t.Fatalf("GET /x after the push: %d %q, want 403", code, body)
	}
	if got := b.hits.Load() - hits; got != 0 {
		t.Errorf("the app saw %d denied requests", got)
	}
	if got := b.pod.value("weft_sidecar_authz_denials_total", inbound, "demo/rejected#fail-closed"); got != 1 {
		t.Errorf("denials under the DENY filter's policy: %v, want 1", got)
	}
	if got := b.pod.value("weft_sidecar_authz_denials_total", inbound, ""); got != 0 {
		t.Errorf("denials under no policy (the ALLOW filter's): %v, want 0", got)
	}
}

// TestL7RequestDenyFiltersDecideFirst: a request meets its chain's HTTP
// RBAC filters DENY first, then ALLOW, whatever their order in the chain
// (as the network filters): a request that a DENY filter refuses and no
// ALLOW filter admits is refused, and the denial is counted under the
// DENY filter's policy, not the ALLOW filter's (no policy).
func TestL7RequestDenyFiltersDecideFirst(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	b.pod.cfg.Store(withRequestRules(b.port, model.HTTP1, allowAPI("GET"), denyPath("demo/no-admin#0", "/admin")))
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {b.endpoint()}}))
	c := httpClient(t, a)
	if code, _ := doReq(t, c, "GET", "/api/x"); code != 200 {
		t.Fatalf("GET /api/x: %d, want 200", code)
	}
	hits := b.hits.Load()
	if code, body := doReq(t, c, "GET", "/admin"); code != 403 || body != "weft: RBAC: access denied\n" {
		t.Fatalf("GET /admin: %d %q, want 403", code, body)
	}
	if got := b.hits.Load() - hits; got != 0 {
		t.Errorf("the app saw %d denied requests", got)
	}
	if got := b.pod.value("weft_sidecar_authz_denials_total", inbound, "demo/no-admin#0"); got != 1 {
		t.Errorf("denials under the DENY filter's policy: %v, want 1", got)
	}
	if got := b.pod.value("weft_sidecar_authz_denials_total", inbound, ""); got != 0 {
		t.Errorf("denials under no policy (the ALLOW filter's): %v, want 0", got)
	}
}

// TestL7PushKeepsTheAppConnections: a configuration push that keeps an
// inbound cluster keeps its state: the server sidecar's connections to the
// app (a request after the push, from a new peer or on the pooled mesh
// connection, reuses the app connection of before) and the peers' mesh
// connections (not drained by the push).
func TestL7PushKeepsTheAppConnections(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	b.set(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.RemoteAddr) })
	cfg := l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {b.endpoint()}})
	a := startL7Client(t, ca, cfg)
	ca1 := httpClient(t, a)
	code, first := doReq(t, ca1, "GET", "/x")
	if code != 200 {
		t.Fatalf("GET /x: %d %q", code, first)
	}
	b.pod.cfg.Store(l7ServerConfig(b.port, model.HTTP1)) // the same cluster, a new configuration
	// A second client sidecar's connection makes B take the push.
	c := startL7Client(t, ca, cfg)
	if code, from := doReq(t, httpClient(t, c), "GET", "/x"); code != 200 || from != first {
		t.Errorf("after the push, a new peer's request reached the app from %q (%d), want the app connection of before, %q", from, code, first)
	}
	if code, from := doReq(t, ca1, "GET", "/x"); code != 200 || from != first {
		t.Errorf("after the push, the first peer's request reached the app from %q (%d), want %q", from, code, first)
	}
	if got := b.pod.counter("connections_total", inbound); got != 2 {
		t.Errorf("B accepted %v connections, want 2 (one per peer)", got)
	}
}

// TestL7TunnelIdleCountsFromTheLastByte: an upgraded connection (a tunnel
// through the HTTP data plane) is idle from its last byte: the app's
// half-close moves none, so a tunnel whose server stays silent after it
// is closed IdleTimeout after the last byte, not after the half-close.
// A's clock is a fake one, stepped: 6 s after the last byte the app
// half-closes, and 6 s later (at least 10 s after the sidecar's last
// stamp of progress, 6 s after the half-close) IdleTimeout 10 s has run
// out.
func TestL7TunnelIdleCountsFromTheLastByte(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	sawEOF, done := make(chan struct{}, 1), make(chan struct{})
	b.set(func(w http.ResponseWriter, r *http.Request) {
		echoUpgrade(w, nil, func(net.Conn) {
			sawEOF <- struct{}{}
			<-done // silent, and open, after the half-close
		})
	})
	clk := testutil.FakeClock(t)
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {b.endpoint()}}),
		func(c *Config) { c.Clock, c.IdleTimeout = clk, 10*time.Second })
	t.Cleanup(func() { close(done) }) // before the pods stop
	// step moves A's clock once its idle sweeper waits on it (its timer is
	// the only one A arms here).
	step := func(d time.Duration) {
		testutil.Eventually(t, "A's idle sweeper to wait on its clock", clk.HasWaiters)
		clk.Step(d)
	}

	c := appConn(t, a)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: web.demo\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("echo upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "words")
	got := make([]byte, len("WORDS"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "WORDS" {
		t.Fatalf("through the tunnel: %q %v", got, err)
	}
	// The sidecar stamps a write's progress right after the write: the
	// first steps, each taken once the sweeper has run, leave that stamp
	// at most 2 s after the last byte whatever the scheduling.
	step(time.Second)
	step(time.Second)
	step(4 * time.Second)
	c.(*net.TCPConn).CloseWrite()
	testutil.Receive(t, sawEOF, "the server app to see the half-close")
	step(6 * time.Second)
	if rest, err := io.ReadAll(br); err != nil && !errors.Is(err, syscall.ECONNRESET) || len(rest) != 0 {
		t.Fatalf("after IdleTimeout from the last byte: read %q, %v; want the connection closed", rest, err)
	}
	a.waitCounter(1, "timeouts", outbound, timeoutIdle)
}
