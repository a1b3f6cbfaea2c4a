package injector

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/api/names"
)

// EventReason is the reason of the Event recorded for a skipped pod.
const EventReason = names.EventReasonSkipped

// EventReasonCaptureBypass is the reason of the Warning Event recorded for
// a pod admitted with containers that could escape capture
// (MeshConfig captureBypass: Warn).
const EventReasonCaptureBypass = "CaptureBypass"

// KubeEvents records a Kubernetes Event for every pod the injector skips,
// so `kubectl describe` of the pod's owner says why it runs without a
// sidecar. At admission a controller's pod has no name yet, so the Event is
// about its controller (a ReplicaSet, a Job) when it has one. Events are
// sent by [KubeEvents.Run], off the admission path: Observe never blocks,
// and drops Events when the queue is full. Dry-run requests record none
// (the webhook declares sideEffects NoneOnDryRun).
type KubeEvents struct {
	client kubernetes.Interface
	log    *slog.Logger
	host   string
	queue  chan Outcome
}

var _ Observer = (*KubeEvents)(nil)

// NewKubeEvents returns a recorder; instance names this replica in the
// Events (its pod name).
func NewKubeEvents(client kubernetes.Interface, instance string, logger *slog.Logger) *KubeEvents {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &KubeEvents{client: client, log: logger, host: instance, queue: make(chan Outcome, 256)}
}

// Observe queues an Event if o is a skipped pod or one admitted with
// warnings, in a namespace weft serves.
func (e *KubeEvents) Observe(o Outcome) {
	if o.Action != Skipped && len(o.Warnings) == 0 || o.Pod == nil || o.Namespace == "" || o.DryRun || o.Unserved {
		return
	}
	select {
	case e.queue <- o:
	default:
		e.log.Debug("event queue full; dropping event", "namespace", o.Namespace, "pod", podName(o.Pod))
	}
}

// Run sends queued Events until ctx ends.
func (e *KubeEvents) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-e.queue:
			ev := e.event(o, time.Now())
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := e.client.CoreV1().Events(o.Namespace).Create(cctx, ev, metav1.CreateOptions{}); err != nil && ctx.Err() == nil {
				e.log.Warn("cannot record event", "namespace", o.Namespace, "object", ev.InvolvedObject.Name, "err", err.Error())
			}
			cancel()
		}
	}
}

func (e *KubeEvents) event(o Outcome, now time.Time) *corev1.Event {
	ref := corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: o.Namespace, Name: o.Pod.Name}
	if owner := metav1.GetControllerOf(o.Pod); owner != nil && o.Pod.Name == "" {
		ref = corev1.ObjectReference{Kind: owner.Kind, APIVersion: owner.APIVersion, Namespace: o.Namespace, Name: owner.Name, UID: owner.UID}
	}
	if ref.Name == "" {
		ref.Name = o.Pod.GenerateName
	}
	t := metav1.NewTime(now)
	reason, typ, msg := EventReason, corev1.EventTypeNormal, fmt.Sprintf("weft: pod %s not injected: %s", podName(o.Pod), o.Reason)
	if len(o.Warnings) > 0 {
		reason, typ = EventReasonCaptureBypass, corev1.EventTypeWarning
		msg = fmt.Sprintf("weft: pod %s admitted with containers that could escape capture: %s", podName(o.Pod), strings.Join(o.Warnings, "; "))
	}
	return &corev1.Event{
		// Named as client-go's recorder names Events: object and time.
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", strings.TrimSuffix(ref.Name, "-"), now.UnixNano()), Namespace: o.Namespace},
		InvolvedObject:      ref,
		Reason:              reason,
		Message:             msg,
		Type:                typ,
		Source:              corev1.EventSource{Component: "weft-injector"},
		ReportingController: "weft.dev/injector",
		ReportingInstance:   e.host,
		FirstTimestamp:      t,
		LastTimestamp:       t,
		Count:               1,
	}
}
