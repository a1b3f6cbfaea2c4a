//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func testappPod(name string, annotations map[string]string, args ...string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}, Annotations: annotations},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers: []corev1.Container{{
				Name: "app", Image: "weft/testapp:" + tag, ImagePullPolicy: corev1.PullNever,
				Command: append([]string{"/usr/local/bin/testapp"}, args...),
				Env:     []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
			}},
		},
	}
}

func injected(p *corev1.Pod) bool {
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if c.Name == "weft-proxy" {
			return true
		}
	}
	return false
}

// TestInjection: the real API server calls the real webhook. A Deployment
// in a labelled namespace gets weft-init (which installs the nftables capture
// table) and weft-proxy as a native sidecar; the pod runs with the sidecar
// ready and the app reads its SVID over the Workload API without being
// configured for it. Opted-out pods, unlabelled namespaces and bad
// annotations are handled as documented.
func TestInjection(t *testing.T) {
	const ns, plain = "e2e-inject", "e2e-plain"
	meshNamespace(t, ns)
	namespace(t, plain, nil)
	ctx := context.Background()

	// The app serves HTTP with a readiness probe on a named port (rewritten
	// to go through weft-proxy's 15020); a second container reads the pod's
	// SVID from the Workload API.
	tmpl := testappPod("web", nil, "serve", "-addr", ":8080")
	tmpl.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	tmpl.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}},
		PeriodSeconds: 1,
	}
	svidC := tmpl.Spec.Containers[0]
	svidC.Name, svidC.Command, svidC.Ports, svidC.ReadinessProbe = "svid", []string{"/usr/local/bin/testapp", "svid"}, nil, nil
	tmpl.Spec.Containers = append(tmpl.Spec.Containers, svidC)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec},
		},
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := *waitAppReady(t, ns, "web", "the injected web pod to be ready")
	if !injected(&pod) {
		t.Fatalf("pod %s was not injected: init %v", pod.Name, pod.Spec.InitContainers)
	}
	if names := containerNames(pod.Spec.InitContainers); len(names) != 2 || names[0] != "weft-init" || names[1] != "weft-proxy" {
		t.Fatalf("init containers %v, want [weft-init weft-proxy]", names)
	}
	if p := pod.Spec.InitContainers[1].RestartPolicy; p == nil || *p != corev1.ContainerRestartPolicyAlways {
		t.Fatal("weft-proxy is not a native sidecar (restartPolicy Always) on a >= 1.29 API server")
	}
	var record struct {
		Version    string   `json:"version"`
		Native     bool     `json:"native"`
		Containers []string `json:"containers"`
	}
	if err := json.Unmarshal([]byte(pod.Annotations["weft.dev/injected"]), &record); err != nil || !record.Native {
		t.Fatalf("weft.dev/injected = %q (%v)", pod.Annotations["weft.dev/injected"], err)
	}
	initLog := logs(t, ns, pod.Name, "weft-init")
	if !strings.Contains(initLog, "table inet weft") || !strings.Contains(initLog, "redirect to :15001") {
		t.Fatalf("weft-init did not report the capture table:\n%s", initLog)
	}
	want := "SVID spiffe://cluster.local/ns/e2e-inject/sa/default "
	waitFor(t, time.Minute, "the app to read its SVID", func(context.Context) (bool, error) {
		return strings.Contains(logs(t, ns, pod.Name, "svid"), want), nil
	})
	// The readiness probe was rewritten and answered through weft-proxy.
	if p := pod.Spec.Containers[0].ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != 15020 || p.HTTPGet.Path != "/app-health/app/readyz" {
		t.Fatalf("readiness probe not rewritten: %+v", p)
	}
	if !strings.Contains(logs(t, ns, pod.Name, "app"), `request GET /ready`) {
		t.Fatalf("the app never saw its readiness probe:\n%s", logs(t, ns, pod.Name, "app"))
	}

	// Its sidecar holds the control plane's configuration: every type ACKed,
	// zero NACKs.
	requireSynced(t, pod.Name+"."+ns)

	// Injecting an injected pod changes nothing: the same spec created
	// again comes back with exactly one weft-init and one weft-proxy.
	again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "again", Annotations: pod.Annotations}, Spec: *pod.Spec.DeepCopy()}
	again.Spec.NodeName = ""
	created, err := kube.CoreV1().Pods(ns).Create(ctx, again, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatal(err)
	}
	if got := containerNames(created.Spec.InitContainers); len(got) != 2 {
		t.Fatalf("re-injection changed init containers: %v", got)
	}

	// Opted out by annotation, and a namespace without the label.
	for _, tc := range []struct{ ns, name string }{{ns, "opted-out"}, {plain, "unlabelled"}} {
		ann := map[string]string{}
		if tc.ns == ns {
			ann["weft.dev/inject"] = "disabled"
		}
		p, err := kube.CoreV1().Pods(tc.ns).Create(ctx, testappPod(tc.name, ann, "serve"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		if injected(p) {
			t.Errorf("%s/%s was injected", tc.ns, tc.name)
		}
	}

	// A bad annotation: the pod is refused with a message naming it.
	_, err = kube.CoreV1().Pods(ns).Create(ctx, testappPod("bad", map[string]string{"weft.dev/exclude-outbound-ports": "99999"}, "serve"), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "weft.dev/exclude-outbound-ports") {
		t.Fatalf("pod with a bad annotation: err = %v, want a refusal naming the annotation", err)
	}
}

// TestInjectedJobCompletes: with weft-proxy as a native sidecar, a Job's pod
// completes when its app exits.
func TestInjectedJobCompletes(t *testing.T) {
	const ns = "e2e-job"
	meshNamespace(t, ns)
	tmpl := testappPod("job", nil, "get", "http://127.0.0.1:15020/healthz/ready")
	tmpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "job"},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](2),
			Template:     corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "job"}}, Spec: tmpl.Spec},
		},
	}
	if _, err := kube.BatchV1().Jobs(ns).Create(context.Background(), job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the injected Job to complete", func(ctx context.Context) (bool, error) {
		j, err := kube.BatchV1().Jobs(ns).Get(ctx, "job", metav1.GetOptions{})
		return err == nil && j.Status.Succeeded == 1, nil
	})
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func logs(t *testing.T, ns, pod, container string) string {
	t.Helper()
	b, err := kube.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(context.Background())
	if err != nil {
		return err.Error()
	}
	return string(b)
}
