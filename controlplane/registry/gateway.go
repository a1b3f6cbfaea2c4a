package registry

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	apinames "github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/controlplane/mesh"
)

// The Gateway API's resources (GAMMA, docs/gamma.md) are watched only
// where the cluster serves them: a cluster without the Gateway API's CRDs
// (most) must see no watch of a resource that does not exist, no error and
// no retry loop. The registry asks discovery at start and then every
// Config.GatewayAPIRecheck until every resource it wants is served, and
// starts an informer for each as it appears (CRDs installed after the
// control plane). Once started an informer stays: CRDs deleted later make
// its reflector log and back off, as client-go's do.

// meshControllerName is the controllerName of weft's entries in a route's
// status.parents.
const meshControllerName = apinames.MeshControllerName

const gatewayGroup = "gateway.networking.k8s.io"

var (
	httpRouteResource = schema.GroupVersionResource{Group: gatewayGroup, Version: "v1", Resource: "httproutes"}
	grpcRouteResource = schema.GroupVersionResource{Group: gatewayGroup, Version: "v1", Resource: "grpcroutes"}
	// ReferenceGrant is v1 since the Gateway API v1.5; v1beta1 (same
	// schema) before.
	referenceGrantResources = []schema.GroupVersionResource{
		{Group: gatewayGroup, Version: "v1", Resource: "referencegrants"},
		{Group: gatewayGroup, Version: "v1beta1", Resource: "referencegrants"},
	}
)

func routeResource(kind string) schema.GroupVersionResource {
	if kind == mesh.KindGRPCRoute {
		return grpcRouteResource
	}
	return httpRouteResource
}

// gatewayWatch holds the Gateway API informers started so far.
type gatewayWatch struct {
	discovery discovery.DiscoveryInterface
	factory   dynamicinformer.DynamicSharedInformerFactory
	handler   cache.ResourceEventHandler
	trigger   func() // a rebuild
	clock     clock.WithTicker
	recheck   time.Duration
	log       *slog.Logger

	mu      sync.Mutex
	listers map[schema.GroupVersionResource]cache.GenericLister
	grants  schema.GroupVersionResource // the version of referencegrants watched; zero: none
}

func newGatewayWatch(disc discovery.DiscoveryInterface, client dynamic.Interface, resync, recheck time.Duration,
	clk clock.WithTicker, trigger func(), log *slog.Logger) *gatewayWatch {
	return &gatewayWatch{
		discovery: disc, factory: dynamicinformer.NewDynamicSharedInformerFactory(client, resync),
		handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { trigger() },
			UpdateFunc: func(any, any) { trigger() },
			DeleteFunc: func(any) { trigger() },
		},
		trigger: trigger, clock: clk, recheck: recheck, log: log,
		listers: map[schema.GroupVersionResource]cache.GenericLister{},
	}
}

// run checks discovery now and every recheck until every resource is
// watched or ctx ends, then waits for ctx and stops the informers.
func (g *gatewayWatch) run(ctx context.Context) {
	defer g.factory.Shutdown()
	for !g.check(ctx) {
		select {
		case <-ctx.Done():
			return
		case <-g.clock.After(g.recheck):
		}
	}
	<-ctx.Done()
}

// served returns which of gvrs' resources the cluster serves.
func (g *gatewayWatch) served(gvrs ...schema.GroupVersionResource) map[schema.GroupVersionResource]bool {
	out := map[schema.GroupVersionResource]bool{}
	byGV := map[schema.GroupVersion][]schema.GroupVersionResource{}
	for _, r := range gvrs {
		byGV[r.GroupVersion()] = append(byGV[r.GroupVersion()], r)
	}
	for gv, rs := range byGV {
		list, err := g.discovery.ServerResourcesForGroupVersion(gv.String())
		if err != nil || list == nil {
			continue // not served (NotFound), or discovery failing: next time
		}
		for _, r := range rs {
			for _, ar := range list.APIResources {
				if ar.Name == r.Resource {
					out[r] = true
				}
			}
		}
	}
	return out
}

// check starts an informer for each wanted resource the cluster now serves
// and reports whether all are watched.
func (g *gatewayWatch) check(ctx context.Context) bool {
	g.mu.Lock()
	var want []schema.GroupVersionResource
	for _, r := range []schema.GroupVersionResource{httpRouteResource, grpcRouteResource} {
		if g.listers[r] == nil {
			want = append(want, r)
		}
	}
	if g.grants.Empty() {
		want = append(want, referenceGrantResources...)
	}
	g.mu.Unlock()
	if len(want) == 0 {
		return true
	}
	served := g.served(want...)
	var start []schema.GroupVersionResource
	for _, r := range want {
		if !served[r] {
			continue
		}
		if r.Resource == "referencegrants" {
			if len(start) > 0 && start[len(start)-1].Resource == "referencegrants" {
				continue // v1 found, v1beta1 not needed
			}
		}
		start = append(start, r)
	}
	if len(start) == 0 {
		return false
	}
	var synced []cache.InformerSynced
	listers := map[schema.GroupVersionResource]cache.GenericLister{}
	for _, r := range start {
		gi := g.factory.ForResource(r)
		inf := gi.Informer()
		if err := inf.SetTransform(stripManagedFields); err == nil {
			_, _ = inf.AddEventHandler(g.handler)
		}
		synced = append(synced, inf.HasSynced)
		listers[r] = gi.Lister()
	}
	g.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return false
	}
	g.mu.Lock()
	for r, l := range listers {
		if r.Resource == "referencegrants" {
			g.grants = r
		}
		g.listers[r] = l
		g.log.Info("watching Gateway API resources", "resource", r.Resource, "version", r.Version)
	}
	all := g.listers[httpRouteResource] != nil && g.listers[grpcRouteResource] != nil && !g.grants.Empty()
	g.mu.Unlock()
	g.trigger()
	return all
}

// lister returns the lister of a watched resource; nil when it is not.
func (g *gatewayWatch) lister(r schema.GroupVersionResource) cache.GenericLister {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.Resource == "referencegrants" {
		r = g.grants
	}
	return g.listers[r]
}

// list returns the objects of a watched resource (none when it is not).
func (g *gatewayWatch) list(r schema.GroupVersionResource) ([]*unstructured.Unstructured, error) {
	l := g.lister(r)
	if l == nil {
		return nil, nil
	}
	objs, err := l.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out = append(out, u)
		}
	}
	return out, nil
}
