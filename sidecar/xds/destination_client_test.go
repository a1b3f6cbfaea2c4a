package xds

import (
	"context"
	"errors"
	"net/netip"
	"slices"
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
	quarter := func() {
		t.Helper()
		for deadline := time.Now().Add(timeout); !clk.HasWaiters(); time.Sleep(time.Millisecond) { // polling, not pacing
			if time.Now().After(deadline) {
				t.Fatal("the sweep timer was not re-armed")
			}
		}
		clk.Step(idle / 4)
	}
	for range 3 {
		quarter()
	}
	time.Sleep(50 * time.Millisecond) // a sweep that would forget them has had time to
	held(aps[1], aps[2])
	quarter()
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
