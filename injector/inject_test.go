package injector

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestInjectGolden(t *testing.T) {
	for _, tc := range []struct {
		fixture string
		native  bool
	}{
		{"plain", true},
		{"plain", false},
		{"existing", true},
		{"existing", false},
		{"probes", true},
		{"annotated", true},
		{"job", true},
	} {
		name := tc.fixture + map[bool]string{true: "-native", false: "-regular"}[tc.native]
		t.Run(name, func(t *testing.T) {
			inj := newInjector(t, tc.native)
			pod := loadPod(t, tc.fixture)
			review, o := inj.Review(reviewBody(t, pod, "demo"))
			resp := review.Response
			if !resp.Allowed || o.Action != Injected || resp.UID != "0d9c7e1a-5b8f-4f62-8f0e-1a2b3c4d5e6f" {
				t.Fatalf("response %+v, outcome %+v", resp, o)
			}
			got, patched := applyPatch(t, pod, resp)
			checkInjected(t, o.Pod, got, tc.native)
			checkGolden(t, name, got)

			// Injecting an injected pod changes nothing.
			again, o2 := inj.Review(reviewBody(t, patched, "demo"))
			if !again.Response.Allowed || again.Response.Patch != nil || o2.Action != Skipped {
				t.Fatalf("second injection: response %+v, outcome %+v", again.Response, o2)
			}
		})
	}
}

func TestProbesRewritten(t *testing.T) {
	inj := newInjector(t, true)
	pod := loadPod(t, "probes")
	review, _ := inj.Review(reviewBody(t, pod, "demo"))
	got, _ := applyPatch(t, pod, review.Response)
	c := map[string]corev1.Container{}
	for _, x := range got.Spec.Containers {
		c[x.Name] = x
	}
	rewritten := func(p *corev1.Probe, path string) {
		t.Helper()
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromInt32(HealthPort) ||
			p.HTTPGet.Scheme != corev1.URISchemeHTTP || p.HTTPGet.Host != "" || len(p.HTTPGet.HTTPHeaders) != 0 {
			t.Errorf("probe %+v, want httpGet %s on %d", p, path, HealthPort)
		}
	}
	rewritten(c["web"].LivenessProbe, "/app-health/web/livez")
	rewritten(c["web"].ReadinessProbe, "/app-health/web/readyz")
	rewritten(c["grpc"].LivenessProbe, "/app-health/grpc/livez")
	if p := c["web"].LivenessProbe; p.PeriodSeconds != 10 || p.TimeoutSeconds != 2 {
		t.Errorf("timings not kept: %+v", p)
	}
	if p := c["web"].StartupProbe; p.TCPSocket == nil || p.TCPSocket.Port != intstr.FromString("http") {
		t.Errorf("tcp probe changed: %+v", p)
	}
	if p := c["grpc"].ReadinessProbe; p.Exec == nil {
		t.Errorf("exec probe changed: %+v", p)
	}
	if p := c["odd"].LivenessProbe; p.HTTPGet.Host != "198.18.200.1" {
		t.Errorf("probe with a host changed: %+v", p)
	}
	if p := c["odd"].ReadinessProbe; p.HTTPGet.Port != intstr.FromString("nosuchport") {
		t.Errorf("probe with an unknown named port changed: %+v", p)
	}

	var recorded map[string]AppProbe
	if err := json.Unmarshal([]byte(got.Annotations[AnnotationProbes]), &recorded); err != nil {
		t.Fatal(err)
	}
	if len(recorded) != 3 {
		t.Fatalf("recorded %d probes, want 3: %v", len(recorded), recorded)
	}
	live := recorded["/app-health/web/livez"].HTTPGet
	if live == nil || live.Port != intstr.FromInt32(8080) || live.Path != "/livez" || live.Scheme != corev1.URISchemeHTTP ||
		len(live.HTTPHeaders) != 1 || recorded["/app-health/web/livez"].TimeoutSeconds != 2 {
		t.Errorf("recorded liveness %+v", recorded["/app-health/web/livez"])
	}
	if ready := recorded["/app-health/web/readyz"].HTTPGet; ready == nil || ready.Scheme != corev1.URISchemeHTTPS || ready.Port != intstr.FromInt32(9090) {
		t.Errorf("recorded readiness %+v", ready)
	}
	if g := recorded["/app-health/grpc/livez"].GRPC; g == nil || g.Port != 50051 || g.Service == nil || *g.Service != "liveness" {
		t.Errorf("recorded grpc %+v", g)
	}
	var inj2 Injection
	if err := json.Unmarshal([]byte(got.Annotations[AnnotationInjected]), &inj2); err != nil || inj2.ProbesRewritten != 3 {
		t.Errorf("injected annotation %q", got.Annotations[AnnotationInjected])
	}
}

func TestInitArgs(t *testing.T) {
	inj := newInjector(t, true)
	pod := loadPod(t, "annotated")
	review, _ := inj.Review(reviewBody(t, pod, "demo"))
	got, _ := applyPatch(t, pod, review.Response)
	init, proxy := got.Spec.InitContainers[0], got.Spec.InitContainers[1]
	want := []string{"--inbound-port=15006", "--outbound-port=15001", "--proxy-uid=1337", "--include-inbound-ports=*",
		"--exclude-inbound-ports=15020,9100,9101", "--exclude-outbound-ports=5432",
		"--exclude-outbound-cidrs=169.254.169.254/32,198.19.0.0/16,fd00::/8", "--outbound-udp=drop"}
	if strings.Join(init.Command, " ") != SidecarBinary+" init" || strings.Join(init.Args, " ") != strings.Join(want, " ") {
		t.Errorf("weft-init: %v %v\nwant args %v", init.Command, init.Args, want)
	}
	wantRun := []string{"run", "--control-plane=weft-controlplane.weft-system.svc:15012", "--trust-domain=cluster.local", "--log-level=debug"}
	if strings.Join(proxy.Args, " ") != strings.Join(wantRun, " ") {
		t.Errorf("weft-proxy args %v, want %v", proxy.Args, wantRun)
	}
	r := proxy.Resources
	if r.Requests.Cpu().String() != "250m" || r.Limits.Cpu().String() != "250m" ||
		r.Requests.Memory().String() != "256Mi" || r.Limits.Memory().String() != "256Mi" {
		t.Errorf("resources %+v", r)
	}
}

// TestOutboundUDP: weft-init's --outbound-udp comes from Config.OutboundUDP
// (allow unless set; mesh follows the MeshConfig's outbound mode at the
// pod's admission, and is the default when MeshOutbound is set), and
// weft.dev/outbound-udp overrides it either way.
func TestOutboundUDP(t *testing.T) {
	for _, tc := range []struct {
		cfg, mesh, annotation, want string
	}{
		{"", "", "", "allow"},
		{"drop", "", "", "drop"},
		{"allow", "", "", "allow"},
		{"drop", "", "allow", "allow"},
		{"", "", "drop", "drop"},
		{"", "REGISTRY_ONLY", "", "drop"},
		{"", "ALLOW_ANY", "", "allow"},
		{"mesh", "REGISTRY_ONLY", "", "drop"},
		{"mesh", "-", "", "allow"}, // no MeshConfig
		{"mesh", "REGISTRY_ONLY", "allow", "allow"},
		{"allow", "REGISTRY_ONLY", "", "allow"},
	} {
		cfg := Config{Version: "v0.0.0-test", SidecarImage: testImage, NativeSidecar: true, OutboundUDP: tc.cfg}
		if tc.mesh != "" {
			mode := strings.TrimPrefix(tc.mesh, "-")
			cfg.Mesh = func() MeshSettings { return MeshSettings{Outbound: mode} }
		}
		inj, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		pod := podWith(t, func(p *corev1.Pod) {
			if tc.annotation != "" {
				p.Annotations = map[string]string{AnnotationOutboundUDP: tc.annotation}
			}
		})
		review, _ := inj.Review(reviewBody(t, pod, "demo"))
		got, _ := applyPatch(t, pod, review.Response)
		init := got.Spec.InitContainers[0]
		if want := "--outbound-udp=" + tc.want; init.Name != InitName || !slices.Contains(init.Args, want) {
			t.Errorf("Config.OutboundUDP %q, mesh %q, annotation %q: %s args %v, want %s", tc.cfg, tc.mesh, tc.annotation, init.Name, init.Args, want)
		}
	}
}

func TestSkipped(t *testing.T) {
	for _, tc := range []struct {
		fixture, ns, reason string
	}{
		{"optedout", "demo", "annotation weft.dev/inject: disabled"},
		{"hostnetwork", "demo", "the pod uses hostNetwork"},
		{"plain", "kube-system", "namespace kube-system is never injected"},
		{"plain", "weft-system", "namespace weft-system is never injected"},
	} {
		t.Run(tc.fixture+"/"+tc.ns, func(t *testing.T) {
			review, o := newInjector(t, true).Review(reviewBody(t, loadPod(t, tc.fixture), tc.ns))
			if r := review.Response; !r.Allowed || r.Patch != nil || r.PatchType != nil || r.Result != nil {
				t.Fatalf("response %+v", r)
			}
			if o.Action != Skipped || !strings.HasPrefix(o.Reason, tc.reason) || o.Namespace != tc.ns || o.Pod == nil {
				t.Errorf("outcome %+v, want skipped: %s", o, tc.reason)
			}
		})
	}
}

func TestMalformedReviews(t *testing.T) {
	pod := loadPod(t, "plain")
	for _, tc := range []struct {
		name, body, want string
	}{
		{"empty", ``, "injector: request body is not an AdmissionReview: "},
		{"bad json", `{"apiVersion":`, "injector: request body is not an AdmissionReview: "},
		{"array", `[]`, "injector: request body is not an AdmissionReview: "},
		{"null", `null`, `injector: got apiVersion "" kind "", want admission.k8s.io/v1 AdmissionReview`},
		{"v1beta1", `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}`,
			`injector: got apiVersion "admission.k8s.io/v1beta1" kind "AdmissionReview", want admission.k8s.io/v1 AdmissionReview`},
		{"wrong kind", `{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}`, `injector: got apiVersion "admission.k8s.io/v1" kind "Pod"`},
		{"no request", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, "injector: AdmissionReview has no request"},
		{"object not a pod", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE",` +
			`"resource":{"version":"v1","resource":"pods"},"object":{"spec":{"containers":"nope"}}}}`, "injector: request object is not a Pod: "},
		{"no object", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE",` +
			`"resource":{"version":"v1","resource":"pods"}}}`, "injector: request object is not a Pod: "},
		{"wrong case", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE",` +
			`"resource":{"version":"v1","resource":"pods"},"object":{"Spec":` + string(pod[strings.Index(string(pod), `"spec":`)+7:]) + "}}", "injector: the pod has no containers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			review, o := newInjector(t, true).Review([]byte(tc.body))
			if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" || review.Response == nil {
				t.Fatalf("review %+v", review)
			}
			code := int32(http.StatusBadRequest)
			if o.Action == Refused {
				code = http.StatusUnprocessableEntity
			}
			assertDenied(t, review.Response, code, tc.want)
		})
	}
}

func TestIgnored(t *testing.T) {
	pod := loadPod(t, "plain")
	for _, tc := range []struct {
		name string
		mut  func(*admissionv1.AdmissionRequest)
	}{
		{"update", func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update }},
		{"delete", func(r *admissionv1.AdmissionRequest) { r.Operation, r.Object.Raw = admissionv1.Delete, nil }},
		{"deployment", func(r *admissionv1.AdmissionRequest) { r.Resource.Group, r.Resource.Resource = "apps", "deployments" }},
		{"subresource", func(r *admissionv1.AdmissionRequest) { r.SubResource = "ephemeralcontainers" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var review admissionv1.AdmissionReview
			if err := json.Unmarshal(reviewBody(t, pod, "demo"), &review); err != nil {
				t.Fatal(err)
			}
			tc.mut(review.Request)
			out, o := newInjector(t, true).Review(mustJSON(t, &review))
			if r := out.Response; !r.Allowed || r.Patch != nil || r.UID != review.Request.UID || o.Action != Ignored {
				t.Errorf("response %+v outcome %+v", r, o)
			}
		})
	}
}

func TestPointerEscaping(t *testing.T) {
	for in, want := range map[string]string{"weft.dev/injected": "weft.dev~1injected", "a~b/c": "a~0b~1c", "plain": "plain"} {
		if got := pointer(in); got != want {
			t.Errorf("pointer(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "injector: Config.SidecarImage is required"},
		{Config{SidecarImage: "x", TrustDomain: "Bad Domain"}, `injector: Config.TrustDomain "Bad Domain": `},
		{Config{SidecarImage: "x", ProxyLogLevel: "loud"}, `injector: Config.ProxyLogLevel "loud" is not one of`},
		{Config{SidecarImage: "x", OutboundUDP: "reject"}, `injector: Config.OutboundUDP "reject" is not mesh, allow or drop`},
		{Config{SidecarImage: "x", OutboundUDP: "mesh"}, "injector: Config.OutboundUDP is mesh but Config.Mesh is nil"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestPprofAnnotation: weft-proxy serves profiles only when the pod asks;
// it looks destinations up unless the pod says not to (weft-sidecar's
// default, passed on only when the pod says).
func TestPprofAnnotation(t *testing.T) {
	proxyArgsOf := func(annotations map[string]string) []string {
		pod := podWith(t, func(p *corev1.Pod) { p.Annotations = annotations })
		review, _ := newInjector(t, true).Review(reviewBody(t, pod, "demo"))
		got, _ := applyPatch(t, pod, review.Response)
		for _, c := range slices.Concat(got.Spec.InitContainers, got.Spec.Containers) {
			if c.Name == ProxyName {
				return c.Args
			}
		}
		t.Fatal("no proxy container")
		return nil
	}
	for _, tc := range []struct {
		annotation, value string
		flag              string // "": none of the annotation's
	}{
		{AnnotationPprof, "", ""}, {AnnotationPprof, "true", "--pprof"}, {AnnotationPprof, "false", ""},
		{AnnotationXDSDestinations, "", ""},
		{AnnotationXDSDestinations, "true", "--xds-destinations=true"},
		{AnnotationXDSDestinations, "false", "--xds-destinations=false"},
	} {
		var annotations map[string]string
		if tc.value != "" {
			annotations = map[string]string{tc.annotation: tc.value}
		}
		args := proxyArgsOf(annotations)
		prefix := map[string]string{AnnotationPprof: "--pprof", AnnotationXDSDestinations: "--xds-destinations"}[tc.annotation]
		var got []string
		for _, a := range args {
			if strings.HasPrefix(a, prefix) {
				got = append(got, a)
			}
		}
		if want := []string{tc.flag}; tc.flag == "" && len(got) != 0 || tc.flag != "" && !slices.Equal(got, want) {
			t.Errorf("%s %q: args %v, want %q", tc.annotation, tc.value, args, tc.flag)
		}
	}
	for _, a := range []string{AnnotationPprof, AnnotationXDSDestinations} {
		review, _ := newInjector(t, true).Review(reviewBody(t, podWith(t, func(p *corev1.Pod) {
			p.Annotations = map[string]string{a: "yes"}
		}), "demo"))
		if review.Response.Allowed {
			t.Fatalf("%s: yes was accepted", a)
		}
	}
}
