package weftctl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/api/names"
)

// NetworkPolicy: whether the policies of an injected namespace let its
// sidecars reach what every sidecar needs (the control plane's 15012, for
// its certificate and its configuration; the cluster DNS, to find the
// control plane), judged by the networking.k8s.io/v1 semantics any
// implementation enforces:
//
//   - a pod is isolated for egress when some policy of its namespace
//     selects it (spec.podSelector) and has Egress among its policyTypes
//     (an absent policyTypes means Ingress, plus Egress when spec.egress
//     has rules); an isolated pod may send only what some egress rule of
//     one of those policies admits;
//   - a rule admits a destination when one of its ports matches (none
//     listed: every port; protocol TCP when absent; a named port is the
//     destination pod's container port of that name; endPort a range) and
//     one of its peers does (none listed: everywhere; podSelector alone:
//     pods of the policy's namespace; namespaceSelector: pods of the
//     namespaces it selects, narrowed by a podSelector beside it; ipBlock:
//     the destination's address within cidr and outside except).
//
// The destinations are the control plane's running pods: their labels,
// their namespace's labels (kubernetes.io/metadata.name among them) and
// their IPs. An ipBlock is judged against each pod's primary IP (that of
// the cluster's single-stack Services, which the sidecar dials), and those
// change when a pod is rescheduled: a policy that admits the control plane only through
// an ipBlock passes, with a note saying so. The cluster DNS is the
// kubelet's clusterDNS (its /configz, through the API server's node proxy;
// kube-system/kube-dns when that cannot be read): a Service's ClusterIP
// stands for that Service's endpoints (policies see traffic after the
// Service's DNAT), any other address for itself (a DNS server on the
// host). When none can be found only "port 53 is admitted to somewhere"
// can be checked, and check says so (a warning, not a failure).

// netpolDest is one destination a sidecar must reach.
type netpolDest struct {
	namespace string
	nsLabels  map[string]string
	labels    map[string]string // nil: not a pod (a host address)
	ips       []netip.Addr
	ports     []corev1.ContainerPort // the pod's container ports, for named ports
}

// policyEgressTypes reports whether p isolates the pods it selects for
// egress.
func policyHasEgress(p *networkingv1.NetworkPolicy) bool {
	if len(p.Spec.PolicyTypes) == 0 {
		return len(p.Spec.Egress) > 0
	}
	return slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
}

func selects(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false // an invalid selector selects nothing (the API server rejects it anyway)
	}
	return s.Matches(labels.Set(l))
}

// portAdmits reports whether the rule port np admits proto/port on dest.
func portAdmits(np networkingv1.NetworkPolicyPort, proto corev1.Protocol, port int32, dest netpolDest) bool {
	want := corev1.ProtocolTCP
	if np.Protocol != nil {
		want = *np.Protocol
	}
	if want != proto {
		return false
	}
	if np.Port == nil {
		return true
	}
	if np.Port.Type == intstr.String { // a named port of the destination pod
		for _, cp := range dest.ports {
			p := cp.Protocol
			if p == "" {
				p = corev1.ProtocolTCP
			}
			if cp.Name == np.Port.StrVal && cp.ContainerPort == port && p == proto {
				return true
			}
		}
		return false
	}
	lo := np.Port.IntVal
	hi := lo
	if np.EndPort != nil {
		hi = *np.EndPort
	}
	return port >= lo && port <= hi
}

// peerAdmits reports whether peer (of a policy in namespace policyNS)
// admits dest, and whether it did so through an ipBlock.
func peerAdmits(peer networkingv1.NetworkPolicyPeer, policyNS string, dest netpolDest) (ok, viaIPBlock bool) {
	if peer.IPBlock != nil {
		if len(dest.ips) == 0 {
			return false, false
		}
		cidr, err := netip.ParsePrefix(peer.IPBlock.CIDR)
		if err != nil {
			return false, false
		}
		// The primary address (status.podIPs[0]): the family of the
		// single-stack Services (weft-controlplane's among them) the
		// sidecar dials.
		ip := dest.ips[0]
		if !cidr.Contains(ip) {
			return false, false
		}
		for _, ex := range peer.IPBlock.Except {
			if e, err := netip.ParsePrefix(ex); err == nil && e.Contains(ip) {
				return false, false
			}
		}
		return true, true
	}
	if dest.labels == nil {
		return false, false // selectors name pods, not host addresses
	}
	if peer.NamespaceSelector != nil {
		if !selects(peer.NamespaceSelector, dest.nsLabels) {
			return false, false
		}
	} else if dest.namespace != policyNS {
		return false, false
	}
	if peer.PodSelector != nil && !selects(peer.PodSelector, dest.labels) {
		return false, false
	}
	return true, false
}

// egressAdmits reports whether the egress-isolating policies admit
// proto/port to dest, the names of those that do, and whether each
// admission went through an ipBlock.
func egressAdmits(policies []*networkingv1.NetworkPolicy, proto corev1.Protocol, port int32, dest netpolDest) (by []string, onlyIPBlock bool) {
	onlyIPBlock = true
	for _, p := range policies {
		admitted := false
		for _, rule := range p.Spec.Egress {
			portOK := len(rule.Ports) == 0
			for _, np := range rule.Ports {
				portOK = portOK || portAdmits(np, proto, port, dest)
			}
			if !portOK {
				continue
			}
			if len(rule.To) == 0 {
				admitted, onlyIPBlock = true, false
				continue
			}
			for _, peer := range rule.To {
				if ok, ipb := peerAdmits(peer, p.Namespace, dest); ok {
					admitted = true
					onlyIPBlock = onlyIPBlock && ipb
				}
			}
		}
		if admitted {
			by = append(by, p.Name)
		}
	}
	return by, onlyIPBlock && len(by) > 0
}

// netpolNeed is one thing every sidecar must be able to send.
type netpolNeed struct {
	what  string
	proto corev1.Protocol
	port  int32
	dests []netpolDest // all of them must be admitted; none known: see anyDest
	// unknown: why the destinations are not known (then only whether the
	// port is admitted to some peer is judged); "" when they are.
	unknown string
	fix     string
}

// checkNetworkPolicies reports, for every injected namespace whose
// NetworkPolicies isolate meshed pods for egress, whether those pods'
// sidecars can still reach the control plane on 15012 and the cluster DNS.
func checkNetworkPolicies(ctx context.Context, e *env, r *checkReport) {
	nss, err := e.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: names.InjectLabel + "=" + names.InjectEnabled})
	if err != nil {
		r.add("network policy", checkWarn, "list injected namespaces: %v", err)
		return
	}
	var needs []netpolNeed
	cp, cpWhy := controlPlaneDests(ctx, e)
	fixCP := fmt.Sprintf("an egress rule to port %d/TCP with namespaceSelector {kubernetes.io/metadata.name: %s} and podSelector {%s: %s} (examples/networkpolicy/20-allow-weft-sidecar.yaml)",
		names.ControlPlaneGRPC, e.weftNS, names.AppLabel, names.ControlPlane)
	needs = append(needs, netpolNeed{what: fmt.Sprintf("the control plane (%s, port %d/TCP)", e.weftNS, names.ControlPlaneGRPC),
		proto: corev1.ProtocolTCP, port: names.ControlPlaneGRPC, dests: cp, unknown: cpWhy, fix: fixCP})
	dns, dnsWhy := clusterDNSDests(ctx, e)
	fixDNS := "an egress rule to port 53 (UDP and TCP) of the cluster DNS: the kube-dns pods (namespaceSelector {kubernetes.io/metadata.name: kube-system}, podSelector {k8s-app: kube-dns}) or its address as an ipBlock"
	for _, proto := range []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP} {
		needs = append(needs, netpolNeed{what: "the cluster DNS (port 53/" + string(proto) + ")",
			proto: proto, port: 53, dests: dns, unknown: dnsWhy, fix: fixDNS})
	}

	checked := 0
	for _, ns := range nss.Items {
		if ns.Name == "kube-system" || ns.Name == e.weftNS {
			continue
		}
		pols, err := e.kube.NetworkingV1().NetworkPolicies(ns.Name).List(ctx, metav1.ListOptions{})
		if err != nil {
			r.add("network policy "+ns.Name, checkWarn, "list NetworkPolicies: %v", err)
			continue
		}
		var egress []*networkingv1.NetworkPolicy
		for i := range pols.Items {
			if policyHasEgress(&pols.Items[i]) {
				egress = append(egress, &pols.Items[i])
			}
		}
		if len(egress) == 0 {
			continue
		}
		pods, err := e.kube.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{})
		if err != nil {
			r.add("network policy "+ns.Name, checkWarn, "list pods: %v", err)
			continue
		}
		// Pods with the same isolating policies are judged once.
		type group struct {
			policies []*networkingv1.NetworkPolicy
			pods     []string
		}
		groups := map[string]*group{}
		var keys []string
		for i := range pods.Items {
			p := &pods.Items[i]
			if !hasSidecar(p) || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil {
				continue
			}
			var sel []*networkingv1.NetworkPolicy
			var polNames []string
			for _, pol := range egress {
				if selects(&pol.Spec.PodSelector, p.Labels) {
					sel = append(sel, pol)
					polNames = append(polNames, pol.Name)
				}
			}
			if len(sel) == 0 {
				continue
			}
			k := strings.Join(polNames, ",")
			if groups[k] == nil {
				groups[k] = &group{policies: sel}
				keys = append(keys, k)
			}
			groups[k].pods = append(groups[k].pods, p.Name)
		}
		slices.Sort(keys)
		checked += len(keys)
		for _, k := range keys {
			g := groups[k]
			slices.Sort(g.pods)
			pods := strings.Join(g.pods, ", ")
			for _, need := range needs {
				check := "network policy " + ns.Name
				if need.unknown != "" {
					if by := portAnywhere(g.policies, need.proto, need.port); len(by) == 0 {
						r.add(check, checkFail, "pods %s: policies %s isolate them for egress and admit nothing to port %d/%s, so their sidecars cannot reach %s. Add %s",
							pods, k, need.port, need.proto, need.what, need.fix)
					} else {
						r.add(check, checkWarn, "pods %s: %s admit port %d/%s to some destinations, but where %s is could not be found (%s), so whether it is among them is not known",
							pods, strings.Join(by, ", "), need.port, need.proto, need.what, need.unknown)
					}
					continue
				}
				var missing []string
				var by []string
				viaIP := false
				for _, d := range need.dests {
					b, ipOnly := egressAdmits(g.policies, need.proto, need.port, d)
					if len(b) == 0 {
						missing = append(missing, d.describe())
						continue
					}
					by = append(by, b...)
					viaIP = viaIP || ipOnly
				}
				slices.Sort(by)
				by = slices.Compact(by)
				switch {
				case len(missing) > 0:
					r.add(check, checkFail, "pods %s: policies %s isolate them for egress and admit no traffic to %s at %s, so their sidecars cannot reach it. Add %s",
						pods, k, need.what, strings.Join(missing, ", "), need.fix)
				case viaIP:
					r.add(check, checkOK, "pods %s reach %s (admitted by %s, through an ipBlock holding today's addresses: a rescheduled pod may fall outside it)",
						pods, need.what, strings.Join(by, ", "))
				default:
					r.add(check, checkOK, "pods %s reach %s (admitted by %s)", pods, need.what, strings.Join(by, ", "))
				}
			}
		}
	}
	if checked == 0 {
		r.add("network policy", checkOK, "no NetworkPolicy isolates the egress of a meshed pod")
	}
}

// portAnywhere lists the policies with an egress rule that admits
// proto/port to some destination.
func portAnywhere(policies []*networkingv1.NetworkPolicy, proto corev1.Protocol, port int32) []string {
	var by []string
	for _, p := range policies {
		for _, rule := range p.Spec.Egress {
			ok := len(rule.Ports) == 0
			for _, np := range rule.Ports {
				// A named port can only be judged against a known pod.
				ok = ok || (np.Port == nil || np.Port.Type == intstr.Int) && portAdmits(np, proto, port, netpolDest{})
			}
			if ok {
				by = append(by, p.Name)
				break
			}
		}
	}
	return by
}

func (d netpolDest) describe() string {
	ips := make([]string, len(d.ips))
	for i, ip := range d.ips {
		ips[i] = ip.String()
	}
	if d.labels == nil {
		return strings.Join(ips, "/")
	}
	return d.namespace + " pod " + strings.Join(ips, "/")
}

// controlPlaneDests is the control plane's running pods as destinations.
func controlPlaneDests(ctx context.Context, e *env) ([]netpolDest, string) {
	ns, err := e.kube.CoreV1().Namespaces().Get(ctx, e.weftNS, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Sprintf("namespace %s: %v", e.weftNS, err)
	}
	pods, err := e.kube.CoreV1().Pods(e.weftNS).List(ctx, metav1.ListOptions{LabelSelector: names.Selector(names.ControlPlane)})
	if err != nil {
		return nil, fmt.Sprintf("control plane pods: %v", err)
	}
	var out []netpolDest
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		out = append(out, podDest(&p, ns.Labels))
	}
	if len(out) == 0 {
		return nil, "no control plane pod is running"
	}
	return out, ""
}

func podDest(p *corev1.Pod, nsLabels map[string]string) netpolDest {
	d := netpolDest{namespace: p.Namespace, nsLabels: nsLabels, labels: p.Labels}
	if d.labels == nil {
		d.labels = map[string]string{}
	}
	for _, pip := range p.Status.PodIPs {
		if ip, err := netip.ParseAddr(pip.IP); err == nil {
			d.ips = append(d.ips, ip)
		}
	}
	if len(d.ips) == 0 {
		if ip, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			d.ips = append(d.ips, ip)
		}
	}
	for _, c := range p.Spec.Containers {
		d.ports = append(d.ports, c.Ports...)
	}
	return d
}

// kubeletClusterDNS reads the clusterDNS addresses of the kubelet of node
// (its /configz through the API server's node proxy; needs nodes/proxy).
// A variable: the unit tests' fake clientset has no REST client.
var kubeletClusterDNS = func(ctx context.Context, kube kubernetes.Interface, node string) ([]string, error) {
	rc := kube.CoreV1().RESTClient()
	if c, ok := rc.(*rest.RESTClient); !ok || c == nil {
		return nil, errors.New("no REST client")
	}
	raw, err := rc.Get().AbsPath("/api/v1/nodes", node, "proxy/configz").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		KubeletConfig struct {
			ClusterDNS []string `json:"clusterDNS"`
		} `json:"kubeletconfig"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return nil, err
	}
	return cfg.KubeletConfig.ClusterDNS, nil
}

// clusterDNSDests is where the pods' DNS goes: the kubelets' clusterDNS
// (of up to three nodes), else the Service kube-system/kube-dns; a
// Service's ClusterIP stands for its endpoints (pods, or addresses outside
// the pod network), any other address for itself. The string says why
// nothing was found.
func clusterDNSDests(ctx context.Context, e *env) ([]netpolDest, string) {
	var ips []string
	var why []string
	if nodes, err := e.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		why = append(why, "nodes: "+err.Error())
	} else {
		for i, n := range nodes.Items {
			if i == 3 {
				break
			}
			got, err := kubeletClusterDNS(ctx, e.kube, n.Name)
			if err != nil {
				why = append(why, "kubelet configz of "+n.Name+": "+err.Error())
				continue
			}
			for _, ip := range got {
				if !slices.Contains(ips, ip) {
					ips = append(ips, ip)
				}
			}
		}
	}
	svcs, err := e.kube.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, strings.Join(append(why, "services: "+err.Error()), "; ")
	}
	if len(ips) == 0 {
		for _, s := range svcs.Items {
			if s.Namespace == "kube-system" && s.Name == "kube-dns" {
				ips = append(ips, s.Spec.ClusterIPs...)
			}
		}
	}
	if len(ips) == 0 {
		return nil, strings.Join(append(why, "no Service kube-system/kube-dns"), "; ")
	}
	var out []netpolDest
	for _, a := range ips {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			continue
		}
		svc := slices.IndexFunc(svcs.Items, func(s corev1.Service) bool { return slices.Contains(s.Spec.ClusterIPs, a) })
		if svc < 0 {
			out = append(out, netpolDest{ips: []netip.Addr{ip}}) // a host address
			continue
		}
		eps, err := serviceDests(ctx, e, &svcs.Items[svc])
		if err != nil || len(eps) == 0 {
			return nil, fmt.Sprintf("the endpoints of Service %s/%s (the cluster DNS %s): %v", svcs.Items[svc].Namespace, svcs.Items[svc].Name, a, err)
		}
		out = append(out, eps...)
	}
	if len(out) == 0 {
		return nil, "no usable clusterDNS address in " + strings.Join(ips, ", ")
	}
	return out, ""
}

// serviceDests is a Service's endpoints: its pods, or its addresses when
// they are not pods.
func serviceDests(ctx context.Context, e *env, svc *corev1.Service) ([]netpolDest, error) {
	list, err := e.kube.DiscoveryV1().EndpointSlices(svc.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc.Name})
	if err != nil {
		return nil, err
	}
	nsObj, err := e.kube.CoreV1().Namespaces().Get(ctx, svc.Namespace, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var out []netpolDest
	seen := map[string]bool{}
	for _, s := range list.Items {
		for _, ep := range s.Endpoints {
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				if seen[ep.TargetRef.Name] {
					continue
				}
				seen[ep.TargetRef.Name] = true
				p, err := e.kube.CoreV1().Pods(svc.Namespace).Get(ctx, ep.TargetRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, err
				}
				out = append(out, podDest(p, nsObj.Labels))
				continue
			}
			for _, a := range ep.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil && !seen[a] {
					seen[a] = true
					out = append(out, netpolDest{ips: []netip.Addr{ip}})
				}
			}
		}
	}
	return out, nil
}
