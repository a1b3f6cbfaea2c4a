package weftctl

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/injector"
)

// explanation is `weftctl explain-injection -o json|yaml`.
type explanation struct {
	Pod       string   `json:"pod"`
	Namespace string   `json:"namespace"`
	Injected  bool     `json:"injected"`
	Reasons   []string `json:"reasons"`
	// Timing holds what the creation times say (a pod that predates the
	// namespace label, the webhook, or the injector's readiness).
	Timing []string `json:"timing,omitempty"`
	Events []string `json:"events,omitempty"`
}

func newExplainInjection(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "explain-injection POD",
		Short: "Say why a pod was or was not given a weft sidecar",
		Long: `Explains, in plain sentences, why the injector did or did not add weft's
sidecar to a pod: the namespace label weft.dev/inject=enabled, the opt-out
annotation, hostNetwork, namespaces weft never injects, a pod already
injected, the webhook's selectors, and when the pod was created compared to
when its namespace was labelled and the injector became available.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.env(cmd.Context())
			if err != nil {
				return err
			}
			name := strings.TrimPrefix(args[0], "pod/")
			pod, err := e.kube.CoreV1().Pods(e.namespace).Get(cmd.Context(), name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("weftctl explain-injection: pod %s/%s: %w", e.namespace, name, err)
			}
			x := explain(cmd.Context(), e, pod)
			if ok, err := printStructured(g.out, g.output, x); ok || err != nil {
				return err
			}
			verb := "WAS injected"
			if !x.Injected {
				verb = "was NOT injected"
			}
			fmt.Fprintf(g.out, "Pod %s/%s %s.\n", x.Namespace, x.Pod, verb)
			for _, r := range x.Reasons {
				fmt.Fprintf(g.out, "  - %s\n", r)
			}
			if len(x.Timing) > 0 {
				fmt.Fprintln(g.out, "Timing:")
				for _, r := range x.Timing {
					fmt.Fprintf(g.out, "  - %s\n", r)
				}
			}
			if len(x.Events) > 0 {
				fmt.Fprintln(g.out, "The injector recorded:")
				for _, r := range x.Events {
					fmt.Fprintf(g.out, "  - %s\n", r)
				}
			}
			return nil
		},
	}
}

// explain gathers why pod was or was not injected.
func explain(ctx context.Context, e *env, pod *corev1.Pod) explanation {
	x := explanation{Pod: pod.Name, Namespace: pod.Namespace, Injected: hasSidecar(pod)}
	say := func(format string, args ...any) { x.Reasons = append(x.Reasons, fmt.Sprintf(format, args...)) }
	created := pod.CreationTimestamp.Time

	if x.Injected {
		var inj injector.Injection
		if raw, ok := pod.Annotations[names.AnnotationInjected]; ok && json.Unmarshal([]byte(raw), &inj) == nil {
			kind := "a regular container"
			if inj.Native {
				kind = "a native sidecar (init container with restartPolicy Always)"
			}
			say("The injector added %s (weft %s, image %s) as %s when the pod was created at %s.",
				strings.Join(inj.Containers, " and "), inj.Version, inj.Image, kind, stamp(created))
			if inj.ProbesRewritten > 0 {
				say("It rewrote %d probe(s) to go through the sidecar's port 15020.", inj.ProbesRewritten)
			}
		} else {
			say("The pod has a %s container but no %s annotation: the sidecar was added by hand or by something other than weft's injector.",
				names.ProxyContainer, names.AnnotationInjected)
		}
		return x
	}

	ns, err := e.kube.CoreV1().Namespaces().Get(ctx, pod.Namespace, metav1.GetOptions{})
	if err != nil {
		say("Could not read namespace %s: %v.", pod.Namespace, err)
		return x
	}
	wh, whErr := e.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, names.WebhookConfiguration, metav1.GetOptions{})

	switch injector.SkipRule(e.weftNS, ns.Labels, pod) {
	case injector.SkipNamespace:
		say("Namespace %s is never injected: weft leaves kube-system and its own namespace alone so that they can always start.", pod.Namespace)
	case injector.SkipNotEnabled:
		say("Namespace %s does not have the label %s=enabled, so the API server never asks the injector about its pods (kubectl label namespace %s %s=enabled, then recreate the pod).",
			pod.Namespace, names.InjectLabel, pod.Namespace, names.InjectLabel)
	case injector.SkipPodLabel:
		say("The pod has the label %s=disabled: the webhook's objectSelector excludes it, so the injector is never called for it.", names.InjectLabel)
	case injector.SkipAnnotation:
		say("The pod opted out with the annotation %s: %s.", names.InjectLabel, names.InjectDisabled)
	case injector.SkipHostNetwork:
		say("The pod uses hostNetwork: its capture rules would apply to the whole node, so the injector skips it.")
	default:
		say("Namespace %s has %s=enabled and nothing on the pod opts out, so it should have been injected.", pod.Namespace, names.InjectLabel)
	}

	if apierrors.IsNotFound(whErr) {
		say("The webhook %s does not exist: weft is not installed (weftctl install), so no pod is injected.", names.WebhookConfiguration)
	} else if whErr != nil {
		say("Could not read the webhook %s: %v.", names.WebhookConfiguration, whErr)
	} else {
		x.Reasons = append(x.Reasons, webhookSelectors(wh, ns, pod)...)
		if !created.After(wh.CreationTimestamp.Time) {
			x.Timing = append(x.Timing, fmt.Sprintf("The pod was created at %s, before weft's webhook existed (%s): it predates weft's installation; recreate it to inject it.",
				stamp(created), stamp(wh.CreationTimestamp.Time)))
		}
		for _, w := range wh.Webhooks {
			if w.Name == names.WebhookName && w.FailurePolicy != nil && *w.FailurePolicy == admissionregistrationv1.Ignore {
				say("The webhook's failurePolicy is Ignore: while the injector is down, pods are admitted without a sidecar.")
			}
		}
	}
	// Kubernetes timestamps have one-second resolution: a pod created in the
	// second its namespace was labelled counts as predating the label (had
	// it come later, the webhook would have injected it).
	if t, ok := labelledAt(ns); ok && !created.After(t) && ns.Labels[names.InjectLabel] == names.InjectEnabled {
		x.Timing = append(x.Timing, fmt.Sprintf("The pod was created at %s; namespace %s was last labelled at %s: if %s=enabled was added then, the pod predates injection. Recreate it (kubectl -n %s delete pod %s, or rollout restart its owner).",
			stamp(created), pod.Namespace, stamp(t), names.InjectLabel, pod.Namespace, pod.Name))
	}
	if since, ok := injectorReadySince(ctx, e); ok && !created.After(since) {
		x.Timing = append(x.Timing, fmt.Sprintf("The pod was created at %s; the injector running now has been ready only since %s: the pod may have been created while no injector answered.",
			stamp(created), stamp(since)))
	} else if !ok {
		x.Timing = append(x.Timing, "No injector pod is ready right now: pods created meanwhile are refused (failurePolicy Fail) or admitted unmeshed (Ignore).")
	}
	x.Events = skippedEvents(ctx, e, pod)
	return x
}

// webhookSelectors says whether the webhook's selectors pick the pod.
func webhookSelectors(wh *admissionregistrationv1.MutatingWebhookConfiguration, ns *corev1.Namespace, pod *corev1.Pod) []string {
	var out []string
	for _, w := range wh.Webhooks {
		if w.Name != names.WebhookName {
			continue
		}
		if w.NamespaceSelector != nil {
			if sel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector); err == nil && !sel.Matches(labels.Set(ns.Labels)) {
				out = append(out, fmt.Sprintf("The webhook's namespaceSelector (%s) does not match namespace %s's labels.", sel, ns.Name))
			}
		}
		if w.ObjectSelector != nil {
			if sel, err := metav1.LabelSelectorAsSelector(w.ObjectSelector); err == nil && !sel.Matches(labels.Set(pod.Labels)) {
				out = append(out, fmt.Sprintf("The webhook's objectSelector (%s) does not match the pod's labels.", sel))
			}
		}
		return out
	}
	return append(out, fmt.Sprintf("The webhook configuration %s has no webhook named %s.", wh.Name, names.WebhookName))
}

// labelledAt is when the namespace's weft.dev/inject label was last
// written, from its managed fields.
func labelledAt(ns *corev1.Namespace) (time.Time, bool) {
	var last time.Time
	for _, mf := range ns.ManagedFields {
		if mf.FieldsV1 != nil && mf.Time != nil && strings.Contains(string(mf.FieldsV1.Raw), `"f:`+names.InjectLabel+`"`) && mf.Time.After(last) {
			last = mf.Time.Time
		}
	}
	return last, !last.IsZero()
}

// injectorReadySince is the earliest time a currently ready injector pod
// became ready.
func injectorReadySince(ctx context.Context, e *env) (time.Time, bool) {
	pods, err := e.kube.CoreV1().Pods(e.weftNS).List(ctx, metav1.ListOptions{LabelSelector: names.Selector(names.Injector)})
	if err != nil {
		return time.Time{}, false
	}
	var since time.Time
	for _, p := range pods.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && (since.IsZero() || c.LastTransitionTime.Before(&metav1.Time{Time: since})) {
				since = c.LastTransitionTime.Time
			}
		}
	}
	return since, !since.IsZero()
}

// skippedEvents are the injector's InjectionSkipped Events about the pod
// or its owner.
func skippedEvents(ctx context.Context, e *env, pod *corev1.Pod) []string {
	evs, err := e.kube.CoreV1().Events(pod.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	about := map[string]bool{pod.Name: true}
	for _, o := range pod.OwnerReferences {
		about[o.Name] = true
	}
	var out []string
	for _, ev := range evs.Items {
		if ev.Reason == names.EventReasonSkipped && about[ev.InvolvedObject.Name] {
			out = append(out, fmt.Sprintf("%s %s: %s", ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.Message))
		}
	}
	return out
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
