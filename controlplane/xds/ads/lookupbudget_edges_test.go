package ads

// The lookup budget attacked: each test here failed on its first version
// (6aef574) or checks what held against an attack review of it.

import (
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/controlplane/xds"
	wefttest "github.com/weftmesh/weft/internal/testutil"
)

var breakDests = []string{"198.19.0.10:80", "198.19.0.11:80", "198.19.0.12:80", "198.19.0.13:80"}

// overdrawn opens node app-1's looking-up stream on a costlyGen harness
// (budget 0.1, burst 100 ms, 60 ms a generation) and spends two lookups:
// the budget is then -14 ms, so the next lookup waits 140 ms.
func overdrawn(t *testing.T, o harnessOpts) (*harness, *deltaClient) {
	t.Helper()
	gen := &costlyGen{lookUpGen: &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}), dests: breakDests},
		costly: "app-1", cost: 60 * time.Millisecond}
	o.gen = gen
	if o.lookupBudget == 0 {
		o.lookupBudget, o.lookupBurst = 0.1, 100*time.Millisecond
	}
	h := newHarness(t, o)
	gen.clock = h.clock
	a := openLookingUp(h, saID("demo", "app"), lookUpNode())
	for _, d := range breakDests[:2] {
		lookUpOn(a, d)
		answeredOn(t, a, d)
	}
	return h, a
}

func lookUpOn(c *deltaClient, d string) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{d}})
}

func answeredOn(t *testing.T, c *deltaClient, d string) {
	t.Helper()
	r := c.next()
	if got := respNames(r); !slices.Contains(got, d) {
		t.Fatalf("lookup of %s answered with %v (removed %v)", d, got, r.GetRemovedResources())
	}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: r.GetNonce()})
}

func lookupWaits(h *harness) float64 { return testutil.ToFloat64(h.srv.metrics.lookupWaits) }

// quiet says whether c got nothing within d (real time).
func quiet(c *deltaClient, d time.Duration) bool {
	select {
	case <-c.resps:
		return false
	case <-time.After(d):
		return true
	}
}

// TestRunEndEndsAWaitingLookup: Run's end (s.cancel, what Run defers)
// ends every ADS stream, one whose lookup waits on its budget too (go-
// control-plane checks its own context only between requests, so the
// wait must: else the control plane's GracefulStop waits for the timer).
func TestRunEndEndsAWaitingLookup(t *testing.T) {
	h, a := overdrawn(t, harnessOpts{})
	b := openDelta(h, saID("demo", "web"))
	b.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNodeAs("web-1.demo"), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{"inbound", "outbound"}})
	b.next()

	lookUpOn(a, breakDests[2])
	wefttest.Eventually(t, "the lookup waits", func() bool { return lookupWaits(h) == 1 })

	h.srv.cancel() // Run returned
	ended := func(c *deltaClient) bool {
		select {
		case _, ok := <-c.resps:
			return !ok
		case <-time.After(2 * time.Second):
			return false
		}
	}
	if !ended(b) {
		t.Fatal("control: an idle stream did not end with Run")
	}
	if !ended(a) {
		t.Errorf("Run ended, but the stream whose lookup waits on its budget is still open")
	}
}

// TestLookupBudgetKeptAcrossReconnects: an overdrawn node whose last
// stream closes and which reconnects at once gets its budget back as it
// was, not a full burst (and its new stream's first generation is charged).
func TestLookupBudgetKeptAcrossReconnects(t *testing.T) {
	h, a := overdrawn(t, harnessOpts{})
	a.cancel()
	wefttest.Eventually(t, "the node forgotten", func() bool { _, ok := h.status("app-1.demo"); return !ok })
	spent := testutil.ToFloat64(h.srv.metrics.lookupSeconds)

	// The new stream's first request subscribes to the two destinations
	// again: its first generation (60 ms) is charged to the budget as it
	// was left (−14 ms), and the request waits: −14 + 6 − 60 = −68 ms, so
	// 680 ms.
	c := openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: lookUpNode(), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: append([]string{"inbound", "outbound"}, breakDests[:2]...)})
	wefttest.Eventually(t, "the reconnected node's lookups wait", func() bool { return lookupWaits(h) == 1 })
	if got := testutil.ToFloat64(h.srv.metrics.lookupSeconds) - spent; got < 0.06 {
		t.Errorf("the new stream's first generation charged %v s, want 0.06", got)
	}
	h.clock.Step(670 * time.Millisecond)
	if !quiet(c, 100*time.Millisecond) {
		t.Fatal("answered 670 ms into a 680 ms wait: the budget was reset by the reconnect")
	}
	h.clock.Step(10 * time.Millisecond)
	r := c.next()
	if got := respNames(r); !slices.Contains(got, breakDests[1]) {
		t.Fatalf("after the wait: %v", got)
	}
}

// gatedGen is a lookUpGen whose next generation of app-1, once armed,
// blocks until released (a slow generation in a round: a large mesh, a
// noisy neighbour's changes).
type gatedGen struct {
	*lookUpGen
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedGen) Generate(n xds.Node) (xds.Resources, error) {
	g.mu.Lock()
	block := g.armed && n.Name == "app-1"
	if block {
		g.armed = false
	}
	g.mu.Unlock()
	if block {
		close(g.entered)
		<-g.release
	}
	return g.lookUpGen.Generate(n)
}

// TestLookupNotChargedForARoundItWaitedBehind: a lookup's regeneration is
// timed once it holds the node's generation lock: a round generating the
// node meanwhile (400 ms here; rounds follow everyone's changes) is not
// charged to the node's lookup budget.
func TestLookupNotChargedForARoundItWaitedBehind(t *testing.T) {
	gen := &gatedGen{lookUpGen: &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}), dests: breakDests},
		entered: make(chan struct{}), release: make(chan struct{})}
	h := newHarness(t, harnessOpts{gen: gen})
	a := openLookingUp(h, saID("demo", "app"), lookUpNode())

	gen.mu.Lock()
	gen.armed = true
	gen.mu.Unlock()
	h.srv.Changed()
	h.clock.Step(100 * time.Millisecond)
	<-gen.entered // the round generates app-1, holding n.gen

	lookUpOn(a, breakDests[0])
	wefttest.Eventually(t, "the lookup subscribed", func() bool {
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		for _, st := range h.srv.streams {
			if _, ok := st.names[resource.ListenerType][breakDests[0]]; ok {
				return true
			}
		}
		return false
	})
	time.Sleep(200 * time.Millisecond) // listenersAsked has read its start and waits for n.gen
	h.clock.Step(400 * time.Millisecond)
	close(gen.release)
	h.waitRound()
	for {
		r := a.next()
		a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
		if slices.Contains(respNames(r), breakDests[0]) {
			break
		}
	}
	if spent := testutil.ToFloat64(h.srv.metrics.lookupSeconds); spent > 0.05 {
		t.Errorf("the lookup's own generation took 0 s, but %v s were charged to the node's lookup budget (the round's generation it waited behind)", spent)
	}
}

// TestLookupBudgetClockBackwards: a clock that goes back and forward again
// credits nothing twice, and a negative charge credits nothing. Only a
// non-monotonic Config.Clock reaches it (clock.RealClock's is monotonic).
func TestLookupBudgetClockBackwards(t *testing.T) {
	t0 := wefttest.Epoch(t)
	var b lookupBudget
	b.refill(t0, 0.1, 100*time.Millisecond)
	b.left = -50 * time.Millisecond
	b.refill(t0.Add(-10*time.Second), 0.1, 100*time.Millisecond)
	b.refill(t0, 0.1, 100*time.Millisecond)
	if b.left != -50*time.Millisecond {
		t.Errorf("no time passed (clock back 10 s, then forward to where it was): budget %v, want -50ms", b.left)
	}
	b.spend(-time.Second)
	if b.left != -50*time.Millisecond {
		t.Errorf("a negative charge: budget %v, want -50ms", b.left)
	}
}

// TestLookupWaitHoldsNothingShared: while app-1's lookup waits, a round
// completes, Status answers, another node connects and looks up, and
// app-1's wait ends when its stream does (the node is forgotten, no
// regeneration is charged).
func TestLookupWaitHoldsNothingShared(t *testing.T) {
	// Budget 0.001: the wait is ~20 s on the fake clock, past any round's step.
	h, a := overdrawn(t, harnessOpts{lookupBudget: 0.001, lookupBurst: 100 * time.Millisecond})
	spent := testutil.ToFloat64(h.srv.metrics.lookupSeconds)
	lookUpOn(a, breakDests[2])
	wefttest.Eventually(t, "the lookup waits", func() bool { return lookupWaits(h) == 1 })
	done := make(chan struct{})
	go func() { h.srv.Status(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Status blocked while a lookup waits")
	}
	h.change()
	b := openLookingUp(h, saID("demo", "web"), lookUpNodeAs("web-1.demo"))
	lookUpOn(b, breakDests[2])
	answeredOn(t, b, breakDests[2])
	a.cancel()
	wefttest.Eventually(t, "app-1 forgotten", func() bool { _, ok := h.status("app-1.demo"); return !ok })
	if now := testutil.ToFloat64(h.srv.metrics.lookupSeconds); now != spent {
		t.Errorf("a lookup whose stream ended while waiting was charged %v s", now-spent)
	}
}

// TestLookupAnswerRightAfterAWaitAcrossChanges: while a lookup waits, a
// round regenerates the node; after the wait the answer is still the
// destination's listener; and a destination deleted during the wait is
// answered as absent (removed_resources), not served stale.
func TestLookupAnswerRightAfterAWaitAcrossChanges(t *testing.T) {
	h, a := overdrawn(t, harnessOpts{lookupBudget: 0.001, lookupBurst: 100 * time.Millisecond})
	lookUpOn(a, breakDests[2])
	wefttest.Eventually(t, "the lookup waits", func() bool { return lookupWaits(h) == 1 })
	h.change()
	if !quiet(a, 200*time.Millisecond) {
		t.Fatal("answered during the wait")
	}
	h.clock.Step(time.Minute)
	for {
		r := a.next()
		a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
		if slices.Contains(respNames(r), breakDests[2]) {
			break
		}
		if slices.Contains(r.GetRemovedResources(), breakDests[2]) {
			t.Fatalf("after a wait across a round: %s said not to exist", breakDests[2])
		}
	}

	// Deleted during the wait. (The round during the first wait generated
	// the destination, so the lookup regenerated nothing after it: the
	// budget is overdrawn again by hand.)
	g := h.srv.gen.(*costlyGen)
	h.srv.mu.Lock()
	h.srv.nodes["app-1.demo"].lookups.spend(time.Second)
	h.srv.mu.Unlock()
	lookUpOn(a, breakDests[3])
	wefttest.Eventually(t, "the lookup waits", func() bool { return lookupWaits(h) == 2 })
	g.setDests(breakDests[:3])
	h.change()
	h.clock.Step(10 * time.Minute)
	for {
		r := a.next()
		a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
		if slices.Contains(respNames(r), breakDests[3]) {
			t.Fatalf("a destination deleted during the wait was served")
		}
		if slices.Contains(r.GetRemovedResources(), breakDests[3]) {
			break
		}
	}

}

// TestLookupBudgetArithmeticBounds: a refill over any span stops at the
// burst (no overflow of left + span × rate), a charge past any debt stops
// at a floor, and the wait for the deepest debt is capped (a sidecar's
// lookup gives up after 5 s anyway; a wait of centuries is a refusal).
func TestLookupBudgetArithmeticBounds(t *testing.T) {
	t0 := wefttest.Epoch(t)
	var b lookupBudget
	b.refill(t0, 1, MaxLookupBurst)
	b.spend(math.MaxInt64)
	b.spend(math.MaxInt64)
	if b.left >= 0 || b.left < math.MinInt64/2 {
		t.Fatalf("after two charges of MaxInt64: %v", b.left)
	}
	b.refill(t0.Add(200*365*24*time.Hour), 1, MaxLookupBurst)
	if b.left != MaxLookupBurst {
		t.Errorf("after 200 years at a full core: %v, want the burst %v", b.left, MaxLookupBurst)
	}

	h, a := overdrawn(t, harnessOpts{lookupBudget: MinLookupBudget, lookupBurst: 100 * time.Millisecond})
	h.srv.mu.Lock()
	h.srv.nodes["app-1.demo"].lookups.spend(math.MaxInt64)
	h.srv.mu.Unlock()
	lookUpOn(a, breakDests[2])
	wefttest.Eventually(t, "the lookup waits", func() bool { return lookupWaits(h) == 1 })
	h.clock.Step(maxLookupWait - time.Millisecond)
	if !quiet(a, 100*time.Millisecond) {
		t.Fatal("answered before the longest wait")
	}
	h.clock.Step(time.Millisecond)
	answeredOn(t, a, breakDests[2])
}

// TestLookupOfAnAbsentDestinationWaits: a lookup of a destination that
// exists nowhere (most egress) regenerates nothing, but it still costs the
// control plane a watch whose making grows with what the node holds: past
// the budget it waits like any other.
func TestLookupOfAnAbsentDestinationWaits(t *testing.T) {
	h, a := overdrawn(t, harnessOpts{})
	const absent = "203.0.113.9:443"
	lookUpOn(a, absent)
	wefttest.Eventually(t, "the lookup waits", func() bool { return lookupWaits(h) == 1 })
	if !quiet(a, 100*time.Millisecond) {
		t.Fatal("an absent destination answered while the node is overdrawn")
	}
	h.clock.Step(140 * time.Millisecond)
	r := a.next()
	if !slices.Contains(r.GetRemovedResources(), absent) {
		t.Fatalf("after the wait: resources %v, removed %v; want %s removed", respNames(r), r.GetRemovedResources(), absent)
	}
}

// TestLookupWatchesCharged: the watch a looking-up node's request opens is
// charged to its budget (on the real clock: its making takes time), an
// absent destination's included; a node that does not look destinations
// up is charged nothing.
func TestLookupWatchesCharged(t *testing.T) {
	gen := &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}), dests: breakDests}
	h := newHarness(t, harnessOpts{gen: gen, realClock: true})
	spent := func() float64 { return testutil.ToFloat64(h.srv.metrics.lookupSeconds) }

	w := openDelta(h, saID("demo", "web"))
	w.send(&discovery.DeltaDiscoveryRequest{Node: node("web-1.demo"), TypeUrl: resource.ListenerType})
	rw := w.next()
	w.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: rw.GetNonce()})
	w.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	w.next()
	if s := spent(); s != 0 {
		t.Fatalf("a node that does not look destinations up was charged %v s", s)
	}

	a := openLookingUp(h, saID("demo", "app"), lookUpNode())
	first := spent()
	if first <= 0 {
		t.Fatalf("a looking-up node's first generation and watch charged %v s", first)
	}
	const absent = "203.0.113.9:443"
	lookUpOn(a, absent)
	r := a.next()
	if !slices.Contains(r.GetRemovedResources(), absent) {
		t.Fatalf("resources %v, removed %v; want %s removed", respNames(r), r.GetRemovedResources(), absent)
	}
	if s := spent(); s <= first {
		t.Errorf("an absent destination's lookup charged nothing (%v s before, %v after)", first, s)
	}
}

// TestWatchChargeReadsTheNodeLocked: watchSpent (absentCache's
// CreateDeltaWatch, every request) reads n.node under s.mu, which attach
// writes when another stream of the same node arrives (a race the race
// detector reported in its first version). Run with -race.
func TestWatchChargeReadsTheNodeLocked(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a := openDelta(h, saID("demo", "app"))
	a.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	r := a.next()
	// The ACK: its watch's watchSpent reads n.node with no lock held.
	a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: r.GetNonce()})
	time.Sleep(200 * time.Millisecond)
	// A second stream of the same node: attach writes n.node.
	b := openDelta(h, saID("demo", "app"))
	b.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	b.next()
}

// TestWildcardTogglesWait: a node that subscribes to "*" and unsubscribes
// from it again is regenerated at each (charged, 60 ms here), so past its
// budget those requests wait like a new destination's (in its first
// version only new destinations waited).
func TestWildcardTogglesWait(t *testing.T) {
	h, a := overdrawn(t, harnessOpts{}) // −14 ms; 0.1 of a core, burst 100 ms
	spent0 := testutil.ToFloat64(h.srv.metrics.lookupSeconds)
	a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{"*"}})
	wefttest.Eventually(t, "the wildcard's regeneration waits", func() bool { return lookupWaits(h) == 1 })
	if !quiet(a, 100*time.Millisecond) {
		t.Fatal("the wildcard answered before the wait ended")
	}
	h.clock.Step(140 * time.Millisecond) // the budget back to 0
	r := a.next()
	a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: r.GetNonce()})
	// Back from the wildcard: the budget is not overdrawn (no wait); the
	// regeneration for the destinations subscribed takes 60 ms, charged.
	a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNamesUnsubscribe: []string{"*"}})
	wefttest.Eventually(t, "the regeneration charged", func() bool {
		return testutil.ToFloat64(h.srv.metrics.lookupSeconds) >= spent0+0.06-1e-9
	})
	a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{"*"}})
	wefttest.Eventually(t, "the next wildcard waits", func() bool { return lookupWaits(h) == 2 })
}

// sharedBuildGen is a lookUpGen with translate.Generator's shape of cost:
// the first Generate of each mesh snapshot builds the mesh-wide shared set
// (translate/shared.go, s.once.Do(s.build); destinations.go, destOnce),
// build on the fake clock, whoever calls first; other calls wait for it.
type sharedBuildGen struct {
	*lookUpGen
	clock   interface{ Step(time.Duration) }
	build   time.Duration
	smu     sync.Mutex
	version int
	built   int // version built; -1: none
}

func (g *sharedBuildGen) Generate(n xds.Node) (xds.Resources, error) {
	g.Prepare()
	return g.lookUpGen.Generate(n)
}

// Prepare is translate.Generator's: the shared build, ahead of a node's
// generation.
func (g *sharedBuildGen) Prepare() {
	g.smu.Lock()
	defer g.smu.Unlock()
	if g.built != g.version {
		g.clock.Step(g.build)
		g.built = g.version
	}
}

// TestLookupNotChargedForTheMeshWideBuild: a lookup that comes after a
// mesh change and before its round (debounce: 100 ms to 1 s) would be the
// first Generate of the new snapshot, which builds the whole mesh's
// shared set (here 400 ms; the round's cost at scale), as would a node's
// first generation after a control-plane start. The server has the
// generator build it first (Prepare), uncharged: in its first version an
// ordinary sidecar, 3 lookups across 2 endpoint changes, ended up waiting
// (−280 ms: 5.6 s, past the sidecar's 5 s lookup timeout).
func TestLookupNotChargedForTheMeshWideBuild(t *testing.T) {
	gen := &sharedBuildGen{lookUpGen: &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}), dests: breakDests},
		build: 400 * time.Millisecond, built: -1}
	h := newHarness(t, harnessOpts{gen: gen})
	gen.clock = h.clock
	a := openLookingUp(h, saID("demo", "app"), lookUpNode())
	if s := testutil.ToFloat64(h.srv.metrics.lookupSeconds); s > 0.05 {
		t.Errorf("the node's first generation was charged %.0f ms: the mesh-wide build it waited for", s*1000)
	}
	for i, d := range breakDests[:3] {
		gen.smu.Lock()
		gen.version++ // an EndpointSlice changed; the registry published a new snapshot
		gen.smu.Unlock()
		lookUpOn(a, d)
		if quiet(a, time.Second) && lookupWaits(h) > 0 {
			t.Fatalf("lookup %d of an ordinary sidecar (after %d mesh changes) waits: %.0f ms charged, none of it its own generations",
				i+1, i+1, testutil.ToFloat64(h.srv.metrics.lookupSeconds)*1000)
		}
		a.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType})
	}
}
