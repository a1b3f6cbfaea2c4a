package registry

import (
	"cmp"
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/controlplane/mesh"
)

// Route budgets. A route's author writes what every client of the Services
// it attaches to receives: one Envoy route per match, each carrying its
// rule's header edits, so one HTTPRoute within the Gateway API's own limits
// (16 rules × 64 matches × 32 header edits of 4,096 bytes) expands to tens
// of megabytes of route configuration, in every sidecar that can reach the
// Service. Three budgets bound what routes cost the mesh, counted with
// mesh.Route.EncodedSizeBound and mesh.PortRoutesBound (which the
// translator's tests hold it to):
//   - a route: its Envoy form for one Service port (RouteBytes);
//   - a namespace: all its routes together, each counted once for every
//     Service port it attaches to, with what the port's route
//     configuration gains (NamespaceRouteBytes);
//   - the mesh: every namespace's routes together, counted the same way
//     (MeshRouteBytes), so that no number of namespaces at their budget
//     can make the route configuration a sidecar receives exceed the xDS
//     message limit (the control plane would then withhold every update
//     of every sidecar).
//
// Routes are admitted oldest first (creationTimestamp, then kind,
// namespace and name), so a new route cannot push out the routes already
// in force. A route over a budget is not served: Accepted=False, reason
// TooLarge, the figures in the message.

// Default budgets.
const (
	DefaultRouteBytes          = 256 << 10
	DefaultNamespaceRouteBytes = 1 << 20
	// DefaultMeshRouteBytes is half the xDS message limit
	// (api/names.MaxXDSMessageSize, 16 MiB): the rest of the route
	// configuration (every Service port's default route) has the other
	// half.
	DefaultMeshRouteBytes = 8 << 20
)

// routeReasonTooLarge is the reason of Accepted=False for a route over a
// budget (an implementation's reason, as the Gateway API allows).
const routeReasonTooLarge = "TooLarge"

// routeBudget is the budgets in force; zero fields take the defaults.
type routeBudget struct{ route, namespace, mesh int }

func (b routeBudget) withDefaults() routeBudget {
	return routeBudget{cmp.Or(b.route, DefaultRouteBytes), cmp.Or(b.namespace, DefaultNamespaceRouteBytes), cmp.Or(b.mesh, DefaultMeshRouteBytes)}
}

// resolvedRoute is a route object, what it resolved into (nil: nothing in
// force) and its status.
type resolvedRoute struct {
	u       *unstructured.Unstructured
	kind    string
	route   *mesh.Route
	verdict routeVerdict
}

// attachedPorts is how many route configurations p puts a route in: the
// port it names, or every port of the Service that the sidecars route.
func (c *routeContext) attachedPorts(p mesh.RouteParent) int {
	if p.Port != 0 {
		return 1
	}
	svc, ok := c.services[p.Service]
	if !ok {
		return 0
	}
	n := 0
	for _, sp := range svc.Spec.Ports {
		if (sp.Protocol == "" || sp.Protocol == "TCP") && routedProtocol(appProtocol(sp.Name, sp.AppProtocol)) {
			n++
		}
	}
	return n
}

// budget refuses the routes over the budgets (see above): their model
// route is dropped and their status says why. One pass over every route,
// oldest first, so that the budgets are spent in the same order whatever
// the namespaces.
func (c *routeContext) budget(items []resolvedRoute, b routeBudget) {
	b = b.withDefaults()
	var rs []*resolvedRoute
	for i := range items {
		if items[i].route != nil {
			rs = append(rs, &items[i])
		}
	}
	slices.SortFunc(rs, func(x, y *resolvedRoute) int {
		a, b := x.route, y.route
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	usedNS := map[string]int{}
	usedMesh := 0
	for _, it := range rs {
		r := it.route
		size := r.EncodedSizeBound()
		ports, cost := 0, 0
		for _, p := range r.Parents {
			n := c.attachedPorts(p)
			ports += n
			cost += n * (size + mesh.PortRoutesBound(p.Service))
		}
		switch {
		case size > b.route:
			it.refuse(fmt.Sprintf("the route's rules take up to %s of proxy configuration for each Service port it attaches to, over weft's limit of %s per route: split it into routes of fewer matches, or with fewer or shorter header edits",
				kib(size), kib(b.route)))
		case usedNS[r.Namespace]+cost > b.namespace:
			it.refuse(fmt.Sprintf("the routes of namespace %s would take %s of proxy configuration in every client of the Services they attach to (this route %s: up to %s for each of %d Service ports), over the namespace's budget of %s; older routes keep theirs",
				r.Namespace, kib(usedNS[r.Namespace]+cost), kib(cost), kib(size), ports, kib(b.namespace)))
		case usedMesh+cost > b.mesh:
			it.refuse(fmt.Sprintf("the routes of the whole mesh would take %s of proxy configuration in every client (this route %s), over the mesh's budget of %s, which keeps every sidecar's route configuration receivable; older routes keep theirs",
				kib(usedMesh+cost), kib(cost), kib(b.mesh)))
		default:
			usedNS[r.Namespace] += cost
			usedMesh += cost
		}
	}
}

// refuse takes the route out of force: every parent it was accepted by
// says Accepted=False, TooLarge, msg.
func (it *resolvedRoute) refuse(msg string) {
	it.route = nil
	bad := &invalid{routeReasonTooLarge, capMessage(msg)}
	it.verdict.problem = bad
	for i := range it.verdict.parents {
		for j := range it.verdict.parents[i].Conditions {
			c := &it.verdict.parents[i].Conditions[j]
			if c.Type == string(gwv1.RouteConditionAccepted) && c.Status == metav1.ConditionTrue {
				c.Status, c.Reason, c.Message = metav1.ConditionFalse, bad.reason, bad.message
			}
		}
	}
}

// kib is n bytes for a message: "312 KiB", "1.5 MiB".
func kib(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", (n+1023)/1024)
}
