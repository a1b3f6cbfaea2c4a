package registry

import (
	"context"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
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
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

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
	// routeLister finds the lister of a Gateway API resource (gateway.go);
	// nil: none is watched.
	routeLister func(schema.GroupVersionResource) cache.GenericLister

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
	lister := w.listers[k.gvr]
	if lister == nil && w.routeLister != nil {
		lister = w.routeLister(k.gvr)
	}
	if lister == nil {
		return nil // not watched (any more)
	}
	var obj runtime.Object
	var err error
	if k.namespace == "" {
		obj, err = lister.Get(k.name)
	} else {
		obj, err = lister.ByNamespace(k.namespace).Get(k.name)
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
	if v.routeParents != nil {
		return routeStatusCurrent(u, v)
	}
	st := readStatus(u)
	have := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionAccepted)
	want := condition(v)
	return st.ObservedGeneration == v.generation && have != nil && have.Status == want.Status &&
		have.Reason == want.Reason && have.Message == want.Message && have.ObservedGeneration == want.ObservedGeneration
}

func setStatus(u *unstructured.Unstructured, v verdict, now metav1.Time) error {
	if v.routeParents != nil {
		return setRouteStatus(u, v, now)
	}
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

// A Gateway API route's status is a list of parents that every controller
// of one of its parents shares: weft writes the entries of its
// controllerName only, one per parentRef of its own, and leaves the
// others' as they are.

func readRouteStatus(u *unstructured.Unstructured) gwv1.RouteStatus {
	var st gwv1.RouteStatus
	if m, ok, _ := unstructured.NestedMap(u.Object, "status"); ok {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(m, &st)
	}
	return st
}

func ours(p gwv1.RouteParentStatus) bool { return string(p.ControllerName) == meshControllerName }

// routeStatusCurrent reports whether u's status holds exactly v's entries
// (conditions compared without their transition times).
func routeStatusCurrent(u *unstructured.Unstructured, v verdict) bool {
	var have []gwv1.RouteParentStatus
	for _, p := range readRouteStatus(u).Parents {
		if ours(p) {
			have = append(have, p)
		}
	}
	if len(have) != len(v.routeParents) {
		return false
	}
	for i, want := range v.routeParents {
		h := have[i]
		if !equality.Semantic.DeepEqual(h.ParentRef, want.ParentRef) || len(h.Conditions) != len(want.Conditions) {
			return false
		}
		for j, c := range want.Conditions {
			hc := h.Conditions[j]
			if hc.Type != c.Type || hc.Status != c.Status || hc.Reason != c.Reason || hc.Message != c.Message || hc.ObservedGeneration != c.ObservedGeneration {
				return false
			}
		}
	}
	return true
}

// setRouteStatus replaces weft's entries in u's status.parents with v's,
// keeping a condition's transition time while its status holds.
func setRouteStatus(u *unstructured.Unstructured, v verdict, now metav1.Time) error {
	st := readRouteStatus(u)
	var mine []gwv1.RouteParentStatus
	others := st.Parents[:0:0]
	for _, p := range st.Parents {
		if ours(p) {
			mine = append(mine, p)
		} else {
			others = append(others, p)
		}
	}
	st.Parents = others
	for _, want := range v.routeParents {
		var old []metav1.Condition
		for _, p := range mine {
			if equality.Semantic.DeepEqual(p.ParentRef, want.ParentRef) {
				old = p.Conditions
			}
		}
		entry := gwv1.RouteParentStatus{ParentRef: want.ParentRef, ControllerName: want.ControllerName}
		for _, c := range want.Conditions {
			c.LastTransitionTime = now
			if o := meta.FindStatusCondition(old, c.Type); o != nil && o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
			}
			entry.Conditions = append(entry.Conditions, c)
		}
		st.Parents = append(st.Parents, entry)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return err
	}
	return unstructured.SetNestedMap(u.Object, m, "status")
}
