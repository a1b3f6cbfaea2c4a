package registry

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/discovery"
	fakediscovery "k8s.io/client-go/discovery/fake"
	k8stesting "k8s.io/client-go/testing"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	apinames "github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/internal/testutil"
)

func gatewayObject(t testing.TB, y string) *unstructured.Unstructured {
	t.Helper()
	u := weftObject(t, "apiVersion: gateway.networking.k8s.io/v1\n"+y)
	u.SetCreationTimestamp(metav1.NewTime(testutil.Fixed))
	return u
}

// routeServices: prod/api (http 80, tcp 9090), prod/headless, prod/other
// (grpc 7070), team/local (http 80).
func routeServices() []*corev1.Service {
	headless := svc("prod", "headless", "None", nil, svcPort("http", 80, intstr.FromInt32(8080), "http"))
	return []*corev1.Service{
		svc("prod", "api", "198.19.0.10", nil, svcPort("http", 80, intstr.FromInt32(8080), "http"), svcPort("tcp", 9090, intstr.FromInt32(9090), "")),
		headless,
		svc("prod", "other", "198.19.0.11", nil, svcPort("grpc", 7070, intstr.FromInt32(7070), "")),
		svc("team", "local", "198.19.0.12", nil, svcPort("http", 80, intstr.FromInt32(8080), "http")),
	}
}

// conditions renders a verdict's entries: "<parent>: Type=Status/Reason ...".
func conditions(v verdict) []string {
	var out []string
	for _, p := range v.routeParents {
		s := string(p.ParentRef.Name)
		if p.ParentRef.Port != nil {
			s += fmt.Sprintf(":%d", *p.ParentRef.Port)
		}
		s += ":"
		if string(p.ControllerName) != apinames.MeshControllerName {
			s += " controller " + string(p.ControllerName)
		}
		for _, c := range p.Conditions {
			s += fmt.Sprintf(" %s=%s/%s", c.Type, c.Status, c.Reason)
			if c.ObservedGeneration != 1 {
				s += " generation?"
			}
		}
		out = append(out, s)
	}
	return out
}

// TestResolveRoutes: each kind of parent and backendRef, every supported
// filter and the refusals, read from the route's status and the model.
func TestResolveRoutes(t *testing.T) {
	st := &state{td: td, services: routeServices()}
	st.httpRoutes = []*unstructured.Unstructured{
		gatewayObject(t, `
kind: HTTPRoute
metadata: {namespace: prod, name: full}
spec:
  parentRefs:
  - {group: "", kind: Service, name: api, port: 80}
  - {name: some-gateway}
  rules:
  - matches:
    - path: {type: PathPrefix, value: /api/}
      method: GET
      headers: [{name: X-Version, value: v2}]
      queryParams: [{name: debug, value: "1"}]
    - path: {type: PathPrefix, value: /exact}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-Set, value: a}], add: [{name: x-add, value: b}], remove: [X-Remove]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-r, value: c}]}
    - type: URLRewrite
      urlRewrite: {hostname: internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs:
    - {name: api, port: 80, weight: 90}
    - {name: local, namespace: team, port: 80, weight: 10}
    timeouts: {request: 10s, backendRequest: 2s}
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: example.org, port: 8443, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /new}}
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: api, port: 80}}}]
    backendRefs: [{name: api, port: 80}]
  - matches: [{path: {type: RegularExpression, value: "/x.*"}}]
    backendRefs: [{name: api, port: 80}]
  - backendRefs: [{name: missing, port: 80}, {name: api, port: 81}, {name: api, port: 9090}, {name: api, port: 80}]
`),
		gatewayObject(t, `
kind: HTTPRoute
metadata: {namespace: prod, name: refused-parents}
spec:
  parentRefs:
  - {group: "", kind: ConfigMap, name: api}
  - {group: "", kind: Service, name: missing}
  - {group: "", kind: Service, name: api, port: 9090}
  - {group: "", kind: Service, name: api, port: 81}
  - {group: "", kind: Service, name: headless}
  rules:
  - backendRefs: [{name: api, port: 80}]
`),
		gatewayObject(t, `
kind: HTTPRoute
metadata: {namespace: team, name: consumer}
spec:
  parentRefs: [{group: "", kind: Service, name: api, namespace: prod}]
  rules:
  - backendRefs: [{name: api, namespace: prod, port: 80}, {name: other, namespace: prod, port: 7070}]
  - matches: [{path: {value: /elsewhere}}]
    backendRefs: [{name: api, namespace: other-ns, port: 80}]
`),
		gatewayObject(t, `
kind: HTTPRoute
metadata: {namespace: prod, name: nothing-served}
spec:
  parentRefs: [{group: "", kind: Service, name: api}]
  rules:
  - filters: [{type: CORS, cors: {}}]
    backendRefs: [{name: api, port: 80}]
`),
		gatewayObject(t, `
kind: HTTPRoute
metadata: {namespace: prod, name: gateway-only}
spec:
  parentRefs: [{name: some-gateway}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
`),
	}
	st.grpcRoutes = []*unstructured.Unstructured{gatewayObject(t, `
kind: GRPCRoute
metadata: {namespace: prod, name: grpc}
spec:
  parentRefs: [{group: "", kind: Service, name: other, port: 7070}]
  rules:
  - matches:
    - method: {service: pkg.Echo, method: Say}
      headers: [{name: X-Tenant, value: a}]
    - method: {service: pkg.Health}
    backendRefs: [{name: other, port: 7070}]
  - matches: [{method: {method: Say}}]
    backendRefs: [{name: other, port: 7070}]
`)}
	contents, verdicts := build(st)

	got := map[string][]string{}
	for _, v := range verdicts {
		got[v.obj.GetName()] = conditions(v)
	}
	want := map[string][]string{
		"full": {"api:80: Accepted=True/Accepted ResolvedRefs=False/RefNotPermitted PartiallyInvalid=True/UnsupportedValue"},
		"refused-parents": {
			"api: Accepted=False/UnsupportedValue ResolvedRefs=True/ResolvedRefs",
			"missing: Accepted=False/NoMatchingParent ResolvedRefs=True/ResolvedRefs",
			"api:9090: Accepted=False/UnsupportedValue ResolvedRefs=True/ResolvedRefs",
			"api:81: Accepted=False/NoMatchingParent ResolvedRefs=True/ResolvedRefs",
			"headless: Accepted=False/UnsupportedValue ResolvedRefs=True/ResolvedRefs",
		},
		"consumer":       {"api: Accepted=True/Accepted ResolvedRefs=False/RefNotPermitted"},
		"nothing-served": {"api: Accepted=False/UnsupportedValue ResolvedRefs=True/ResolvedRefs"},
		"grpc":           {"other:7070: Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs PartiallyInvalid=True/UnsupportedValue"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("statuses:\n%v\nwant\n%v", got, want)
	}
	for _, v := range verdicts {
		if v.obj.GetName() == "full" && (v.accepted || !strings.Contains(v.message, "team/local")) {
			t.Errorf("full: the Event's verdict %v %q, want the first problem (team/local without a ReferenceGrant)", v.accepted, v.message)
		}
	}

	routes := map[string]*mesh.Route{}
	for _, r := range contents.Routes {
		routes[r.Name] = r
	}
	if len(routes) != 3 {
		t.Errorf("routes in the model: %v, want full, consumer, grpc", routes)
	}
	apiKey := mesh.Key{Namespace: "prod", Name: "api"}
	wantFull := &mesh.Route{Kind: mesh.KindHTTPRoute, Namespace: "prod", Name: "full", Created: testutil.Fixed,
		Parents: []mesh.RouteParent{{Service: apiKey, Port: 80}},
		Rules: []mesh.RouteRule{
			{Index: 0,
				Matches: []mesh.RouteMatch{
					{PathType: mesh.PathPrefix, Path: "/api", Method: "GET", Headers: []mesh.NameValue{{Name: "x-version", Value: "v2"}}, QueryParams: []mesh.NameValue{{Name: "debug", Value: "1"}}},
					{PathType: mesh.PathPrefix, Path: "/exact"},
				},
				RequestHeaders:  &mesh.HeaderModifier{Set: []mesh.NameValue{{Name: "x-set", Value: "a"}}, Add: []mesh.NameValue{{Name: "x-add", Value: "b"}}, Remove: []string{"x-remove"}},
				ResponseHeaders: &mesh.HeaderModifier{Set: []mesh.NameValue{{Name: "x-r", Value: "c"}}},
				Rewrite:         &mesh.Rewrite{Hostname: "internal", Path: &mesh.PathModifier{Type: mesh.ReplacePrefixMatch, Value: "/v2"}},
				// team/local: a producer route's backendRef to a third
				// namespace needs a ReferenceGrant; without one its
				// share stays, unresolved (answered 500).
				Backends: []mesh.Backend{{Service: apiKey, Port: 80, Weight: 90},
					{Service: mesh.Key{Namespace: "team", Name: "local"}, Port: 80, Weight: 10, Unresolved: true}},
				Timeout: 10 * time.Second, BackendTimeout: 2 * time.Second,
			},
			{Index: 1, Matches: []mesh.RouteMatch{{PathType: mesh.PathPrefix, Path: "/old"}},
				Redirect: &mesh.Redirect{Scheme: "https", Hostname: "example.org", Port: 8443, StatusCode: 301, Path: &mesh.PathModifier{Type: mesh.ReplaceFullPath, Value: "/new"}}},
			// rules 2 (RequestMirror) and 3 (RegularExpression) refused;
			// rule 4: three backendRefs that do not resolve (a missing
			// Service, a missing port, a port that is not HTTP), each
			// keeping its share, and one that does.
			{Index: 4, Matches: []mesh.RouteMatch{{PathType: mesh.PathPrefix, Path: "/"}}, Backends: []mesh.Backend{
				{Service: mesh.Key{Namespace: "prod", Name: "missing"}, Port: 80, Weight: 1, Unresolved: true},
				{Service: apiKey, Port: 81, Weight: 1, Unresolved: true},
				{Service: apiKey, Port: 9090, Weight: 1, Unresolved: true},
				{Service: apiKey, Port: 80, Weight: 1}}},
		}}
	if !reflect.DeepEqual(routes["full"], wantFull) {
		t.Errorf("full:\n%+v\nwant\n%+v", routes["full"], wantFull)
	}
	// The consumer route's backend in the parent's namespace needs no
	// ReferenceGrant; the one in a third namespace does, so its rule's
	// one backend is unresolved (every request of the rule answered 500).
	if r := routes["consumer"]; r == nil || len(r.Rules) != 2 || len(r.Rules[0].Backends) != 2 || r.Parents[0] != (mesh.RouteParent{Service: apiKey}) ||
		!reflect.DeepEqual(r.Rules[1].Backends, []mesh.Backend{{Service: mesh.Key{Namespace: "other-ns", Name: "api"}, Port: 80, Weight: 1, Unresolved: true}}) {
		t.Errorf("consumer: %+v", r)
	}
	wantGRPC := []mesh.RouteMatch{
		{PathType: mesh.PathExact, Path: "/pkg.Echo/Say", Headers: []mesh.NameValue{{Name: "x-tenant", Value: "a"}}},
		{PathType: mesh.PathPrefix, Path: "/pkg.Health"},
	}
	if r := routes["grpc"]; r == nil || len(r.Rules) != 1 || !reflect.DeepEqual(r.Rules[0].Matches, wantGRPC) {
		t.Errorf("grpc: %+v", r)
	}

	// A ReferenceGrant in other-ns lets team's HTTPRoutes refer to its
	// Services: the consumer's second rule is served.
	st.services = append(st.services, svc("other-ns", "api", "198.19.0.13", nil, svcPort("http", 80, intstr.FromInt32(8080), "http")))
	st.referenceGrants = []*unstructured.Unstructured{gatewayObject(t, `
kind: ReferenceGrant
metadata: {namespace: other-ns, name: allow-team}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team}]
  to: [{group: "", kind: Service}]
`)}
	contents, _ = build(st)
	for _, r := range contents.Routes {
		if r.Name == "consumer" && len(r.Rules) != 2 {
			t.Errorf("consumer with a ReferenceGrant: %d rules, want 2", len(r.Rules))
		}
	}
}

// servedDiscovery answers which resources are served; safe for concurrent
// use, so a test can serve the Gateway API's resources while the registry
// asks.
type servedDiscovery struct {
	*fakediscovery.FakeDiscovery
	mu        sync.Mutex
	resources []*metav1.APIResourceList
	asked     int
}

func (d *servedDiscovery) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.asked++
	for _, l := range d.resources {
		if l.GroupVersion == gv {
			return l, nil
		}
	}
	return nil, fmt.Errorf("the server could not find the requested resource, GroupVersion %q not found", gv)
}

func (d *servedDiscovery) serveGatewayAPI() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resources = []*metav1.APIResourceList{{GroupVersion: "gateway.networking.k8s.io/v1", APIResources: []metav1.APIResource{
		{Name: "httproutes", Kind: "HTTPRoute", Namespaced: true},
		{Name: "grpcroutes", Kind: "GRPCRoute", Namespaced: true},
		{Name: "referencegrants", Kind: "ReferenceGrant", Namespaced: true},
	}}}
}

func (d *servedDiscovery) timesAsked() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.asked
}

var _ discovery.DiscoveryInterface = (*servedDiscovery)(nil)

// TestGatewayAPIWatchedOnceServed: with no Gateway API served the registry
// watches what it always did and only asks discovery again; once the
// resources are served it watches them, puts a route in the model and
// writes the route's status (weft's entry, next to another controller's).
func TestGatewayAPIWatchedOnceServed(t *testing.T) {
	disc := &servedDiscovery{FakeDiscovery: &fakediscovery.FakeDiscovery{Fake: &k8stesting.Fake{}}}
	f := start(t, Config{GatewayAPI: true, GatewayAPIRecheck: 5 * time.Millisecond, Discovery: disc},
		namespace("prod", true), svc("prod", "api", "198.19.0.10", nil, svcPort("http", 80, intstr.FromInt32(8080), "http")))
	f.eventually("discovery asked again", func() bool { return disc.timesAsked() >= 3 })
	for _, a := range f.weft.Actions() {
		if a.GetResource().Group == gatewayGroup {
			t.Fatalf("%s %s while the Gateway API is not served", a.GetVerb(), a.GetResource())
		}
	}
	if got := f.reg.Current().Routes; got != nil {
		t.Fatalf("routes without the Gateway API: %v", got)
	}

	route := gatewayObject(t, `
kind: HTTPRoute
metadata: {namespace: prod, name: r}
spec:
  parentRefs: [{group: "", kind: Service, name: api}, {name: gw}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
status:
  parents:
  - parentRef: {name: gw}
    controllerName: example.com/gateway
    conditions: [{type: Accepted, status: "True", reason: Accepted, message: ok, lastTransitionTime: "2026-11-01T00:00:00Z"}]
`)
	f.create(route)
	disc.serveGatewayAPI()
	f.snapshotWhere("the route in the model", func(s *mesh.Snapshot) bool { return len(s.Routes) == 1 })
	var parents []gwv1.RouteParentStatus
	f.eventually("the route's status written", func() bool {
		u, err := f.weft.Resource(httpRouteResource).Namespace("prod").Get(context.Background(), "r", metav1.GetOptions{})
		if err != nil {
			return false
		}
		parents = readRouteStatus(u).Parents
		return len(parents) == 2
	})
	if parents[0].ControllerName != "example.com/gateway" || parents[1].ControllerName != apinames.MeshControllerName ||
		string(parents[1].ParentRef.Name) != "api" || len(parents[1].Conditions) != 2 || parents[1].Conditions[0].Status != metav1.ConditionTrue {
		t.Errorf("status.parents: %+v", parents)
	}
}

// The refusals HTTPRoute and GRPCRoute share, each on a rule of its own: a
// backendRef that carries filters (weft serves none), a header match on
// Host and one of a type other than Exact. The route's last rule is served.
func TestRuleRefusalsOfBothKinds(t *testing.T) {
	st := &state{td: td, services: routeServices()}
	for _, k := range []struct{ kind, svc, port, served string }{
		{mesh.KindHTTPRoute, "api", "80", "{path: {value: /ok}}"},
		{mesh.KindGRPCRoute, "other", "7070", "{method: {service: pkg.Echo}}"},
	} {
		u := gatewayObject(t, fmt.Sprintf(`
kind: %[1]s
metadata: {namespace: prod, name: %[2]s}
spec:
  parentRefs: [{group: "", kind: Service, name: %[2]s, port: %[3]s}]
  rules:
  - backendRefs:
    - name: %[2]s
      port: %[3]s
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: "1"}]}}]
  - matches: [{headers: [{name: Host, value: a}]}]
    backendRefs: [{name: %[2]s, port: %[3]s}]
  - matches: [{headers: [{type: RegularExpression, name: x-a, value: "a.*"}]}]
    backendRefs: [{name: %[2]s, port: %[3]s}]
  - matches: [%[4]s]
    backendRefs: [{name: %[2]s, port: %[3]s}]
`, k.kind, k.svc, k.port, k.served))
		if k.kind == mesh.KindHTTPRoute {
			st.httpRoutes = append(st.httpRoutes, u)
		} else {
			st.grpcRoutes = append(st.grpcRoutes, u)
		}
	}
	contents, verdicts := build(st)
	const want = `rules left out: rule 0: filters on a backendRef are not supported; rule 1: a header match on "Host" is not supported; rule 2: header match type RegularExpression is not supported (Exact is)`
	for _, v := range verdicts {
		if got := conditions(v); len(got) != 1 || !strings.Contains(got[0], "PartiallyInvalid=True/UnsupportedValue") || v.message != want {
			t.Errorf("%s: %v %q, want rules 0 to 2 refused: %q", v.obj.GetName(), got, v.message, want)
		}
	}
	if len(verdicts) != 2 {
		t.Errorf("%d verdicts, want 2", len(verdicts))
	}
	for _, r := range contents.Routes {
		if len(r.Rules) != 1 || r.Rules[0].Index != 3 {
			t.Errorf("%s: rules %+v, want rule 3 alone", r.Name, r.Rules)
		}
	}
	if len(contents.Routes) != 2 {
		t.Errorf("%d routes in the model, want 2", len(contents.Routes))
	}
}
