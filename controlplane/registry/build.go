package registry

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	apinames "github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
)

// Names the model depends on (docs/architecture.md, "Names, ports and paths").
const (
	proxyContainer = apinames.ProxyContainer
	injectLabel    = apinames.InjectLabel
	injectEnabled  = apinames.InjectEnabled
)

// AnnotationInboundLoopbackPorts lists the ports (comma-separated) of a pod
// whose app listens on 127.0.0.1 only, so that the sidecar delivers
// inbound connections there instead of to the pod's address
// (Workload.InboundLoopbackPorts). The injector refuses a malformed value.
const AnnotationInboundLoopbackPorts = apinames.AnnotationInboundLoopbackPorts

// inboundLoopbackPorts reads AnnotationInboundLoopbackPorts: ports
// 1-65535, sorted and unique. A value the injector would have refused
// yields none, so a port is never opened to loopback by a typo.
func inboundLoopbackPorts(p *corev1.Pod) []uint16 {
	v, ok := p.Annotations[AnnotationInboundLoopbackPorts]
	if !ok || strings.TrimSpace(v) == "" {
		return nil
	}
	var ports []uint16
	for item := range strings.SplitSeq(v, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(item), 10, 16)
		if err != nil || n == 0 {
			return nil
		}
		ports = append(ports, uint16(n))
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

// state is everything a snapshot is built from: the informers' caches.
type state struct {
	td              spiffeid.TrustDomain
	services        []*corev1.Service
	slices          []*discoveryv1.EndpointSlice
	pods            []*corev1.Pod
	namespaces      []*corev1.Namespace
	serviceAccounts []*corev1.ServiceAccount
	meshConfigs     []*unstructured.Unstructured
	mtlsPolicies    []*unstructured.Unstructured
	authzPolicies   []*unstructured.Unstructured
	egressPolicies  []*unstructured.Unstructured
	// The Gateway API's (GAMMA; none unless watched: gateway.go).
	httpRoutes, grpcRoutes, referenceGrants []*unstructured.Unstructured
	// routeBudget bounds what routes cost the mesh (budget.go).
	routeBudget routeBudget
}

// verdict is what the control plane says about one weft object: the status
// it should carry.
type verdict struct {
	gvr        schema.GroupVersionResource
	kind       string
	obj        *unstructured.Unstructured
	accepted   bool
	reason     string
	message    string
	generation int64
	// routeParents is a Gateway API route's status.parents entries of
	// weft's (routes.go); then accepted, reason and message are for the
	// Event only.
	routeParents []gwv1.RouteParentStatus
}

// build turns the state into the model's contents (not yet sorted: a
// Snapshot sorts them) and the verdicts on weft's objects. It is pure: same
// state, same result.
func build(st *state) (*mesh.Contents, []verdict) {
	s := &mesh.Contents{Mesh: defaultMeshConfig(st.td)}
	var verdicts []verdict
	judge := func(gvr schema.GroupVersionResource, kind string, u *unstructured.Unstructured, bad *invalid) {
		v := verdict{gvr: gvr, kind: kind, obj: u, accepted: bad == nil, generation: u.GetGeneration(),
			reason: v1alpha1.ReasonAccepted, message: kind + " is in force"}
		if bad != nil {
			v.reason, v.message = bad.reason, bad.message
			s.Rejected = append(s.Rejected, mesh.Rejected{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName(),
				Generation: u.GetGeneration(), Reason: bad.reason, Message: bad.message})
		}
		verdicts = append(verdicts, v)
	}

	idOf := &ids{td: st.td, cache: map[mesh.Key]spiffeid.ID{}}
	pods := make(map[mesh.Key]*mesh.Workload, len(st.pods))
	s.Workloads = make([]*mesh.Workload, 0, len(st.pods))
	for _, p := range st.pods {
		if finished(p) {
			continue
		}
		w := workload(p, idOf)
		pods[mesh.Key{Namespace: p.Namespace, Name: p.Name}] = w
		s.Workloads = append(s.Workloads, w)
	}
	for _, ns := range st.namespaces {
		s.Namespaces = append(s.Namespaces, mesh.Namespace{Name: ns.Name, Labels: ns.Labels, Injection: ns.Labels[injectLabel] == injectEnabled})
	}
	for _, sa := range st.serviceAccounts {
		s.ServiceAccounts = append(s.ServiceAccounts, mesh.ServiceAccount{Namespace: sa.Namespace, Name: sa.Name, ID: idOf.of(sa.Namespace, sa.Name)})
	}
	slicesBySvc := map[mesh.Key][]*discoveryv1.EndpointSlice{}
	for _, es := range st.slices {
		if name := es.Labels[discoveryv1.LabelServiceName]; name != "" {
			k := mesh.Key{Namespace: es.Namespace, Name: name}
			slicesBySvc[k] = append(slicesBySvc[k], es)
		}
	}
	for _, svc := range st.services {
		s.Services = append(s.Services, service(svc, slicesBySvc[mesh.Key{Namespace: svc.Namespace, Name: svc.Name}], pods))
	}

	judgeAs := func(gvr schema.GroupVersionResource, kind string) func(*unstructured.Unstructured, *invalid) {
		return func(u *unstructured.Unstructured, bad *invalid) { judge(gvr, kind, u, bad) }
	}
	for _, u := range st.meshConfigs {
		resolve := func(mc *v1alpha1.MeshConfig) (mesh.MeshConfig, *invalid) { return meshConfig(mc, st.td) }
		if cfg, ok := admit(u, resolve, judgeAs(v1alpha1.MeshConfigResource, v1alpha1.MeshConfigKind)); ok {
			s.Mesh = cfg
		}
	}
	for _, u := range st.mtlsPolicies {
		if p, ok := admit(u, mtlsPolicy, judgeAs(v1alpha1.MTLSPolicyResource, v1alpha1.MTLSPolicyKind)); ok {
			s.MTLSPolicies = append(s.MTLSPolicies, p)
		}
	}
	for _, u := range st.authzPolicies {
		resolve := func(p *v1alpha1.AuthorizationPolicy) (*mesh.AuthorizationPolicy, *invalid) {
			return authorizationPolicy(p, st.td)
		}
		if p, ok := admit(u, resolve, judgeAs(v1alpha1.AuthorizationPolicyResource, v1alpha1.AuthorizationPolicyKind)); ok {
			s.AuthorizationPolicies = append(s.AuthorizationPolicies, p)
		}
	}
	for _, u := range st.egressPolicies {
		if p, ok := admit(u, egressPolicy, judgeAs(v1alpha1.EgressPolicyResource, v1alpha1.EgressPolicyKind)); ok {
			s.EgressPolicies = append(s.EgressPolicies, p)
			verdicts[len(verdicts)-1].message = egressInForce(p)
		}
	}

	routes, routeVerdicts := routesOf(st)
	s.Routes = routes
	verdicts = append(verdicts, routeVerdicts...)
	return s, verdicts
}

func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// ids makes workload IDs, each once per build.
type ids struct {
	td    spiffeid.TrustDomain
	cache map[mesh.Key]spiffeid.ID
}

func (c *ids) of(ns, sa string) spiffeid.ID {
	k := mesh.Key{Namespace: ns, Name: sa}
	id, ok := c.cache[k]
	if !ok {
		id = workloadID(c.td, ns, sa)
		c.cache[k] = id
	}
	return id
}

func workloadID(td spiffeid.TrustDomain, ns, sa string) spiffeid.ID {
	id, err := spiffeid.FromSegments(td, "ns", ns, "sa", sa)
	if err != nil {
		return spiffeid.ID{} // not reachable for names the API server accepts
	}
	return id
}

func serviceAccountOf(p *corev1.Pod) string { return cmp.Or(p.Spec.ServiceAccountName, "default") }

func injected(p *corev1.Pod) bool {
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range cs {
			if cs[i].Name == proxyContainer {
				return true
			}
		}
	}
	return false
}

func workload(p *corev1.Pod, idOf *ids) *mesh.Workload {
	w := &mesh.Workload{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID), Labels: p.Labels,
		ServiceAccount: serviceAccountOf(p), Injected: injected(p), HostNetwork: p.Spec.HostNetwork, NodeName: p.Spec.NodeName,
		InboundLoopbackPorts: inboundLoopbackPorts(p)}
	w.Identity = idOf.of(p.Namespace, w.ServiceAccount)
	for _, pip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(pip.IP); err == nil && !slices.Contains(w.IPs, a.Unmap()) {
			w.IPs = append(w.IPs, a.Unmap())
		}
	}
	if len(w.IPs) == 0 && p.Status.PodIP != "" {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			w.IPs = append(w.IPs, a.Unmap())
		}
	}
	return w
}

func service(svc *corev1.Service, eps []*discoveryv1.EndpointSlice, pods map[mesh.Key]*mesh.Workload) *mesh.Service {
	out := &mesh.Service{Namespace: svc.Namespace, Name: svc.Name, Type: string(svc.Spec.Type), ExternalName: svc.Spec.ExternalName,
		Created: svc.CreationTimestamp.Time}
	if out.Type == "" {
		out.Type = string(corev1.ServiceTypeClusterIP)
	}
	if len(svc.Spec.Selector) > 0 {
		out.Selector = svc.Spec.Selector
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil { // "None" for headless
			out.ClusterIPs = append(out.ClusterIPs, a.Unmap())
		}
	}
	for _, p := range svc.Spec.Ports {
		sp := mesh.ServicePort{Name: p.Name, Port: uint16(p.Port), Protocol: cmp.Or(string(p.Protocol), string(corev1.ProtocolTCP)),
			AppProtocol: appProtocol(p.Name, p.AppProtocol)}
		if p.TargetPort.StrVal != "" {
			sp.TargetPortName = p.TargetPort.StrVal
		} else {
			sp.TargetPort = uint16(cmp.Or(p.TargetPort.IntVal, p.Port))
		}
		out.Ports = append(out.Ports, sp)
	}

	// Endpoints, one per address: the same address may appear in two slices
	// while the EndpointSlice controller moves it; a ready entry wins.
	slices.SortFunc(eps, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	seen := map[netip.Addr]int{}
	for _, es := range eps {
		if es.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		var ports []mesh.EndpointPort
		for _, p := range es.Ports {
			if p.Port == nil {
				continue
			}
			ports = append(ports, mesh.EndpointPort{Name: deref(p.Name), Port: uint16(*p.Port), Protocol: string(deref(p.Protocol))})
		}
		slices.SortFunc(ports, func(a, b mesh.EndpointPort) int { return cmp.Compare(a.Name, b.Name) })
		for _, e := range es.Endpoints {
			ep := mesh.Endpoint{Ports: ports, NodeName: deref(e.NodeName),
				Ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
				Serving:     e.Conditions.Serving == nil || *e.Conditions.Serving,
				Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating}
			if ep.Terminating && e.Conditions.Ready == nil {
				ep.Ready = false // the API's rule: ready is never true for a terminating endpoint
			}
			if ref := e.TargetRef; ref != nil && ref.Kind == "Pod" {
				ns := cmp.Or(ref.Namespace, es.Namespace)
				if w, ok := pods[mesh.Key{Namespace: ns, Name: ref.Name}]; ok {
					ep.Pod = &mesh.Key{Namespace: ns, Name: ref.Name}
					ep.Identity = w.Identity
					ep.Injected = w.Injected
				}
			}
			for _, addr := range e.Addresses {
				a, err := netip.ParseAddr(addr)
				if err != nil {
					continue
				}
				ep.Address = a.Unmap()
				if i, dup := seen[ep.Address]; dup {
					if !out.Endpoints[i].Ready && ep.Ready {
						out.Endpoints[i] = ep
					}
					continue
				}
				seen[ep.Address] = len(out.Endpoints)
				out.Endpoints = append(out.Endpoints, ep)
			}
		}
	}
	slices.SortFunc(out.Endpoints, func(a, b mesh.Endpoint) int { return a.Address.Compare(b.Address) })
	for _, e := range out.Endpoints {
		if !e.Identity.IsZero() {
			out.Identities = append(out.Identities, e.Identity)
		}
	}
	slices.SortFunc(out.Identities, func(a, b spiffeid.ID) int { return strings.Compare(a.String(), b.String()) })
	out.Identities = slices.Compact(out.Identities)
	return out
}

// knownAppProtocols maps appProtocol values and port-name prefixes.
var knownAppProtocols = map[string]mesh.AppProtocol{
	"http": mesh.AppProtocolHTTP, "http2": mesh.AppProtocolHTTP2, "kubernetes.io/h2c": mesh.AppProtocolHTTP2,
	"grpc": mesh.AppProtocolGRPC, "tcp": mesh.AppProtocolTCP, "tls": mesh.AppProtocolTLS, "https": mesh.AppProtocolTLS,
}

// appProtocol follows Kubernetes' appProtocol, then Istio's port-name
// convention ("http", "http-web", "grpc-api", "tcp-db", "tls-x").
func appProtocol(name string, ap *string) mesh.AppProtocol {
	if ap != nil && *ap != "" {
		return knownAppProtocols[strings.ToLower(*ap)]
	}
	prefix, _, _ := strings.Cut(strings.ToLower(name), "-")
	return knownAppProtocols[prefix]
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// admit decodes a weft object into its API type, resolves it into the
// model, and records the verdict (in force, or rejected with its reason);
// ok says whether the result is in force.
func admit[T, R any](u *unstructured.Unstructured, resolve func(*T) (R, *invalid), judge func(*unstructured.Unstructured, *invalid)) (out R, ok bool) {
	var obj T
	bad := decode(u, &obj)
	if bad == nil {
		out, bad = resolve(&obj)
	}
	judge(u, bad)
	return out, bad == nil
}
