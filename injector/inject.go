package injector

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kjson "sigs.k8s.io/json"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/version"
)

// Config configures an [Injector]. Zero fields get the defaults noted.
type Config struct {
	// Version is recorded in weft.dev/injected; "" means weft's build version.
	Version string
	// SidecarImage runs weft-init and weft-proxy, e.g. "weft/weft-sidecar:dev". Required.
	SidecarImage string
	// PullPolicy of SidecarImage; "" means IfNotPresent.
	PullPolicy corev1.PullPolicy
	// ControlPlaneAddr is where weft-proxy reaches the control plane;
	// "" means weft-controlplane.weft-system.svc:15012.
	ControlPlaneAddr string
	// TrustDomain of the mesh; "" means cluster.local.
	TrustDomain string
	// Namespace weft is installed in; never injected, nor is kube-system.
	// "" means weft-system.
	Namespace string
	// NativeSidecar runs weft-proxy as an init container with
	// restartPolicy Always. The caller decides it from the API server's
	// version (see [NativeSidecarSupported]): Kubernetes >= 1.29.
	NativeSidecar bool
	// ProxyResources are weft-proxy's resources unless a pod's annotations
	// say otherwise; zero means [DefaultProxyResources].
	ProxyResources corev1.ResourceRequirements
	// ProxyLogLevel is weft-proxy's log level unless weft.dev/log-level
	// says otherwise; "" means info.
	ProxyLogLevel string
	// OutboundUDP is what weft-init does with a pod's outbound UDP other
	// than DNS (weft-sidecar init --outbound-udp) unless
	// weft.dev/outbound-udp says otherwise: [OutboundUDPAllow],
	// [OutboundUDPDrop], or [OutboundUDPMesh] (drop under a REGISTRY_ONLY
	// MeshConfig, allow otherwise); "" means mesh when Mesh is set, else
	// allow. The choice is made
	// when the pod is created; changing the mesh's mode later reaches
	// pods as they are recreated (weftctl check lists the ones behind).
	OutboundUDP string
	// Mesh returns the MeshConfig's settings now; weft-injector backs it
	// with an informer on the MeshConfig. Required when OutboundUDP is
	// mesh; nil means the MeshConfig's defaults (ALLOW_ANY, captureBypass
	// Warn).
	Mesh func() MeshSettings
	// Logger receives one line per decision; nil discards.
	Logger *slog.Logger
}

// DefaultProxyResources: a small request so that meshing a namespace does
// not exhaust its quota, a memory limit so that a leaking proxy is
// restarted rather than starving the node, and no CPU limit (CFS
// throttling would add latency to every request of the app).
func DefaultProxyResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
}

// Injector decides, for one admission request, whether and how to inject
// a pod. It holds no state beyond its Config and is safe for concurrent use.
type Injector struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and fills in defaults.
func New(cfg Config) (*Injector, error) {
	if cfg.SidecarImage == "" {
		return nil, errors.New("injector: Config.SidecarImage is required")
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&cfg.Version, version.Version)
	def(&cfg.ControlPlaneAddr, names.DefaultControlPlaneAddr)
	def(&cfg.TrustDomain, names.DefaultTrustDomain)
	def(&cfg.Namespace, names.Namespace)
	def(&cfg.ProxyLogLevel, "info")
	if cfg.OutboundUDP == "" && cfg.Mesh != nil {
		cfg.OutboundUDP = OutboundUDPMesh
	}
	def(&cfg.OutboundUDP, OutboundUDPAllow)
	if cfg.PullPolicy == "" {
		cfg.PullPolicy = corev1.PullIfNotPresent
	}
	if _, err := spiffeid.TrustDomainFromString(cfg.TrustDomain); err != nil {
		return nil, fmt.Errorf("injector: Config.TrustDomain %q: %w", cfg.TrustDomain, err)
	}
	if !slices.Contains(logLevels, cfg.ProxyLogLevel) {
		return nil, fmt.Errorf("injector: Config.ProxyLogLevel %q is not one of %v", cfg.ProxyLogLevel, logLevels)
	}
	switch {
	case cfg.OutboundUDP == OutboundUDPMesh && cfg.Mesh == nil:
		return nil, errors.New("injector: Config.OutboundUDP is mesh but Config.Mesh is nil")
	case cfg.OutboundUDP != OutboundUDPMesh && !slices.Contains(outboundUDPModes, cfg.OutboundUDP):
		return nil, fmt.Errorf("injector: Config.OutboundUDP %q is not %s, %s or %s", cfg.OutboundUDP, OutboundUDPMesh, OutboundUDPAllow, OutboundUDPDrop)
	}
	if cfg.ProxyResources.Requests == nil && cfg.ProxyResources.Limits == nil {
		cfg.ProxyResources = DefaultProxyResources()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Injector{cfg: cfg, log: cfg.Logger}, nil
}

// Action is what the injector did with a request.
type Action string

const (
	Injected  Action = "injected"  // allowed with a patch
	Skipped   Action = "skipped"   // a pod create left alone: allowed, no patch
	Refused   Action = "refused"   // a pod create denied: a weft annotation or the pod is invalid
	Ignored   Action = "ignored"   // not a pod create: allowed, no patch
	Malformed Action = "malformed" // the request itself is broken: denied
)

// Outcome says what happened to one request, for logs and Events.
type Outcome struct {
	Action    Action
	Reason    string      // why, for every action but Injected
	Namespace string      // the request's namespace
	Pod       *corev1.Pod // the pod as received, when it could be decoded
	DryRun    bool        // the request changes nothing: record no Event
	// Warnings are the admission warnings the pod was admitted with
	// (containers that could escape capture): recorded as an Event.
	Warnings []string
	// Unserved: a namespace weft never serves (kube-system, weft's own):
	// no Event is recorded there, whatever the request says.
	Unserved bool
}

// refusal is an error that denies the pod with its message.
type refusal string

func (r refusal) Error() string { return string(r) }

// Review answers an AdmissionReview (admission.k8s.io/v1) given as JSON.
// It always returns a review with a response: a body it cannot use is
// denied with a message saying why.
func (i *Injector) Review(body []byte) (*admissionv1.AdmissionReview, Outcome) {
	out := &admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}}
	var in admissionv1.AdmissionReview
	var o Outcome
	switch err := kjson.UnmarshalCaseSensitivePreserveInts(body, &in); {
	case err != nil:
		out.Response, o = i.malformed(fmt.Sprintf("injector: request body is not an AdmissionReview: %v", err))
	case in.APIVersion != "admission.k8s.io/v1" || in.Kind != "AdmissionReview":
		out.Response, o = i.malformed(fmt.Sprintf("injector: got apiVersion %q kind %q, want admission.k8s.io/v1 AdmissionReview", in.APIVersion, in.Kind))
	case in.Request == nil:
		out.Response, o = i.malformed("injector: AdmissionReview has no request")
	default:
		out.Response, o = i.Admit(in.Request)
	}
	if in.Request != nil {
		out.Response.UID = in.Request.UID
	}
	return out, o
}

var podResource = metav1.GroupVersionResource{Group: "", Version: "v1", Resource: "pods"}

// Admit answers one admission request.
func (i *Injector) Admit(req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Outcome) {
	if req == nil {
		return i.malformed("injector: AdmissionReview has no request")
	}
	if req.Operation == admissionv1.Update && req.Resource == podResource && req.SubResource == "ephemeralcontainers" {
		return i.admitEphemeral(req)
	}
	if req.Operation != admissionv1.Create || req.Resource != podResource || req.SubResource != "" {
		i.log.Debug("ignored", "operation", req.Operation, "resource", req.Resource.String(), "sub_resource", req.SubResource)
		return &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true},
			Outcome{Action: Ignored, Reason: "not a pod create", Namespace: req.Namespace}
	}
	pod, resp, refused := i.podOf(req)
	if resp != nil {
		return resp, refused
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	o := Outcome{Namespace: ns, Pod: pod, DryRun: req.DryRun != nil && *req.DryRun}
	log := i.log.With("namespace", ns, "pod", podName(pod), "uid", req.UID)
	o.Unserved = !i.serves(ns)
	if reason := i.skipReason(ns, pod); reason != "" {
		log.Info("skipped", "reason", reason)
		o.Action, o.Reason = Skipped, reason
		return &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}, o
	}
	patch, summary, err := i.inject(pod)
	if err == nil {
		o.Warnings, err = i.bypassVerdict(CaptureBypasses(pod))
	}
	if err != nil {
		log.Info("refused", "reason", err.Error())
		o.Action, o.Reason = Refused, err.Error()
		return deny(req.UID, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, err.Error()), o
	}
	b, err := json.Marshal(patch)
	if err != nil { // cannot happen: the patch holds only API types
		o.Action, o.Reason = Refused, err.Error()
		return deny(req.UID, http.StatusInternalServerError, metav1.StatusReasonInternalError, "injector: encode patch: "+err.Error()), o
	}
	log.Info("injected", "native", summary.Native, "probes_rewritten", summary.ProbesRewritten, "patch_ops", len(patch), "warnings", o.Warnings)
	pt := admissionv1.PatchTypeJSONPatch
	o.Action = Injected
	return &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true, Patch: b, PatchType: &pt, Warnings: o.Warnings}, o
}

// podOf reads the request's object as a Pod; when it is not one, resp
// and o are the answer (refused as malformed).
func (i *Injector) podOf(req *admissionv1.AdmissionRequest) (pod *corev1.Pod, resp *admissionv1.AdmissionResponse, o Outcome) {
	pod = &corev1.Pod{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, pod); err != nil {
		resp, o = i.malformed(fmt.Sprintf("injector: request object is not a Pod: %v", err))
		resp.UID = req.UID
		return nil, resp, o
	}
	return pod, nil, Outcome{}
}

// admitEphemeral checks the ephemeral containers added to an injected pod
// (kubectl debug): one that could escape capture is refused or admitted
// with a warning, as a pod's containers are.
func (i *Injector) admitEphemeral(req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Outcome) {
	pod, resp, refused := i.podOf(req)
	if resp != nil {
		return resp, refused
	}
	ns := cmp.Or(req.Namespace, pod.Namespace)
	o := Outcome{Action: Ignored, Reason: "ephemeral containers", Namespace: ns, Pod: pod, DryRun: req.DryRun != nil && *req.DryRun,
		Unserved: !i.serves(ns)}
	if o.Unserved || !hasContainer(pod, ProxyName) {
		return &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}, o
	}
	// An ephemeral container may mount the pod's volumes: never the token.
	for _, ec := range pod.Spec.EphemeralContainers {
		if err := mountsReserved(corev1.Container(ec.EphemeralContainerCommon)); err != nil {
			i.log.Info("refused ephemeral container", "namespace", ns, "pod", podName(pod), "reason", err.Error())
			o.Action, o.Reason = Refused, err.Error()
			return deny(req.UID, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, err.Error()), o
		}
	}
	var bs []Bypass
	for _, b := range CaptureBypasses(pod) {
		if b.Kind == "ephemeralContainer" {
			bs = append(bs, b)
		}
	}
	ws, err := i.bypassVerdict(bs)
	if err != nil {
		i.log.Info("refused ephemeral container", "namespace", ns, "pod", podName(pod), "reason", err.Error())
		o.Action, o.Reason = Refused, err.Error()
		return deny(req.UID, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, err.Error()), o
	}
	o.Warnings = ws
	return &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true, Warnings: ws}, o
}

// serves reports whether weft may inject (and record Events) in ns:
// never kube-system nor weft's own namespace.
func (i *Injector) serves(ns string) bool { return serves(i.cfg.Namespace, ns) }

func serves(weftNamespace, ns string) bool {
	return ns != metav1.NamespaceSystem && ns != weftNamespace
}

// Skip names a rule by which a pod is created without a sidecar.
type Skip string

// The rules, in the order SkipRule applies them. The first three are the
// webhook's (deploy/20-injector.yaml: the API server never asks about the
// pod), the rest the handler's (it is asked, and allows the pod unchanged).
const (
	SkipNone        Skip = ""
	SkipNamespace   Skip = "namespace"    // kube-system or weft's own namespace: never injected
	SkipNotEnabled  Skip = "not-enabled"  // the namespace lacks the label weft.dev/inject=enabled
	SkipPodLabel    Skip = "pod-label"    // the pod's label weft.dev/inject=disabled
	SkipAnnotation  Skip = "annotation"   // the pod's annotation weft.dev/inject: disabled
	SkipHostNetwork Skip = "host-network" // capture rules would apply to the node
	SkipInjected    Skip = "injected"     // the pod already has a weft-proxy container
)

// SkipRule says which rule, if any, leaves pod without a sidecar when it
// is created in a namespace labelled nsLabels, with weft installed in
// weftNamespace: what the webhook's selectors and the handler decide
// together. weftctl explains a pod with it.
func SkipRule(weftNamespace string, nsLabels map[string]string, pod *corev1.Pod) Skip {
	switch {
	case !serves(weftNamespace, pod.Namespace):
		return SkipNamespace
	case nsLabels[names.InjectLabel] != names.InjectEnabled:
		return SkipNotEnabled
	case pod.Labels[names.InjectLabel] == names.InjectDisabled:
		return SkipPodLabel
	}
	return handlerSkip(weftNamespace, pod.Namespace, pod)
}

// handlerSkip is the handler's part of SkipRule: the rules that hold for a
// pod the API server asks about.
func handlerSkip(weftNamespace, ns string, pod *corev1.Pod) Skip {
	switch {
	case !serves(weftNamespace, ns):
		return SkipNamespace
	case pod.Annotations[AnnotationInject] == InjectDisabled:
		return SkipAnnotation
	case pod.Spec.HostNetwork:
		return SkipHostNetwork
	case hasContainer(pod, ProxyName):
		return SkipInjected
	}
	return SkipNone
}

// skipReason says why a pod is left alone, or "" to inject it.
func (i *Injector) skipReason(ns string, pod *corev1.Pod) string {
	switch handlerSkip(i.cfg.Namespace, ns, pod) {
	case SkipNamespace:
		return fmt.Sprintf("namespace %s is never injected", ns)
	case SkipAnnotation:
		return fmt.Sprintf("annotation %s: %s", AnnotationInject, InjectDisabled)
	case SkipHostNetwork:
		return "the pod uses hostNetwork: capture rules would apply to the node"
	case SkipInjected:
		return fmt.Sprintf("already injected: the pod has a %s container", ProxyName)
	}
	return ""
}

func (i *Injector) malformed(msg string) (*admissionv1.AdmissionResponse, Outcome) {
	i.log.Warn("malformed request", "reason", msg)
	return deny("", http.StatusBadRequest, metav1.StatusReasonBadRequest, msg), Outcome{Action: Malformed, Reason: msg}
}

func deny(uid types.UID, code int32, reason metav1.StatusReason, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{UID: uid, Allowed: false,
		Result: &metav1.Status{Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg}}
}

// MeshSettings are the MeshConfig's settings the injector follows.
type MeshSettings struct {
	Outbound      string // spec.outboundTrafficPolicy.mode: ALLOW_ANY or REGISTRY_ONLY ("": ALLOW_ANY)
	CaptureBypass string // spec.captureBypass: Warn or Refuse ("": Warn)
	// spec.proxyTimeouts.handshake, .idle, .write: Go durations, the
	// defaults of weft.dev/proxy-handshake-timeout and its kin ("":
	// weft-sidecar's own, 10s, 1h, 5m). Pods admitted later get them.
	HandshakeTimeout, IdleTimeout, WriteTimeout string
}

func (i *Injector) mesh() MeshSettings {
	if i.cfg.Mesh == nil {
		return MeshSettings{}
	}
	return i.cfg.Mesh()
}

// outboundUDP is the default of weft.dev/outbound-udp for a pod admitted
// now.
func (i *Injector) outboundUDP() string {
	if i.cfg.OutboundUDP != OutboundUDPMesh {
		return i.cfg.OutboundUDP
	}
	if i.mesh().Outbound == string(v1alpha1.OutboundRegistryOnly) {
		return OutboundUDPDrop
	}
	return OutboundUDPAllow
}

// bypassVerdict applies the MeshConfig's captureBypass to bs: a refusal
// under Refuse, else the warnings to admit the pod with.
func (i *Injector) bypassVerdict(bs []Bypass) ([]string, error) {
	if len(bs) == 0 {
		return nil, nil
	}
	var ws []string
	for _, b := range bs {
		ws = append(ws, "weft: "+b.String()+": it could escape the mesh's traffic capture (mTLS, egress policy, audit)")
	}
	if i.mesh().CaptureBypass == "Refuse" {
		return nil, refusal("injector: " + strings.Join(ws, "; ") + " (MeshConfig captureBypass: Refuse; Warn admits such pods with a warning)")
	}
	return ws, nil
}

func hasContainer(pod *corev1.Pod, name string) bool {
	is := func(c corev1.Container) bool { return c.Name == name }
	return slices.ContainsFunc(pod.Spec.Containers, is) || slices.ContainsFunc(pod.Spec.InitContainers, is)
}

// podName names a pod for logs: at creation, a controller's pod often has
// only a generateName.
func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "*"
}
