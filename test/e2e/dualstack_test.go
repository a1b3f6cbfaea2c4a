//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/sidecar/proxy"
)

// podIPv6 is the pod's IPv6 address (the test cluster is dual-stack: every
// pod has one from 2001:2:0:18::/64 besides its IPv4 address).
func podIPv6(t *testing.T, p *corev1.Pod) netip.Addr {
	t.Helper()
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil && a.Is6() && !a.Is4In6() {
			return a
		}
	}
	t.Fatalf("pod %s/%s has no IPv6 address (podIPs %v): the test cluster is not dual-stack", p.Namespace, p.Name, p.Status.PodIPs)
	return netip.Addr{}
}

// TestDualStackPods: on a dual-stack cluster a meshed pod's IPv6 traffic is
// the mesh's as much as its IPv4 traffic. A client calls a server over the
// IPv6 ClusterIP of a RequireDualStack Service and over the server pod's
// IPv6 address: each request is served, and the server's sidecar lists the
// client's connection from its IPv6 address, mTLS with the client's SPIFFE
// ID over TLS 1.3. Plaintext from outside the mesh to the server's IPv6
// address is captured into the STRICT inbound listener and refused (its
// counter moving once per probe). Egress over IPv6 is decided like IPv4:
// with an EgressPolicy allowing api.example.test (an external host's IPv6
// address in the pod's hostAliases), the allowed name is served over HTTP
// and TLS; the allowed Host sent to the other external host's IPv6 address
// is refused as a name mismatch, an address no rule names is refused by the
// policy's default, and the control plane's audit trail holds each with its
// IPv6 destination and reason.
func TestDualStackPods(t *testing.T) {
	externalHost(t)
	const ns = "e2e-dualstack"
	meshNamespace(t, ns, "client", "server")
	ctx := context.Background()
	svc, err := kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "server"},
		Spec: corev1.ServiceSpec{
			Selector:       map[string]string{"app": "server"},
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack),
			IPFamilies:     []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol},
			Ports:          []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var svcIP6 netip.Addr
	for _, ip := range svc.Spec.ClusterIPs {
		if a, err := netip.ParseAddr(ip); err == nil && a.Is6() {
			svcIP6 = a
		}
	}
	if !svcIP6.IsValid() {
		t.Fatalf("the RequireDualStack Service has no IPv6 ClusterIP: %v", svc.Spec.ClusterIPs)
	}
	server := deployTestappAs(t, ns, "server", "server", "serve", "-addr", ":8080")
	orig := testappPodHook
	testappPodHook = func(p *corev1.Pod) {
		p.Spec.ServiceAccountName = "client"
		p.Spec.HostAliases = []corev1.HostAlias{{IP: externalIP6, Hostnames: []string{"api.example.test"}}}
	}
	client := deployTestapp(t, ns, "client", "svid")
	testappPodHook = orig
	requireSynced(t, server.Name+"."+ns)
	requireSynced(t, client.Name+"."+ns)
	server6, client6 := podIPv6(t, server), podIPv6(t, client)
	t.Logf("server %s, client %s, Service %s", server6, client6, svcIP6)

	get := func(args ...string) (string, error) {
		return kubectlExec(t, ns, client.Name, "app", append([]string{"/usr/local/bin/testapp", "get"}, args...)...)
	}
	clientID := "spiffe://cluster.local/ns/" + ns + "/sa/client"
	for _, target := range []string{
		"http://" + net.JoinHostPort(svcIP6.String(), "80") + "/",
		"http://" + net.JoinHostPort(server6.String(), "8080") + "/",
	} {
		var out string
		waitFor(t, time.Minute, "the client's request to "+target, func(context.Context) (bool, error) {
			out, err = get(target)
			return err == nil, nil
		})
		if !strings.Contains(out, "hello from "+server.Name) {
			t.Fatalf("%s: client got %q", target, out)
		}
		// The server's sidecar lists the live connection while the client
		// holds it: inbound, mTLS with the client's ID, TLS 1.3, from the
		// client's IPv6 address.
		held := holdRequest(t, ns, client.Name, "20s", target)
		live := liveInbound(t, ns, server.Name, 15*time.Second, "the server sidecar listing the client's IPv6 connection to "+target, func(c proxy.ConnInfo) bool {
			return c.PeerID == clientID && strings.HasPrefix(c.Source, "["+client6.String()+"]:")
		})
		if live.Version != "TLS 1.3" {
			t.Fatalf("%s: the client's connection at the server sidecar: %+v, want TLS 1.3", target, live)
		}
		if err := <-held; err != nil {
			t.Fatalf("%s: the held request: %v", target, err)
		}
	}

	// Plaintext from the node to the server's IPv6 address: captured into
	// the STRICT inbound listener and refused, once per probe.
	plaintextRefused(t, ns, server.Name, net.JoinHostPort(server6.String(), "8080"), "IPv6 plaintext", 2)

	// Egress over IPv6. Before any policy (ALLOW_ANY) the external hosts
	// answer: a later refusal is the sidecar's, not a host that is down.
	other6 := "http://" + net.JoinHostPort(otherIP6, "80") + "/"
	waitFor(t, time.Minute, "egress over IPv6 before any policy", func(context.Context) (bool, error) {
		out, err := get(other6)
		return err == nil && strings.Contains(out, "hello from other-http"), nil
	})
	allowAPIExampleTest(t, ns, "client-egress")
	byDefault := "403 weft: egress to this host denied by " + ns + "/client-egress default (defaultAction Deny)"
	waitFor(t, time.Minute, "the policy in force over IPv6", func(context.Context) (bool, error) {
		out, err := get(other6)
		return err != nil && strings.Contains(out, byDefault), nil
	})
	if out, err := get("http://api.example.test/"); err != nil || !strings.Contains(out, "hello from external-http") {
		t.Fatalf("HTTP to api.example.test (%s, allowed by name): %v %q", externalIP6, err, out)
	}
	if out, err := get("-k", "https://api.example.test/"); err != nil || !strings.Contains(out, "hello from external-tls") {
		t.Fatalf("TLS to api.example.test (%s, allowed by SNI): %v %q", externalIP6, err, out)
	}
	mismatch := "403 weft: egress to api.example.test denied: api.example.test does not resolve to " + otherIP6 + " for this pod"
	if out, err := get("-connect", net.JoinHostPort(otherIP6, "80"), "http://api.example.test/"); err == nil || !strings.Contains(out, mismatch) {
		t.Fatalf("Host api.example.test sent to %s: %v %q, want %q", otherIP6, err, out, mismatch)
	}
	if out, err := get("-k", "-connect", net.JoinHostPort(otherIP6, "443"), "https://api.example.test/"); err == nil {
		t.Fatalf("SNI api.example.test sent to %s was served: %q", otherIP6, out)
	}

	// The audit trail, as the operator reads it: each attempt with its IPv6
	// destination, decision and reason.
	type want struct {
		what        string
		match       func(audit.Event) bool
		dst, reason string
		decision    string
	}
	wants := []want{
		{"HTTP allowed", func(e audit.Event) bool { return e.Host == "api.example.test" }, externalIP6, "", "allow"},
		{"TLS allowed", func(e audit.Event) bool { return e.SNI == "api.example.test" }, externalIP6, "", "allow"},
		{"Host fronted", func(e audit.Event) bool { return e.Host == "api.example.test" }, otherIP6, "name_mismatch: ", "deny"},
		{"SNI fronted", func(e audit.Event) bool { return e.SNI == "api.example.test" }, otherIP6, "name_mismatch: ", "deny"},
		{"by default", func(e audit.Event) bool { return e.Rule == "default" && e.Policy == ns+"/client-egress" }, otherIP6, "", "deny"},
	}
	var report struct {
		Events []audit.Event `json:"events"`
	}
	var missing []string
	waitFor(t, time.Minute, "the IPv6 egress in the audit trail", func(context.Context) (bool, error) {
		out, err := weftctlRun("egress", "audit", "-n", ns, "--events", "-o", "json")
		if err != nil {
			return false, nil
		}
		if err := json.Unmarshal([]byte(out), &report); err != nil {
			return false, fmt.Errorf("weftctl egress audit --events -o json: %w\n%s", err, out)
		}
		missing = missing[:0]
		for _, w := range wants {
			found := false
			for _, e := range report.Events {
				found = found || (w.match(e) && e.DstIP.String() == w.dst && e.Decision == w.decision && strings.HasPrefix(e.Reason, w.reason))
			}
			if !found {
				missing = append(missing, w.what)
			}
		}
		return len(missing) == 0, nil
	})
	for _, e := range report.Events {
		if e.SourceID != clientID || e.Pod != client.Name {
			t.Fatalf("audit event with the wrong source: %+v", e)
		}
	}
}
