package injector

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func TestBadAnnotationsRefused(t *testing.T) {
	for _, tc := range []struct{ key, value, want string }{
		{AnnotationExcludeOutboundCIDRs, "300.1.2.0/24", `injector: annotation weft.dev/exclude-outbound-cidrs: "300.1.2.0/24" is not a CIDR`},
		{AnnotationExcludeOutboundCIDRs, "198.18.200.1", `injector: annotation weft.dev/exclude-outbound-cidrs: "198.18.200.1" is not a CIDR`},
		{AnnotationExcludeOutboundCIDRs, "198.18.0.0/15,,fd00::/8", `injector: annotation weft.dev/exclude-outbound-cidrs: "198.18.0.0/15,,fd00::/8" has an empty item`},
		{AnnotationExcludeInboundPorts, "80,70000", `injector: annotation weft.dev/exclude-inbound-ports: "70000" is not a port (1-65535)`},
		{AnnotationExcludeInboundPorts, "0", `injector: annotation weft.dev/exclude-inbound-ports: "0" is not a port (1-65535)`},
		{AnnotationExcludeOutboundPorts, "http", `injector: annotation weft.dev/exclude-outbound-ports: "http" is not a port (1-65535)`},
		{AnnotationProxyCPU, "lots", `injector: annotation weft.dev/proxy-cpu: "lots" is not a quantity (like 100m, 1, 64Mi)`},
		{AnnotationProxyMemory, "-64Mi", `injector: annotation weft.dev/proxy-memory: "-64Mi" must be positive`},
		{AnnotationProxyMemory, "0", `injector: annotation weft.dev/proxy-memory: "0" must be positive`},
		{AnnotationLogLevel, "verbose", `injector: annotation weft.dev/log-level: "verbose" is not one of debug, info, warn, error`},
		{AnnotationInject, "yes", `injector: annotation weft.dev/inject: "yes" is not enabled or disabled`},
		{"weft.dev/exclude-outbound-cidr", "198.18.0.0/15", "injector: annotation weft.dev/exclude-outbound-cidr: unknown weft annotation (known: weft.dev/inject, " +
			"weft.dev/exclude-inbound-ports, weft.dev/exclude-outbound-ports, weft.dev/exclude-outbound-cidrs, weft.dev/proxy-cpu, weft.dev/proxy-memory, weft.dev/log-level, " +
			"weft.dev/outbound-udp, weft.dev/pprof, weft.dev/xds-destinations, weft.dev/proxy-handshake-timeout, weft.dev/proxy-idle-timeout, weft.dev/proxy-write-timeout, weft.dev/inbound-loopback-ports)"},
		{AnnotationOutboundUDP, "reject", `injector: annotation weft.dev/outbound-udp: "reject" is not drop or allow`},
		{AnnotationOutboundUDP, "Drop", `injector: annotation weft.dev/outbound-udp: "Drop" is not drop or allow`},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			pod := podWith(t, func(p *corev1.Pod) { p.Annotations = map[string]string{tc.key: tc.value, "other.io/x": "y"} })
			review, o := newInjector(t, true).Review(reviewBody(t, pod, "demo"))
			assertDenied(t, review.Response, http.StatusUnprocessableEntity, tc.want)
			if o.Action != Refused {
				t.Errorf("outcome %+v", o)
			}
		})
	}
}

func TestEveryBadAnnotationReported(t *testing.T) {
	pod := podWith(t, func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationLogLevel: "loud", AnnotationProxyCPU: "x", AnnotationExcludeOutboundPorts: "1"}
	})
	review, _ := newInjector(t, true).Review(reviewBody(t, pod, "demo"))
	assertDenied(t, review.Response, http.StatusUnprocessableEntity,
		`injector: annotation weft.dev/log-level: "loud" is not one of debug, info, warn, error; `+
			`injector: annotation weft.dev/proxy-cpu: "x" is not a quantity (like 100m, 1, 64Mi)`)
}

func TestPodRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*corev1.Pod)
		want string
	}{
		{"no containers", func(p *corev1.Pod) { p.Spec.Containers = nil }, "injector: the pod has no containers"},
		{"proxy uid", func(p *corev1.Pod) {
			uid := int64(ProxyUID)
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: &uid}
		}, "injector: container web runs as UID 1337, the proxy's UID, whose traffic is not captured: it would bypass mTLS and egress policy"},
		{"proxy uid, container level", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To[int64](ProxyUID)}
		}, "injector: container web runs as UID 1337, the proxy's UID"},
		{"proxy uid, pod level, the container's context names no UID", func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](ProxyUID)}
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr.To(true)}
		}, "injector: container web runs as UID 1337, the proxy's UID"},
		{"proxy uid, init container", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "busybox",
				SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](ProxyUID)}}}
		}, "injector: container setup runs as UID 1337, the proxy's UID"},
		{"reserved port", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: 15001})
		}, "injector: container web declares port 15001, which weft-proxy uses (reserved: [15000 15001 15006 15020])"},
		{"reserved volume", func(p *corev1.Pod) { p.Spec.Volumes = []corev1.Volume{{Name: TokenVolume}} },
			"injector: the pod already has a volume named weft-token, a name weft reserves"},
		{"reserved container", func(p *corev1.Pod) { p.Spec.InitContainers = []corev1.Container{{Name: InitName}} },
			"injector: the pod already has a container named weft-init, a name weft reserves"},
		{"the token volume by name", func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: TokenVolume, MountPath: "/tok"}}
		}, "injector: container web mounts volume weft-token, which weft reserves (only weft-proxy may mount it)"},
		{"the token volume by name, init container", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "busybox", VolumeMounts: []corev1.VolumeMount{{Name: TokenVolume, MountPath: "/tok"}}}}
		}, "injector: container setup mounts volume weft-token, which weft reserves"},
		{"a weft-ca token under another name", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "mine", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "vault", Path: "vault"}},
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: TokenAudience, Path: "t"}},
				}}}})
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "mine", MountPath: "/mine"}}
		}, "injector: volume mine projects a ServiceAccount token for audience weft-ca, which only weft-proxy may hold"},
		{"reserved mount", func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "x", MountPath: "/var/run/secrets/weft"}}
		}, "injector: container web mounts /var/run/secrets/weft, under /var/run/secrets/weft/ which weft reserves"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			review, _ := newInjector(t, true).Review(reviewBody(t, podWith(t, tc.mut), "demo"))
			assertDenied(t, review.Response, http.StatusUnprocessableEntity, tc.want)
		})
	}
}

// podWith is the plain fixture changed by mut, as JSON.
func podWith(t *testing.T, mut func(*corev1.Pod)) []byte {
	t.Helper()
	var pod corev1.Pod
	if err := json.Unmarshal(loadPod(t, "plain"), &pod); err != nil {
		t.Fatal(err)
	}
	mut(&pod)
	return mustJSON(t, &pod)
}

func assertDenied(t *testing.T, r *admissionv1.AdmissionResponse, code int32, msgPrefix string) {
	t.Helper()
	if r.Allowed || r.Patch != nil || r.Result == nil || r.Result.Code != code || !strings.HasPrefix(r.Result.Message, msgPrefix) {
		t.Errorf("response %s, want denied with %d %q", fmt.Sprintf("%+v %+v", r, r.Result), code, msgPrefix)
	}
}

// A token the pod projects for another audience is the app's business.
func TestOtherAudienceTokenAllowed(t *testing.T) {
	pod := podWith(t, func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "vault-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "vault", Path: "token"}}}}}})
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "vault-token", MountPath: "/var/run/secrets/vault"}}
	})
	review, _ := newInjector(t, true).Review(reviewBody(t, pod, "demo"))
	if !review.Response.Allowed {
		t.Fatalf("refused: %+v", review.Response.Result)
	}
}

// A container that names its own UID is not the pod's default: the pod's
// default being the proxy's UID refuses only the containers that take it.
func TestContainerUIDOverridesThePods(t *testing.T) {
	pod := podWith(t, func(p *corev1.Pod) {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](ProxyUID)}
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To[int64](1000)}
	})
	review, _ := newInjector(t, true).Review(reviewBody(t, pod, "demo"))
	if !review.Response.Allowed {
		t.Fatalf("refused: %+v", review.Response.Result)
	}
}
