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
// Service. Two budgets bound what one namespace's routes cost the mesh,
// counted with mesh.Route.EncodedSizeBound (which the translator's tests
// hold it to):
//   - a route: its Envoy form for one Service port (RouteBytes);
//   - a namespace: all its routes together, each counted once for every
//     Service port it attaches to (NamespaceRouteBytes). Routes are
//     admitted oldest first (creationTimestamp, then kind and name), so a
//     new route cannot push out the routes already in force.
//
// A route over either budget is not served: Accepted=False, reason
// TooLarge, the figures in the message. What a sidecar receives is further
// bounded by the xDS message limit the control plane will not send past.

// Default budgets.
const (
	DefaultRouteBytes          = 256 << 10
	DefaultNamespaceRouteBytes = 1 << 20
)

// routeReasonTooLarge is the reason of Accepted=False for a route over a
// budget (an implementation's reason, as the Gateway API allows).
const routeReasonTooLarge = "TooLarge"

// routeBudget is the budgets in force; zero fields take the defaults.
type routeBudget struct{ route, namespace int }

func (b routeBudget) withDefaults() routeBudget {
	return routeBudget{cmp.Or(b.route, DefaultRouteBytes), cmp.Or(b.namespace, DefaultNamespaceRouteBytes)}
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
// route is dropped and their status says why.
func (c *routeContext) budget(items []resolvedRoute, b routeBudget) {
	b = b.withDefaults()
	byNS := map[string][]*resolvedRoute{}
	for i := range items {
		if r := items[i].route; r != nil {
			byNS[r.Namespace] = append(byNS[r.Namespace], &items[i])
		}
	}
	for ns, rs := range byNS {
		slices.SortFunc(rs, func(a, b *resolvedRoute) int {
			return cmp.Or(a.route.Created.Compare(b.route.Created), cmp.Compare(a.route.Kind, b.route.Kind), cmp.Compare(a.route.Name, b.route.Name))
		})
		used := 0
		for _, it := range rs {
			size := it.route.EncodedSizeBound()
			ports := 0
			for _, p := range it.route.Parents {
				ports += c.attachedPorts(p)
			}
			cost := size * ports
			switch {
			case size > b.route:
				it.refuse(fmt.Sprintf("the route's rules take up to %s of proxy configuration for each Service port it attaches to, over weft's limit of %s per route: split it into routes of fewer matches, or with fewer or shorter header edits",
					kib(size), kib(b.route)))
			case used+cost > b.namespace:
				it.refuse(fmt.Sprintf("the routes of namespace %s would take %s of proxy configuration in every client of the Services they attach to (this route %s: up to %s for each of %d Service ports), over the namespace's budget of %s; older routes keep theirs",
					ns, kib(used+cost), kib(cost), kib(size), ports, kib(b.namespace)))
			default:
				used += cost
			}
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
