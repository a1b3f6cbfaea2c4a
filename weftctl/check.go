package weftctl

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/deploy"
	"github.com/weftmesh/weft/injector"
)

// Check outcomes.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "FAIL"
)

// checkReport is `weftctl check -o json|yaml`.
type checkReport struct {
	Phase    string        `json:"phase"` // "pre-install" or "post-install"
	Results  []checkResult `json:"results"`
	Problems int           `json:"problems"`
}

type checkResult struct {
	Check   string `json:"check"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func (r *checkReport) add(check, status, format string, args ...any) {
	r.Results = append(r.Results, checkResult{Check: check, Status: status, Message: fmt.Sprintf(format, args...)})
	if status == checkFail {
		r.Problems++
	}
}

// Thresholds below which a CA certificate's remaining life is a warning.
const (
	rootWarn         = 30 * 24 * time.Hour
	intermediateWarn = 7 * 24 * time.Hour
	// intermediateOnlyWarn: an intermediate the cluster cannot renew itself
	// (install --ca-dir) is flagged a month ahead.
	intermediateOnlyWarn = 30 * 24 * time.Hour
)

// minNativeSidecarMinor is the first Kubernetes 1.x with native sidecars
// (init containers with restartPolicy Always) on by default.
const minNativeSidecarMinor = 29

func newCheck(g *globals) *cobra.Command {
	var pre bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that the cluster can run weft (--pre) or that weft is healthy",
		Long: `Before install (--pre): the Kubernetes version (>= 1.29, for native sidecars)
and whether you may create everything 'weftctl install' applies.

After install: the control plane and injector Deployments are available,
the webhook exists with its caBundle and its Service answers, the CA's root
and intermediate are valid (and when they expire), and every pod in an
injected namespace runs a sidecar of the current version; pods that slipped
through without one (created while the injector was down, or before their
namespace was labelled) are listed with what to do.

Where the NetworkPolicies of an injected namespace isolate meshed pods for
egress, check judges (by the networking.k8s.io/v1 rules, on the policies
themselves) whether their sidecars may still reach the control plane on
15012/TCP and the cluster DNS on 53/UDP and 53/TCP, names the policies
and the pods, and says what rule to add (examples/networkpolicy/).

Exits non-zero when a check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.env(cmd.Context())
			if err != nil {
				return err
			}
			var r *checkReport
			if pre {
				r, err = preCheck(cmd.Context(), e)
			} else {
				r = postCheck(cmd.Context(), e)
			}
			if err != nil {
				return err
			}
			ok, err := printStructured(g.out, g.output, r)
			if err != nil {
				return err
			}
			if !ok {
				printCheck(g, r)
			}
			if r.Problems > 0 {
				return errFailed{fmt.Sprintf("check: %d problem(s) found", r.Problems)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&pre, "pre", false, "check whether weft can be installed instead of whether it is healthy")
	return cmd
}

func printCheck(g *globals, r *checkReport) {
	fmt.Fprintf(g.out, "weft %s check\n\n", r.Phase)
	for _, c := range r.Results {
		fmt.Fprintf(g.out, "%-6s %s: %s\n", "["+c.Status+"]", c.Check, c.Message)
	}
	if r.Problems == 0 {
		fmt.Fprintln(g.out, "\nNo problems found.")
	} else {
		fmt.Fprintf(g.out, "\n%d problem(s) found.\n", r.Problems)
	}
}

func preCheck(ctx context.Context, e *env) (*checkReport, error) {
	r := &checkReport{Phase: "pre-install"}
	v, err := e.kube.Discovery().ServerVersion()
	if err != nil {
		r.add("kubernetes", checkFail, "cannot read the server version: %v", err)
	} else {
		minor, _ := strconv.Atoi(strings.TrimRight(v.Minor, "+"))
		switch {
		case v.Major == "1" && minor >= minNativeSidecarMinor:
			r.add("kubernetes", checkOK, "server %s supports native sidecars (>= 1.%d)", v.GitVersion, minNativeSidecarMinor)
		default:
			r.add("kubernetes", checkFail, "server %s is older than 1.%d: weft's sidecar needs native sidecars (init containers with restartPolicy Always)", v.GitVersion, minNativeSidecarMinor)
		}
	}
	needs, err := installNeeds()
	if err != nil {
		return nil, err
	}
	var denied []string
	for _, n := range needs {
		ra := n
		rev, err := e.kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("weftctl check: SelfSubjectAccessReview: %w", err)
		}
		if !rev.Status.Allowed {
			denied = append(denied, describeAccess(n))
		}
	}
	if len(denied) == 0 {
		r.add("permissions", checkOK, "you may create and update everything install applies (%d resource kinds)", len(needs)/2)
	} else {
		r.add("permissions", checkFail, "install needs what you may not do: %s", strings.Join(denied, ", "))
	}
	if _, err := e.kube.CoreV1().Namespaces().Get(ctx, e.weftNS, metav1.GetOptions{}); err == nil {
		r.add("existing install", checkWarn, "namespace %s already exists: install will update weft in place", e.weftNS)
	} else if !apierrors.IsNotFound(err) {
		r.add("existing install", checkWarn, "cannot tell whether weft is installed: %v", err)
	}
	return r, nil
}

// resources maps the kinds of weft's manifests to their API resources.
var resources = map[string]struct {
	group, resource string
	namespaced      bool
}{
	"Namespace":                    {"", "namespaces", false},
	"CustomResourceDefinition":     {"apiextensions.k8s.io", "customresourcedefinitions", false},
	"ServiceAccount":               {"", "serviceaccounts", true},
	"Service":                      {"", "services", true},
	"ConfigMap":                    {"", "configmaps", true},
	"Secret":                       {"", "secrets", true},
	"Deployment":                   {"apps", "deployments", true},
	"ClusterRole":                  {"rbac.authorization.k8s.io", "clusterroles", false},
	"ClusterRoleBinding":           {"rbac.authorization.k8s.io", "clusterrolebindings", false},
	"Role":                         {"rbac.authorization.k8s.io", "roles", true},
	"RoleBinding":                  {"rbac.authorization.k8s.io", "rolebindings", true},
	"MutatingWebhookConfiguration": {"admissionregistration.k8s.io", "mutatingwebhookconfigurations", false},
	"MeshConfig":                   {"weft.dev", "meshconfigs", false},
}

// installNeeds are the access reviews for what install applies: create
// and patch (server-side apply) of every kind in the manifests.
func installNeeds() ([]authorizationv1.ResourceAttributes, error) {
	m, err := deploy.Render(deploy.Defaults())
	if err != nil {
		return nil, err
	}
	objs, err := decodeManifests(m)
	if err != nil {
		return nil, err
	}
	var out []authorizationv1.ResourceAttributes
	seen := map[string]bool{}
	for _, o := range objs {
		res, ok := resources[o.GetKind()]
		if !ok || seen[o.GetKind()] {
			continue
		}
		seen[o.GetKind()] = true
		ns := ""
		if res.namespaced {
			ns = o.GetNamespace()
		}
		for _, verb := range []string{"create", "patch"} {
			out = append(out, authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: res.group, Resource: res.resource})
		}
	}
	return out, nil
}

func describeAccess(a authorizationv1.ResourceAttributes) string {
	r := a.Resource
	if a.Group != "" {
		r += "." + a.Group
	}
	if a.Namespace != "" {
		return fmt.Sprintf("%s %s in %s", a.Verb, r, a.Namespace)
	}
	return a.Verb + " " + r
}

func postCheck(ctx context.Context, e *env) *checkReport {
	r := &checkReport{Phase: "post-install"}
	for _, name := range []string{names.ControlPlane, names.Injector} {
		d, err := e.kube.AppsV1().Deployments(e.weftNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			r.add(name, checkFail, "deployment %s/%s: %v (is weft installed? weftctl install)", e.weftNS, name, err)
			continue
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		if want > 0 && d.Status.AvailableReplicas >= want {
			r.add(name, checkOK, "deployment %d/%d available", d.Status.AvailableReplicas, want)
		} else {
			r.add(name, checkFail, "deployment %d/%d available", d.Status.AvailableReplicas, want)
		}
	}
	checkWebhook(ctx, e, r)
	current := checkCA(ctx, e, r)
	checkAuditTrail(ctx, e, r)
	checkPods(ctx, e, r, current)
	checkCaptureBypass(ctx, e, r)
	checkNetworkPolicies(ctx, e, r)
	return r
}

// checkCaptureBypass lists every injected pod with a container (init, app
// or ephemeral) that could escape the traffic capture, and why
// (injector.CaptureBypasses: the rule the injector applies at admission,
// which MeshConfig captureBypass: Warn lets through).
func checkCaptureBypass(ctx context.Context, e *env, r *checkReport) {
	pods, err := e.kube.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		r.add("capture", checkWarn, "cannot list pods: %v", err)
		return
	}
	n := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if !slices.ContainsFunc(slices.Concat(p.Spec.InitContainers, p.Spec.Containers), func(c corev1.Container) bool { return c.Name == injector.ProxyName }) {
			continue
		}
		n++
		for _, b := range injector.CaptureBypasses(p) {
			r.add("capture "+p.Namespace+"/"+p.Name, checkWarn, "%s: it could escape the traffic capture (mTLS, egress policy, audit)", b)
		}
	}
	if n > 0 && !slices.ContainsFunc(r.Results, func(c checkResult) bool { return strings.HasPrefix(c.Check, "capture ") }) {
		r.add("capture", checkOK, "no container of the %d injected pod(s) can escape the traffic capture", n)
	}
}

// auditStoreWarn is how full the audit store may get before check warns:
// past its capacity the oldest events are evicted.
const auditStoreWarn = 0.8

// checkAuditTrail warns when the egress audit trail would be lost with the
// control plane's pod (an emptyDir and no OTLP export), and when a
// replica's store nears its capacity.
func checkAuditTrail(ctx context.Context, e *env, r *checkReport) {
	d, err := e.kube.AppsV1().Deployments(e.weftNS).Get(ctx, names.ControlPlane, metav1.GetOptions{})
	if err == nil {
		exported := false
		for _, c := range d.Spec.Template.Spec.Containers {
			exported = exported || slices.ContainsFunc(c.Args, func(a string) bool {
				return strings.HasPrefix(strings.TrimLeft(a, "-"), "otlp-endpoint=") && !strings.HasSuffix(a, "=")
			})
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			switch {
			case v.Name != "audit":
			case v.EmptyDir != nil && !exported:
				r.add("audit trail", checkWarn, "the egress audit store is on an emptyDir: it is lost with the control plane's pod. "+
					"Keep it on a volume (weftctl install --audit-pvc CLAIM) or export it (weft-controlplane --otlp-endpoint)")
			case v.EmptyDir != nil:
				r.add("audit trail", checkOK, "on an emptyDir, exported over OTLP")
			case v.PersistentVolumeClaim != nil:
				r.add("audit trail", checkOK, "on PersistentVolumeClaim %s", v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
	pods, err := e.kube.CoreV1().Pods(e.weftNS).List(ctx, metav1.ListOptions{LabelSelector: names.Selector(names.ControlPlane)})
	if err != nil {
		return
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		var st audit.StoreResponse
		b, err := e.admin.controlPlaneGet(ctx, p, audit.StorePath, nil)
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		switch {
		case err != nil:
			r.add("audit store "+p.Name, checkWarn, "cannot read /audit/store: %v", err)
		case st.Capacity > 0 && float64(st.Events) >= auditStoreWarn*float64(st.Capacity):
			r.add("audit store "+p.Name, checkWarn, "%d of %d events (%.0f%%): past %d the oldest are evicted (weft_audit_evicted_total). "+
				"Shorten weft-controlplane --audit-retention, raise --audit-max-events with the volume, or export the trail (--otlp-endpoint)", st.Events, st.Capacity, 100*float64(st.Events)/float64(st.Capacity), st.Capacity)
		default:
			r.add("audit store "+p.Name, checkOK, "%d of %d events", st.Events, st.Capacity)
		}
	}
}

func checkWebhook(ctx context.Context, e *env, r *checkReport) {
	wh, err := e.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, names.WebhookConfiguration, metav1.GetOptions{})
	if err != nil {
		r.add("webhook", checkFail, "MutatingWebhookConfiguration %s: %v", names.WebhookConfiguration, err)
		return
	}
	i := slices.IndexFunc(wh.Webhooks, func(w admissionregistrationv1.MutatingWebhook) bool { return w.Name == names.WebhookName })
	if i < 0 {
		r.add("webhook", checkFail, "%s has no webhook %s", names.WebhookConfiguration, names.WebhookName)
		return
	}
	w := wh.Webhooks[i]
	switch {
	case len(w.ClientConfig.CABundle) == 0:
		r.add("webhook", checkFail, "%s has no caBundle yet: the API server cannot call the injector (the injector writes it once it has its certificate)", names.WebhookName)
	case w.FailurePolicy != nil && *w.FailurePolicy == admissionregistrationv1.Ignore:
		r.add("webhook", checkWarn, "%s has its caBundle, but failurePolicy Ignore: pods created while the injector is down run without a sidecar", names.WebhookName)
	default:
		r.add("webhook", checkOK, "%s has its caBundle (%d bytes), failurePolicy Fail", names.WebhookName, len(w.ClientConfig.CABundle))
	}
	svc := w.ClientConfig.Service
	if svc == nil {
		r.add("webhook service", checkWarn, "%s calls a URL, not a Service: not probed", names.WebhookName)
		return
	}
	port := 443
	if svc.Port != nil {
		port = int(*svc.Port)
	}
	if _, err := e.admin.serviceGet(ctx, svc.Namespace, svc.Name, "https", port, "/healthz"); err != nil {
		r.add("webhook service", checkFail, "service %s/%s:%d does not answer /healthz: %v", svc.Namespace, svc.Name, port, err)
	} else {
		r.add("webhook service", checkOK, "service %s/%s:%d answers /healthz over TLS", svc.Namespace, svc.Name, port)
	}
}

// checkCA reads the CA from every control plane replica; it returns the
// control plane's version ("" when none answered).
func checkCA(ctx context.Context, e *env, r *checkReport) string {
	cps, err := controlPlanes(ctx, e)
	if err != nil {
		r.add("CA", checkFail, "%v", err)
		return ""
	}
	now := e.now()
	var st *cpStatus
	for i := range cps {
		if cps[i].err != nil {
			r.add("control plane "+cps[i].replica, checkFail, "/debug/status: %v", cps[i].err)
			continue
		}
		if st == nil {
			st = &cps[i]
		} else if cps[i].Intermediate.Fingerprint != st.Intermediate.Fingerprint {
			r.add("CA", checkFail, "replicas %s and %s sign with different intermediates", st.replica, cps[i].replica)
		}
	}
	if st == nil {
		r.add("CA", checkFail, "no control plane replica answered /debug/status")
		return ""
	}
	grade := func(name string, notAfter time.Time, warn time.Duration) {
		switch left := notAfter.Sub(now); {
		case left <= 0:
			r.add(name, checkFail, "EXPIRED at %s", stamp(notAfter))
		case left < warn:
			r.add(name, checkWarn, "expires %s: rotate soon (certs/ROTATION.md)", until(notAfter, now))
		default:
			r.add(name, checkOK, "valid, expires %s", until(notAfter, now))
		}
	}
	for i, root := range st.Roots {
		grade(fmt.Sprintf("CA root %d (%s)", i+1, short(root.Fingerprint)), root.NotAfter, rootWarn)
	}
	if !st.IntermediateOnly {
		grade("CA intermediate ("+short(st.Intermediate.Fingerprint)+")", st.Intermediate.NotAfter, intermediateWarn)
		return st.Version
	}
	// The cluster holds no root key: nobody renews the intermediate but
	// the operator, so the warning comes a month ahead.
	name := "CA intermediate (" + short(st.Intermediate.Fingerprint) + ", intermediate-only: root key outside the cluster)"
	switch left := st.Intermediate.NotAfter.Sub(now); {
	case left <= 0:
		r.add(name, checkFail, "EXPIRED at %s: sign a new intermediate where the root key lives, then weftctl install --ca-dir DIR", stamp(st.Intermediate.NotAfter))
	case left < intermediateOnlyWarn:
		r.add(name, checkWarn, "expires %s: sign a new intermediate where the root key lives, then weftctl install --ca-dir DIR", until(st.Intermediate.NotAfter, now))
	default:
		r.add(name, checkOK, "valid, expires %s", until(st.Intermediate.NotAfter, now))
	}
	return st.Version
}

// checkPods looks at every pod of every injected namespace.
func checkPods(ctx context.Context, e *env, r *checkReport, current string) {
	nss, err := e.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: names.InjectLabel + "=" + names.InjectEnabled})
	if err != nil {
		r.add("pods", checkFail, "list injected namespaces: %v", err)
		return
	}
	injected := make([]string, 0, len(nss.Items))
	nsLabels := map[string]map[string]string{}
	for _, ns := range nss.Items {
		if ns.Name != "kube-system" && ns.Name != e.weftNS {
			injected = append(injected, ns.Name)
			nsLabels[ns.Name] = ns.Labels
		}
	}
	slices.Sort(injected)
	if len(injected) == 0 {
		r.add("pods", checkOK, "no namespace has %s=enabled yet", names.InjectLabel)
		return
	}
	meshed, optedOutPods := 0, 0
	for _, ns := range injected {
		pods, err := e.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			r.add("pods in "+ns, checkFail, "%v", err)
			continue
		}
		slices.SortFunc(pods.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil {
				continue
			}
			name := "pod " + ns + "/" + p.Name
			switch {
			case hasSidecar(p):
				v := injectedVersion(p)
				if current != "" && v != current {
					r.add(name, checkFail, "runs sidecar version %s, the control plane runs %s: restart it to get the current sidecar", v, current)
				} else {
					meshed++
				}
			case optedOut(e.weftNS, nsLabels[ns], p):
				optedOutPods++
			default:
				r.add(name, checkFail, "slipped through: %s", slippedReason(ctx, e, p))
			}
		}
	}
	r.add("pods", checkOK, "%d pod(s) in %d injected namespace(s) run a current sidecar (%s); %d opted out", meshed, len(injected), strings.Join(injected, ", "), optedOutPods)
}

// optedOut says whether pod, in a namespace labelled nsLabels, asked not to
// be injected (its label or annotation) or cannot be (host network).
func optedOut(weftNS string, nsLabels map[string]string, pod *corev1.Pod) bool {
	return slices.Contains([]injector.Skip{injector.SkipPodLabel, injector.SkipAnnotation, injector.SkipHostNetwork},
		injector.SkipRule(weftNS, nsLabels, pod))
}

// slippedReason says why a pod of an injected namespace that did not opt
// out has no sidecar, and what to do (weftctl check, weftctl dashboard).
func slippedReason(ctx context.Context, e *env, p *corev1.Pod) string {
	if x := explain(ctx, e, p); len(x.Timing) > 0 {
		return "no sidecar. " + x.Timing[0]
	}
	return "no sidecar. Created " + stamp(p.CreationTimestamp.Time) + " while the injector was down or bypassed. Recreate it: kubectl -n " +
		p.Namespace + " delete pod " + p.Name + ", or rollout restart its owner"
}
