//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestCLI runs weftctl's operator commands against a real mesh:
//   - a pod created before its namespace was labelled ("early") predates
//     injection: check finds it, explain-injection says why;
//   - client -> server through the mesh: verify on the two workloads says
//     ENCRYPTED (live connections or handshake counters, and the
//     plaintext probe refused) and exits 0; status shows them SYNCED;
//   - a pod that bypasses the mesh (weft.dev/inject: disabled) serving
//     plaintext is NOT ENCRYPTED, and verify on the namespace exits non-zero.
func TestCLI(t *testing.T) {
	const ns = "e2e-cli"
	namespace(t, ns, nil)
	ctx := context.Background()
	early := deployTestapp(t, ns, "early", "serve", "-addr", ":8080")
	if injected(early) {
		t.Fatal("a pod of an unlabelled namespace was injected")
	}
	patch := []byte(`{"metadata":{"labels":{"weft.dev/inject":"enabled"}}}`)
	if _, err := kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	server, client := meshServerClient(t, ns)
	orig := testappPodHook
	testappPodHook = func(p *corev1.Pod) { p.Annotations = map[string]string{"weft.dev/inject": "disabled"} }
	bypass := deployTestapp(t, ns, "bypass", "serve", "-addr", ":8080")
	testappPodHook = orig
	if !injected(server) || !injected(client) || injected(bypass) {
		t.Fatalf("injected: server %v client %v bypass %v", injected(server), injected(client), injected(bypass))
	}
	requireSynced(t, server.Name+"."+ns)
	requireSynced(t, client.Name+"."+ns)

	t.Run("status shows the sidecars SYNCED", func(t *testing.T) {
		out, err := weftctlRun("status", "-n", ns)
		if err != nil {
			t.Fatalf("weftctl status: %v\n%s", err, out)
		}
		t.Logf("weftctl status -n %s:\n%s", ns, out)
		for _, want := range []string{server.Name, client.Name, "spiffe://cluster.local/ns/" + ns + "/sa/server", "SYNCED"} {
			if !strings.Contains(out, want) {
				t.Errorf("status lacks %q", want)
			}
		}
		if strings.Contains(out, "NACKED") || strings.Contains(out, "NOT CONNECTED") {
			t.Error("status reports a NACK or a disconnected sidecar")
		}
	})

	t.Run("verify: client and server are encrypted", func(t *testing.T) {
		waitFor(t, time.Minute, "a request through the mesh", func(context.Context) (bool, error) {
			out, err := kubectlExec(t, ns, client.Name, "app", "/usr/local/bin/testapp", "get", "-n", "3", "http://server."+ns+".svc.cluster.local/")
			return err == nil && strings.Contains(out, "hello from "+server.Name), nil
		})
		out, err := weftctlRun("verify", "-n", ns, "server", "client")
		t.Logf("weftctl verify -n %s server client:\n%s", ns, out)
		if err != nil {
			t.Fatalf("verify exits non-zero on two meshed workloads: %v", err)
		}
		if !strings.Contains(out, "All 2 pod(s) encrypted") || !strings.Contains(out, ":8080 refused") {
			t.Fatal("verify does not say the pair is encrypted with the plaintext probe refused")
		}
		out, err = weftctlRun("verify", "-n", ns, "server", "client", "-o", "json")
		if err != nil {
			t.Fatalf("verify -o json: %v\n%s", err, out)
		}
		var r struct {
			Encrypted bool `json:"encrypted"`
			Pods      []struct {
				Pod        string `json:"pod"`
				Verdict    string `json:"verdict"`
				Handshakes *struct {
					Inbound, Outbound, RefusedPlaintext int64
				} `json:"handshakes"`
			} `json:"pods"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !r.Encrypted || len(r.Pods) != 2 {
			t.Fatalf("verify -o json: encrypted=%v with %d pods, want true with 2 (server and client):\n%s", r.Encrypted, len(r.Pods), out)
		}
		seen := map[string]bool{}
		for _, p := range r.Pods {
			seen[p.Pod] = true
			if p.Verdict != "ENCRYPTED" {
				t.Errorf("%s: verdict %q, want ENCRYPTED", p.Pod, p.Verdict)
			}
			if p.Handshakes == nil {
				t.Fatalf("%s: no handshake counters", p.Pod)
			}
			if p.Pod == server.Name && (p.Handshakes.Inbound == 0 || p.Handshakes.RefusedPlaintext == 0) {
				t.Errorf("server sidecar: %+v: want inbound mTLS handshakes and refused plaintext probes", *p.Handshakes)
			}
			if p.Pod == client.Name && p.Handshakes.Outbound == 0 {
				t.Errorf("client sidecar: %+v: want outbound mTLS handshakes", *p.Handshakes)
			}
		}
		if !seen[server.Name] || !seen[client.Name] {
			t.Fatalf("verify -o json reports %v, want %s and %s", seen, server.Name, client.Name)
		}
	})

	t.Run("verify: the pod that bypasses the mesh is not encrypted", func(t *testing.T) {
		out, err := weftctlRun("verify", "-n", ns)
		t.Logf("weftctl verify -n %s:\n%s", ns, out)
		if err == nil {
			t.Fatal("verify exits 0 on a namespace with a plaintext pod")
		}
		for _, want := range []string{
			bypass.Name + ": NOT ENCRYPTED: no weft sidecar: opted out",
			"plaintext answered",
			early.Name + ": NOT ENCRYPTED",
			server.Name + ": ENCRYPTED",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("verify lacks %q", want)
			}
		}
	})

	t.Run("check finds the pod that predates injection", func(t *testing.T) {
		out, err := weftctlRun("check")
		t.Logf("weftctl check:\n%s", out)
		if err == nil {
			t.Fatal("check exits 0 with a pod that slipped through")
		}
		if !strings.Contains(out, "[FAIL] pod "+ns+"/"+early.Name+": slipped through") {
			t.Error("check does not list the early pod as slipped through")
		}
		if strings.Contains(out, "pod "+ns+"/"+bypass.Name) {
			t.Error("check lists the opted-out pod as a problem")
		}
		for _, want := range []string{"[ok]   weft-controlplane", "[ok]   weft-injector", "[ok]   webhook service"} {
			if !strings.Contains(out, want) {
				t.Errorf("check lacks %q", want)
			}
		}
		out, err = weftctlRun("explain-injection", "-n", ns, early.Name)
		t.Logf("weftctl explain-injection %s:\n%s", early.Name, out)
		if err != nil || !strings.Contains(out, "predates injection") {
			t.Errorf("explain-injection: %v", err)
		}
	})
}

// TestCheckFindsPodCreatedWhileInjectorWasDown: with the injector scaled to
// zero (and, for the test, the webhook's failurePolicy relaxed to Ignore so
// the API server admits pods without it), a pod in an injected namespace
// starts without a sidecar; once the injector is back, weftctl check reports
// it as slipped through and exits non-zero.
func TestCheckFindsPodCreatedWhileInjectorWasDown(t *testing.T) {
	const ns = "e2e-injector-down"
	meshNamespace(t, ns)
	ctx := context.Background()
	setPolicy := func(p admissionregistrationv1.FailurePolicyType) {
		t.Helper()
		mwc, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "weft-injector", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range mwc.Webhooks {
			mwc.Webhooks[i].FailurePolicy = &p
		}
		if _, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		setPolicy(admissionregistrationv1.Fail)
		scaleWeft(t, "weft-injector", 1)
		waitFor(t, 2*time.Minute, "the injector back", func(ctx context.Context) (bool, error) {
			d, err := kube.AppsV1().Deployments(weftNS).Get(ctx, "weft-injector", metav1.GetOptions{})
			return err == nil && d.Status.AvailableReplicas == 1, nil
		})
	}
	t.Cleanup(restore)
	setPolicy(admissionregistrationv1.Ignore)
	scaleWeft(t, "weft-injector", 0)
	waitFor(t, 2*time.Minute, "the injector gone", func(ctx context.Context) (bool, error) {
		pods, err := kube.CoreV1().Pods(weftNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-injector"})
		return err == nil && len(pods.Items) == 0, nil
	})
	pod := deployTestapp(t, ns, "unmeshed", "serve", "-addr", ":8080")
	if injected(pod) {
		t.Fatal("the pod was injected with the injector down")
	}
	restore()
	out, err := weftctlRun("check")
	t.Logf("weftctl check:\n%s", out)
	if err == nil {
		t.Fatal("weftctl check exited 0 with an unmeshed pod in an injected namespace")
	}
	if !strings.Contains(out, ns+"/"+pod.Name) {
		t.Fatalf("weftctl check does not name %s/%s", ns, pod.Name)
	}
}
