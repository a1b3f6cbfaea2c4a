package translate

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/controlplane/mesh"
)

// The registry budgets routes with mesh.Route.EncodedSizeBound (what a
// namespace's routes may cost every client of the Services they attach
// to); the bound is only worth its budget if the translator keeps to it.
// Every golden scenario, the routes an author could write to make the
// bound lie (every field at length, '%' everywhere, splitting prefix
// rewrites) and random routes: the Envoy routes of a route attached to one
// port never take more bytes than its bound, and the bound is not so loose
// that the budget would mean nothing (at most 4× what they take, plus one
// route's overhead).
func TestEncodedSizeBoundHolds(t *testing.T) {
	var routes []*mesh.Route
	for _, tc := range gammaCases {
		routes = append(routes, tc.routes...)
	}
	routes = append(routes, hostileRoute(), gammaRoute("demo", "one", 0, onServer80, mesh.RouteRule{Backends: to(backend(serverKey, 80, 1))}))
	rng := rand.New(rand.NewPCG(20, 26))
	for i := range 200 {
		routes = append(routes, randomRoute(rng, i))
	}
	checked := 0
	for _, r := range routes {
		// Alone, attached to port 80 of demo/server: what it adds is its
		// own Envoy routes (and the client is in demo, so consumer routes
		// of legacy are producer-free here: attach every route as a
		// producer of demo/server).
		r := *r
		r.Namespace, r.Parents = "demo", onServer80
		snap := mesh.NewSnapshot(0, gammaContents(&r))
		gen := translatorFor(snap)
		gen.HTTPRouting = true
		res := generateWith(t, gen, snap, "client-7d9f.demo")
		rc := routeConfig(res, "outbound|80|server.demo")
		if rc == nil {
			t.Fatalf("%s: no route configuration", r.Name)
		}
		got := 0
		for _, er := range rc.GetVirtualHosts()[0].GetRoutes() {
			got += proto.Size(er) + 4 // its tag and length in the virtual host
		}
		bound := r.EncodedSizeBound()
		if direct := routeConfig(res, "outbound|80|server.demo|direct"); proto.Size(direct) > mesh.PortRoutesBound(serverKey) {
			t.Errorf("%s: the port's direct route configuration takes %d bytes, over mesh.PortRoutesBound %d", r.Name, proto.Size(direct), mesh.PortRoutesBound(serverKey))
		}
		if got > bound {
			t.Errorf("%s: its Envoy routes take %d bytes, over its bound %d", r.Name, got, bound)
		}
		if testing.Verbose() && got > 0 {
			t.Logf("%s: %d bytes, bound %d (%.1f×)", r.Name, got, bound, float64(bound)/float64(got))
		}
		if got > 0 && bound > 4*got+1024 {
			t.Errorf("%s: bound %d for %d bytes: too loose to budget with", r.Name, bound, got)
		}
		if got > 0 {
			checked++
		}
	}
	if checked < 150 {
		t.Fatalf("only %d routes were translated into Envoy routes", checked)
	}
}

// hostileRoute has every field the Gateway API lets an author fill, at the
// lengths it allows, each header value all '%' (sent doubled).
func hostileRoute() *mesh.Route {
	long := func(c string, n int) string { return strings.Repeat(c, n) }
	var hdrs, qs, edits []mesh.NameValue
	for i := range 16 {
		hdrs = append(hdrs, mesh.NameValue{Name: fmt.Sprintf("x-h%02d-%s", i, long("h", 200)), Value: long("v", 4096)})
		qs = append(qs, mesh.NameValue{Name: fmt.Sprintf("q%02d%s", i, long("q", 200)), Value: long("v", 1024)})
		edits = append(edits, mesh.NameValue{Name: fmt.Sprintf("x-e%02d-%s", i, long("e", 200)), Value: long("%", 4096)})
	}
	var matches []mesh.RouteMatch
	for i := range 8 {
		matches = append(matches, mesh.RouteMatch{PathType: mesh.PathPrefix, Path: fmt.Sprintf("/p%d/%s", i, long("a", 1000)),
			Method: "OPTIONS", Headers: hdrs, QueryParams: qs})
	}
	mod := &mesh.HeaderModifier{Set: edits, Add: edits, Remove: []string{long("r", 256), long("s", 256)}}
	return gammaRoute("demo", long("n", 253), 0, onServer80,
		mesh.RouteRule{Matches: matches, Backends: to(backend(serverKey, 80, 3), backend(canaryKey, 80, 1)),
			RequestHeaders: mod, ResponseHeaders: mod, Timeout: time.Hour, BackendTimeout: time.Minute,
			Rewrite: &mesh.Rewrite{Hostname: long("h", 253), Path: &mesh.PathModifier{Type: mesh.ReplacePrefixMatch, Value: "/" + long("w", 1000) + "/"}}},
		mesh.RouteRule{Matches: matches,
			Redirect: &mesh.Redirect{Scheme: "https", Hostname: long("h", 253), Port: 65535, StatusCode: 308,
				Path: &mesh.PathModifier{Type: mesh.ReplacePrefixMatch, Value: "/" + long("w", 1000)}}},
	)
}

// randomRoute is a route of random shape over the fields the translator
// reads.
func randomRoute(rng *rand.Rand, i int) *mesh.Route {
	strOf := func(alphabet string, max int) string {
		b := make([]byte, 1+rng.IntN(max))
		for j := range b {
			b[j] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	str := func(max int) string { return strOf("abcxyz%/-_.0", max) }
	seg := func(max int) string { return strOf("abcxyz-_.0", max) } // a path element
	nvs := func(n, max int) []mesh.NameValue {
		var out []mesh.NameValue
		for range rng.IntN(n + 1) {
			out = append(out, mesh.NameValue{Name: "x-" + str(16), Value: str(max)})
		}
		return out
	}
	mod := func() *mesh.HeaderModifier {
		if rng.IntN(2) == 0 {
			return nil
		}
		return &mesh.HeaderModifier{Set: nvs(3, 64), Add: nvs(3, 64), Remove: []string{str(16)}}
	}
	path := func() *mesh.PathModifier {
		switch rng.IntN(3) {
		case 0:
			return nil
		case 1:
			return &mesh.PathModifier{Type: mesh.ReplaceFullPath, Value: "/" + str(32)}
		}
		return &mesh.PathModifier{Type: mesh.ReplacePrefixMatch, Value: "/" + str(32)}
	}
	var rules []mesh.RouteRule
	for range 1 + rng.IntN(4) {
		var rule mesh.RouteRule
		for range 1 + rng.IntN(4) {
			m := mesh.RouteMatch{PathType: mesh.PathPrefix, Path: "/" + seg(12) + "/" + seg(12), Headers: nvs(2, 32), QueryParams: nvs(2, 32)}
			switch rng.IntN(4) {
			case 0:
				m.PathType = mesh.PathExact
			case 1:
				m.Path = "/"
			}
			if rng.IntN(2) == 0 {
				m.Method = "GET"
			}
			rule.Matches = append(rule.Matches, m)
		}
		rule.RequestHeaders, rule.ResponseHeaders = mod(), mod()
		if rng.IntN(5) == 0 {
			rule.Redirect = &mesh.Redirect{Hostname: str(20), Path: path(), StatusCode: 301}
		} else {
			rule.Backends = to(backend(serverKey, 80, 1+rng.Uint32N(100)))
			if rng.IntN(2) == 0 {
				rule.Backends = append(rule.Backends, backend(canaryKey, 80, 1+rng.Uint32N(100)))
			}
			if rng.IntN(2) == 0 {
				rule.Rewrite = &mesh.Rewrite{Hostname: str(20), Path: path()}
			}
			rule.Timeout = time.Duration(rng.IntN(100)) * time.Second
		}
		rules = append(rules, rule)
	}
	return gammaRoute("demo", fmt.Sprintf("random-%d", i), 0, onServer80, rules...)
}
