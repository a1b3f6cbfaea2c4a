//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// kubectlRun runs kubectl against the test cluster.
func kubectlRun(t *testing.T, args ...string) string {
	t.Helper()
	kubectl := envOr("KUBECTL", filepath.Join("..", "..", "_output", "bin", "kubectl"))
	out, err := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestCanaryExample ([gamma]): examples/canary as its README tells a
// newcomer to run it, on the demo of examples/demo: the Gateway API's CRDs,
// weft with --http-routing, an HTTPRoute that splits the demo Service's
// requests 90/10 between server-v1 and server-v2 (the split seen by the
// client and by `weftctl stat` on the servers' sidecars), then the same
// route with a header rule that sends "x-canary: always" to v2 only; and a
// route's timeout answered 504.
func TestCanaryExample(t *testing.T) {
	const ns = "weft-demo"
	ctx := context.Background()
	examples := filepath.Join("..", "..", "examples")

	// The Gateway API's CRDs, the standard channel of the version weft is
	// built with (go.mod), from the module cache: what
	// examples/canary/README.md says to apply.
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil || len(strings.TrimSpace(string(dir))) == 0 {
		t.Fatalf("go list -m sigs.k8s.io/gateway-api: %v", err)
	}
	crds := filepath.Join(strings.TrimSpace(string(dir)), "config", "crd", "standard")
	kubectlRun(t, "apply", "--server-side", "-f", crds)
	t.Cleanup(func() { kubectlRun(t, "delete", "--ignore-not-found", "--wait=false", "-f", crds) })
	kubectlRun(t, "wait", "--for", "condition=Established", "--timeout", "60s", "crd", "httproutes.gateway.networking.k8s.io")

	withHTTPRouting(t)

	kubectlRun(t, "apply", "-f", filepath.Join(examples, "demo"))
	t.Cleanup(func() {
		kubectlRun(t, "delete", "--ignore-not-found", "--timeout", "2m", "-f", filepath.Join(examples, "canary"), "-f", filepath.Join(examples, "demo"))
	})
	kubectlRun(t, "apply", "-f", filepath.Join(examples, "canary", "10-versions.yaml"), "-f", filepath.Join(examples, "canary", "20-split.yaml"))
	kubectlRun(t, "-n", ns, "rollout", "status", "--timeout", "3m", "deploy/client", "deploy/server-v1", "deploy/server-v2")
	pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var client string
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		if p.Labels["app"] == "client" {
			client = p.Name
		}
		requireSynced(t, p.Name+"."+ns)
	}

	routes := dynamic.NewForConfigOrDie(restConfig).Resource(schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}).Namespace(ns)
	accepted := func(generation int64) {
		t.Helper()
		waitFor(t, 2*time.Minute, fmt.Sprintf("HTTPRoute server-canary generation %d Accepted by weft.dev/mesh", generation), func(ctx context.Context) (bool, error) {
			u, err := routes.Get(ctx, "server-canary", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if u.GetGeneration() != generation {
				return false, nil
			}
			parents, _, _ := unstructuredSlice(u.Object, "status", "parents")
			for _, p := range parents {
				pm, _ := p.(map[string]any)
				if pm["controllerName"] != "weft.dev/mesh" {
					continue
				}
				conds, _ := pm["conditions"].([]any)
				for _, c := range conds {
					cm, _ := c.(map[string]any)
					if cm["type"] == "Accepted" && cm["status"] == "True" && cm["observedGeneration"] == generation {
						return true, nil
					}
				}
			}
			return false, nil
		})
	}
	accepted(1)

	// served counts the answers of `testapp get` by version.
	get := func(n int, headers ...string) (v1, v2 int) {
		t.Helper()
		args := []string{"/usr/local/bin/testapp", "get", "-n", fmt.Sprint(n)}
		for _, h := range headers {
			args = append(args, "-H", h)
		}
		out, err := kubectlExec(t, ns, client, "app", append(args, "http://server/")...)
		if err != nil {
			t.Fatalf("testapp get: %v\n%s", err, out)
		}
		v1, v2 = strings.Count(out, "hello from server-v1-"), strings.Count(out, "hello from server-v2-")
		if v1+v2 != n {
			t.Fatalf("%d of %d answers came from server-v1 or server-v2:\n%s", v1+v2, n, out)
		}
		return v1, v2
	}
	// The route reaches the client's sidecar after its status is written:
	// wait until a request may be answered by either version.
	waitFor(t, time.Minute, "the client's sidecar splitting server's requests", func(context.Context) (bool, error) {
		v1, v2 := get(40)
		return v1 > 0 && v2 > 0 && v1 > v2, nil
	})

	// 90/10, seen by the client and by weftctl stat on the servers'
	// sidecars over the same window.
	const n = 400
	type statOut struct {
		Rows []struct {
			Workload string  `json:"workload"`
			Requests float64 `json:"requests"`
		} `json:"rows"`
	}
	statDone := make(chan string, 1)
	go func() {
		out, err := weftctlRun("stat", "-n", ns, "--window", "60s", "-o", "json")
		if err != nil {
			out = "error: " + err.Error() + "\n" + out
		}
		statDone <- out
	}()
	time.Sleep(3 * time.Second) // stat's first reading; the requests below all fall in its window
	v1, v2 := get(n)
	t.Logf("by weight: server-v1 %d, server-v2 %d of %d (%.1f %% to v2)", v1, v2, n, 100*float64(v2)/n)
	// 10 % of 400 is 40, σ = 6: outside 20..64 is a split that is not 90/10.
	if v2 < 20 || v2 > 64 {
		t.Errorf("server-v2 answered %d of %d requests, want about 40 (10 %%)", v2, n)
	}
	out := <-statDone
	var st statOut
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("weftctl stat -o json: %v\n%s", err, out)
	}
	byWorkload := map[string]float64{}
	for _, r := range st.Rows {
		byWorkload[r.Workload] = r.Requests
	}
	t.Logf("weftctl stat: %v", byWorkload)
	s1, s2 := byWorkload["deploy/server-v1"], byWorkload["deploy/server-v2"]
	if s1 < float64(v1) || s2 < float64(v2) || s1 > float64(v1)+5 || s2 > float64(v2)+5 {
		t.Errorf("weftctl stat counted server-v1 %v and server-v2 %v requests, the client got %d and %d", s1, s2, v1, v2)
	}

	// Step 2: the header rule, applied over step 1.
	kubectlRun(t, "apply", "-f", filepath.Join(examples, "canary", "30-header.yaml"))
	accepted(2)
	waitFor(t, time.Minute, "x-canary: always answered by server-v2 only", func(context.Context) (bool, error) {
		v1, v2 := get(20, "x-canary: always")
		return v1 == 0 && v2 == 20, nil
	})
	if v1, v2 := get(100, "x-canary: always"); v1 != 0 {
		t.Errorf("with x-canary: always, server-v1 answered %d of 100 (server-v2 %d)", v1, v2)
	}
	if v1, v2 := get(200, "x-canary: sometimes"); v2 > 40 || v1 < 150 {
		t.Errorf("with another x-canary value: server-v1 %d, server-v2 %d of 200, want the 90/10 split", v1, v2)
	}

	// A route's timeout ([l7]: "a timeout returns 504"): requests under
	// /slow get 2 s (HTTPRoute timeouts.request); one the server answers
	// after 10 s is answered 504 by the client's sidecar at about 2 s,
	// one it answers at once goes through.
	slow := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
		"metadata": map[string]any{"name": "server-slow", "namespace": ns},
		"spec": map[string]any{
			"parentRefs": []any{map[string]any{"group": "", "kind": "Service", "name": "server", "port": int64(80)}},
			"rules": []any{map[string]any{
				"matches":     []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/slow"}}},
				"timeouts":    map[string]any{"request": "2s"},
				"backendRefs": []any{map[string]any{"name": "server-v1", "port": int64(80)}},
			}},
		},
	}}
	if _, err := routes.Create(ctx, slow, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "GET /slow?delay=10s answered 504 by the client's sidecar", func(context.Context) (bool, error) {
		out, _ := kubectlExec(t, ns, client, "app", "/usr/local/bin/testapp", "get", "http://server/slow?delay=10s")
		return hasLine(out, "504 weft: timeout"), nil
	})
	start := time.Now()
	out, _ = kubectlExec(t, ns, client, "app", "/usr/local/bin/testapp", "get", "http://server/slow?delay=10s")
	took := time.Since(start)
	t.Logf("GET /slow?delay=10s: %q in %v", strings.TrimSpace(out), took.Round(time.Millisecond))
	if !hasLine(out, "504 weft: timeout") || took > 8*time.Second {
		t.Errorf("GET /slow?delay=10s: %q after %v, want 504 at about 2 s", out, took)
	}
	if out, err := kubectlExec(t, ns, client, "app", "/usr/local/bin/testapp", "get", "http://server/slow?delay=100ms"); err != nil || !strings.HasPrefix(out, "200 hello from server-v1-") {
		t.Errorf("GET /slow?delay=100ms: %q %v, want 200 from server-v1", out, err)
	}
}

// hasLine reports whether out (a command's output, stdout and stderr in
// either order) has the line line.
func hasLine(out, line string) bool {
	return slices.Contains(strings.Split(out, "\n"), line)
}

// unstructuredSlice is obj's list at path.
func unstructuredSlice(obj map[string]any, path ...string) ([]any, bool, error) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = m[p]
	}
	s, ok := cur.([]any)
	return s, ok, nil
}
