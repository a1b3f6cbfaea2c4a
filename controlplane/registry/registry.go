package registry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	apinames "github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
)

// Config configures a Registry.
type Config struct {
	Client kubernetes.Interface // required: core and discovery objects, Events
	Weft   dynamic.Interface    // required: weft.dev objects and their status
	// TrustDomain is the control plane's (its -trust-domain flag);
	// "cluster.local" when empty.
	TrustDomain string
	// Resync is the informers' resync period; 10 minutes when zero.
	Resync time.Duration
	Logger *slog.Logger
	Clock  clock.PassiveClock
	// Recorder records Events about rejected objects; nil records them
	// through Client as "weft-controlplane".
	Recorder record.EventRecorder
	// GatewayAPI: watch the Gateway API's HTTPRoutes, GRPCRoutes and
	// ReferenceGrants (through Weft) where the cluster serves them, and
	// put the routes attached to Services into the model (GAMMA,
	// docs/gamma.md; gateway.go). The control plane sets it with HTTP
	// routing, without which routes could not be served.
	GatewayAPI bool
	// GatewayAPIRecheck is how often discovery is asked whether the
	// Gateway API's resources are served, until all are; 30s when zero.
	GatewayAPIRecheck time.Duration
	// Discovery tells which resources the cluster serves; nil:
	// Client.Discovery().
	Discovery discovery.DiscoveryInterface
	// RouteBytes, NamespaceRouteBytes and MeshRouteBytes bound what a
	// route, all the routes of a namespace and all the routes of the mesh
	// may add to the clients' route configuration (budget.go); the
	// Default… values when zero.
	RouteBytes, NamespaceRouteBytes, MeshRouteBytes int
}

// Registry watches the cluster and publishes Snapshots.
type Registry struct {
	cfg     Config
	td      spiffeid.TrustDomain
	log     *slog.Logger
	kube    informers.SharedInformerFactory
	weft    dynamicinformer.DynamicSharedInformerFactory
	synced  []cache.InformerSynced
	listers listers
	status  *statusWriter
	gw      *gatewayWatch // nil unless Config.GatewayAPI

	current  atomic.Pointer[mesh.Snapshot]
	changed  chan struct{} // cap 1: "something changed, rebuild"
	ready    chan struct{} // closed once the first snapshot is published
	stopped  chan struct{} // closed when Run returns: the informers no longer watch
	running  atomic.Bool
	rebuilds atomic.Int64 // rebuilds done, published or not (tests wait on it)

	mu   sync.Mutex
	subs []chan struct{}
}

type listers struct {
	services        corelisters.ServiceLister
	slices          discoverylisters.EndpointSliceLister
	pods            corelisters.PodLister
	namespaces      corelisters.NamespaceLister
	serviceAccounts corelisters.ServiceAccountLister
	weft            map[schema.GroupVersionResource]cache.GenericLister
}

// weftResources are the weft.dev resources the registry watches.
var weftResources = []schema.GroupVersionResource{
	v1alpha1.MeshConfigResource, v1alpha1.MTLSPolicyResource,
	v1alpha1.AuthorizationPolicyResource, v1alpha1.EgressPolicyResource,
}

// New sets up the informers; Run starts them.
func New(cfg Config) (*Registry, error) {
	if cfg.Client == nil || cfg.Weft == nil {
		return nil, errors.New("registry: Config.Client and Config.Weft are required")
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = apinames.DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("registry: trust domain %q: %w", cfg.TrustDomain, err)
	}
	if cfg.Resync == 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	r := &Registry{
		cfg: cfg, td: td, log: cfg.Logger,
		kube:    informers.NewSharedInformerFactory(cfg.Client, cfg.Resync),
		weft:    dynamicinformer.NewDynamicSharedInformerFactory(cfg.Weft, cfg.Resync),
		changed: make(chan struct{}, 1),
		ready:   make(chan struct{}),
		stopped: make(chan struct{}),
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.trigger() },
		UpdateFunc: func(any, any) { r.trigger() },
		DeleteFunc: func(any) { r.trigger() },
	}
	watch := func(inf cache.SharedIndexInformer) error {
		if err := inf.SetTransform(stripManagedFields); err != nil {
			return err
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
		r.synced = append(r.synced, inf.HasSynced)
		return nil
	}
	core, disc := r.kube.Core().V1(), r.kube.Discovery().V1()
	r.listers = listers{
		services: core.Services().Lister(), slices: disc.EndpointSlices().Lister(), pods: core.Pods().Lister(),
		namespaces: core.Namespaces().Lister(), serviceAccounts: core.ServiceAccounts().Lister(),
		weft: map[schema.GroupVersionResource]cache.GenericLister{},
	}
	infs := []cache.SharedIndexInformer{core.Services().Informer(), disc.EndpointSlices().Informer(),
		core.Pods().Informer(), core.Namespaces().Informer(), core.ServiceAccounts().Informer()}
	for _, gvr := range weftResources {
		gi := r.weft.ForResource(gvr)
		r.listers.weft[gvr] = gi.Lister()
		infs = append(infs, gi.Informer())
	}
	for _, inf := range infs {
		if err := watch(inf); err != nil {
			return nil, fmt.Errorf("registry: informer: %w", err)
		}
	}
	if cfg.GatewayAPI {
		clk, ok := cfg.Clock.(clock.WithTicker)
		if !ok {
			clk = clock.RealClock{}
		}
		disc := cfg.Discovery
		if disc == nil {
			disc = cfg.Client.Discovery()
		}
		r.gw = newGatewayWatch(disc, cfg.Weft, cfg.Resync, cmp.Or(cfg.GatewayAPIRecheck, 30*time.Second), clk, r.trigger, r.log)
	}
	return r, nil
}

// stripManagedFields keeps the caches small: the model never reads them.
func stripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func (r *Registry) trigger() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Current returns the latest snapshot; nil until the informers have synced
// and the first snapshot is built (see Ready).
func (r *Registry) Current() *mesh.Snapshot { return r.current.Load() }

// Pod is the pod as the registry's informer last saw it (managed fields
// stripped), or false when it holds no such pod, has not synced yet, or
// Run has returned (its informers no longer watch: what they hold may be
// any age). The pod is shared: it must not be modified.
func (r *Registry) Pod(namespace, name string) (*corev1.Pod, bool) {
	select {
	case <-r.stopped:
		return nil, false
	default:
	}
	select {
	case <-r.ready:
	default:
		return nil, false
	}
	p, err := r.listers.pods.Pods(namespace).Get(name)
	if err != nil {
		return nil, false
	}
	return p, true
}

// Ready is closed once Current returns a snapshot.
func (r *Registry) Ready() <-chan struct{} { return r.ready }

// Subscribe returns a channel that receives a value after each newly
// published snapshot. Notifications coalesce: a slow reader finds one
// pending value however many snapshots were published, and reads Current.
// It is meant for long-lived consumers (the xDS server, which debounces).
func (r *Registry) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.subs = append(r.subs, ch)
	r.mu.Unlock()
	if r.Current() != nil {
		ch <- struct{}{}
	}
	return ch
}

// Run starts the informers, publishes snapshots until ctx ends, and then
// stops everything it started. It returns ctx's error, or an error if
// called twice.
func (r *Registry) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("registry: Run called twice")
	}
	defer close(r.stopped)
	recorder := r.cfg.Recorder
	if recorder == nil {
		b := record.NewBroadcaster(record.WithContext(ctx))
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: r.cfg.Client.CoreV1().Events("")})
		defer b.Shutdown()
		scheme := runtime.NewScheme()
		_ = v1alpha1.AddToScheme(scheme)
		recorder = b.NewRecorder(scheme, corev1.EventSource{Component: "weft-controlplane"})
	}
	r.status = newStatusWriter(r.cfg.Weft, r.listers.weft, recorder, r.cfg.Clock, r.log)
	r.status.routeLister = r.gw.lister

	r.kube.Start(ctx.Done())
	r.weft.Start(ctx.Done())
	defer r.weft.Shutdown()
	defer r.kube.Shutdown()
	r.log.Info("waiting for informers to sync")
	if !cache.WaitForCacheSync(ctx.Done(), r.synced...) {
		return ctx.Err()
	}

	var wg sync.WaitGroup
	wg.Go(func() { r.status.run(ctx) })
	if r.gw != nil {
		wg.Go(func() { r.gw.run(ctx) })
	}
	defer wg.Wait()

	r.rebuild()
	close(r.ready)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.changed:
			r.rebuild()
		}
	}
}

// rebuild builds a snapshot from the caches and publishes it if its content
// differs from the current one.
func (r *Registry) rebuild() {
	defer r.rebuilds.Add(1)
	start := r.cfg.Clock.Now()
	st, err := r.state()
	if err != nil {
		r.log.Error("reading the informer caches", "err", err)
		return
	}
	contents, verdicts := build(st)
	prev := r.current.Load()
	next := prev.Next(*contents)
	if next == prev {
		r.status.reconcile(verdicts)
		return
	}
	r.current.Store(next)
	r.log.Debug("published snapshot", "version", next.Version, "services", len(next.Services),
		"workloads", len(next.Workloads), "rejected", len(next.Rejected), "took", r.cfg.Clock.Since(start))
	r.notify()
	r.status.reconcile(verdicts)
}

func (r *Registry) notify() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (r *Registry) state() (*state, error) {
	st := &state{td: r.td, routeBudget: routeBudget{r.cfg.RouteBytes, r.cfg.NamespaceRouteBytes, r.cfg.MeshRouteBytes}}
	var errs []error
	collect := func(err error) { errs = append(errs, err) }
	var err error
	st.services, err = r.listers.services.List(labels.Everything())
	collect(err)
	st.slices, err = r.listers.slices.List(labels.Everything())
	collect(err)
	st.pods, err = r.listers.pods.List(labels.Everything())
	collect(err)
	st.namespaces, err = r.listers.namespaces.List(labels.Everything())
	collect(err)
	st.serviceAccounts, err = r.listers.serviceAccounts.List(labels.Everything())
	collect(err)
	for gvr, into := range map[schema.GroupVersionResource]*[]*unstructured.Unstructured{
		v1alpha1.MeshConfigResource: &st.meshConfigs, v1alpha1.MTLSPolicyResource: &st.mtlsPolicies,
		v1alpha1.AuthorizationPolicyResource: &st.authzPolicies, v1alpha1.EgressPolicyResource: &st.egressPolicies,
	} {
		objs, err := r.listers.weft[gvr].List(labels.Everything())
		collect(err)
		for _, o := range objs {
			if u, ok := o.(*unstructured.Unstructured); ok {
				*into = append(*into, u)
			}
		}
	}
	if r.gw != nil {
		st.httpRoutes, err = r.gw.list(httpRouteResource)
		collect(err)
		st.grpcRoutes, err = r.gw.list(grpcRouteResource)
		collect(err)
		st.referenceGrants, err = r.gw.list(referenceGrantResources[0])
		collect(err)
	}
	return st, errors.Join(errs...)
}
