package proxy

// Attacks on L7 authorization (docs/l7.md "Authorization at L7"): a client
// app's request that a policy denies must not reach the server's app.

import (
	"net/http"
	"testing"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// A DENY of GET /admin also denies HEAD /admin (Go's ServeMux serves a
// "GET /admin" pattern for HEAD, as most routers do) and a method sent in
// lower case ("get": a token Go's servers accept and pass on), which an
// app or framework may take for GET. Before the fix both reached the app.
func TestL7AuthorizeDenyMethodVariants(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin", func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Admin", "secret") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {})
	b.set(mux.ServeHTTP)
	deny := model.RBACFilter{Action: model.RBACDeny, Policies: []model.RBACPolicy{{Name: "demo/no-admin#0",
		Principals: []model.Principal{{Any: true}}, Permissions: []model.Permission{{Methods: []string{"GET"}, Paths: []model.PathMatch{{Exact: "/admin"}}}}}}}
	b.pod.cfg.Store(withRequestRules(b.port, model.HTTP1, deny))
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {b.endpoint()}}))
	c := httpClient(t, a)

	if code, _ := doReq(t, c, "GET", "/other"); code != 200 {
		t.Fatalf("GET /other: %d, want 200", code)
	}
	hits := b.hits.Load()
	for _, m := range []string{"GET", "HEAD", "get", "Get", "head"} {
		if code, _ := doReq(t, c, m, "/admin"); code != 403 {
			t.Errorf("%s /admin: %d, want 403", m, code)
		}
	}
	if got := b.hits.Load() - hits; got != 0 {
		t.Errorf("the app saw %d denied requests", got)
	}
	if got := b.pod.value("weft_sidecar_authz_denials_total", inbound, "demo/no-admin#0"); got != 5 {
		t.Errorf("denials: %v, want 5", got)
	}
	// An ALLOW of GET is not widened: HEAD stays denied.
	b.pod.cfg.Store(withRequestRules(b.port, model.HTTP1, allowAPI("GET")))
	if code, _ := doReq(t, c, "HEAD", "/api/x"); code != 403 {
		t.Errorf("HEAD /api/x under an ALLOW of GET: %d, want 403", code)
	}
}

// The h2 chain's connection-level filters (the fail-closed DENY-all of a
// rejected policy stays one) apply to the next request on a pooled
// connection, as its request rules do: before the fix a push that added
// one let every request on the open connection through.
func TestL7AuthorizeConnectionRBACAfterPush(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	b := startHTTPBackend(t, ca, "b")
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {b.endpoint()}}))
	c := httpClient(t, a)
	if code, _ := doReq(t, c, "GET", "/x"); code != 200 {
		t.Fatalf("GET /x: %d, want 200", code)
	}
	for _, rules := range [][]model.RBACFilter{nil, {allowAPI("GET")}} {
		cfg := withRequestRules(b.port, model.HTTP1, rules...)
		cfg.Inbound.Chains[0].RBAC = []model.RBACFilter{{Action: model.RBACDeny, Policies: []model.RBACPolicy{{Name: "demo/rejected#fail-closed",
			Principals: []model.Principal{{Any: true}}}}}}
		b.pod.cfg.Store(cfg)
		hits := b.hits.Load()
		if code, body := doReq(t, c, "GET", "/api/x"); code != 403 {
			t.Errorf("GET /api/x after a DENY-all push (request rules %d): %d %q, want 403", len(rules), code, body)
		}
		if got := b.hits.Load() - hits; got != 0 {
			t.Errorf("the app saw %d denied requests", got)
		}
		b.pod.cfg.Store(l7ServerConfig(b.port, model.HTTP1))
		if code, _ := doReq(t, c, "GET", "/x"); code != 200 {
			t.Fatalf("GET /x after the DENY-all went: %d, want 200", code)
		}
	}
	if got := b.pod.value("weft_sidecar_authz_denials_total", inbound, "demo/rejected#fail-closed"); got != 2 {
		t.Errorf("denials: %v, want 2", got)
	}
}
