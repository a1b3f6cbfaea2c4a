//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

var authzGVR = schema.GroupVersionResource{Group: "weft.dev", Version: "v1alpha1", Resource: "authorizationpolicies"}

// TestAuthorizationPolicyFromTheAPIServer: an AuthorizationPolicy created
// through the real API server reaches the server's sidecar through the
// informers, the translator and ADS: the allowed client still gets through,
// another identity in the same namespace is refused at the TLS handshake.
// A policy the control plane cannot honour is marked Accepted=False.
func TestAuthorizationPolicyFromTheAPIServer(t *testing.T) {
	const ns = "e2e-authz"
	meshNamespace(t, ns, "intruder")
	ctx := context.Background()
	server, client := meshServerClient(t, ns)
	intruder := deployTestappAs(t, ns, "intruder", "intruder", "svid")
	url := "http://server." + ns + ".svc.cluster.local/"
	request := func(pod *corev1.Pod) error {
		_, err := kubectlExec(t, ns, pod.Name, "app", "/usr/local/bin/testapp", "get", url)
		return err
	}
	waitFor(t, time.Minute, "both callers allowed before any policy", func(context.Context) (bool, error) {
		return request(client) == nil && request(intruder) == nil, nil
	})

	dyn := dynamic.NewForConfigOrDie(restConfig)
	policy := weftObject("AuthorizationPolicy", ns, "server-allow-client", map[string]any{
		"selector": appSelector("server"),
		"action":   "ALLOW",
		"rules": []any{map[string]any{
			"from": []any{map[string]any{"serviceAccounts": []any{ns + "/client"}}},
			"to":   []any{map[string]any{"ports": []any{int64(8080)}}},
		}},
	})
	if _, err := dyn.Resource(authzGVR).Namespace(ns).Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the intruder refused", func(context.Context) (bool, error) {
		return request(intruder) != nil, nil
	})
	requireSynced(t, server.Name+"."+ns)
	// The refusal is the server sidecar's RBAC, proven by its own counter
	// moving once per attempt (not "some error": a server that is down
	// fails too), while the allowed client, asked in between, is served
	// and moves nothing.
	denials := func() float64 {
		return sidecarMetric(t, ns, server.Name, "weft_sidecar_authz_denials_total", map[string]string{"direction": "inbound"})
	}
	before := denials()
	const attempts = 3
	for i := range attempts {
		if err := request(intruder); err == nil {
			t.Fatalf("intruder attempt %d was served", i+1)
		}
		if err := request(client); err != nil {
			t.Fatalf("the allowed client was refused: %v", err)
		}
	}
	if got := denials() - before; got != attempts {
		t.Fatalf("weft_sidecar_authz_denials_total{direction=inbound} moved by %v over %d refused attempts, want %d", got, attempts, attempts)
	}
	waitFor(t, 30*time.Second, "the policy Accepted=True", func(ctx context.Context) (bool, error) {
		return acceptedStatus(ctx, dyn, ns, "server-allow-client") == "True", nil
	})

	// A principal of another trust domain cannot be honoured: the object is
	// marked Accepted=False (and, fail closed, the namespace's inbound is
	// denied; see the translator's documentation).
	bad := policy.DeepCopy()
	bad.SetName("foreign-principal")
	_ = unstructured.SetNestedSlice(bad.Object, []any{map[string]any{
		"from": []any{map[string]any{"principals": []any{"spiffe://other.example/ns/x/sa/y"}}},
	}}, "spec", "rules")
	badNS := "e2e-authz-bad"
	namespace(t, badNS, nil)
	bad.SetNamespace(badNS)
	if _, err := dyn.Resource(authzGVR).Namespace(badNS).Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the bad policy Accepted=False", func(ctx context.Context) (bool, error) {
		return acceptedStatus(ctx, dyn, badNS, "foreign-principal") == "False", nil
	})
}

func acceptedStatus(ctx context.Context, dyn dynamic.Interface, ns, name string) string {
	u, err := dyn.Resource(authzGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Accepted" {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}

// TestTrafficSurvivesControlPlaneOutage: with every control plane replica
// gone, sidecars keep their last good configuration and certificate: new
// connections between meshed pods still work. The control plane comes back
// with the same CA and the sidecars resync.
func TestTrafficSurvivesControlPlaneOutage(t *testing.T) {
	const ns = "e2e-outage"
	meshNamespace(t, ns)
	serverService(t, ns)
	server := deployTestapp(t, ns, "server", "serve", "-addr", ":8080")
	client := deployTestapp(t, ns, "client", "svid")
	url := "http://server." + ns + ".svc.cluster.local/"
	waitFor(t, time.Minute, "a request through the mesh", func(context.Context) (bool, error) {
		_, err := kubectlExec(t, ns, client.Name, "app", "/usr/local/bin/testapp", "get", url)
		return err == nil, nil
	})

	scaleWeft(t, "weft-controlplane", 0)
	t.Cleanup(func() {
		scaleWeft(t, "weft-controlplane", 2)
		waitFor(t, 2*time.Minute, "the control plane back", func(context.Context) (bool, error) {
			return len(controlPlaneStatuses(t)) == 2, nil
		})
	})
	waitFor(t, 2*time.Minute, "every control plane pod gone", func(ctx context.Context) (bool, error) {
		pods, err := kube.CoreV1().Pods(weftNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-controlplane"})
		return err == nil && len(pods.Items) == 0, nil
	})
	for i := range 5 {
		out, err := kubectlExec(t, ns, client.Name, "app", "/usr/local/bin/testapp", "get", "-body", "during-outage", url)
		if err != nil || !strings.Contains(out, "hello from "+server.Name) {
			t.Fatalf("request %d with the control plane down: %v %s", i, err, out)
		}
	}
	metrics, _ := kubectlExec(t, ns, client.Name, "app", "/usr/local/bin/testapp", "get", "http://127.0.0.1:15020/metrics")
	if !strings.Contains(metrics, "weft_sidecar_xds_connected 0") {
		t.Fatalf("the client sidecar does not report the lost ADS stream:\n%s", grep(metrics, "weft_sidecar_xds"))
	}
	scaleWeft(t, "weft-controlplane", 2)
	waitFor(t, 2*time.Minute, "the sidecars resynced", func(context.Context) (bool, error) {
		st := controlPlaneStatuses(t)
		if len(st) != 2 {
			return false, nil
		}
		n := 0
		for _, s := range st {
			for _, sc := range s.Sidecars {
				if sc.Node == server.Name+"."+ns || sc.Node == client.Name+"."+ns {
					n++
				}
			}
		}
		return n == 2, nil
	})
}
