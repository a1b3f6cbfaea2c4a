package ads

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/wrapperspb"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/controlplane/xds"
	wefttest "github.com/weftmesh/weft/internal/testutil"
)

func lookUpNode() *corev3.Node { return lookUpNodeAs("app-1.demo") }

func lookUpNodeAs(id string) *corev3.Node {
	return &corev3.Node{Id: id, ClientFeatures: []string{names.FeatureDestinationListeners}}
}

func snapListeners(t *testing.T, h *harness) []string {
	t.Helper()
	snap, err := h.srv.cache.GetSnapshot("app-1.demo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for name := range snap.GetResources(resource.ListenerType) {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func respNames(r *discovery.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.GetResources() {
		out = append(out, res.GetName())
	}
	slices.Sort(out)
	return out
}

// TestDestinationsOfEveryStreamOfANode: a node with two streams (a
// reconnect overlapping the old stream) is generated the destination
// listeners either subscribes to: a request of the old stream (here the ACK
// of its last response) does not drop the new stream's destination.
func TestDestinationsOfEveryStreamOfANode(t *testing.T) {
	const d1, d2 = "198.19.0.10:80", "198.19.0.11:80"
	gen := &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}), dests: []string{d1, d2}}
	h := newHarness(t, harnessOpts{gen: gen})

	a := openDelta(h, saID("demo", "app"))
	a.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{"inbound", "outbound", d1}})
	ra := a.next()
	if got := respNames(ra); !slices.Equal(got, []string{d1, "inbound", "outbound"}) {
		t.Fatalf("A's first listeners %v", got)
	}

	b := openDelta(h, saID("demo", "app"))
	b.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{"inbound", "outbound", d1, d2}})
	rb := b.next()
	if got := respNames(rb); !slices.Contains(got, d2) {
		t.Fatalf("B's first listeners %v, want %s among them", got, d2)
	}
	b.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: rb.GetNonce()})
	// B's ACK handled before A's request: a cluster request answered after it.
	b.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"inbound|8080"}})
	if r := b.next(); r.GetTypeUrl() != resource.ClusterType {
		t.Fatalf("B: got %s", r.GetTypeUrl())
	} else {
		b.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}

	// The old stream ACKs its response (an ordinary listener request),
	// then asks for a cluster so we know the ACK was processed.
	a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: ra.GetNonce()})
	a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"inbound|8080"}})
	if r := a.next(); r.GetTypeUrl() != resource.ClusterType {
		t.Fatalf("A: got %s", r.GetTypeUrl())
	}

	h.change()
	if n := gen.last(); !slices.Contains(n.Destinations, d2) {
		t.Errorf("after a change, generated for destinations %v: B still subscribes to %s", n.Destinations, d2)
	}
	if got := snapListeners(t, h); !slices.Contains(got, d2) {
		t.Errorf("node's snapshot listeners %v lack %s, which stream B still subscribes to", got, d2)
		r := b.next()
		t.Errorf("B was sent: type %s, resources %v, removed_resources %v", typeName(r.GetTypeUrl()), respNames(r), r.GetRemovedResources())
	}
}

// TestDestinationsNamedThenWildcard: a delta stream that subscribes to
// listeners by name and then to "*" is a wildcard subscription (it is sent
// every listener of the snapshot), so the node is generated every
// destination listener from then on.
func TestDestinationsNamedThenWildcard(t *testing.T) {
	dests := []string{"198.19.0.10:80", "198.19.0.11:80", "198.19.0.12:80"}
	gen := &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}), dests: dests}
	h := newHarness(t, harnessOpts{gen: gen})
	c := openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{"inbound", "outbound"}})
	r := c.next()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: r.GetNonce()})
	// Switch to wildcard.
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{"*"}})
	// Sync on the stream: a cluster request answered after the switch.
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"inbound|8080"}})
	for {
		r := c.next()
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
		if r.GetTypeUrl() == resource.ClusterType {
			break
		}
	}
	h.change()
	if n := gen.last(); n.LookedUp {
		t.Errorf("stream subscribes to \"*\" but the node is generated as one that looks up %v", n.Destinations)
	}
	got := snapListeners(t, h)
	for _, d := range dests {
		if !slices.Contains(got, d) {
			t.Errorf("wildcard listener subscription: snapshot holds %v, lacks destination %s", got, d)
		}
	}
}

// TestDestinationsOfASotWStreamOfALookingUpNode: a state-of-the-world
// stream is a wildcard and gets every destination listener, also when its
// node already has a delta stream that looks destinations up.
func TestDestinationsOfASotWStreamOfALookingUpNode(t *testing.T) {
	dests := []string{"198.19.0.10:80", "198.19.0.11:80"}
	gen := &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}), dests: dests}
	h := newHarness(t, harnessOpts{gen: gen})
	d := openDelta(h, saID("demo", "app"))
	d.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{"inbound", "outbound"}})
	d.next()
	s := openSotW(h, saID("demo", "app"))
	s.send(&discovery.DiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType})
	r := s.next()
	if len(r.GetResources()) != 2+len(dests) {
		t.Errorf("SotW (wildcard) stream of the node was sent %d listeners, want inbound, outbound and %d destinations", len(r.GetResources()), len(dests))
	}
	if n := gen.last(); n.LookedUp {
		t.Errorf("node with a SotW stream generated as one that looks up %v", n.Destinations)
	}
}

// TestDestinationLookupsRegenerateOnlyForWhatExists: a request that leaves
// the listener subscription as it was (a name subscribed and unsubscribed
// at once) generates nothing, and one that subscribes to a destination
// that exists nowhere in the mesh generates nothing either (the node's
// snapshot lacks it, so the answer says it does not exist): an app
// speaking ADS cannot make the control plane regenerate its node, and walk
// every name it subscribes to, once per request that way.
func TestDestinationLookupsRegenerateOnlyForWhatExists(t *testing.T) {
	gen := &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"})}
	h := newHarness(t, harnessOpts{gen: gen})
	c := openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{"inbound", "outbound"}})
	c.next()
	sync := func(i int) {
		// A cluster request answered: every request before it was handled.
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{fmt.Sprintf("outbound|80|sync%d", i)}})
		for {
			r := c.next()
			if r.GetTypeUrl() == resource.ClusterType {
				return
			}
		}
	}
	sync(0)
	count := func() (calls, names int) {
		gen.mu.Lock()
		defer gen.mu.Unlock()
		for _, n := range gen.asked {
			names += len(n.Destinations)
		}
		return len(gen.asked), names
	}
	// 1. Subscribe and unsubscribe the same name in one request, 500 times:
	// the subscription never changes.
	calls0, _ := count()
	const toggles = 500
	for range toggles {
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType,
			ResourceNamesSubscribe: []string{"198.19.0.10:80"}, ResourceNamesUnsubscribe: []string{"198.19.0.10:80"}})
	}
	sync(1)
	calls1, _ := count()
	t.Logf("%d requests that leave the subscription unchanged: %d Generate calls", toggles, calls1-calls0)
	if calls1-calls0 > 1 {
		t.Errorf("%d requests that leave the listener subscription unchanged ran Generate %d times", toggles, calls1-calls0)
	}
	// 2. N distinct names that exist nowhere in the mesh, one per request.
	const n = 2000
	_, names0 := count()
	for i := range n {
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType,
			ResourceNamesSubscribe: []string{fmt.Sprintf("10.%d.%d.%d:80", i>>16&255, i>>8&255, i&255)}})
		r := c.next() // its "does not exist"
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}
	sync(2)
	calls2, names2 := count()
	t.Logf("%d requests of one absent destination each: %d Generate calls carrying %d destination names in all", n, calls2-calls1, names2-names0)
	if names2-names0 > 4*n {
		t.Errorf("%d one-name requests made the generator walk %d destination names (quadratic; at MaxSubscribedNames=%d that is ~%d)",
			n, names2-names0, MaxSubscribedNames, MaxSubscribedNames*(MaxSubscribedNames+1)/2)
	}
}

// TestResumedLookUpStreamSynced: a looking-up sidecar resumes a delta
// stream holding exactly its listeners, one a destination; go-control-plane
// sends it nothing, so no ACK comes, and the listeners are SYNCED in
// Status: the node is generated with the stream's destinations before
// the resumed request is judged.
func TestResumedLookUpStreamSynced(t *testing.T) {
	const d1 = "198.19.0.10:80"
	gen := &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}), dests: []string{d1}}
	h := newHarness(t, harnessOpts{gen: gen})
	want := []string{"inbound", "outbound", d1}
	c := openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType, ResourceNamesSubscribe: want})
	held := map[string]string{}
	for _, res := range c.next().GetResources() {
		held[res.GetName()] = res.GetVersion()
	}
	if len(held) != 3 {
		t.Fatalf("listeners %v", held)
	}
	c.cancel()
	wefttest.Eventually(t, "the node forgotten", func() bool { return len(h.srv.Status()) == 0 })

	c = openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: want, InitialResourceVersions: held})
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"inbound|8080"}})
	r := c.next()
	if r.GetTypeUrl() != resource.ClusterType {
		t.Fatalf("resumed stream holding exactly its listeners was sent %s %v removed %v", typeName(r.GetTypeUrl()), respNames(r), r.GetRemovedResources())
	}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"outbound|80|web.demo"}})
	c.next() // both requests handled
	if got := snapListeners(t, h); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Fatalf("snapshot listeners %v", got)
	}
	if ts := h.typeStatus("app-1.demo", resource.ListenerType); ts.State != StateSynced {
		t.Errorf("resumed stream holding exactly the published listeners: listeners %s (sent %q, acked %q), want SYNCED", ts.State, ts.Sent, ts.Acked)
	}
}

// TestDestinationsAfterTheNewestStreamCloses: the newest stream B closes
// (its reconnect failed) and the old stream A carries on: the node is
// generated A's destinations, not B's.
func TestDestinationsAfterTheNewestStreamCloses(t *testing.T) {
	const d1, d2 = "198.19.0.10:80", "198.19.0.11:80"
	gen := &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}), dests: []string{d1, d2}}
	h := newHarness(t, harnessOpts{gen: gen})
	a := openDelta(h, saID("demo", "app"))
	a.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{"inbound", "outbound", d1}})
	a.next()
	b := openDelta(h, saID("demo", "app"))
	b.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{"inbound", "outbound", d2}})
	b.next()
	b.cancel()
	wefttest.Eventually(t, "B's stream closed", func() bool {
		n, _ := h.status("app-1.demo")
		return n.Streams == 1
	})
	h.change()
	if n := gen.last(); !slices.Equal(n.Destinations, []string{d1}) {
		t.Errorf("only A remains, subscribing to %s; node generated for %v", d1, n.Destinations)
	}
	if got := snapListeners(t, h); !slices.Contains(got, d1) {
		t.Errorf("snapshot listeners %v lack %s, which the one remaining stream subscribes to", got, d1)
	}
}

// sharedLookUpGen is lookUpGen whose destination listeners are the same
// objects for every node, never modified, and says so (as the translator's
// are): the Server then builds snapshots through its resCache.
type sharedLookUpGen struct {
	*meshGen
	dests map[string]*listenerv3.Listener
	order []string
}

func (g *sharedLookUpGen) Generate(n xds.Node) (xds.Resources, error) {
	res, err := g.meshGen.Generate(n)
	if err != nil {
		return nil, err
	}
	for _, name := range g.order {
		if n.DestinationListeners && (!n.LookedUp || slices.Contains(n.Destinations, name)) {
			res[resource.ListenerType] = append(res[resource.ListenerType], g.dests[name])
		}
	}
	return res, nil
}

func (g *sharedLookUpGen) SharedResources() func(types.Resource) bool {
	return func(r types.Resource) bool {
		l, ok := r.(*listenerv3.Listener)
		return ok && g.dests[l.GetName()] == l
	}
}

// TestLookupsKeepNoListsInTheResourceCache: between two rounds (a quiet
// mesh), each lookup of an existing destination regenerates the node
// outside a round; its new list of listeners is not kept in the resource
// cache, which only a round clears: one stream looking up k destinations
// one by one would otherwise leave k lists of up to k+2 listeners each.
func TestLookupsKeepNoListsInTheResourceCache(t *testing.T) {
	const k = 300
	g := &sharedLookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}), dests: map[string]*listenerv3.Listener{}}
	for i := range k {
		name := fmt.Sprintf("198.19.%d.%d:80", i>>8, i&255)
		ap := netip.MustParseAddrPort(name)
		g.order = append(g.order, name)
		g.dests[name] = &listenerv3.Listener{Name: name, Address: socket(ap.Addr().String(), uint32(ap.Port())), BindToPort: wrapperspb.Bool(false)}
	}
	h := newHarness(t, harnessOpts{gen: g})
	c := openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{"inbound", "outbound"}})
	r := c.next()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	lists := func() (n, names int) {
		h.srv.resCache.mu.Lock()
		defer h.srv.resCache.mu.Unlock()
		for key, te := range h.srv.resCache.cur.byList {
			if strings.HasPrefix(key, resource.ListenerType) {
				n++
				names += len(te.names)
			}
		}
		return n, names
	}
	n0, names0 := lists()
	for _, name := range g.order {
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{name}})
		r := c.next()
		if got := respNames(r); !slices.Equal(got, []string{name}) {
			t.Fatalf("looking %s up: sent %v", name, got)
		}
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}
	n1, names1 := lists()
	t.Logf("listener lists cached: %d -> %d, listeners held in them: %d -> %d, after %d lookups and no round", n0, n1, names0, names1, k)
	if n1-n0 > 2 {
		t.Errorf("one node's %d lookups left %d listener lists (%d listeners) in resCache.cur until the next round", k, n1-n0, names1-names0)
	}
}

// TestConcurrentLookups: two streams of one node look destinations up
// concurrently while rounds run, then close (for -race).
func TestConcurrentLookups(t *testing.T) {
	var dests []string
	for i := range 40 {
		dests = append(dests, fmt.Sprintf("198.19.0.%d:80", i+1))
	}
	gen := &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}), dests: dests}
	h := newHarness(t, harnessOpts{gen: gen})
	var cs []*deltaClient
	for range 2 {
		c := openDelta(h, saID("demo", "app"))
		c.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{"inbound", "outbound"}})
		c.next()
		cs = append(cs, c)
	}
	done := make(chan struct{})
	for i, c := range cs {
		go func() {
			defer func() { done <- struct{}{} }()
			for j, d := range dests {
				if (j+i)%2 == 0 {
					c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{d}})
				} else {
					c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNamesUnsubscribe: []string{dests[(j+1)%len(dests)]}, ResourceNamesSubscribe: []string{d}})
				}
			}
		}()
		go func() {
			for range c.resps {
			}
		}()
	}
	for range 5 {
		h.srv.Changed()
		h.clock.Step(100 * time.Millisecond)
	}
	<-done
	<-done
	cs[0].cancel()
	h.change()
	cs[1].cancel()
	wefttest.Eventually(t, "the node forgotten", func() bool { return len(h.srv.Status()) == 0 })
}
