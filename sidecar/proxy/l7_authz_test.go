package proxy

// L7 authorization on the server side ([l7] #19, docs/l7.md "Authorization
// at L7"): the inbound h2 chain's HTTP RBAC filters decide each request
// for the peer's SPIFFE ID, the port, the method and the path.

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

var frontendID = workloadID("shop", "frontend")

// withRequestRules is l7ServerConfig(port, proto) whose h2 chain has
// filters as its HTTP RBAC filters.
func withRequestRules(port uint16, proto model.HTTPProtocol, filters ...model.RBACFilter) *model.Config {
	c := l7ServerConfig(port, proto)
	c.Inbound.Chains[0].HTTPRBAC = filters
	return c
}

// allowAPI allows the frontend's GET (and methods) on /api/* and nothing
// else.
func allowAPI(methods ...string) model.RBACFilter {
	return model.RBACFilter{Action: model.RBACAllow, Policies: []model.RBACPolicy{{Name: "demo/api#0",
		Principals:  []model.Principal{{Exact: frontendID.String()}},
		Permissions: []model.Permission{{Methods: methods, Paths: []model.PathMatch{{Prefix: "/api/"}}}}}}}
}

func denyPath(name, path string) model.RBACFilter {
	return model.RBACFilter{Action: model.RBACDeny, Policies: []model.RBACPolicy{{Name: name,
		Principals: []model.Principal{{Any: true}}, Permissions: []model.Permission{{Paths: []model.PathMatch{{Exact: path}}}}}}}
}

// An ALLOW of GET /api/* admits GET /api/x and refuses POST /api/x and GET
// /admin with 403 (the app sees neither; the denials are counted); a DENY
// of one path beats the ALLOW; path tricks are refused 400 before any rule;
// a policy change applies to the next request on the same connection.
func TestL7AuthorizeRequests(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	b.pod.cfg.Store(withRequestRules(b.port, model.HTTP1, denyPath("demo/no-secret#0", "/api/secret"), allowAPI("GET")))
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {b.endpoint()}}))
	if a.id != frontendID {
		t.Fatalf("client identity %s", a.id)
	}
	c := httpClient(t, a)
	denials := func(policy string) float64 { return b.pod.value("weft_sidecar_authz_denials_total", inbound, policy) }

	if code, body := doReq(t, c, "GET", "/api/x?q=1"); code != 200 || !strings.HasPrefix(body, "b HTTP/1.1 GET web.demo /api/x?q=1 ") {
		t.Fatalf("GET /api/x: %d %q, want 200 from the app", code, body)
	}
	hits := b.hits.Load()
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"POST", "/api/x", 403, "weft: RBAC: access denied\n"},
		{"GET", "/admin", 403, "weft: RBAC: access denied\n"},
		{"GET", "/api/secret", 403, "weft: RBAC: access denied\n"},
		{"GET", "/api/../admin", 400, ""},
		{"GET", "//admin", 400, ""},
		{"GET", "/api/./x", 400, ""},
		{"GET", "/api%2F..%2Fadmin", 400, ""},
		{"GET", "/api%2f..%2fadmin", 400, ""},
		{"GET", "/api/%2e%2e/admin", 400, ""},
		{"GET", "/api%5C..%5Cadmin", 400, ""},
	} {
		code, body := doReq(t, c, tc.method, tc.path)
		if code != tc.code || tc.body != "" && body != tc.body || tc.code == 400 && !strings.HasPrefix(body, "weft: bad request: ") {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, code, body, tc.code, tc.body)
		}
	}
	if got := b.hits.Load(); got != hits {
		t.Errorf("the app saw %d refused requests", got-hits)
	}
	if got := denials(""); got != 2 {
		t.Errorf("denials by no ALLOW policy: %v, want 2", got)
	}
	if got := denials("demo/no-secret#0"); got != 1 {
		t.Errorf("denials by demo/no-secret#0: %v, want 1", got)
	}
	if got := b.pod.value("weft_sidecar_http_requests_total", inbound, "inbound|"+strconv.Itoa(int(b.port)), "", a.id.String(), "4xx", ""); got != 10 {
		t.Errorf("inbound 4xx requests: %v, want 10", got)
	}

	// The client's pooled connection to B stays; B's next configuration
	// allows POST too, and the next request on it is decided by it.
	b.pod.cfg.Store(withRequestRules(b.port, model.HTTP1, allowAPI("GET", "POST")))
	if code, body := doReq(t, c, "POST", "/api/x"); code != 200 {
		t.Fatalf("POST /api/x after the policy change: %d %q, want 200", code, body)
	}
	if got := b.pod.counter("connections_total", inbound); got != 1 {
		t.Errorf("B accepted %v connections, want the one pooled connection", got)
	}

	// Without request rules, every request reaches the app, paths as sent.
	b.pod.cfg.Store(l7ServerConfig(b.port, model.HTTP1))
	if code, body := doReq(t, c, "GET", "//admin"); code != 200 || !strings.Contains(body, " //admin ") {
		t.Fatalf("GET //admin without rules: %d %q, want 200 from the app", code, body)
	}
}

// A gRPC call that no rule allows fails PERMISSION_DENIED, and the app
// never sees it; one a rule allows goes through.
func TestL7AuthorizeGRPC(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	g := startGRPCBackend(t, ca)
	port := g.pod.cfg.Load().Inbound.Chains[0].Match.DestPort
	g.pod.cfg.Store(withRequestRules(port, model.HTTP2, allowAPI("POST")))
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {{Addr: g.pod.inboundAddr()}}}))

	call := func() error {
		cc := grpcClient(t, a.outboundAddr().String())
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	err := call()
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "weft: RBAC: access denied") {
		t.Fatalf("call = %v, want PERMISSION_DENIED", err)
	}
	if n := g.calls.Load(); n != 0 {
		t.Errorf("the app saw %d denied calls", n)
	}
	if got := g.pod.value("weft_sidecar_authz_denials_total", inbound, ""); got != 1 {
		t.Errorf("denials: %v, want 1", got)
	}
	// Allowed by path: gRPC calls are POSTs of /<service>/<method>.
	g.pod.cfg.Store(withRequestRules(port, model.HTTP2, model.RBACFilter{Action: model.RBACAllow, Policies: []model.RBACPolicy{{Name: "demo/health#0",
		Principals:  []model.Principal{{Prefix: "spiffe://" + td.Name() + "/ns/shop/"}},
		Permissions: []model.Permission{{Methods: []string{"POST"}, Paths: []model.PathMatch{{Exact: "/grpc.health.v1.Health/Check"}}}}}}}))
	if err := call(); err != nil {
		t.Fatalf("allowed call: %v", err)
	}
	if n := g.calls.Load(); n != 1 {
		t.Errorf("the app saw %d calls, want 1", n)
	}
}

// Connection-level RBAC is unchanged by request rules: the h2 chain's
// network filter still refuses a peer it does not allow before any request
// (the client sidecar answers 502 or 503), and the rules of the h2 chain do
// not reach the port's L4 chain.
func TestL7AuthorizeKeepsConnectionRBAC(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	cfg := withRequestRules(b.port, model.HTTP1, allowAPI("GET"))
	cfg.Inbound.Chains[0].RBAC = []model.RBACFilter{{Action: model.RBACAllow, Policies: []model.RBACPolicy{{Name: "demo/others#0",
		Principals: []model.Principal{{Exact: workloadID("demo", "other").String()}}}}}}
	b.pod.cfg.Store(cfg)
	for _, fc := range cfg.Inbound.Chains[1:] {
		if len(fc.HTTPRBAC) != 0 {
			t.Fatalf("chain %s has request rules", fc.Name)
		}
	}
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {b.endpoint()}}))
	c := httpClient(t, a)
	if code, body := doReq(t, c, "GET", "/api/x"); code != http.StatusBadGateway && code != http.StatusServiceUnavailable {
		t.Fatalf("GET /api/x from a peer the connection RBAC refuses: %d %q, want 502 or 503", code, body)
	}
	if b.hits.Load() != 0 {
		t.Error("the app saw a request of a refused connection")
	}
	if got := b.pod.value("weft_sidecar_authz_denials_total", inbound, ""); got < 1 {
		t.Errorf("connection denials: %v, want at least 1", got)
	}
}
