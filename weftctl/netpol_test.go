package weftctl

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/injector"
)

// The cluster of these tests: weft's control plane (two replicas,
// 198.18.0.10 and .11, dual-stack, container port grpc-tls 15012) in weft-system, a
// meshed pod "client" (app=client) and an unmeshed pod "plain" in the
// injected namespace "shop", and a node whose kubelet sends the pods' DNS
// to 198.18.255.1 (a host address, as in test/cluster).

func npNamespace(name string, extra map[string]string) *corev1.Namespace {
	l := map[string]string{"kubernetes.io/metadata.name": name}
	for k, v := range extra {
		l[k] = v
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
}

func npCPPod(name, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "weft-system", Labels: map[string]string{"app.kubernetes.io/name": "weft-controlplane"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "controlplane", Ports: []corev1.ContainerPort{
			{Name: "grpc-tls", ContainerPort: 15012}, {Name: "http-admin", ContainerPort: 15014}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}, {IP: "2001:2:0:18::" + ip[len("198.18.0."):]}}},
	}
}

func npAppPod(name string, meshed bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if meshed {
		p.Spec.InitContainers = []corev1.Container{{Name: injector.ProxyName, RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}}
	}
	return p
}

func npPolicy(name string, sel map[string]string, types []networkingv1.PolicyType, egress ...networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: sel}, PolicyTypes: types, Egress: egress},
	}
}

var egressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}

func tcp(port intstr.IntOrString) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: ptr.To(corev1.ProtocolTCP), Port: &port}
}

func udp(port int) networkingv1.NetworkPolicyPort {
	p := intstr.FromInt(port)
	return networkingv1.NetworkPolicyPort{Protocol: ptr.To(corev1.ProtocolUDP), Port: &p}
}

func toWeftCP(nsLabels map[string]string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: nsLabels},
		PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "weft-controlplane"}},
	}
}

func ipBlock(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

// allowDNS: 53/UDP and 53/TCP to the host address the kubelet names.
func allowDNS() *networkingv1.NetworkPolicy {
	return npPolicy("allow-dns", nil, egressOnly, networkingv1.NetworkPolicyEgressRule{
		Ports: []networkingv1.NetworkPolicyPort{udp(53), tcp(intstr.FromInt(53))},
		To:    []networkingv1.NetworkPolicyPeer{ipBlock("198.18.255.1/32")},
	})
}

var defaultDeny = npPolicy("default-deny", nil, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress})

func runNetpolCheck(t *testing.T, dns func(context.Context, kubernetes.Interface, string) ([]string, error), objs ...runtime.Object) *checkReport {
	t.Helper()
	orig := kubeletClusterDNS
	kubeletClusterDNS = dns
	t.Cleanup(func() { kubeletClusterDNS = orig })
	base := []runtime.Object{
		npNamespace("weft-system", nil), npNamespace("kube-system", nil), npNamespace("shop", map[string]string{"weft.dev/inject": "enabled"}),
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}},
		npCPPod("cp-1", "198.18.0.10"), npCPPod("cp-2", "198.18.0.11"),
		npAppPod("client", true), npAppPod("plain", false),
	}
	e := &env{kube: fake.NewClientset(append(base, objs...)...), weftNS: "weft-system"}
	r := &checkReport{}
	checkNetworkPolicies(context.Background(), e, r)
	return r
}

func hostDNS(context.Context, kubernetes.Interface, string) ([]string, error) {
	return []string{"198.18.255.1"}, nil
}

func noConfigz(context.Context, kubernetes.Interface, string) ([]string, error) {
	return nil, errors.New("nodes/proxy is forbidden")
}

// results lists "status|message" of every result, for the failures' text.
func results(r *checkReport) string {
	var b strings.Builder
	for _, c := range r.Results {
		b.WriteString("\n  [" + c.Status + "] " + c.Check + ": " + c.Message)
	}
	return b.String()
}

// fails returns the FAIL messages that mention sub.
func fails(r *checkReport, sub string) []string {
	var out []string
	for _, c := range r.Results {
		if c.Status == checkFail && strings.Contains(c.Message, sub) {
			out = append(out, c.Message)
		}
	}
	return out
}

func TestCheckNetworkPolicies(t *testing.T) {
	weftNSByName := map[string]string{"kubernetes.io/metadata.name": "weft-system"}
	allowCP := func(peers ...networkingv1.NetworkPolicyPeer) *networkingv1.NetworkPolicy {
		return npPolicy("allow-weft", nil, egressOnly, networkingv1.NetworkPolicyEgressRule{
			Ports: []networkingv1.NetworkPolicyPort{tcp(intstr.FromInt(15012))}, To: peers})
	}
	cases := []struct {
		name     string
		objs     []runtime.Object
		dns      func(context.Context, kubernetes.Interface, string) ([]string, error)
		cpFail   bool // a FAIL about the control plane
		dnsFails int  // FAILs about the cluster DNS (UDP, TCP)
		want     string
	}{
		{name: "no policies", want: "no NetworkPolicy isolates the egress of a meshed pod"},
		{name: "ingress-only default deny does not isolate egress",
			objs: []runtime.Object{npPolicy("deny-in", nil, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress})}, want: "no NetworkPolicy isolates the egress of a meshed pod"},
		{name: "default deny egress", objs: []runtime.Object{defaultDeny}, cpFail: true, dnsFails: 2, want: "default-deny"},
		{name: "default deny, 15012 to weft-system's control plane by namespace name, DNS",
			objs: []runtime.Object{defaultDeny, allowCP(toWeftCP(weftNSByName)), allowDNS()}, want: "admitted by allow-weft"},
		{name: "allowed on another port",
			objs: []runtime.Object{defaultDeny, npPolicy("allow-weft", nil, egressOnly, networkingv1.NetworkPolicyEgressRule{
				Ports: []networkingv1.NetworkPolicyPort{tcp(intstr.FromInt(15013))}, To: []networkingv1.NetworkPolicyPeer{toWeftCP(weftNSByName)}}), allowDNS()},
			cpFail: true, want: "allow-weft"},
		{name: "allowed to UDP 15012 only",
			objs: []runtime.Object{defaultDeny, npPolicy("allow-weft", nil, egressOnly, networkingv1.NetworkPolicyEgressRule{
				Ports: []networkingv1.NetworkPolicyPort{udp(15012)}, To: []networkingv1.NetworkPolicyPeer{toWeftCP(weftNSByName)}}), allowDNS()},
			cpFail: true},
		{name: "namespaceSelector names another namespace",
			objs:   []runtime.Object{defaultDeny, allowCP(toWeftCP(map[string]string{"kubernetes.io/metadata.name": "weft"})), allowDNS()},
			cpFail: true},
		{name: "podSelector alone means the policy's own namespace",
			objs: []runtime.Object{defaultDeny, allowCP(networkingv1.NetworkPolicyPeer{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "weft-controlplane"}}}), allowDNS()},
			cpFail: true},
		{name: "namespaceSelector {} with the pod selector", objs: []runtime.Object{defaultDeny, allowCP(toWeftCP(nil)), allowDNS()}},
		{name: "named port of the control plane's container", objs: []runtime.Object{defaultDeny,
			npPolicy("allow-weft", nil, egressOnly, networkingv1.NetworkPolicyEgressRule{
				Ports: []networkingv1.NetworkPolicyPort{tcp(intstr.FromString("grpc-tls"))}, To: []networkingv1.NetworkPolicyPeer{toWeftCP(weftNSByName)}}), allowDNS()},
			want: "admitted by allow-weft"},
		{name: "named port no container has", objs: []runtime.Object{defaultDeny,
			npPolicy("allow-weft", nil, egressOnly, networkingv1.NetworkPolicyEgressRule{
				Ports: []networkingv1.NetworkPolicyPort{tcp(intstr.FromString("grpc"))}, To: []networkingv1.NetworkPolicyPeer{toWeftCP(weftNSByName)}}), allowDNS()},
			cpFail: true},
		{name: "port range holding 15012", objs: []runtime.Object{defaultDeny,
			npPolicy("allow-weft", nil, egressOnly, networkingv1.NetworkPolicyEgressRule{
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(intstr.FromInt(15000)), EndPort: ptr.To[int32](15100)}},
				To:    []networkingv1.NetworkPolicyPeer{toWeftCP(weftNSByName)}}), allowDNS()}},
		{name: "ipBlock holding both replicas' IPs", objs: []runtime.Object{defaultDeny, allowCP(ipBlock("198.18.0.0/24")), allowDNS()},
			want: "through an ipBlock"},
		{name: "ipBlock excepting one replica", objs: []runtime.Object{defaultDeny, allowCP(ipBlock("198.18.0.0/24", "198.18.0.11/32")), allowDNS()},
			cpFail: true, want: "198.18.0.11"},
		{name: "ipBlock holding one replica", objs: []runtime.Object{defaultDeny, allowCP(ipBlock("198.18.0.10/32")), allowDNS()},
			cpFail: true},
		{name: "ipBlock of the IPv6 addresses only (the Service the sidecar dials is IPv4)",
			objs: []runtime.Object{defaultDeny, allowCP(ipBlock("2001:2:0:18::/64")), allowDNS()}, cpFail: true},
		{name: "a rule with no ports and no peers admits everything",
			objs: []runtime.Object{defaultDeny, npPolicy("allow-all-egress", nil, egressOnly, networkingv1.NetworkPolicyEgressRule{})}},
		{name: "policyTypes absent: egress rules make it an egress policy",
			objs: []runtime.Object{npPolicy("implicit", map[string]string{"app": "client"}, nil, networkingv1.NetworkPolicyEgressRule{
				Ports: []networkingv1.NetworkPolicyPort{tcp(intstr.FromInt(8080))}})},
			cpFail: true, dnsFails: 2, want: "implicit"},
		{name: "a policy selecting only other pods", objs: []runtime.Object{npPolicy("deny-plain", map[string]string{"app": "plain"}, egressOnly)},
			want: "no NetworkPolicy isolates the egress of a meshed pod"},
		{name: "DNS only over UDP", objs: []runtime.Object{defaultDeny, allowCP(toWeftCP(weftNSByName)),
			npPolicy("allow-dns", nil, egressOnly, networkingv1.NetworkPolicyEgressRule{
				Ports: []networkingv1.NetworkPolicyPort{udp(53)}, To: []networkingv1.NetworkPolicyPeer{ipBlock("198.18.255.1/32")}})},
			dnsFails: 1, want: "53/TCP"},
		{name: "DNS to another address", objs: []runtime.Object{defaultDeny, allowCP(toWeftCP(weftNSByName)),
			npPolicy("allow-dns", nil, egressOnly, networkingv1.NetworkPolicyEgressRule{
				Ports: []networkingv1.NetworkPolicyPort{udp(53), tcp(intstr.FromInt(53))}, To: []networkingv1.NetworkPolicyPeer{ipBlock("198.18.255.2/32")}})},
			dnsFails: 2},
		{name: "DNS server unknown, port 53 admitted somewhere: a warning", dns: noConfigz,
			objs: []runtime.Object{defaultDeny, allowCP(toWeftCP(weftNSByName)), allowDNS()}, want: "could not be found"},
		{name: "DNS server unknown, port 53 admitted nowhere", dns: noConfigz,
			objs: []runtime.Object{defaultDeny, allowCP(toWeftCP(weftNSByName))}, dnsFails: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dns := tc.dns
			if dns == nil {
				dns = hostDNS
			}
			r := runNetpolCheck(t, dns, tc.objs...)
			cp := fails(r, "the control plane")
			dnsF := fails(r, "the cluster DNS")
			if (len(cp) > 0) != tc.cpFail || len(dnsF) != tc.dnsFails || r.Problems != len(cp)+len(dnsF) {
				t.Fatalf("control plane FAIL %v (want %v), DNS FAILs %d (want %d), problems %d:%s", len(cp) > 0, tc.cpFail, len(dnsF), tc.dnsFails, r.Problems, results(r))
			}
			if tc.want != "" && !strings.Contains(results(r), tc.want) {
				t.Fatalf("no result says %q:%s", tc.want, results(r))
			}
			for _, f := range append(cp, dnsF...) {
				if !strings.Contains(f, "pods client:") || strings.Contains(f, "plain") || !strings.Contains(f, "Add ") {
					t.Fatalf("a FAIL must name the meshed pod (not the unmeshed one) and what to add: %q", f)
				}
			}
		})
	}
}

// TestCheckNetworkPoliciesKubeDNS: with the cluster DNS behind the Service
// kube-system/kube-dns, policies are judged against its pods (after the
// Service's DNAT), not its ClusterIP.
func TestCheckNetworkPoliciesKubeDNS(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"},
		Spec: corev1.ServiceSpec{ClusterIP: "198.19.0.10", ClusterIPs: []string{"198.19.0.10"}}}
	dnsPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "coredns-1", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.18.0.53", PodIPs: []corev1.PodIP{{IP: "198.18.0.53"}}}}
	eps := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-x", Namespace: "kube-system", Labels: map[string]string{"kubernetes.io/service-name": "kube-dns"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"198.18.0.53"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "coredns-1", Namespace: "kube-system"}}}}
	allowCP := npPolicy("allow-weft", nil, egressOnly, networkingv1.NetworkPolicyEgressRule{
		Ports: []networkingv1.NetworkPolicyPort{tcp(intstr.FromInt(15012))}, To: []networkingv1.NetworkPolicyPeer{toWeftCP(nil)}})
	dnsRule := func(peer networkingv1.NetworkPolicyPeer) *networkingv1.NetworkPolicy {
		return npPolicy("allow-dns", nil, egressOnly, networkingv1.NetworkPolicyEgressRule{
			Ports: []networkingv1.NetworkPolicyPort{udp(53), tcp(intstr.FromInt(53))}, To: []networkingv1.NetworkPolicyPeer{peer}})
	}
	kubeDNSPods := networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}},
		PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
	}
	serviceIP := func(context.Context, kubernetes.Interface, string) ([]string, error) {
		return []string{"198.19.0.10"}, nil
	}
	for _, tc := range []struct {
		name  string
		dns   func(context.Context, kubernetes.Interface, string) ([]string, error)
		peer  networkingv1.NetworkPolicyPeer
		fails int
	}{
		{"kubelet names the Service's IP, the policy its pods", serviceIP, kubeDNSPods, 0},
		{"configz unreadable, kube-dns found by name", noConfigz, kubeDNSPods, 0},
		{"the policy names the ClusterIP, which the pods' traffic no longer has", serviceIP, ipBlock("198.19.0.10/32"), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runNetpolCheck(t, tc.dns, svc, dnsPod, eps, defaultDeny, allowCP, dnsRule(tc.peer))
			if got := len(fails(r, "the cluster DNS")); got != tc.fails || r.Problems != tc.fails {
				t.Fatalf("DNS FAILs %d, problems %d, want %d:%s", got, r.Problems, tc.fails, results(r))
			}
		})
	}
}
