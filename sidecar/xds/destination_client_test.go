package xds

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	snapv3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// servedCache is a snapshot cache serving r to testNode as version v1.
func servedCache(t *testing.T, r envoySet) snapv3.SnapshotCache {
	t.Helper()
	byType := map[resource.Type][]cachev3.Resource{}
	for typ, rs := range r {
		for _, m := range rs {
			byType[typ] = append(byType[typ], m.(cachev3.Resource))
		}
	}
	snap, err := snapv3.NewSnapshot("v1", byType)
	if err != nil {
		t.Fatal(err)
	}
	cache := snapv3.NewSnapshotCache(true, snapv3.IDHash{}, nil)
	if err := cache.SetSnapshot(context.Background(), testNode, snap); err != nil {
		t.Fatal(err)
	}
	return cache
}

// stepQuarters waits until the fake clock has a waiter (the sweep timer,
// re-armed when it fires) and steps it by d, n times.
func stepQuarters(t *testing.T, clk interface {
	HasWaiters() bool
	Step(time.Duration)
}, d time.Duration, n int) {
	t.Helper()
	for range n {
		for deadline := time.Now().Add(timeout); !clk.HasWaiters(); time.Sleep(time.Millisecond) { // polling, not pacing
			if time.Now().After(deadline) {
				t.Fatal("the sweep timer was not re-armed")
			}
		}
		clk.Step(d)
	}
}

// TestDestinationLookUps, against go-control-plane's own delta server: a
// client that looks destinations up, capped at 2, asks for each by name
// and returns a configuration holding its listener; with both held by
// connections still deciding, a third is refused (ErrTooManyDestinations),
// never evicting one in use; once one is released, the third evicts it
// (unsubscribed); released destinations stay until OnDemandIdle has passed
// since their release, then are forgotten and unsubscribed.
func TestDestinationLookUps(t *testing.T) {
	r := mesh{services: []string{"server.demo", "other.demo", "third.demo"}}.envoy(t)
	aps := toDestinations(t, r)
	if len(aps) != 3 {
		t.Fatalf("moved %d chains, want 3", len(aps))
	}
	slices.SortFunc(aps, netip.AddrPort.Compare)
	cache := servedCache(t, r)
	p := startPeer(t, "127.0.0.1:0", cache)
	clk := testutil.FakeClock(t)
	c, err := New(ClientConfig{
		NodeID: testNode, Delta: true, OnDemand: true, DestinationListeners: true, MaxDestinations: 2, OnDemandIdle: idle, Clock: clk,
		Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		Dial: func(context.Context) (grpc.ClientConnInterface, error) {
			return grpc.NewClient("passthrough:///"+p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c.Run)
	waitReady(t, c)

	lookUp := func(ap netip.AddrPort) (func(), error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cfg, release, err := c.Destination(ctx, ap)
		if err == nil && cfg.Destinations[ap] == nil {
			t.Fatalf("Destination(%s) returned a configuration without its listener", ap)
		}
		return release, err
	}
	held := func(want ...netip.AddrPort) {
		t.Helper()
		var names_ []string
		for _, ap := range want {
			names_ = append(names_, names.DestinationListener(ap))
		}
		slices.Sort(names_)
		if got := c.Status().Destinations; !slices.Equal(got, names_) {
			t.Fatalf("destinations held %q, want %q", got, names_)
		}
	}
	unsubscribed := func(what string, ap ...netip.AddrPort) {
		t.Helper()
		var want []string
		for _, a := range ap {
			want = append(want, names.DestinationListener(a))
		}
		slices.Sort(want)
		p.waitDelta(t, what, func(r *discoveryv3.DeltaDiscoveryRequest) bool {
			got := slices.Sorted(slices.Values(r.GetResourceNamesUnsubscribe()))
			return r.GetTypeUrl() == model.ListenerType && slices.Equal(got, want)
		})
	}

	rel0, err := lookUp(aps[0])
	if err != nil {
		t.Fatalf("first lookup: %v", err)
	}
	rel1, err := lookUp(aps[1])
	if err != nil {
		t.Fatalf("second lookup: %v", err)
	}
	held(aps[0], aps[1])
	if _, err := lookUp(aps[2]); !errors.Is(err, ErrTooManyDestinations) {
		t.Fatalf("a third lookup with 2 held by connections deciding: %v, want ErrTooManyDestinations", err)
	}
	held(aps[0], aps[1])

	rel0()
	rel2, err := lookUp(aps[2])
	if err != nil {
		t.Fatalf("a third lookup with one released: %v", err)
	}
	held(aps[1], aps[2])
	unsubscribed("the evicted destination unsubscribed", aps[0])

	// Idle: released at the fake clock's start, kept for OnDemandIdle,
	// swept every quarter of it.
	rel1()
	rel2()
	stepQuarters(t, clk, idle/4, 3)
	time.Sleep(50 * time.Millisecond) // a sweep that would forget them has had time to
	held(aps[1], aps[2])
	stepQuarters(t, clk, idle/4, 1)
	unsubscribed("the idle destinations unsubscribed", aps[1], aps[2])
	held()
}

// TestMaxDestinationsDefault: no cap, or a negative one, is the default.
func TestMaxDestinationsDefault(t *testing.T) {
	for _, n := range []int{0, -1} {
		c, err := New(ClientConfig{NodeID: testNode, Dial: nopDial, Delta: true, OnDemand: true, DestinationListeners: true, MaxDestinations: n})
		if err != nil {
			t.Fatal(err)
		}
		if c.cfg.MaxDestinations != DefaultMaxDestinations {
			t.Errorf("MaxDestinations %d: %d, want %d", n, c.cfg.MaxDestinations, DefaultMaxDestinations)
		}
	}
}

// TestDestinationForgottenAndAskedAgain: a destination forgotten (evicted
// or idle) and looked up again before the stream's loop ran, so that the
// stream still subscribes to its name, is unsubscribed and subscribed
// again, and answered afresh: the control plane answers a name when it is
// newly subscribed, not again. The race's outcome is made here directly
// (the destination's entry replaced by a new one, as Destination makes
// after an eviction) rather than by timing. And a wake-up with nothing
// forgotten sends no listener request at all.
func TestDestinationForgottenAndAskedAgain(t *testing.T) {
	r := mesh{services: []string{"server.demo"}}.envoy(t)
	aps := toDestinations(t, r)
	cache := servedCache(t, r)
	p := startPeer(t, "127.0.0.1:0", cache)
	c := startLookUp(t, p.addr)
	waitReady(t, c)
	ap, name := aps[0], names.DestinationListener(aps[0])
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, release, err := c.Destination(ctx, ap)
	if err != nil {
		t.Fatal(err)
	}
	release()
	p.waitDelta(t, "the destination subscribed", func(r *discoveryv3.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == model.ListenerType && slices.Contains(r.GetResourceNamesSubscribe(), name)
	})

	// Wake-ups with nothing new: no listener request but ACKs.
	p.mu.Lock()
	before := len(p.delta)
	p.mu.Unlock()
	for range 3 {
		c.wake <- struct{}{}
	}
	time.Sleep(100 * time.Millisecond) // the loop has had time to send one
	p.mu.Lock()
	for _, r := range p.delta[before:] {
		if r.GetTypeUrl() == model.ListenerType && r.GetResponseNonce() == "" {
			t.Errorf("a wake-up with nothing new sent a listener request: subscribe %q, unsubscribe %q",
				r.GetResourceNamesSubscribe(), r.GetResourceNamesUnsubscribe())
		}
	}
	p.mu.Unlock()

	// Forgotten and asked again before the loop ran.
	again := &destDemand{answered: make(chan struct{}), refs: 1}
	c.mu.Lock()
	c.dests[name] = again
	c.mu.Unlock()
	c.wake <- struct{}{}
	p.waitDelta(t, "the stale destination unsubscribed", func(r *discoveryv3.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == model.ListenerType && slices.Equal(r.GetResourceNamesUnsubscribe(), []string{name})
	})
	select {
	case <-again.answered:
	case <-time.After(timeout):
		t.Fatalf("the destination asked again was not answered afresh; status %+v", c.Status())
	}
}

// answerAbsent is go-control-plane's snapshot cache answering a name
// newly subscribed to that the snapshot lacks with its name in
// removed_resources, as weft's control plane does (controlplane/xds/ads,
// absentCache): go-control-plane's own never answers one.
type answerAbsent struct{ snapv3.SnapshotCache }

type returnedAs struct {
	snapv3.Subscription
	returned map[string]string
}

func (s returnedAs) ReturnedResources() map[string]string { return s.returned }

func (c answerAbsent) CreateDeltaWatch(req *snapv3.DeltaRequest, sub snapv3.Subscription, ch chan snapv3.DeltaResponse) (func(), error) {
	returned := maps.Clone(sub.ReturnedResources())
	if returned == nil {
		returned = map[string]string{}
	}
	subscribed := sub.SubscribedResources()
	for _, n := range req.GetResourceNamesSubscribe() {
		if _, ok := subscribed[n]; !ok {
			continue
		}
		if _, ok := returned[n]; !ok {
			returned[n] = ""
		}
	}
	return c.SnapshotCache.CreateDeltaWatch(req, returnedAs{sub, returned}, ch)
}

// TestAbsentAnsweredAtOnce: against a control plane that says what it does
// not have (as weft's does), a destination no listener is made for is
// decided at once by the outbound listener (and stays looked up, absent),
// and a cluster demanded that the control plane lacks fails its connection
// at once with ErrNoSuchCluster, not after the caller's deadline.
func TestAbsentAnsweredAtOnce(t *testing.T) {
	r := mesh{services: []string{"server.demo"}}.envoy(t)
	toDestinations(t, r)
	cache := servedCache(t, r)
	p := startPeer(t, "127.0.0.1:0", answerAbsent{cache})
	c := startLookUp(t, p.addr)
	waitReady(t, c)

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	egress := netip.MustParseAddrPort("198.18.251.7:443")
	cfg, release, err := c.Destination(ctx, egress)
	if err != nil {
		t.Fatalf("Destination of an address no Service has: %v", err)
	}
	release()
	if l := cfg.OutboundFor(egress); l != cfg.Outbound {
		t.Errorf("an absent destination decided by %v, want the outbound listener", l)
	}
	if got := c.Status().Destinations; !slices.Equal(got, []string{names.DestinationListener(egress)}) {
		t.Errorf("destinations looked up %q", got)
	}

	_, _, err = c.Demand(ctx, "outbound|80|nowhere.demo")
	if !errors.Is(err, ErrNoSuchCluster) {
		t.Fatalf("Demand of a cluster the control plane says it lacks: %v, want ErrNoSuchCluster", err)
	}
	if ctx.Err() != nil {
		t.Fatal("answered only at the caller's deadline")
	}
}

// TestOnDemandNotReadyWithoutListeners: an on-demand client that has
// received only the trust bundle (and an empty listener response) is not
// ready: it waits for the inbound and outbound listeners, not for
// clusters, which it asks for by name once the listeners say which.
func TestOnDemandNotReadyWithoutListeners(t *testing.T) {
	r := mesh{services: []string{"server.demo"}}.envoy(t)
	cache := servedCache(t, envoySet{model.SecretType: r[model.SecretType]})
	p := startPeer(t, "127.0.0.1:0", cache)
	c := startOnDemand(t, p.addr, nil)
	testutil.Eventually(t, "the trust bundle accepted", func() bool { return c.Status().Acks > 0 })
	st := c.Status()
	if st.Ready || !slices.ContainsFunc(st.Waiting, func(w string) bool { return strings.HasPrefix(w, "listener") }) || slices.Contains(st.Waiting, "clusters") {
		t.Fatalf("with only the trust bundle: ready %v, waiting for %q; want not ready, waiting for listeners and not clusters", st.Ready, st.Waiting)
	}
}
