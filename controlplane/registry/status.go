package registry

import (
	"context"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/api/v1alpha1"
)

// fieldManager names the control plane in status updates.
const fieldManager = "weft-controlplane"

// objectKey names one weft object.
type objectKey struct {
	gvr             schema.GroupVersionResource
	namespace, name string
}

// statusWriter keeps each weft object's Accepted condition in line with the
// latest verdict, through a rate-limited queue so conflicts and API errors
// are retried without blocking rebuilds, and records a Warning Event when an
// object is (newly, or differently) rejected.
type statusWriter struct {
	client   dynamic.Interface
	listers  map[schema.GroupVersionResource]cache.GenericLister
	recorder record.EventRecorder
	clock    clock.PassiveClock
	log      *slog.Logger
	queue    workqueue.TypedRateLimitingInterface[objectKey]

	mu      sync.Mutex
	desired map[objectKey]verdict
	warned  map[objectKey]verdict // the rejection last reported by an Event
}

func newStatusWriter(client dynamic.Interface, listers map[schema.GroupVersionResource]cache.GenericLister,
	recorder record.EventRecorder, clk clock.PassiveClock, log *slog.Logger) *statusWriter {
	return &statusWriter{
		client: client, listers: listers, recorder: recorder, clock: clk, log: log,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[objectKey](),
			workqueue.TypedRateLimitingQueueConfig[objectKey]{Name: "weft-registry-status"}),
		desired: map[objectKey]verdict{},
		warned:  map[objectKey]verdict{},
	}
}

// reconcile takes the verdicts of a rebuild: every weft object that exists.
func (w *statusWriter) reconcile(verdicts []verdict) {
	w.mu.Lock()
	defer w.mu.Unlock()
	live := make(map[objectKey]bool, len(verdicts))
	for _, v := range verdicts {
		k := objectKey{v.gvr, v.obj.GetNamespace(), v.obj.GetName()}
		live[k] = true
		w.desired[k] = v
		if !v.accepted {
			if last, ok := w.warned[k]; !ok || last.generation != v.generation || last.reason != v.reason || last.message != v.message {
				w.recorder.Event(v.obj, corev1.EventTypeWarning, v.reason, v.message)
				w.log.Warn("resource rejected", "kind", v.kind, "namespace", v.obj.GetNamespace(), "name", v.obj.GetName(),
					"reason", v.reason, "message", v.message)
				w.warned[k] = v
			}
		} else {
			delete(w.warned, k)
		}
		if !statusCurrent(v.obj, v) {
			w.queue.Add(k)
		}
	}
	for k := range w.desired {
		if !live[k] {
			delete(w.desired, k)
			delete(w.warned, k)
		}
	}
}

func (w *statusWriter) run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		w.queue.ShutDown()
	}()
	for {
		k, quit := w.queue.Get()
		if quit {
			return
		}
		if err := w.write(ctx, k); err != nil {
			if ctx.Err() == nil {
				w.log.Info("writing status, will retry", "resource", k.gvr.Resource, "namespace", k.namespace, "name", k.name, "err", err)
			}
			w.queue.AddRateLimited(k)
		} else {
			w.queue.Forget(k)
		}
		w.queue.Done(k)
	}
}

// write brings one object's status in line with its verdict, starting from
// the cache's latest copy of the object.
func (w *statusWriter) write(ctx context.Context, k objectKey) error {
	w.mu.Lock()
	v, ok := w.desired[k]
	w.mu.Unlock()
	if !ok {
		return nil // deleted since
	}
	var obj runtime.Object
	var err error
	if k.namespace == "" {
		obj, err = w.listers[k.gvr].Get(k.name)
	} else {
		obj, err = w.listers[k.gvr].ByNamespace(k.namespace).Get(k.name)
	}
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u.GetGeneration() != v.generation || statusCurrent(u, v) {
		return nil // a newer verdict follows, or nothing to do
	}
	u = u.DeepCopy()
	if err := setStatus(u, v, metav1.NewTime(w.clock.Now())); err != nil {
		return err
	}
	ri := w.client.Resource(k.gvr).Namespace(k.namespace)
	_, err = ri.UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: fieldManager})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func condition(v verdict) metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue,
		Reason: v.reason, Message: v.message, ObservedGeneration: v.generation}
	if !v.accepted {
		c.Status = metav1.ConditionFalse
	}
	return c
}

func readStatus(u *unstructured.Unstructured) v1alpha1.Status {
	var st v1alpha1.Status
	if m, ok, _ := unstructured.NestedMap(u.Object, "status"); ok {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(m, &st)
	}
	return st
}

// statusCurrent reports whether u's status already says v.
func statusCurrent(u *unstructured.Unstructured, v verdict) bool {
	st := readStatus(u)
	have := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionAccepted)
	want := condition(v)
	return st.ObservedGeneration == v.generation && have != nil && have.Status == want.Status &&
		have.Reason == want.Reason && have.Message == want.Message && have.ObservedGeneration == want.ObservedGeneration
}

func setStatus(u *unstructured.Unstructured, v verdict, now metav1.Time) error {
	st := readStatus(u)
	st.ObservedGeneration = v.generation
	c := condition(v)
	c.LastTransitionTime = now
	meta.SetStatusCondition(&st.Conditions, c)
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return err
	}
	return unstructured.SetNestedMap(u.Object, m, "status")
}
