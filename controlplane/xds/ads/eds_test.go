package ads

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/controlplane/xds"
	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// meshGen is a generator of mesh-wide endpoints: every node gets the EDS
// clusters it is given (default: all), each with the one endpoint address
// the mesh has for it, and listeners whose stat_prefix is the node's rev.
type meshGen struct {
	mu       sync.Mutex
	addr     map[string]string   // cluster -> endpoint IP, the same for every node
	clusters map[string][]string // node -> its EDS clusters (absent: all)
	rev      map[string]int
}

func newMeshGen(addr map[string]string) *meshGen {
	return &meshGen{addr: addr, clusters: map[string][]string{}, rev: map[string]int{}}
}

func (g *meshGen) set(f func(g *meshGen)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

func (g *meshGen) Generate(n xds.Node) (xds.Resources, error) {
	id := xds.NodeID(n.Name, n.Namespace)
	g.mu.Lock()
	defer g.mu.Unlock()
	names, ok := g.clusters[id]
	if !ok {
		names = slices.Sorted(maps.Keys(g.addr))
	}
	base := testResources(g.rev[id], false)
	prefix := fmt.Sprintf("rev-%d", g.rev[id])
	res := xds.Resources{
		resource.ListenerType: {
			&listenerv3.Listener{Name: "inbound", Address: socket("0.0.0.0", 15006), StatPrefix: prefix},
			&listenerv3.Listener{Name: "outbound", Address: socket("0.0.0.0", 15001), StatPrefix: prefix},
		},
		resource.ClusterType: {base[resource.ClusterType][0]}, // inbound|8080, STATIC
		resource.SecretType:  base[resource.SecretType],
	}
	for _, name := range names {
		res[resource.ClusterType] = append(res[resource.ClusterType], &clusterv3.Cluster{
			Name: name, ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			}},
		})
		res[resource.EndpointType] = append(res[resource.EndpointType], claOf(name, g.addr[name]))
	}
	return res, nil
}

func claOf(name, ip string) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: socket(ip, 15006)}}}},
	}}}
}

// endpointIP is the address of the one endpoint of a delta EDS resource.
func endpointIP(t *testing.T, r *discovery.Resource) string {
	t.Helper()
	cla := &endpointv3.ClusterLoadAssignment{}
	if err := r.GetResource().UnmarshalTo(cla); err != nil {
		t.Fatal(err)
	}
	return cla.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
}

type deltaClient = adsClient[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]

// openMeshDelta opens a delta stream for nodeID as a sidecar does: CDS and
// LDS wildcard, then EDS by the names of the clusters it got; it ACKs
// everything and returns the EDS resources of the first response by name.
func openMeshDelta(t *testing.T, h *harness, sa, nodeID string, eds ...string) (*deltaClient, map[string]*discovery.Resource) {
	t.Helper()
	c := openDelta(h, saID("demo", sa))
	c.send(&discovery.DeltaDiscoveryRequest{Node: node(nodeID), TypeUrl: resource.ClusterType})
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType})
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: eds})
	got := map[string]*discovery.Resource{}
	for range 3 {
		r := c.next()
		if r.GetTypeUrl() == resource.EndpointType {
			for _, res := range r.GetResources() {
				got[res.GetName()] = res
			}
		}
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}
	return c, got
}

// An endpoint change is pushed as that one ClusterLoadAssignment to every
// stream subscribed to it, and to nothing else: no node's snapshot is set
// again (its clusters and listeners are unchanged), so no other type is
// compared or pushed; a stream not subscribed to it gets nothing.
func TestEndpointChangeIsOnePush(t *testing.T) {
	gen := newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7", "outbound|80|db.demo": "198.18.0.8"})
	h := newHarness(t, harnessOpts{gen: gen})
	a, first := openMeshDelta(t, h, "app", "app-1.demo", "outbound|80|web.demo", "outbound|80|db.demo")
	if len(first) != 2 || endpointIP(t, first["outbound|80|web.demo"]) != "198.18.0.7" {
		t.Fatalf("first endpoints: %v", first)
	}
	b, _ := openMeshDelta(t, h, "web", "web-1.demo", "outbound|80|db.demo") // not web's
	snapA, err := h.srv.cache.GetSnapshot("app-1.demo")
	if err != nil {
		t.Fatal(err)
	}
	edsSentA := h.typeStatus("app-1.demo", resource.EndpointType).Sent

	gen.set(func(g *meshGen) { g.addr["outbound|80|web.demo"] = "198.18.0.17" })
	h.change()
	r := a.next()
	if r.GetTypeUrl() != resource.EndpointType || len(r.GetResources()) != 1 || len(r.GetRemovedResources()) != 0 ||
		r.GetResources()[0].GetName() != "outbound|80|web.demo" || endpointIP(t, r.GetResources()[0]) != "198.18.0.17" {
		t.Fatalf("pushed %s %v (removed %v), want only outbound|80|web.demo at 198.18.0.17", typeName(r.GetTypeUrl()), r.GetResources(), r.GetRemovedResources())
	}
	if r.GetSystemVersionInfo() == edsSentA {
		t.Fatalf("the endpoints' version %q did not move", edsSentA)
	}
	if snap, _ := h.srv.cache.GetSnapshot("app-1.demo"); snap != snapA {
		t.Fatal("A's snapshot was set again for an endpoint change")
	}
	a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	wefttest.Eventually(t, "A's endpoints SYNCED at the new version", func() bool {
		ts := h.typeStatus("app-1.demo", resource.EndpointType)
		return ts.State == StateSynced && ts.Version == r.GetSystemVersionInfo()
	})

	// Sentinels: the next thing each stream gets is its own listener
	// change, so nothing else came in between.
	gen.set(func(g *meshGen) { g.rev["app-1.demo"], g.rev["web-1.demo"] = 1, 1 })
	h.change()
	for name, c := range map[string]*deltaClient{"A": a, "B": b} {
		if r := c.next(); r.GetTypeUrl() != resource.ListenerType {
			t.Fatalf("%s's next response is %s %v, want the sentinel listeners", name, typeName(r.GetTypeUrl()), r.GetResources())
		}
	}
	if snap, _ := h.srv.cache.GetSnapshot("app-1.demo"); snap == snapA {
		t.Fatal("A's snapshot not set for a listener change")
	}
}

// An unchanged assignment is never pushed again, even when a node's
// snapshot is set for other reasons, and a node connecting later does not
// push the assignments the cache holds to the others.
func TestUnchangedEndpointsNotPushedAgain(t *testing.T) {
	gen := newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"})
	h := newHarness(t, harnessOpts{gen: gen})
	a, _ := openMeshDelta(t, h, "app", "app-1.demo", "outbound|80|web.demo")
	openMeshDelta(t, h, "web", "web-1.demo", "outbound|80|web.demo")
	for rev := 1; rev <= 2; rev++ {
		gen.set(func(g *meshGen) { g.rev["app-1.demo"] = rev })
		h.change()
		r := a.next()
		if r.GetTypeUrl() != resource.ListenerType {
			t.Fatalf("A got %s %v, want only its listeners", typeName(r.GetTypeUrl()), r.GetResources())
		}
		a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}
}

// An assignment stays while some published snapshot holds it and goes
// (removed_resources to the streams subscribed to it) when none does: a
// node whose clusters no longer name it, or the last node that held it
// disconnecting.
func TestEndpointsGoWithTheirLastHolder(t *testing.T) {
	gen := newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7", "outbound|80|db.demo": "198.18.0.8"})
	h := newHarness(t, harnessOpts{gen: gen})
	a, _ := openMeshDelta(t, h, "app", "app-1.demo", "outbound|80|web.demo", "outbound|80|db.demo")
	b, _ := openMeshDelta(t, h, "web", "web-1.demo", "outbound|80|db.demo")
	held := func() []string { return slices.Sorted(maps.Keys(h.srv.eds.held())) }
	if got := held(); !slices.Equal(got, []string{"outbound|80|db.demo", "outbound|80|web.demo"}) {
		t.Fatalf("cache holds %v", got)
	}

	// A stops naming db; B still holds it.
	gen.set(func(g *meshGen) { g.clusters["app-1.demo"] = []string{"outbound|80|web.demo"} })
	h.change()
	if r := a.next(); r.GetTypeUrl() != resource.ClusterType || len(r.GetRemovedResources()) != 1 {
		t.Fatalf("A got %s removing %v, want its clusters without db", typeName(r.GetTypeUrl()), r.GetRemovedResources())
	}
	if got := held(); !slices.Equal(got, []string{"outbound|80|db.demo", "outbound|80|web.demo"}) {
		t.Fatalf("cache holds %v while B's snapshot names db", got)
	}

	// B stops naming db too: it goes, and B (still subscribed, as a sidecar
	// is until it has applied its clusters) is told.
	gen.set(func(g *meshGen) { g.clusters["web-1.demo"] = []string{"outbound|80|web.demo"} })
	h.change()
	// Its clusters first, then the removal (after its snapshot is out).
	if r := b.next(); r.GetTypeUrl() != resource.ClusterType {
		t.Fatalf("B got %s first, want its clusters without db", typeName(r.GetTypeUrl()))
	}
	if r := b.next(); r.GetTypeUrl() != resource.EndpointType || !slices.Equal(r.GetRemovedResources(), []string{"outbound|80|db.demo"}) {
		t.Fatalf("B got %s removing %v, want db's endpoints removed", typeName(r.GetTypeUrl()), r.GetRemovedResources())
	}
	if got := held(); !slices.Equal(got, []string{"outbound|80|web.demo"}) {
		t.Fatalf("cache holds %v, want only web's", got)
	}

	// Both disconnect: nothing is held.
	a.cancel()
	b.cancel()
	wefttest.Eventually(t, "both nodes gone", func() bool { return len(h.srv.Status()) == 0 })
	wefttest.Eventually(t, "the cache empty", func() bool { return len(held()) == 0 })
	if len(h.srv.eds.refs) != 0 || len(h.srv.eds.held()) != 0 {
		t.Fatalf("references %v, held %v after every node went", h.srv.eds.refs, h.srv.eds.held())
	}

	// A node connecting again is served its endpoints.
	_, got := openMeshDelta(t, h, "app", "app-1.demo", "outbound|80|web.demo")
	if len(got) != 1 || endpointIP(t, got["outbound|80|web.demo"]) != "198.18.0.7" {
		t.Fatalf("endpoints after reconnecting: %v", got)
	}
}

// A NACK of endpoints is tracked as of any type: NACKED for the version
// sent, SYNCED again once the next one is ACKed.
func TestEndpointNACK(t *testing.T) {
	gen := newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"})
	h := newHarness(t, harnessOpts{gen: gen})
	a, _ := openMeshDelta(t, h, "app", "app-1.demo", "outbound|80|web.demo")
	wefttest.Eventually(t, "SYNCED", func() bool { return h.typeStatus("app-1.demo", resource.EndpointType).State == StateSynced })

	gen.set(func(g *meshGen) { g.addr["outbound|80|web.demo"] = "198.18.0.9" })
	h.change()
	r := a.next()
	a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: r.GetNonce(),
		ErrorDetail: &statuspb.Status{Message: "no such locality"}})
	wefttest.Eventually(t, "NACKED", func() bool {
		ts := h.typeStatus("app-1.demo", resource.EndpointType)
		return ts.State == StateNacked && ts.LastNACK != nil && ts.LastNACK.Version == r.GetSystemVersionInfo() &&
			ts.LastNACK.Message == "no such locality"
	})
	gen.set(func(g *meshGen) { g.addr["outbound|80|web.demo"] = "198.18.0.10" })
	h.change()
	r = a.next()
	a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: r.GetNonce()})
	wefttest.Eventually(t, "SYNCED again", func() bool {
		ts := h.typeStatus("app-1.demo", resource.EndpointType)
		return ts.State == StateSynced && ts.Acked == r.GetSystemVersionInfo()
	})
}

// SotW: the first EDS response names every assignment subscribed to; later
// ones only those that changed, as the contract says of every type but
// clusters and listeners (sidecar/xds/README.md).
func TestSotWEndpointsOnlyChanged(t *testing.T) {
	gen := newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7", "outbound|80|db.demo": "198.18.0.8"})
	h := newHarness(t, harnessOpts{gen: gen})
	c := openSotW(h, saID("demo", "app"))
	names := []string{"outbound|80|db.demo", "outbound|80|web.demo"}
	c.send(&discovery.DiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.EndpointType, ResourceNames: names})
	r := c.next()
	if len(r.GetResources()) != 2 {
		t.Fatalf("first EDS response has %d resources, want 2", len(r.GetResources()))
	}
	c.send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
	gen.set(func(g *meshGen) { g.addr["outbound|80|db.demo"] = "198.18.0.18" })
	h.change()
	r = c.next()
	cla := &endpointv3.ClusterLoadAssignment{}
	if len(r.GetResources()) != 1 {
		t.Fatalf("EDS response after one change has %d resources, want 1", len(r.GetResources()))
	}
	if err := r.GetResources()[0].UnmarshalTo(cla); err != nil || cla.GetClusterName() != "outbound|80|db.demo" {
		t.Fatalf("pushed %v (%v), want db's", cla.GetClusterName(), err)
	}
}

// put and swap keep what the cache holds equal to the union of the
// published snapshots' assignments, and push only what differs.
func TestEDSCacheBookkeeping(t *testing.T) {
	e := newEDSCache()
	items := func(vs map[string]string) map[string]types.ResourceWithTTL {
		out := map[string]types.ResourceWithTTL{}
		for name, v := range vs {
			out[name] = types.ResourceWithTTL{Resource: claOf(name, "198.18.0."+v)}
		}
		return out
	}
	v0 := e.version()
	one := map[string]string{"x": "1", "y": "2"}
	if err := e.put("L1", one, items(one)); err != nil {
		t.Fatal(err)
	}
	v1 := e.version()
	if v1 == v0 {
		t.Fatal("version did not move on a put")
	}
	if len(v1) > 12 { // weftctl status shows 12 characters of a version
		t.Fatalf("version %q: its counter is past what weftctl status shows", v1)
	}
	if err := e.put("L1", one, items(one)); err != nil || e.version() != v1 {
		t.Fatalf("the same list put again moved the version: %v", err)
	}
	if err := e.put("L1b", one, items(one)); err != nil || e.version() != v1 {
		t.Fatalf("the same content under another list version moved the version: %v", err)
	}
	e.hold("n1", "L1", one)
	e.settle("n1")
	e.hold("n2", "Lx", map[string]string{"x": "1"}) // a second node holds x
	e.settle("n2")
	e.hold("n3", "L1", one) // a third holds L1 too
	e.settle("n3")
	e.leave("n1") // the first goes
	if got := slices.Sorted(maps.Keys(e.held())); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("cache holds %v, want x and y (L1 still held by the third node)", got)
	}
	e.hold("n3", "L0", map[string]string{}) // the third lets both go
	if got := slices.Sorted(maps.Keys(e.held())); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("cache holds %v while the third node publishes L0, want x and y", got)
	}
	e.settle("n3")
	if got := slices.Sorted(maps.Keys(e.held())); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("cache holds %v, want x (still held by the second node)", got)
	}
	if _, ok := e.nodes["n1"]; ok || *e.nodes["n3"] != (edsNode{cur: "L0"}) || *e.nodes["n2"] != (edsNode{cur: "Lx"}) {
		t.Fatalf("nodes hold n1 %v, n2 %v, n3 %v", e.nodes["n1"], e.nodes["n2"], e.nodes["n3"])
	}
	if e.last != "" {
		t.Fatal("the last list is still trusted after a removal")
	}
	// y is gone: putting L1 again must put y back.
	if err := e.put("L1", one, items(one)); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(e.held())); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("cache holds %v after L1 again, want x and y", got)
	}
	if err := e.put("L2", map[string]string{"z": "3"}, map[string]types.ResourceWithTTL{}); err == nil {
		t.Fatal("a version map naming a resource the snapshot lacks was accepted")
	}
}

// checkingCache is the Server's snapshot cache, checking that when a
// snapshot is set the endpoint cache already holds its assignments.
type checkingCache struct {
	cachev3.SnapshotCache
	t   *testing.T
	srv *Server
	set atomic.Int32
}

func (c *checkingCache) SetSnapshot(ctx context.Context, node string, snap cachev3.ResourceSnapshot) error {
	held := c.srv.eds.held()
	for name, v := range snap.(*cachev3.Snapshot).VersionMap[resource.EndpointType] {
		if held[name] != v {
			c.t.Errorf("snapshot of %s set before the endpoint cache held its %s at %s (holds %q)", node, name, v, held[name])
		}
	}
	c.set.Add(1)
	return c.SnapshotCache.SetSnapshot(ctx, node, snap)
}

// A cluster never reaches a sidecar before its endpoints can: they are in
// the endpoint cache before the snapshot naming them is set, on a node's
// first snapshot and when a Service appears.
func TestEndpointsPutBeforeTheirClusters(t *testing.T) {
	gen := newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"})
	h := newHarness(t, harnessOpts{gen: gen})
	cc := &checkingCache{SnapshotCache: h.srv.cache, t: t, srv: h.srv}
	h.srv.cache = cc
	a, _ := openMeshDelta(t, h, "app", "app-1.demo", "outbound|80|web.demo")
	gen.set(func(g *meshGen) { g.addr["outbound|80|db.demo"] = "198.18.0.8" })
	h.change()
	if r := a.next(); r.GetTypeUrl() != resource.ClusterType {
		t.Fatalf("A got %s, want the clusters with db", typeName(r.GetTypeUrl()))
	}
	if n := cc.set.Load(); n != 2 {
		t.Fatalf("%d snapshots set, want 2 (the first and db's)", n)
	}
}

// fakeSub is a cachev3.Subscription.
type fakeSub struct {
	returned   map[string]string
	subscribed map[string]struct{}
	wildcard   bool
}

func (f fakeSub) ReturnedResources() map[string]string     { return f.returned }
func (f fakeSub) SubscribedResources() map[string]struct{} { return f.subscribed }
func (f fakeSub) IsWildcard() bool                         { return f.wildcard }

func subOf(wildcard bool, returned map[string]string, names ...string) fakeSub {
	s := fakeSub{returned: returned, subscribed: map[string]struct{}{}, wildcard: wildcard}
	for _, n := range names {
		s.subscribed[n] = struct{}{}
	}
	return s
}

// The endpoint cache's answers, delta and SotW, watch by watch: what is
// sent (resources, removals, the version map the stream then holds) and
// when nothing is.
func TestEDSCacheProtocol(t *testing.T) {
	newCache := func(t *testing.T) (*edsCache, map[string]string) {
		e := newEDSCache()
		vs := map[string]string{"a": "va", "b": "vb"}
		items := map[string]types.ResourceWithTTL{"a": {Resource: claOf("a", "198.18.0.1")}, "b": {Resource: claOf("b", "198.18.0.2")}}
		if err := e.put("L", vs, items); err != nil {
			t.Fatal(err)
		}
		e.hold("n", "L", vs)
		e.settle("n")
		return e, vs
	}
	type want struct {
		answered bool
		names    []string // resources sent
		removed  []string
		next     map[string]string
	}
	deltaCases := []struct {
		name  string
		sub   fakeSub
		nonce string
		want  want
	}{
		{"named, new", subOf(false, nil, "a"), "1", want{true, []string{"a"}, nil, map[string]string{"a": "va"}}},
		{"named, held", subOf(false, map[string]string{"a": "va"}, "a"), "1", want{}},
		{"named, held stale", subOf(false, map[string]string{"a": "old"}, "a"), "1", want{true, []string{"a"}, nil, map[string]string{"a": "va"}}},
		{"named, one gone", subOf(false, map[string]string{"a": "va", "c": "vc"}, "a", "c"), "1", want{true, nil, []string{"c"}, map[string]string{"a": "va"}}},
		{"named, never held and absent", subOf(false, nil, "c"), "", want{}},
		{"unsubscribed one held", subOf(false, map[string]string{"a": "va", "b": "vb"}, "a"), "1", want{}},
		{"unsubscribed, forgotten with a change", subOf(false, map[string]string{"a": "old", "b": "vb"}, "a"), "1", want{true, []string{"a"}, nil, map[string]string{"a": "va"}}},
		{"wildcard, new", subOf(true, nil), "", want{true, []string{"a", "b"}, nil, map[string]string{"a": "va", "b": "vb"}}},
		{"wildcard, held", subOf(true, map[string]string{"a": "va", "b": "vb"}), "1", want{}},
		{"wildcard, held, first request", subOf(true, map[string]string{"a": "va", "b": "vb"}), "", want{true, nil, nil, map[string]string{"a": "va", "b": "vb"}}},
	}
	for _, tc := range deltaCases {
		t.Run("delta "+tc.name, func(t *testing.T) {
			e, _ := newCache(t)
			ch := make(chan cachev3.DeltaResponse, 1)
			cancel, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{Node: node("n"), TypeUrl: resource.EndpointType, ResponseNonce: tc.nonce}, tc.sub, ch)
			if err != nil || cancel == nil {
				t.Fatalf("CreateDeltaWatch: %v, cancel %v", err, cancel != nil)
			}
			select {
			case r := <-ch:
				if !tc.want.answered {
					t.Fatalf("answered %v, want no answer", r)
				}
				out, _ := r.GetDeltaDiscoveryResponse()
				var names []string
				for _, res := range out.GetResources() {
					names = append(names, res.GetName())
					if res.GetVersion() != tc.want.next[res.GetName()] || res.GetResource().GetTypeUrl() != resource.EndpointType {
						t.Errorf("%s sent at version %q as %s", res.GetName(), res.GetVersion(), res.GetResource().GetTypeUrl())
					}
				}
				slices.Sort(names)
				if !slices.Equal(names, tc.want.names) || !slices.Equal(out.GetRemovedResources(), tc.want.removed) ||
					!maps.Equal(r.GetNextVersionMap(), tc.want.next) || out.GetSystemVersionInfo() != e.version() || out.GetTypeUrl() != resource.EndpointType {
					t.Fatalf("sent %v removing %v, next %v, version %q; want %v removing %v, next %v, version %q",
						names, out.GetRemovedResources(), r.GetNextVersionMap(), out.GetSystemVersionInfo(),
						tc.want.names, tc.want.removed, tc.want.next, e.version())
				}
				if len(e.watches) != 0 {
					t.Fatal("an answered watch is kept")
				}
			default:
				if tc.want.answered {
					t.Fatal("not answered")
				}
				if len(e.watches) != 1 {
					t.Fatalf("%d watches open, want 1", len(e.watches))
				}
				cancel()
				if len(e.watches) != 0 {
					t.Fatal("cancel left the watch open")
				}
			}
		})
	}

	t.Run("sotw", func(t *testing.T) {
		e, vs := newCache(t)
		ch := make(chan cachev3.Response, 1)
		names := []string{"a", "b"}
		// First request: everything subscribed.
		if _, err := e.CreateWatch(&discovery.DiscoveryRequest{Node: node("n"), TypeUrl: resource.EndpointType, ResourceNames: names}, subOf(false, nil, names...), ch); err != nil {
			t.Fatal(err)
		}
		r := <-ch
		out, _ := r.GetDiscoveryResponse()
		if len(out.GetResources()) != 2 || !maps.Equal(r.GetReturnedResources(), vs) || out.GetVersionInfo() != e.version() {
			t.Fatalf("first: %d resources, returned %v, version %q", len(out.GetResources()), r.GetReturnedResources(), out.GetVersionInfo())
		}
		// The ACK: nothing to send until a change.
		cancel, err := e.CreateWatch(&discovery.DiscoveryRequest{Node: node("n"), TypeUrl: resource.EndpointType, ResourceNames: names, VersionInfo: out.GetVersionInfo()}, subOf(false, vs, names...), ch)
		if err != nil || len(ch) != 0 || len(e.watches) != 1 {
			t.Fatalf("ACK answered (%d) or not watched (%d): %v", len(ch), len(e.watches), err)
		}
		if err := e.put("L2", map[string]string{"a": "va2", "b": "vb"}, map[string]types.ResourceWithTTL{"a": {Resource: claOf("a", "198.18.0.11")}}); err != nil {
			t.Fatal(err)
		}
		r = <-ch
		out, _ = r.GetDiscoveryResponse()
		cla := &endpointv3.ClusterLoadAssignment{}
		if len(out.GetResources()) != 1 || out.GetResources()[0].UnmarshalTo(cla) != nil || cla.GetClusterName() != "a" ||
			!maps.Equal(r.GetReturnedResources(), map[string]string{"a": "va2", "b": "vb"}) {
			t.Fatalf("after a's change: %d resources (%s), returned %v", len(out.GetResources()), cla.GetClusterName(), r.GetReturnedResources())
		}
		cancel() // already answered: nothing to do
		// Another process's version: everything again.
		if _, err := e.CreateWatch(&discovery.DiscoveryRequest{Node: node("n"), TypeUrl: resource.EndpointType, ResourceNames: names, VersionInfo: "ffff.3"}, subOf(false, map[string]string{"a": "va2", "b": "vb"}, names...), ch); err != nil {
			t.Fatal(err)
		}
		if r := <-ch; r == nil {
			t.Fatal("no answer")
		}
		// SotW cannot say a subscribed one went: no answer for that alone.
		e.hold("n", "L3", map[string]string{"a": "va2"})
		e.settle("n")
		held := map[string]string{"a": "va2", "b": "vb"}
		if _, err := e.CreateWatch(&discovery.DiscoveryRequest{Node: node("n"), TypeUrl: resource.EndpointType, ResourceNames: names, VersionInfo: e.version()}, subOf(false, held, names...), ch); err != nil {
			t.Fatal(err)
		}
		if len(ch) != 0 {
			t.Fatal("answered a SotW stream for a removal alone")
		}
	})

	t.Run("other types refused", func(t *testing.T) {
		e := newEDSCache()
		if _, err := e.CreateWatch(&discovery.DiscoveryRequest{TypeUrl: resource.ClusterType}, subOf(true, nil), make(chan cachev3.Response, 1)); err == nil {
			t.Fatal("SotW cluster watch accepted")
		}
		if _, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType}, subOf(true, nil), make(chan cachev3.DeltaResponse, 1)); err == nil {
			t.Fatal("delta cluster watch accepted")
		}
		if _, err := e.Fetch(context.Background(), &discovery.DiscoveryRequest{TypeUrl: resource.EndpointType}); err == nil {
			t.Fatal("fetch served")
		}
	})
}

// A change answers exactly the watches it concerns, however many are open
// (they are answered by several goroutines).
func TestEDSCacheManyWatches(t *testing.T) {
	e := newEDSCache()
	vs := map[string]string{"a": "va", "b": "vb"}
	if err := e.put("L", vs, map[string]types.ResourceWithTTL{"a": {Resource: claOf("a", "198.18.0.1")}, "b": {Resource: claOf("b", "198.18.0.2")}}); err != nil {
		t.Fatal(err)
	}
	e.hold("n", "L", vs)
	e.settle("n")
	const n = 5 * watchesPerWorker
	chans := make([]chan cachev3.DeltaResponse, n)
	for i := range n {
		chans[i] = make(chan cachev3.DeltaResponse, 1)
		name := []string{"a", "b"}[i%2]
		if _, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{Node: node("n"), TypeUrl: resource.EndpointType, ResponseNonce: "1"},
			subOf(false, map[string]string{name: vs[name]}, name), chans[i]); err != nil {
			t.Fatal(err)
		}
	}
	if len(e.watches) != n {
		t.Fatalf("%d watches open, want %d", len(e.watches), n)
	}
	if err := e.put("L2", map[string]string{"a": "va2", "b": "vb"}, map[string]types.ResourceWithTTL{"a": {Resource: claOf("a", "198.18.0.11")}}); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		got := len(ch)
		if want := 1 - i%2; got != want {
			t.Fatalf("watch %d (subscribed to %s) got %d answers, want %d", i, []string{"a", "b"}[i%2], got, want)
		}
		if got == 1 {
			r := <-ch
			if !maps.Equal(r.GetNextVersionMap(), map[string]string{"a": "va2"}) {
				t.Fatalf("watch %d: next %v", i, r.GetNextVersionMap())
			}
		}
	}
	if len(e.watches) != n/2 {
		t.Fatalf("%d watches open after the change, want the %d of b", len(e.watches), n/2)
	}
}

// A node is served only the assignments its published snapshot holds (and,
// while it publishes the next, those of that one too), whatever it
// subscribes to and whatever the cache holds for other nodes: what it gains
// is sent before its snapshot goes out, what it loses after.
func TestEDSServedPerNode(t *testing.T) {
	e := newEDSCache()
	ab := map[string]string{"a": "va", "b": "vb"}
	if err := e.put("Lab", ab, map[string]types.ResourceWithTTL{"a": {Resource: claOf("a", "198.18.0.1")}, "b": {Resource: claOf("b", "198.18.0.2")}}); err != nil {
		t.Fatal(err)
	}
	e.hold("m", "Lab", ab)
	e.settle("m")
	e.hold("n", "La", map[string]string{"a": "va"})
	e.settle("n")
	watch := func(wildcard bool, names ...string) chan cachev3.DeltaResponse {
		ch := make(chan cachev3.DeltaResponse, 1)
		if _, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{Node: node("n"), TypeUrl: resource.EndpointType, ResponseNonce: "1"},
			subOf(wildcard, nil, names...), ch); err != nil {
			t.Fatal(err)
		}
		return ch
	}
	sent := func(ch chan cachev3.DeltaResponse) (names, removed []string) {
		t.Helper()
		select {
		case r := <-ch:
			out, _ := r.GetDeltaDiscoveryResponse()
			for _, res := range out.GetResources() {
				names = append(names, res.GetName())
			}
			return names, out.GetRemovedResources()
		default:
			t.Fatal("no answer")
		}
		return nil, nil
	}
	if got, _ := sent(watch(false, "a", "b")); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("n subscribed to a and b was sent %v, want only a (b is m's)", got)
	}
	if got, _ := sent(watch(true)); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("n's wildcard was sent %v, want only a", got)
	}
	// n subscribes to b before holding it (a cluster it is about to get):
	// kept open, answered when n starts publishing a snapshot with b.
	ch := make(chan cachev3.DeltaResponse, 1)
	if _, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{Node: node("n"), TypeUrl: resource.EndpointType, ResponseNonce: "1"},
		subOf(false, map[string]string{"a": "va"}, "a", "b"), ch); err != nil {
		t.Fatal(err)
	}
	if len(ch) != 0 {
		t.Fatal("answered b before n holds it")
	}
	e.hold("n", "Lab", ab)
	if got, _ := sent(ch); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("n was sent %v when it started publishing b, want b", got)
	}
	e.settle("n")
	// n publishes a snapshot without b: b is removed from n's stream only
	// once the snapshot is out, and stays in the cache for m.
	ch = make(chan cachev3.DeltaResponse, 1)
	if _, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{Node: node("n"), TypeUrl: resource.EndpointType, ResponseNonce: "1"},
		subOf(false, ab, "a", "b"), ch); err != nil {
		t.Fatal(err)
	}
	e.hold("n", "La", map[string]string{"a": "va"})
	if len(ch) != 0 {
		t.Fatal("b removed before n's snapshot without it is out")
	}
	e.settle("n")
	if _, removed := sent(ch); !slices.Equal(removed, []string{"b"}) {
		t.Fatalf("n told of removed %v, want b", removed)
	}
	if _, ok := e.held()["b"]; !ok {
		t.Fatal("b left the cache while m holds it")
	}
	// A stream that names no node is served nothing.
	ch = make(chan cachev3.DeltaResponse, 1)
	if _, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType}, subOf(true, nil), ch); err != nil {
		t.Fatal(err)
	}
	if got, _ := sent(ch); len(got) != 0 {
		t.Fatalf("a stream of no node was sent %v", got)
	}
}

// put and hold are publish's two halves, for tests that take them apart.
func (e *edsCache) put(list string, versions map[string]string, items map[string]types.ResourceWithTTL) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.putLocked(list, versions, items)
}

func (e *edsCache) hold(node, list string, versions map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.holdLocked(node, list, versions)
}

// held is what the cache holds, by name and version (tests).
func (e *edsCache) held() map[string]string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make(map[string]string, len(e.res))
	for n, r := range e.res {
		out[n] = r.version
	}
	return out
}
