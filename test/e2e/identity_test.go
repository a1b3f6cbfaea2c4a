//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"
)

// TestRenderedManifestsPassServerDryRun: what weftctl renders is accepted by
// the real API server's validation and admission (kubectl apply
// --dry-run=server).
func TestRenderedManifestsPassServerDryRun(t *testing.T) {
	manifests, err := weftctlRun("install", "--render", "--tag", tag)
	if err != nil {
		t.Fatal(err)
	}
	kubectl := envOr("KUBECTL", filepath.Join("..", "..", "_output", "bin", "kubectl"))
	cmd := exec.Command(kubectl, "--kubeconfig", kubeconfig, "apply", "--server-side", "--force-conflicts", "--field-manager=weftctl", "--dry-run=server", "-f", "-")
	cmd.Stdin = strings.NewReader(manifests)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply --dry-run=server: %v\n%s", err, out)
	}
	t.Logf("kubectl apply --dry-run=server:\n%s", out)
}

// TestControlPlaneSignsForARealPodToken: the control plane in the cluster
// authenticates a pod-bound token with the real API server's TokenReview and
// signs an SVID for the pod's ServiceAccount; a token of another audience and
// the token of a deleted pod are refused.
func TestControlPlaneSignsForARealPodToken(t *testing.T) {
	const ns = "e2e-identity"
	namespace(t, ns, nil)
	ctx := context.Background()
	serviceAccounts(t, ns, "app")
	pod, err := kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec: corev1.PodSpec{
			ServiceAccountName:            "app",
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "pause", Image: "weft/pause:v0", ImagePullPolicy: corev1.PullNever,
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod = waitPodRunning(t, ns, pod.Name)

	cp := controlPlanePod(t)
	bundle := publishedBundle(t, weftNS)
	client := certClient(t, cp, bundle)

	resp, key, err := sign(client, podToken(t, pod, "weft-ca"))
	if err != nil {
		t.Fatalf("Sign with the pod's weft-ca token: %v", err)
	}
	var raw []byte
	for _, c := range resp.CertChain {
		raw = append(raw, c...)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	svid, err := x509svid.ParseRaw(raw, keyDER)
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://cluster.local/ns/e2e-identity/sa/app"; svid.ID.String() != want {
		t.Fatalf("SVID for %s, want %s", svid.ID, want)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		t.Fatalf("SVID does not verify against the published bundle: %v", err)
	}
	if life := time.Until(svid.Certificates[0].NotAfter); life > 24*time.Hour+time.Minute || life < 23*time.Hour {
		t.Fatalf("SVID lifetime %v, want about 24h", life)
	}

	_, _, err = sign(client, podToken(t, pod, "https://kubernetes.default.svc"))
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("token of another audience: %v, want Unauthenticated", err)
	}

	token := podToken(t, pod, "weft-ca")
	if err := kube.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "pod deleted", func(ctx context.Context) (bool, error) {
		_, err := kube.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	_, _, err = sign(client, token)
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("token of a deleted pod: %v, want Unauthenticated", err)
	}

	metrics, err := httpGet("http://" + cp.Status.PodIP + ":15014/metrics")
	if err != nil {
		t.Fatal(err)
	}
	refused := regexp.MustCompile(`weft_ca_sign_refusals_total\{reason="token_refused"\} ([0-9]+)`).FindStringSubmatch(metrics)
	if refused == nil || refused[1] == "0" {
		t.Fatalf("refusals not counted in /metrics:\n%s", grep(metrics, "weft_ca"))
	}
}

func grep(s, sub string) string {
	var out bytes.Buffer
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out.WriteString(l + "\n")
		}
	}
	return out.String()
}

// TestInstallWritesMeshConfig: the trust domain given to weftctl install is
// recorded in MeshConfig "default", and the CRD refuses to change it.
func TestInstallWritesMeshConfig(t *testing.T) {
	dyn := dynamic.NewForConfigOrDie(restConfig)
	gvr := schema.GroupVersionResource{Group: "weft.dev", Version: "v1alpha1", Resource: "meshconfigs"}
	mc, err := dyn.Resource(gvr).Get(context.Background(), "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if td, _, _ := unstructured.NestedString(mc.Object, "spec", "trustDomain"); td != "cluster.local" {
		t.Fatalf("MeshConfig default trustDomain = %q", td)
	}
	_ = unstructured.SetNestedField(mc.Object, "other.example", "spec", "trustDomain")
	_, err = dyn.Resource(gvr).Update(context.Background(), mc, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
	if err == nil || !strings.Contains(err.Error(), "trustDomain is immutable") {
		t.Fatalf("changing the trust domain: err = %v, want the CRD's immutability rule", err)
	}
}
