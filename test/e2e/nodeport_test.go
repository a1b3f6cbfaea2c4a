//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
)

var mtlsGVR = schema.GroupVersionResource{Group: "weft.dev", Version: "v1alpha1", Resource: "mtlspolicies"}

// hostIP is the node's address that NodePorts answer on: test/cluster's
// HOST_IP (lib.sh; kube-proxy's nodePortAddresses), or WEFT_NODE_IP.
var hostIP = envOr("WEFT_NODE_IP", "198.18.255.1")

// TestNodePortIntoMeshedPod ([k8s-networking]): traffic from outside the
// mesh through a NodePort Service reaches a meshed pod without mTLS, so
// under STRICT (the default) the pod's sidecar refuses it, counted as
// not_tls, probe by probe; an MTLSPolicy that makes the app's port
// PERMISSIVE lets it in, and the app answers. The app sees every
// inbound connection, plaintext ones included, from the sidecar's delivery
// address 127.0.0.6 (docs/architecture.md), not the client's.
func TestNodePortIntoMeshedPod(t *testing.T) {
	const ns = "e2e-nodeport"
	meshNamespace(t, ns, "server")
	ctx := context.Background()
	svc, err := kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "server"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "server"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	server := deployTestappAs(t, ns, "server", "server", "serve", "-addr", ":8080")
	requireSynced(t, server.Name+"."+ns)
	addr := net.JoinHostPort(hostIP, fmt.Sprint(svc.Spec.Ports[0].NodePort))

	// STRICT: every plaintext connection through the NodePort is refused
	// by the sidecar and counted (plaintextRefused checks both).
	waitFor(t, time.Minute, "the NodePort "+addr+" forwarding to the server pod", func(context.Context) (bool, error) {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	plaintextRefused(t, ns, server.Name, addr, "NodePort (STRICT)", 3)

	// PERMISSIVE on the app's port: the same requests are served.
	dyn := dynamic.NewForConfigOrDie(restConfig)
	policy := weftObject("MTLSPolicy", ns, "nodeport-permissive", map[string]any{
		"selector":      appSelector("server"),
		"mode":          "STRICT",
		"portLevelMtls": map[string]any{"8080": "PERMISSIVE"},
	})
	if _, err := dyn.Resource(mtlsGVR).Namespace(ns).Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	get := func() string {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return "dial: " + err.Error()
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /nodeport HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n")
		b, _ := io.ReadAll(io.LimitReader(c, 4096))
		return string(b)
	}
	waitFor(t, time.Minute, "a plaintext request through the NodePort served under PERMISSIVE", func(context.Context) (bool, error) {
		return strings.Contains(get(), "hello from "+server.Name), nil
	})
	for i := range 3 {
		if out := get(); !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, "hello from "+server.Name) {
			t.Errorf("request %d through the NodePort under PERMISSIVE: %q", i, out)
		}
	}
	// The app logs each request before it answers, but its log reaches
	// the kubelet through the container runtime's copy of its output,
	// which may lag the answer (a loaded node): the line is waited for.
	var seen string
	waitFor(t, 30*time.Second, "the app's log line of a request to /nodeport", func(context.Context) (bool, error) {
		for _, line := range strings.Split(logs(t, ns, server.Name, "app"), "\n") {
			if rest, ok := strings.CutPrefix(line, "request GET /nodeport from "); ok {
				seen, _, _ = strings.Cut(rest, " ")
			}
		}
		return seen != "", nil
	})
	t.Logf("the app saw the NodePort requests from %s", seen)
	if host, _, err := net.SplitHostPort(seen); err != nil || host != "127.0.0.6" {
		t.Errorf("the app saw the NodePort requests from %q, want the sidecar's delivery address 127.0.0.6", seen)
	}
}
