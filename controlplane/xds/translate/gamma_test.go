package translate

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/controlplane/xds"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/internal/testutil/golden"
)

var (
	serverKey  = mesh.Key{Namespace: "demo", Name: "server"}
	canaryKey  = mesh.Key{Namespace: "demo", Name: "canary"}
	gammaEpoch = testutil.Fixed
)

// withAndWithoutRoutes generates nodeID's resources from c with HTTP
// routing on, first without c's routes, then with them, and hands each to
// check.
func withAndWithoutRoutes(t *testing.T, c mesh.Contents, nodeID string, check func(withRoutes bool, res xds.Resources)) {
	t.Helper()
	for _, withRoutes := range []bool{false, true} {
		cc := c
		if !withRoutes {
			cc.Routes = nil
		}
		check(withRoutes, generateHTTP(t, mesh.NewSnapshot(0, cc), nodeID))
	}
}

// gammaContents is the golden mesh with Service demo/canary (the v2 pod,
// port http 80 → 8080) and routes.
func gammaContents(routes ...*mesh.Route) mesh.Contents {
	c := meshContents(v1alpha1.OutboundAllowAny)
	var server *mesh.Service
	for _, s := range c.Services {
		if s.Namespace == "demo" && s.Name == "server" {
			server = s
		}
	}
	var eps []mesh.Endpoint
	for _, ep := range server.Endpoints {
		if ep.Pod != nil && ep.Pod.Name == "server-v2-8e2a" {
			eps = append(eps, ep)
		}
	}
	c.Services = append(slices.Clone(c.Services), &mesh.Service{
		Namespace: "demo", Name: "canary", Type: "ClusterIP", ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.21")},
		Selector:  map[string]string{"app": "server", "version": "v2"},
		Ports:     []mesh.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: "TCP", AppProtocol: mesh.AppProtocolHTTP}},
		Endpoints: eps, Identities: identities(eps),
	})
	c.Routes = routes
	return c
}

func gammaRoute(ns, name string, created time.Duration, parents []mesh.RouteParent, rules ...mesh.RouteRule) *mesh.Route {
	for i := range rules {
		rules[i].Index = i
		if rules[i].Matches == nil {
			rules[i].Matches = []mesh.RouteMatch{{PathType: mesh.PathPrefix, Path: "/"}}
		}
	}
	return &mesh.Route{Kind: mesh.KindHTTPRoute, Namespace: ns, Name: name, Created: gammaEpoch.Add(created), Parents: parents, Rules: rules}
}

func to(backends ...mesh.Backend) []mesh.Backend { return backends }

func backend(k mesh.Key, port uint16, weight uint32) mesh.Backend {
	return mesh.Backend{Service: k, Port: port, Weight: weight}
}

func prefixMatch(p string) []mesh.RouteMatch {
	return []mesh.RouteMatch{{PathType: mesh.PathPrefix, Path: p}}
}

var onServer80 = []mesh.RouteParent{{Service: serverKey, Port: 80}}

// gammaCases are the GAMMA golden scenarios: testdata/golden/<name>/routes.yaml
// (and listeners.yaml where listeners is set).
var gammaCases = []struct {
	name, node string
	routes     []*mesh.Route
	listeners  bool
}{
	// A producer route: exact path, a prefix with method, header and query
	// parameter and timeouts, and "/" for the rest; the pods' addresses
	// keep the default route (listeners: outbound|80|server.demo|8080 →
	// route configuration outbound|80|server.demo|direct).
	{"gamma-producer", "client-7d9f.demo", []*mesh.Route{gammaRoute("demo", "server-routes", 0, onServer80,
		mesh.RouteRule{Matches: []mesh.RouteMatch{{PathType: mesh.PathExact, Path: "/healthz"}}, Backends: to(backend(serverKey, 80, 1))},
		mesh.RouteRule{Matches: []mesh.RouteMatch{{PathType: mesh.PathPrefix, Path: "/api", Method: "GET",
			Headers: []mesh.NameValue{{Name: "x-version", Value: "v2"}}, QueryParams: []mesh.NameValue{{Name: "debug", Value: "1"}}}},
			Backends: to(backend(canaryKey, 80, 1)), Timeout: 5 * time.Second, BackendTimeout: time.Second},
		mesh.RouteRule{Backends: to(backend(serverKey, 80, 1))},
	)}, true},
	// Weights: 90/10; a backend of weight 0 and one that is not in the mesh
	// (default/kubernetes) are left out.
	{"gamma-weights", "client-7d9f.demo", []*mesh.Route{gammaRoute("demo", "split", 0, []mesh.RouteParent{{Service: serverKey}},
		mesh.RouteRule{Backends: to(backend(serverKey, 80, 90), backend(canaryKey, 80, 10), backend(canaryKey, 80, 0),
			backend(mesh.Key{Namespace: "default", Name: "kubernetes"}, 443, 5))},
	)}, false},
	// Every filter.
	{"gamma-filters", "client-7d9f.demo", []*mesh.Route{gammaRoute("demo", "filters", 0, onServer80,
		mesh.RouteRule{Matches: prefixMatch("/headers"), Backends: to(backend(serverKey, 80, 1)),
			RequestHeaders:  &mesh.HeaderModifier{Set: []mesh.NameValue{{Name: "x-set", Value: "1"}}, Add: []mesh.NameValue{{Name: "x-add", Value: "2"}}, Remove: []string{"x-remove"}},
			ResponseHeaders: &mesh.HeaderModifier{Set: []mesh.NameValue{{Name: "x-header-set", Value: "v1"}}, Remove: []string{"server"}}},
		mesh.RouteRule{Matches: []mesh.RouteMatch{{PathType: mesh.PathExact, Path: "/redirect"}},
			Redirect: &mesh.Redirect{Scheme: "https", Hostname: "example.org", Port: 8443, StatusCode: 301, Path: &mesh.PathModifier{Type: mesh.ReplaceFullPath, Value: "/new"}}},
		mesh.RouteRule{Matches: prefixMatch("/old"),
			Redirect: &mesh.Redirect{Path: &mesh.PathModifier{Type: mesh.ReplacePrefixMatch, Value: "/new"}}},
		mesh.RouteRule{Matches: prefixMatch("/strip"), Backends: to(backend(serverKey, 80, 1)),
			Rewrite: &mesh.Rewrite{Hostname: "internal.example", Path: &mesh.PathModifier{Type: mesh.ReplacePrefixMatch, Value: "/"}}},
		mesh.RouteRule{Matches: prefixMatch("/full"), Backends: to(backend(serverKey, 80, 1)),
			Rewrite: &mesh.Rewrite{Path: &mesh.PathModifier{Type: mesh.ReplaceFullPath, Value: "/one"}}},
	)}, false},
	// Precedence across two routes: the exact path, the longer prefix,
	// then equal "/" matches by age (older first).
	{"gamma-precedence", "client-7d9f.demo", []*mesh.Route{
		gammaRoute("demo", "a-newer", time.Hour, onServer80,
			mesh.RouteRule{Backends: to(backend(canaryKey, 80, 1))},
			mesh.RouteRule{Matches: prefixMatch("/api/v1"), Backends: to(backend(canaryKey, 80, 1))}),
		gammaRoute("demo", "b-older", 0, onServer80,
			mesh.RouteRule{Backends: to(backend(serverKey, 80, 1))},
			mesh.RouteRule{Matches: []mesh.RouteMatch{{PathType: mesh.PathExact, Path: "/api"}, {PathType: mesh.PathPrefix, Path: "/api"}}, Backends: to(backend(serverKey, 80, 1))}),
	}, false},
	// A consumer route from namespace legacy: its clients get it instead
	// of demo's producer route (which other clients get: TestGAMMAConsumerRoutes).
	{"gamma-consumer", "legacy-app-0.legacy", []*mesh.Route{
		gammaRoute("demo", "producer", 0, onServer80, mesh.RouteRule{Backends: to(backend(serverKey, 80, 1))}),
		gammaRoute("legacy", "to-canary", 0, []mesh.RouteParent{{Service: serverKey}},
			mesh.RouteRule{Backends: to(backend(canaryKey, 80, 1)),
				ResponseHeaders: &mesh.HeaderModifier{Set: []mesh.NameValue{{Name: "x-header-set", Value: "consumer"}}}}),
	}, false},
	// backendRefs that do not resolve keep their share, answered 500
	// (cluster_not_found_response_code INTERNAL_SERVER_ERROR with a
	// cluster no configuration has): a split of 3 to server and 1 to a
	// missing Service, a rule whose only backendRef does not resolve, and
	// a rule without backendRefs.
	{"gamma-unresolved", "client-7d9f.demo", []*mesh.Route{gammaRoute("demo", "unresolved", 0, onServer80,
		mesh.RouteRule{Matches: prefixMatch("/split"), Backends: to(backend(serverKey, 80, 3),
			mesh.Backend{Service: mesh.Key{Namespace: "demo", Name: "missing"}, Port: 80, Weight: 1, Unresolved: true})},
		mesh.RouteRule{Matches: prefixMatch("/unresolved"), Backends: to(mesh.Backend{Service: mesh.Key{Namespace: "other", Name: "api"}, Port: 8080, Weight: 1, Unresolved: true})},
		mesh.RouteRule{Matches: prefixMatch("/no-backends")},
	)}, false},
	// A route whose only backend cannot take requests (not in the mesh):
	// no route at all, so every request is answered 404.
	{"gamma-unmeshed-backend", "client-7d9f.demo", []*mesh.Route{gammaRoute("demo", "to-kubernetes", 0, onServer80,
		mesh.RouteRule{Backends: to(backend(mesh.Key{Namespace: "default", Name: "kubernetes"}, 443, 1))})}, false},
}

func TestGAMMAGolden(t *testing.T) {
	for _, tc := range gammaCases {
		t.Run(tc.name, func(t *testing.T) {
			res := generateHTTP(t, mesh.NewSnapshot(0, gammaContents(tc.routes...)), tc.node)
			dir := filepath.Join("testdata", "golden", tc.name)
			golden.Check(t, filepath.Join(dir, "routes.yaml"), toYAML(t, res[resource.RouteType]))
			if tc.listeners {
				golden.Check(t, filepath.Join(dir, "listeners.yaml"), toYAML(t, res[resource.ListenerType]))
			}
		})
	}
}

func routeConfig(res xds.Resources, name string) *routev3.RouteConfiguration {
	for _, r := range res[resource.RouteType] {
		if rc := r.(*routev3.RouteConfiguration); rc.GetName() == name {
			return rc
		}
	}
	return nil
}

func routeNames(rc *routev3.RouteConfiguration) []string {
	var out []string
	for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
		out = append(out, r.GetName())
	}
	return out
}

// TestGAMMAConsumerRoutes: the consumer route's namespace gets a route
// configuration of its own; every other client the shared one with the
// producer route, the very same pointer.
func TestGAMMAConsumerRoutes(t *testing.T) {
	var routes []*mesh.Route
	for _, tc := range gammaCases {
		if tc.name == "gamma-consumer" {
			routes = tc.routes
		}
	}
	snap := mesh.NewSnapshot(0, gammaContents(routes...))
	gen := translatorFor(snap)
	gen.HTTPRouting = true
	const name = "outbound|80|server.demo"
	consumer := routeConfig(generateWith(t, gen, snap, "legacy-app-0.legacy"), name)
	producer := routeConfig(generateWith(t, gen, snap, "client-7d9f.demo"), name)
	producer2 := routeConfig(generateWith(t, gen, snap, "server-v1-5b7c.demo"), name)
	if got := routeNames(consumer); !slices.Equal(got, []string{"legacy/to-canary#0"}) {
		t.Errorf("legacy's client: routes %q", got)
	}
	if got := routeNames(producer); !slices.Equal(got, []string{"demo/producer#0"}) {
		t.Errorf("demo's client: routes %q", got)
	}
	if producer != producer2 {
		t.Error("two clients without consumer routes got different route configurations: not the shared one")
	}
	if !gen.SharedResources()(types.Resource(producer)) || gen.SharedResources()(types.Resource(consumer)) {
		t.Error("the producer routes are shared, a client's consumer routes are its own")
	}
	// The consumer routes of a namespace are built once per snapshot, not
	// once per sidecar of the namespace (here: per Generate).
	if again := routeConfig(generateWith(t, gen, snap, "legacy-app-0.legacy"), name); again != consumer {
		t.Error("the consumer route configuration was built again for the same namespace and snapshot")
	}
}

// TestGAMMAOnlyTheFrontend: requests to the Service's address take the
// routes; requests to a pod's address (whatever its port) the default
// route. Without routes the chains are as before (one chain for the
// ClusterIP and the pods when the ports agree).
func TestGAMMAOnlyTheFrontend(t *testing.T) {
	c := gammaContents(gammaRoute("demo", "r", 0, []mesh.RouteParent{{Service: canaryKey}}, mesh.RouteRule{Backends: to(backend(serverKey, 80, 1))}))
	// canary's target port equals its port: ClusterIP and pods share a
	// destination port.
	for _, s := range c.Services {
		if s.Name == "canary" {
			s.Ports[0].Port = 8080
		}
	}
	withAndWithoutRoutes(t, c, "client-7d9f.demo", func(withRoutes bool, res xds.Resources) {
		got := map[string]string{} // chain → route configuration
		for _, fc := range listener(res, listenerOutbound).GetFilterChains() {
			if name := fc.GetName(); strings.HasPrefix(name, "outbound|8080|canary") {
				var hcm hcmv3.HttpConnectionManager
				if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
					t.Fatal(err)
				}
				got[name+" "+prefixesOf(fc)] = hcm.GetRds().GetRouteConfigName()
			}
		}
		want := map[string]string{"outbound|8080|canary.demo 198.18.1.12/32,198.19.0.21/32": "outbound|8080|canary.demo"}
		if withRoutes {
			want = map[string]string{
				"outbound|8080|canary.demo 198.19.0.21/32":      "outbound|8080|canary.demo",
				"outbound|8080|canary.demo|8080 198.18.1.12/32": "outbound|8080|canary.demo|direct",
			}
			if rc := routeConfig(res, "outbound|8080|canary.demo|direct"); rc == nil || !slices.Equal(routeNames(rc), []string{"default"}) {
				t.Errorf("direct route configuration: %v", rc)
			}
		}
		if !mapsEqual(got, want) {
			t.Errorf("routes %v: chains %v, want %v", withRoutes, got, want)
		}
	})
}

func prefixesOf(fc *listenerv3.FilterChain) string {
	var s []string
	for _, r := range fc.GetFilterChainMatch().GetPrefixRanges() {
		s = append(s, netip.PrefixFrom(netip.MustParseAddr(r.GetAddressPrefix()), int(r.GetPrefixLen().GetValue())).String())
	}
	slices.Sort(s)
	return strings.Join(s, ",")
}

// TestGAMMAWithoutHTTPRouting: routes change nothing while HTTP routing is
// off (every port is L4).
func TestGAMMAWithoutHTTPRouting(t *testing.T) {
	plain := generate(t, mesh.NewSnapshot(0, gammaContents()), "client-7d9f.demo")
	routed := generate(t, mesh.NewSnapshot(0, gammaContents(gammaCases[0].routes...)), "client-7d9f.demo")
	for typ, file := range goldenFiles {
		if a, b := toYAML(t, plain[typ]), toYAML(t, routed[typ]); string(a) != string(b) {
			t.Errorf("%s differs with routes and HTTP routing off", file)
		}
	}
}
