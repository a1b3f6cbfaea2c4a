package ads

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/controlplane/xds"
	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// costlyGen is a lookUpGen whose generations of one node (costly, by
// pod name) that holds destinations take cost on the fake clock.
type costlyGen struct {
	*lookUpGen
	clock  *testingclock.FakeClock
	costly string
	cost   time.Duration
}

func (g *costlyGen) Generate(n xds.Node) (xds.Resources, error) {
	if n.Name == g.costly && len(n.Destinations) > 0 {
		g.clock.Step(g.cost)
	}
	return g.lookUpGen.Generate(n)
}

// openLookingUp opens a delta stream as id for node, a node that looks
// destinations up: its listeners by name, inbound and outbound, answered
// and ACKed.
func openLookingUp(h *harness, id spiffeid.ID, node *corev3.Node) *deltaClient {
	h.t.Helper()
	c := openDelta(h, id)
	c.send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{"inbound", "outbound"}})
	r := c.next()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: r.GetNonce()})
	return c
}

// TestLookupsSpendABudget: a sidecar whose app opens connections to one
// new destination after another (each a lookup: the node generated
// again at once) spends its node's lookup budget, and past it each lookup
// waits, on its own stream, until the budget allows (counted), while
// another node's lookups go on. Budget 0.1 of a core, burst 100 ms; each
// generation of the hostile node takes 60 ms: the first two lookups
// spend 100 − 60 + 6 − 60 = −14 ms, so the third waits 140 ms.
func TestLookupsSpendABudget(t *testing.T) {
	dests := []string{"198.19.0.10:80", "198.19.0.11:80", "198.19.0.12:80"}
	gen := &costlyGen{lookUpGen: &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}), dests: dests},
		costly: "app-1", cost: 60 * time.Millisecond}
	h := newHarness(t, harnessOpts{gen: gen, lookupBudget: 0.1, lookupBurst: 100 * time.Millisecond})
	gen.clock = h.clock
	waits := func() float64 { return testutil.ToFloat64(h.srv.metrics.lookupWaits) }

	a := openLookingUp(h, saID("demo", "app"), lookUpNode())
	lookUp := func(c *adsClient[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse], d string) {
		t.Helper()
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{d}})
	}
	answered := func(c *adsClient[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse], d string) {
		t.Helper()
		r := c.next()
		if got := respNames(r); !slices.Contains(got, d) {
			t.Fatalf("lookup of %s answered with %v", d, got)
		}
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: r.GetNonce()})
	}
	for _, d := range dests[:2] {
		lookUp(a, d)
		answered(a, d)
	}
	if w := waits(); w != 0 {
		t.Fatalf("%v lookups waited within the burst", w)
	}

	lookUp(a, dests[2])
	wefttest.Eventually(t, "the third lookup waits", func() bool { return waits() == 1 })
	select {
	case r := <-a.resps:
		t.Fatalf("the third lookup answered before its node's budget allowed: %v", respNames(r))
	case <-time.After(100 * time.Millisecond):
	}

	// Another node looks the same destination up meanwhile: its budget is
	// its own.
	b := openLookingUp(h, saID("demo", "web"), lookUpNodeAs("web-1.demo"))
	lookUp(b, dests[2])
	answered(b, dests[2])

	h.clock.Step(130 * time.Millisecond)
	select {
	case r := <-a.resps:
		t.Fatalf("the third lookup answered 130 ms into a 140 ms wait: %v", respNames(r))
	case <-time.After(100 * time.Millisecond):
	}
	h.clock.Step(10 * time.Millisecond)
	answered(a, dests[2])
	if w := waits(); w != 1 {
		t.Fatalf("%v lookups waited, want 1", w)
	}
	if spent := testutil.ToFloat64(h.srv.metrics.lookupSeconds); spent < 0.18 {
		t.Errorf("lookup regeneration seconds %v, want at least the three of 60 ms", spent)
	}
}

// TestLookupBudgetConfig: a budget outside [MinLookupBudget, 1] of a core
// (NaN included), or a burst outside (0, MaxLookupBurst], is refused; 0
// is the default.
func TestLookupBudgetConfig(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, bad := range []Config{{LookupBudget: -0.1}, {LookupBudget: 1.5}, {LookupBudget: math.NaN()}, {LookupBudget: 1e-12},
		{LookupBudget: math.Inf(1)}, {LookupBurst: -time.Second}, {LookupBurst: MaxLookupBurst + 1}} {
		cfg := Config{Generator: h.gen, Authorizer: h.auth, Bundle: h.ca.Bundle(), LookupBudget: bad.LookupBudget, LookupBurst: bad.LookupBurst}
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "lookup budget") {
			t.Errorf("New(budget %v, burst %v): %v, want the lookup budget refused", bad.LookupBudget, bad.LookupBurst, err)
		}
	}
	for _, ok := range []Config{{LookupBudget: MinLookupBudget}, {LookupBudget: 1}, {LookupBurst: MaxLookupBurst}, {LookupBurst: time.Nanosecond}} {
		cfg := Config{Generator: h.gen, Authorizer: h.auth, Bundle: h.ca.Bundle(), LookupBudget: ok.LookupBudget, LookupBurst: ok.LookupBurst}
		if _, err := New(cfg); err != nil {
			t.Errorf("New(budget %v, burst %v): %v", ok.LookupBudget, ok.LookupBurst, err)
		}
	}
	cfg := Config{Generator: h.gen, Authorizer: h.auth, Bundle: h.ca.Bundle()}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.lookupRate != DefaultLookupBudget || s.lookupBurst != DefaultLookupBurst {
		t.Errorf("defaults: budget %v, burst %v; want %v, %v", s.lookupRate, s.lookupBurst, DefaultLookupBudget, DefaultLookupBurst)
	}
}
