package injector

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/testutil/golden"
)

const testImage = "weft/weft-sidecar:dev"

func newInjector(t testing.TB, native bool) *Injector {
	t.Helper()
	inj, err := New(Config{Version: "v0.0.0-test", SidecarImage: testImage, NativeSidecar: native})
	if err != nil {
		t.Fatal(err)
	}
	return inj
}

// loadPod reads testdata/<name>.yaml and returns it as the API server would
// send it: the canonical JSON of the typed object.
func loadPod(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return mustJSON(t, &pod)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reviewBody wraps a pod in an AdmissionReview for a CREATE in ns.
func reviewBody(t testing.TB, pod []byte, ns string) []byte {
	t.Helper()
	return mustJSON(t, &admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "0d9c7e1a-5b8f-4f62-8f0e-1a2b3c4d5e6f",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  podResource,
			Namespace: ns,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: pod},
		},
	})
}

// applyPatch applies resp's patch to pod as the API server does and decodes
// the result strictly: a field the patch misnamed fails the test.
func applyPatch(t testing.TB, pod []byte, resp *admissionv1.AdmissionResponse) (*corev1.Pod, []byte) {
	t.Helper()
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("decode patch: %v\n%s", err, resp.Patch)
	}
	out, err := p.Apply(pod)
	if err != nil {
		t.Fatalf("apply patch: %v\n%s", err, resp.Patch)
	}
	var patched corev1.Pod
	strict, err := kjson.UnmarshalStrict(out, &patched)
	if err != nil || len(strict) > 0 {
		t.Fatalf("patched pod does not decode: %v %v\n%s", err, strict, out)
	}
	return &patched, out
}

// checkGolden compares pod with testdata/golden/<name>.yaml (golden.Check).
func checkGolden(t *testing.T, name string, pod *corev1.Pod) {
	t.Helper()
	got, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, filepath.Join("testdata", "golden", name+".yaml"), got)
}

// checkInjected verifies the invariants of an injected pod against the
// original.
func checkInjected(t *testing.T, orig, got *corev1.Pod, native bool) {
	t.Helper()
	if len(got.Spec.InitContainers) == 0 || got.Spec.InitContainers[0].Name != InitName {
		t.Fatalf("first init container is not %s: %v", InitName, containerNames(got.Spec.InitContainers))
	}
	wantInit := slices.Concat([]string{InitName}, containerNames(orig.Spec.InitContainers))
	wantApp := containerNames(orig.Spec.Containers)
	if native {
		wantInit = slices.Insert(wantInit, 1, ProxyName)
		if rp := got.Spec.InitContainers[1].RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
			t.Errorf("native weft-proxy restartPolicy = %v, want Always", rp)
		}
	} else {
		wantApp = slices.Insert(wantApp, 0, ProxyName)
	}
	if n := containerNames(got.Spec.InitContainers); !slices.Equal(n, wantInit) {
		t.Errorf("init containers %v, want %v", n, wantInit)
	}
	if n := containerNames(got.Spec.Containers); !slices.Equal(n, wantApp) {
		t.Errorf("containers %v, want %v", n, wantApp)
	}
	var vols []string
	for _, v := range got.Spec.Volumes {
		vols = append(vols, v.Name)
	}
	for _, v := range orig.Spec.Volumes {
		if !slices.Contains(vols, v.Name) {
			t.Errorf("volume %s lost", v.Name)
		}
	}
	for _, v := range []string{TokenVolume, BundleVolume, WorkloadVolume} {
		if !slices.Contains(vols, v) {
			t.Errorf("volume %s missing: %v", v, vols)
		}
	}
	for _, c := range got.Spec.Containers {
		if c.Name == ProxyName {
			continue
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == appMount.Name && m.MountPath == appMount.MountPath && m.ReadOnly
		}) {
			t.Errorf("container %s lacks the Workload API mount", c.Name)
		}
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == SocketEnv }) {
			t.Errorf("container %s lacks %s", c.Name, SocketEnv)
		}
	}
	for k, v := range orig.Annotations {
		if k != AnnotationInjected && k != AnnotationProbes && got.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, got.Annotations[k], v)
		}
	}
	var inj Injection
	if err := json.Unmarshal([]byte(got.Annotations[AnnotationInjected]), &inj); err != nil || inj.Native != native || inj.Version != "v0.0.0-test" {
		t.Errorf("annotation %s = %q (%v)", AnnotationInjected, got.Annotations[AnnotationInjected], err)
	}
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}
