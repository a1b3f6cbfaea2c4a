package registry

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	apinames "github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/internal/testutil"
)

// routeAt is a small HTTPRoute of namespace ns created age after the
// fixture's epoch, attached to Service parent (port 0: every port).
func routeAt(t *testing.T, ns, name, parent string, port int, age time.Duration) *unstructured.Unstructured {
	t.Helper()
	portField := ""
	if port != 0 {
		portField = fmt.Sprintf(", port: %d", port)
	}
	u := gatewayObject(t, fmt.Sprintf(`
kind: HTTPRoute
metadata: {namespace: %s, name: %s}
spec:
  parentRefs: [{group: "", kind: Service, namespace: prod, name: %s%s}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /%s}}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-route, value: %s}]}}]
    backendRefs: [{name: api, namespace: prod, port: 80}]
`, ns, name, parent, portField, name, name))
	u.SetCreationTimestamp(metav1.NewTime(testutil.Fixed.Add(age)))
	return u
}

// budgetState is routeServices with prod/multi (two HTTP ports) and
// ReferenceGrant-free backends in prod.
func budgetState(b routeBudget, routes ...*unstructured.Unstructured) *state {
	services := append(routeServices(), svc("prod", "multi", "198.19.0.13", nil,
		svcPort("http", 80, intstr.FromInt32(8080), "http"), svcPort("http-alt", 8080, intstr.FromInt32(8080), "http"),
		svcPort("tcp", 9000, intstr.FromInt32(9000), "")))
	return &state{td: td, services: services, httpRoutes: routes, routeBudget: b}
}

// verdictsByName resolves st's routes: the model's routes and the
// verdicts, by route name.
func verdictsByName(st *state) (map[string]*mesh.Route, map[string]verdict) {
	routes, verdicts := routesOf(st)
	rs, vs := map[string]*mesh.Route{}, map[string]verdict{}
	for _, r := range routes {
		rs[r.Name] = r
	}
	for _, v := range verdicts {
		vs[v.obj.GetName()] = v
	}
	return rs, vs
}

// A namespace's routes are admitted oldest first until its budget is
// spent, each counted once per Service port it attaches to; a newer route
// cannot push out an older one, and another namespace's routes are not
// charged for them.
func TestNamespaceRouteBudget(t *testing.T) {
	objs := []*unstructured.Unstructured{
		routeAt(t, "prod", "z-1st", "api", 80, 0),
		routeAt(t, "prod", "y-2nd", "api", 80, time.Minute), // the names in reverse of age: age decides
		routeAt(t, "prod", "x-3rd", "api", 80, 2*time.Minute),
		routeAt(t, "prod", "w-4th", "multi", 0, 3*time.Minute),
		routeAt(t, "team", "v-5th", "api", 80, 4*time.Minute),
	}
	// Each route's cost, measured with budgets nothing exceeds.
	free, _ := verdictsByName(budgetState(routeBudget{1 << 30, 1 << 30, 1 << 30}, objs...))
	if len(free) != len(objs) {
		t.Fatalf("without budgets %d routes in force, want %d", len(free), len(objs))
	}
	size := free["z-1st"].EncodedSizeBound()
	// A route's cost for one port: its routes and what the port's route
	// configuration gains (prod/multi's name is 2 bytes longer than
	// prod/api's: 16 bytes more per port).
	unit := size + mesh.PortRoutesBound(mesh.Key{Namespace: "prod", Name: "api"})
	for _, n := range []string{"y-2nd", "x-3rd", "w-4th", "v-5th"} {
		if free[n].EncodedSizeBound() != size {
			t.Fatalf("route %s's size %d, want the same as z-1st's %d (alike routes, alike names)", n, free[n].EncodedSizeBound(), size)
		}
	}

	// Room for 2.5 routes of one port: the first two fit, the third does not, the fourth (two
	// ports) neither; team's route (the fifth) is charged to team.
	routes, verdicts := verdictsByName(budgetState(routeBudget{route: size, namespace: 5 * unit / 2}, objs...))
	for name, inForce := range map[string]bool{"z-1st": true, "y-2nd": true, "x-3rd": false, "w-4th": false, "v-5th": true} {
		v := verdicts[name]
		if (routes[name] != nil) != inForce || v.accepted != inForce {
			t.Errorf("%s: in the model %v, accepted %v; want %v", name, routes[name] != nil, v.accepted, inForce)
		}
		if inForce {
			continue
		}
		if v.reason != routeReasonTooLarge || !strings.Contains(v.message, "namespace prod") || !strings.Contains(v.message, "older routes keep theirs") {
			t.Errorf("%s: %s %q", name, v.reason, v.message)
		}
		if got := conditions(v); len(got) != 1 || !strings.Contains(got[0], "Accepted=False/TooLarge") || !strings.Contains(got[0], "ResolvedRefs=True/ResolvedRefs") {
			t.Errorf("%s: status %q", name, got)
		}
	}
	if v := verdicts["w-4th"]; !strings.Contains(v.message, "for each of 2 Service ports") {
		t.Errorf("w-4th: %q, want it counted on both HTTP ports of prod/multi", v.message)
	}

	// Room for four: the third fits; the fourth's two ports do not (one
	// port would).
	routes, _ = verdictsByName(budgetState(routeBudget{route: size, namespace: 4 * unit}, objs...))
	if routes["x-3rd"] == nil || routes["w-4th"] != nil {
		t.Errorf("budget of 4: x-3rd in force %v (want true), w-4th %v (want false)", routes["x-3rd"] != nil, routes["w-4th"] != nil)
	}
	// Room for six: everything.
	routes, _ = verdictsByName(budgetState(routeBudget{route: size, namespace: 6 * unit}, objs...))
	if len(routes) != len(objs) {
		t.Errorf("budget of 6: %d routes in force, want %d", len(routes), len(objs))
	}
}

// One route over the per-route budget is refused by itself, whatever the
// namespace has left; the Gateway API's own limits allow such a route
// (64 matches, 16 header edits of 4,096 '%' each, sent doubled).
func TestRouteBudgetRefusesAHugeRoute(t *testing.T) {
	var matches, edits strings.Builder
	for i := range 64 {
		fmt.Fprintf(&matches, "    - path: {type: PathPrefix, value: /p%d}\n", i)
	}
	for i := range 16 {
		fmt.Fprintf(&edits, "        - {name: x-e%d, value: %q}\n", i, strings.Repeat("%", 4096))
	}
	huge := gatewayObject(t, `
kind: HTTPRoute
metadata: {namespace: prod, name: huge}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}]
  rules:
  - matches:
`+matches.String()+`    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
`+edits.String()+`    backendRefs: [{name: api, port: 80}]
`)
	small := routeAt(t, "prod", "small", "api", 80, time.Minute) // newer, and served
	routes, verdicts := verdictsByName(budgetState(routeBudget{}, huge, small))
	v := verdicts["huge"]
	if routes["huge"] != nil || v.accepted || v.reason != routeReasonTooLarge || !strings.Contains(v.message, "over weft's limit of 256 KiB per route") {
		t.Fatalf("huge: in force %v, %s %q", routes["huge"] != nil, v.reason, v.message)
	}
	if routes["small"] == nil {
		t.Error("a small route of the same namespace was refused with the huge one")
	}
}

// The mesh's budget is spent across namespaces, oldest first: however many
// namespaces stay within their own budgets, the routes of all of them
// together cannot exceed it (every client receives the producer routes of
// every namespace).
func TestMeshRouteBudget(t *testing.T) {
	objs := []*unstructured.Unstructured{
		routeAt(t, "prod", "r1", "api", 80, 0),
		routeAt(t, "team", "r2", "api", 80, time.Minute),
		routeAt(t, "prod", "r3", "api", 80, 2*time.Minute),
		routeAt(t, "team", "r4", "api", 80, 3*time.Minute),
	}
	free, _ := verdictsByName(budgetState(routeBudget{1 << 30, 1 << 30, 1 << 30}, objs...))
	unit := free["r1"].EncodedSizeBound() + mesh.PortRoutesBound(mesh.Key{Namespace: "prod", Name: "api"})
	routes, verdicts := verdictsByName(budgetState(routeBudget{route: 1 << 30, namespace: 1 << 30, mesh: 3 * unit}, objs...))
	for name, inForce := range map[string]bool{"r1": true, "r2": true, "r3": true, "r4": false} {
		if (routes[name] != nil) != inForce {
			t.Errorf("%s: in force %v, want %v (%s %q)", name, routes[name] != nil, inForce, verdicts[name].reason, verdicts[name].message)
		}
	}
	if v := verdicts["r4"]; v.reason != routeReasonTooLarge || !strings.Contains(v.message, "over the mesh's budget") {
		t.Errorf("r4: %s %q", v.reason, v.message)
	}
	if DefaultMeshRouteBytes > apinames.MaxXDSMessageSize/2 {
		t.Errorf("the mesh's default budget %d leaves less than half of the xDS message limit %d", DefaultMeshRouteBytes, apinames.MaxXDSMessageSize)
	}
}
