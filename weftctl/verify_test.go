package weftctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/internal/testutil/golden"
)

// setProxyReady rewrites server-v1-9a7c as a pod whose weft-proxy is ready
// or not: a native sidecar (an init container with restartPolicy Always,
// as the injector makes on Kubernetes >= 1.29) or a regular container (as
// it makes before).
func (f *fixture) setProxyReady(t *testing.T, native, ready bool) {
	t.Helper()
	ctx := context.Background()
	pods := f.kube.CoreV1().Pods("weft-demo")
	p, err := pods.Get(ctx, "server-v1-9a7c", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if native {
		p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "weft-init", Ready: false}, {Name: "weft-proxy", Ready: ready}}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true}}
	} else {
		p.Spec.InitContainers = []corev1.Container{{Name: "weft-init"}}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "weft-proxy"})
		p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "weft-init", Ready: false}}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true}, {Name: "weft-proxy", Ready: ready}}
	}
	if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestVerifySidecarNotReady: a pod whose weft-proxy is not ready is not
// proven encrypted, even though its plaintext probe is refused (a sidecar
// that is not serving refuses everything) and its counters show mTLS
// handshakes from before: verify says UNVERIFIED, why, and exits non-zero.
func TestVerifySidecarNotReady(t *testing.T) {
	const why = "server-v1-9a7c: UNVERIFIED: the sidecar is not ready: traffic to this pod is not served"
	for _, tc := range []struct {
		name   string
		native bool
		args   []string
	}{
		{"native sidecar", true, nil},
		{"regular sidecar container", false, nil},
		{"native sidecar, --no-probe", true, []string{"--no-probe"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.setProxyReady(t, tc.native, false)
			args := append([]string{"verify", "-n", "weft-demo", "server-v1-9a7c"}, tc.args...)
			out, err := f.run(t, args...)
			if strings.Contains(out, "server-v1-9a7c: ENCRYPTED") || strings.Contains(out, "All 1 pod(s) encrypted") {
				t.Fatalf("a pod whose sidecar is not ready reported ENCRYPTED:\n%s", out)
			}
			if err == nil || err.Error() != "weftctl verify: not everything is encrypted" {
				t.Fatalf("err = %v, want the non-zero exit of a pod not proven encrypted\n%s", err, out)
			}
			if !strings.Contains(out, why) || !strings.Contains(out, "1 of 1 pod(s) NOT proven encrypted") {
				t.Fatalf("want %q\n%s", why, out)
			}
			if !tc.native && len(tc.args) == 0 {
				golden.Check(t, "testdata/verify-notready.golden", out)
			}

			out, err = f.run(t, append(args, "-o", "json")...)
			var r verifyReport
			if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
				t.Fatalf("json: %v\n%s", jerr, out)
			}
			if err == nil || r.Encrypted || len(r.Pods) != 1 || r.Pods[0].Verdict != verdictUnverified ||
				r.Pods[0].Reason != "the sidecar is not ready: traffic to this pod is not served" {
				t.Fatalf("-o json: err = %v, report %+v", err, r)
			}
		})
	}

	// The same pods with weft-proxy ready are ENCRYPTED: readiness alone
	// made the difference above.
	for _, native := range []bool{true, false} {
		f := newFixture(t)
		f.setProxyReady(t, native, true)
		out, err := f.run(t, "verify", "-n", "weft-demo", "server-v1-9a7c")
		if err != nil || !strings.Contains(out, "server-v1-9a7c: ENCRYPTED: plaintext refused on :8080") {
			t.Fatalf("native %v, weft-proxy ready: err = %v\n%s", native, err, out)
		}
	}
}
