package injector

import (
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
)

// restricted is a security context that meets the "restricted" Pod
// Security Standard: it cannot escape capture.
func restricted() *corev1.SecurityContext {
	return &corev1.SecurityContext{RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
}

func TestCaptureBypassRule(t *testing.T) {
	caps := func(add, drop []corev1.Capability) *corev1.Capabilities {
		return &corev1.Capabilities{Add: add, Drop: drop}
	}
	for _, tc := range []struct {
		name string
		psc  *corev1.PodSecurityContext
		sc   *corev1.SecurityContext
		want string // a part of the reason; "" cannot escape
	}{
		{"restricted", nil, restricted(), ""},
		{"runs as a non-root UID, drops NET_RAW and SETUID", nil, &corev1.SecurityContext{RunAsUser: ptr.To[int64](1000),
			Capabilities: caps(nil, []corev1.Capability{"NET_RAW", "SETUID"})}, ""},
		{"non-root, no escalation, drops NET_RAW (keeps SETUID)", nil, &corev1.SecurityContext{RunAsUser: ptr.To[int64](1000),
			AllowPrivilegeEscalation: ptr.To(false), Capabilities: caps(nil, []corev1.Capability{"NET_RAW"})}, ""},
		{"the runtime's defaults", nil, nil, "keeps NET_RAW"},
		{"drops only NET_RAW, image may be root", nil, &corev1.SecurityContext{Capabilities: caps(nil, []corev1.Capability{"NET_RAW"})},
			"may run as root"},
		{"root, drops NET_RAW", nil, &corev1.SecurityContext{RunAsUser: ptr.To[int64](0), Capabilities: caps(nil, []corev1.Capability{"net_raw"})},
			"runs as root and keeps SETUID"},
		{"non-root allowing escalation, keeps SETUID", &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)},
			&corev1.SecurityContext{Capabilities: caps(nil, []corev1.Capability{"CAP_NET_RAW"})}, "allows privilege escalation"},
		{"the proxy's UID (pod level)", &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](ProxyUID)}, restricted(), "runs as UID 1337"},
		{"privileged", nil, &corev1.SecurityContext{Privileged: ptr.To(true), Capabilities: caps(nil, []corev1.Capability{"ALL"})}, "is privileged"},
		{"adds NET_ADMIN", nil, &corev1.SecurityContext{RunAsNonRoot: ptr.To(true), Capabilities: caps([]corev1.Capability{"NET_ADMIN"}, []corev1.Capability{"ALL"})},
			"adds NET_ADMIN"},
		{"adds SYS_ADMIN", nil, &corev1.SecurityContext{Capabilities: caps([]corev1.Capability{"SYS_ADMIN"}, nil)}, "SYS_ADMIN"},
		{"adds NET_RAW back after dropping ALL", nil, &corev1.SecurityContext{RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
			Capabilities: caps([]corev1.Capability{"NET_RAW"}, []corev1.Capability{"ALL"})}, "keeps NET_RAW"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: tc.psc, Containers: []corev1.Container{{Name: "app", SecurityContext: tc.sc}}}}
			bs := CaptureBypasses(pod)
			switch {
			case tc.want == "" && len(bs) != 0:
				t.Fatalf("%v, want none", bs)
			case tc.want != "" && (len(bs) != 1 || !strings.Contains(bs[0].Reason, tc.want)):
				t.Fatalf("%v, want one reason with %q", bs, tc.want)
			}
		})
	}
	// Every kind of container counts, weft's own do not.
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers:      []corev1.Container{{Name: "setup"}, {Name: InitName}},
		Containers:          []corev1.Container{{Name: "app", SecurityContext: restricted()}, {Name: ProxyName}},
		EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger"}}},
	}}
	var got []string
	for _, b := range CaptureBypasses(pod) {
		got = append(got, b.Kind+"/"+b.Container)
	}
	if strings.Join(got, ",") != "initContainer/setup,ephemeralContainer/debugger" {
		t.Fatalf("bypasses %v", got)
	}
}

func meshInjector(t *testing.T, bypass string) *Injector {
	t.Helper()
	inj, err := New(Config{Version: "v0.0.0-test", SidecarImage: testImage, NativeSidecar: true,
		Mesh: func() MeshSettings { return MeshSettings{CaptureBypass: bypass} }})
	if err != nil {
		t.Fatal(err)
	}
	return inj
}

// TestCaptureBypassAdmission: under Warn a pod whose container keeps
// NET_RAW is injected with an admission warning; under Refuse it is
// denied saying why; a restricted pod is injected without either.
func TestCaptureBypassAdmission(t *testing.T) {
	open := podWith(t, func(*corev1.Pod) {})
	tight := podWith(t, func(p *corev1.Pod) {
		for i := range p.Spec.Containers {
			p.Spec.Containers[i].SecurityContext = restricted()
		}
	})
	review, o := meshInjector(t, "Warn").Review(reviewBody(t, open, "demo"))
	if r := review.Response; !r.Allowed || r.Patch == nil || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "keeps NET_RAW") || len(o.Warnings) != 1 {
		t.Fatalf("Warn: %+v", r)
	}
	review, _ = meshInjector(t, "Refuse").Review(reviewBody(t, open, "demo"))
	assertDenied(t, review.Response, 422, "injector: weft: container web keeps NET_RAW")
	for _, mode := range []string{"Warn", "Refuse"} {
		review, _ = meshInjector(t, mode).Review(reviewBody(t, tight, "demo"))
		if r := review.Response; !r.Allowed || r.Patch == nil || len(r.Warnings) != 0 {
			t.Fatalf("%s, restricted pod: %+v", mode, r)
		}
	}
}

// TestEphemeralContainersChecked: kubectl debug's ephemeral container on
// an injected pod is checked like a pod's containers.
func TestEphemeralContainersChecked(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "demo"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "app", SecurityContext: restricted()}, {Name: ProxyName}},
		EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: "debugger", SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}}}},
	}}
	req := func(p *corev1.Pod) *admissionv1.AdmissionRequest {
		return &admissionv1.AdmissionRequest{UID: "u", Resource: podResource, SubResource: "ephemeralcontainers", Operation: admissionv1.Update,
			Namespace: "demo", Object: runtime.RawExtension{Raw: mustJSON(t, p)}}
	}
	r, o := meshInjector(t, "Refuse").Admit(req(pod))
	assertDenied(t, r, 422, "injector: weft: ephemeralContainer debugger adds NET_ADMIN")
	if o.Action != Refused {
		t.Fatalf("outcome %+v", o)
	}
	r, o = meshInjector(t, "Warn").Admit(req(pod))
	if !r.Allowed || len(r.Warnings) != 1 || len(o.Warnings) != 1 || r.Patch != nil {
		t.Fatalf("Warn: %+v", r)
	}
	// A pod weft did not inject is not weft's to police.
	plain := pod.DeepCopy()
	plain.Spec.Containers = plain.Spec.Containers[:1]
	if r, _ := meshInjector(t, "Refuse").Admit(req(plain)); !r.Allowed || len(r.Warnings) != 0 {
		t.Fatalf("uninjected pod: %+v", r)
	}
}

// TestEphemeralContainerCannotMountTheToken: the pod's projected token is
// weft-proxy's alone (it tells the sidecar's control-plane streams from
// the app's); kubectl debug cannot hand it to a debug container, whatever
// captureBypass says.
func TestEphemeralContainerCannotMountTheToken(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "demo"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "app", SecurityContext: restricted()}, {Name: ProxyName}},
		EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: "debugger", SecurityContext: restricted(), VolumeMounts: []corev1.VolumeMount{{Name: TokenVolume, MountPath: "/tok"}}}}},
	}}
	req := &admissionv1.AdmissionRequest{UID: "u", Resource: podResource, SubResource: "ephemeralcontainers", Operation: admissionv1.Update,
		Namespace: "demo", Object: runtime.RawExtension{Raw: mustJSON(t, pod)}}
	for _, mode := range []string{"Warn", "Refuse"} {
		r, o := meshInjector(t, mode).Admit(req)
		assertDenied(t, r, 422, "injector: container debugger mounts volume weft-token, which weft reserves (only weft-proxy may mount it)")
		if o.Action != Refused {
			t.Fatalf("%s: outcome %+v", mode, o)
		}
	}
}
