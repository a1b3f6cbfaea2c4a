package injector

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/api/names"
)

// TestSkipRule: the rule weftctl explains a pod with, the webhook's
// selectors first (namespace served, namespace label, pod label), then the
// handler's (annotation, hostNetwork, already injected), each alone and
// the first that holds when several do.
func TestSkipRule(t *testing.T) {
	enabled := map[string]string{names.InjectLabel: names.InjectEnabled}
	pod := func(ns string, mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns}}
		if mut != nil {
			mut(p)
		}
		return p
	}
	podLabel := func(p *corev1.Pod) { p.Labels = map[string]string{names.InjectLabel: names.InjectDisabled} }
	annotation := func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationInject: InjectDisabled} }
	for _, tc := range []struct {
		name   string
		labels map[string]string
		pod    *corev1.Pod
		want   Skip
	}{
		{"injected", enabled, pod("demo", nil), SkipNone},
		{"pod label enabled", enabled, pod("demo", func(p *corev1.Pod) { p.Labels = map[string]string{names.InjectLabel: names.InjectEnabled} }), SkipNone},
		{"kube-system", enabled, pod("kube-system", nil), SkipNamespace},
		{"weft's namespace", enabled, pod("weft-system", nil), SkipNamespace},
		{"namespace unlabelled", nil, pod("demo", nil), SkipNotEnabled},
		{"namespace disabled", map[string]string{names.InjectLabel: names.InjectDisabled}, pod("demo", nil), SkipNotEnabled},
		{"pod label", enabled, pod("demo", podLabel), SkipPodLabel},
		{"pod label in an unlabelled namespace", nil, pod("demo", podLabel), SkipNotEnabled},
		{"annotation", enabled, pod("demo", annotation), SkipAnnotation},
		{"pod label and annotation", enabled, pod("demo", func(p *corev1.Pod) { podLabel(p); annotation(p) }), SkipPodLabel},
		{"host network", enabled, pod("demo", func(p *corev1.Pod) { p.Spec.HostNetwork = true }), SkipHostNetwork},
		{"has weft-proxy", enabled, pod("demo", func(p *corev1.Pod) { p.Spec.Containers = []corev1.Container{{Name: ProxyName}} }), SkipInjected},
	} {
		if got := SkipRule("weft-system", tc.labels, tc.pod); got != tc.want {
			t.Errorf("%s: SkipRule = %q, want %q", tc.name, got, tc.want)
		}
	}
}
