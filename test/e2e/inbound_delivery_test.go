//go:build e2e

package e2e

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// TestInboundLocalhostListenersStayPrivate: the server pod runs three
// containers, the app on 0.0.0.0:8080, "private" on 127.0.0.1:9090 and
// "optin" on 127.0.0.1:9091, and is annotated weft.dev/inbound-loopback-
// ports: "9091"; a RequireDualStack Service names all three ports, so a
// meshed client reaches each over mTLS at the server pod's IPv4 and IPv6
// addresses. The app is served and sees the client come from 127.0.0.6
// (IPv4) and ::6 (IPv6); the 127.0.0.1-only listener is never reached
// (the request fails, its log stays empty), while the opted-in one is,
// from 127.0.0.6. Before inbound delivery went to the pod's address, port
// 9090 answered from another pod and every caller was 127.0.0.1.
func TestInboundLocalhostListenersStayPrivate(t *testing.T) {
	const ns = "e2e-inbound-loopback"
	meshNamespace(t, ns, "client", "server")
	ctx := context.Background()
	port := func(name string, p int32) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: p, TargetPort: intstr.FromInt32(p)}
	}
	if _, err := kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "server"},
		Spec: corev1.ServiceSpec{
			Selector:       map[string]string{"app": "server"},
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack),
			IPFamilies:     []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
			Ports:          []corev1.ServicePort{port("http", 8080), port("private", 9090), port("optin", 9091)},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	orig := testappPodHook
	testappPodHook = func(p *corev1.Pod) {
		p.Spec.ServiceAccountName = "server"
		p.Annotations = map[string]string{"weft.dev/inbound-loopback-ports": "9091"}
		app := p.Spec.Containers[0]
		for _, c := range []struct{ name, addr string }{{"private", "127.0.0.1:9090"}, {"optin", "127.0.0.1:9091"}} {
			side := *app.DeepCopy()
			side.Name = c.name
			side.Command = []string{"/usr/local/bin/testapp", "serve", "-addr", c.addr, "-name", c.name}
			p.Spec.Containers = append(p.Spec.Containers, side)
		}
	}
	server := deployTestapp(t, ns, "server", "serve", "-addr", ":8080")
	testappPodHook = orig
	client := deployTestappAs(t, ns, "client", "client", "svid")
	requireSynced(t, server.Name+"."+ns)
	requireSynced(t, client.Name+"."+ns)

	server4, server6 := netip.MustParseAddr(server.Status.PodIP).Unmap(), podIPv6(t, server)
	if !server4.Is4() {
		for _, ip := range server.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil && a.Unmap().Is4() {
				server4 = a.Unmap()
			}
		}
	}
	get := func(ip netip.Addr, p, marker string) (string, error) {
		return kubectlExec(t, ns, client.Name, "app", "/usr/local/bin/testapp", "get", "-body", marker,
			"http://"+net.JoinHostPort(ip.String(), p)+"/")
	}

	for _, tc := range []struct {
		family string
		ip     netip.Addr
		source string // what the server's apps see as the client's address
	}{
		{"IPv4", server4, "127.0.0.6"},
		{"IPv6", server6, "[::6]"},
	} {
		// The app on 0.0.0.0 / [::]: served, from the delivery source.
		marker := "weft-public-" + tc.family + "-" + randomHex(t)
		var out string
		var err error
		waitFor(t, time.Minute, tc.family+": the client's request to the app", func(context.Context) (bool, error) {
			out, err = get(tc.ip, "8080", marker)
			return err == nil, nil
		})
		if !strings.Contains(out, "hello from "+server.Name) {
			t.Fatalf("%s: the client got %q from the app", tc.family, out)
		}
		if line := grep(logs(t, ns, server.Name, "app"), marker); !strings.Contains(line, " from "+tc.source+":") {
			t.Errorf("%s: the app logged %q; want the request from %s", tc.family, line, tc.source)
		}

		// 127.0.0.1:9090 only: not reachable from another pod.
		marker = "weft-private-" + tc.family + "-" + randomHex(t)
		if out, err := get(tc.ip, "9090", marker); err == nil {
			t.Errorf("%s: the 127.0.0.1-only listener answered another pod: %q", tc.family, out)
		}
		if l := logs(t, ns, server.Name, "private"); strings.Contains(l, "request ") {
			t.Errorf("%s: the 127.0.0.1-only listener received requests:\n%s", tc.family, l)
		}

		// 127.0.0.1:9091, opted in by the annotation: reached, from 127.0.0.6
		// (delivered to 127.0.0.1 whatever the family the peer used).
		marker = "weft-optin-" + tc.family + "-" + randomHex(t)
		out, err = get(tc.ip, "9091", marker)
		if err != nil || !strings.Contains(out, "hello from optin") {
			t.Errorf("%s: the opted-in 127.0.0.1 listener: %q, %v", tc.family, out, err)
		}
		if line := grep(logs(t, ns, server.Name, "optin"), marker); !strings.Contains(line, " from 127.0.0.6:") {
			t.Errorf("%s: the opted-in listener logged %q; want the request from 127.0.0.6", tc.family, line)
		}
	}
	if n := sidecarMetric(t, ns, server.Name, "weft_sidecar_connection_failures_total",
		map[string]string{"direction": "inbound", "reason": "upstream_connect"}); n < 2 {
		t.Errorf("the server's sidecar counted %v failed deliveries, want one per request to 127.0.0.1:9090", n)
	}
}
