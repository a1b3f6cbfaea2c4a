//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// TestSidecarIdentityInAPod: a pod running weft-sidecar beside an app, wired
// by hand the way the injector wires it (projected weft-ca token, trust
// bundle ConfigMap, Workload API socket in a shared emptyDir). The kubelet
// marks the sidecar ready once it holds an SVID from the in-cluster control
// plane, and the app reads that SVID with go-spiffe's workloadapi.
func TestSidecarIdentityInAPod(t *testing.T) {
	const ns = "e2e-sidecar"
	meshNamespace(t, ns, "app")
	ctx := context.Background()
	publishedBundle(t, ns) // the control plane publishes it into labelled namespaces

	socketMount := corev1.VolumeMount{Name: "workload", MountPath: "/var/run/secrets/weft/workload"}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Annotations: map[string]string{"weft.dev/inject": "disabled"}},
		Spec: corev1.PodSpec{
			ServiceAccountName:            "app",
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Volumes: []corev1.Volume{
				{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
					ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "weft-ca", ExpirationSeconds: ptr.To[int64](3600), Path: "token"},
				}}}}},
				{Name: "bundle", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "weft-trust-bundle"}}}},
				{Name: "workload", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
			},
			Containers: []corev1.Container{
				{
					Name: "weft-proxy", Image: "weft/weft-sidecar:" + tag, ImagePullPolicy: corev1.PullNever,
					Command: []string{"/usr/local/bin/weft-sidecar", "run", "--log-level=debug"},
					Env: []corev1.EnvVar{
						{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
						{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
					},
					VolumeMounts: []corev1.VolumeMount{
						{Name: "token", MountPath: "/var/run/secrets/weft/tokens", ReadOnly: true},
						{Name: "bundle", MountPath: "/var/run/secrets/weft/bundle", ReadOnly: true},
						socketMount,
					},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/ready", Port: intstr.FromInt32(15020)}},
						PeriodSeconds: 1,
					},
					SecurityContext: &corev1.SecurityContext{
						RunAsUser: ptr.To[int64](1337), RunAsGroup: ptr.To[int64](1337), RunAsNonRoot: ptr.To(true),
						ReadOnlyRootFilesystem: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
						Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					},
				},
				{
					Name: "app", Image: "weft/testapp:" + tag, ImagePullPolicy: corev1.PullNever,
					Command:      []string{"/usr/local/bin/testapp", "svid"},
					Env:          []corev1.EnvVar{{Name: "SPIFFE_ENDPOINT_SOCKET", Value: "unix:///var/run/secrets/weft/workload/socket"}},
					VolumeMounts: []corev1.VolumeMount{socketMount},
				},
			},
		},
	}
	if _, err := kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "sidecar ready", func(ctx context.Context) (bool, error) {
		p, err := kube.CoreV1().Pods(ns).Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Name == "weft-proxy" {
				return cs.Ready, nil
			}
		}
		return false, nil
	})
	want := "SVID spiffe://cluster.local/ns/e2e-sidecar/sa/app "
	waitFor(t, time.Minute, "the app to print its SVID", func(ctx context.Context) (bool, error) {
		b, err := kube.CoreV1().Pods(ns).GetLogs("app", &corev1.PodLogOptions{Container: "app"}).DoRaw(ctx)
		return err == nil && strings.Contains(string(b), want), nil
	})
	requireSynced(t, "app."+ns)
	logs, _ := kube.CoreV1().Pods(ns).GetLogs("app", &corev1.PodLogOptions{Container: "weft-proxy"}).DoRaw(ctx)
	if !strings.Contains(string(logs), `"msg":"identity ready"`) {
		t.Fatalf("sidecar log lacks identity ready:\n%s", logs)
	}
}
