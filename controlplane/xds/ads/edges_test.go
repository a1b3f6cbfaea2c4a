package ads

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/controlplane/xds"
	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// Tests of edges the mutation run of 2026-12-03 found unpinned
// ([test-honesty] #24, docs/mutation.md).

// TestPeerAddr: a refusal names the peer's address when gRPC knows it, and
// nothing (no panic) when it does not.
func TestPeerAddr(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15012}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"peer", peer.NewContext(context.Background(), &peer.Peer{Addr: addr}), "127.0.0.1:15012"},
		{"peer without an address", peer.NewContext(context.Background(), &peer.Peer{}), ""},
		{"no peer", context.Background(), ""},
	} {
		if got := peerAddr(tc.ctx); got != tc.want {
			t.Errorf("%s: peerAddr = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestNewDefaults: Config's zero Logger, Debounce and MaxDelay mean a
// discarding logger, 100ms and 1s (as documented on Config); values given
// are kept.
func TestNewDefaults(t *testing.T) {
	base := requiredConfig(t)
	s, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	if s.log == nil {
		t.Error("no Logger: the server has none (a refusal would panic), want a discarding one")
	}
	if s.debounce.quiet != 100*time.Millisecond || s.debounce.max != time.Second {
		t.Errorf("zero Debounce and MaxDelay gave %v and %v, want 100ms and 1s", s.debounce.quiet, s.debounce.max)
	}
	s.log.Warn("a discarding logger takes this") // must not panic

	logger := slog.New(slog.DiscardHandler)
	given := base
	given.Logger, given.Debounce, given.MaxDelay = logger, 300*time.Millisecond, 5*time.Second
	s, err = New(given)
	if err != nil {
		t.Fatal(err)
	}
	if s.log != logger {
		t.Error("the Logger given was replaced")
	}
	if s.debounce.quiet != 300*time.Millisecond || s.debounce.max != 5*time.Second {
		t.Errorf("Debounce 300ms and MaxDelay 5s gave %v and %v", s.debounce.quiet, s.debounce.max)
	}
}

// TestUnchangedSnapshotNotRepublished: a round that generates a node's
// snapshot unchanged (same versions) does not publish it again: the
// snapshot cache keeps the one it had.
func TestUnchangedSnapshotNotRepublished(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	connectSotW(h, saID("demo", "app"), "app-1.demo")
	before, err := h.srv.cache.GetSnapshot("app-1.demo")
	if err != nil {
		t.Fatal(err)
	}
	calls := h.gen.callCount("app-1.demo")
	h.change() // nothing of app-1's changed
	if got := h.gen.callCount("app-1.demo"); got != calls+1 {
		t.Fatalf("%d generations in the round, want 1", got-calls)
	}
	after, err := h.srv.cache.GetSnapshot("app-1.demo")
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatal("an unchanged snapshot was published again")
	}
	// A change of app-1's is published.
	h.gen.set(func(g *fakeGen) { g.rev["app-1.demo"] = 1 })
	h.change()
	if after, _ := h.srv.cache.GetSnapshot("app-1.demo"); after == before {
		t.Fatal("a changed snapshot was not published")
	}
}

// TestFreshDeltaRequestIsNotAResume: the first request of a type on a new
// delta stream, without initial_resource_versions, is not taken for a
// resume: a type the stream has been sent nothing of (here a listener
// that does not exist) is not SYNCED until an ACK says so.
func TestFreshDeltaRequestIsNotAResume(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{"no-such-listener"}})
	var ts TypeStatus
	wefttest.Eventually(t, "the listener type tracked", func() bool {
		ts = h.typeStatus("app-1.demo", resource.ListenerType)
		return ts.TypeURL != ""
	})
	if ts.State == StateSynced || ts.Acked != "" {
		t.Fatalf("a fresh subscription reported %s, acked %q: nothing was sent or ACKed", ts.State, ts.Acked)
	}
}

// TestNACKMessageAtTheLimit: a NACK message of exactly maxNACKMessage bytes
// is kept whole; one byte more is cut there.
func TestNACKMessageAtTheLimit(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	connectSotW(h, saID("demo", "app"), "app-1.demo")
	h.srv.mu.Lock()
	defer h.srv.mu.Unlock()
	var st *stream
	for _, s := range h.srv.streams {
		st = s
	}
	st.sent["x"] = sent{nonce: "9", version: "v9"}
	whole := strings.Repeat("e", maxNACKMessage)
	h.srv.track(st, "x", "9", "", statusWith(whole))
	if got := st.node.types["x"].nack.Message; got != whole {
		t.Fatalf("a NACK message of %d bytes became %d bytes (%q...)", len(whole), len(got), got[len(got)-min(len(got), 20):])
	}
	h.srv.track(st, "x", "9", "", statusWith(whole+"f"))
	if got := st.node.types["x"].nack.Message; got != whole+"...(truncated)" {
		t.Fatalf("a NACK message of %d bytes kept as %d bytes", len(whole)+1, len(got))
	}
}

// TestConsistencyFastPathRefuses: snapshots the reference check must
// refuse though their references and resources have a count or names in
// common: the fast path (references, referencedExactly) must not take
// them for consistent.
func TestConsistencyFastPathRefuses(t *testing.T) {
	static := func(name string) *clusterv3.Cluster {
		return &clusterv3.Cluster{
			Name: name, ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: name},
		}
	}
	ads := &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	eds := func(name, service string) *clusterv3.Cluster {
		return &clusterv3.Cluster{
			Name: name, ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads, ServiceName: service},
		}
	}
	cla := func(name string) *endpointv3.ClusterLoadAssignment {
		return &endpointv3.ClusterLoadAssignment{ClusterName: name}
	}
	missingRoutes := withRoutes(t, 0, "80") // the listener's route configuration "80" is not there
	missingRoutes[resource.ClusterType] = append(missingRoutes[resource.ClusterType], eds("outbound|81|api.demo", ""))
	for _, tc := range []struct {
		name string
		res  xds.Resources
	}{
		// A static cluster references no endpoints, whatever its name.
		{"static cluster named as the endpoints", xds.Resources{
			resource.ClusterType:  {static("a"), eds("b", "")},
			resource.EndpointType: {cla("a")},
		}},
		// An EDS cluster with a service name references that name, not its own.
		{"EDS service name", xds.Resources{
			resource.ClusterType:  {eds("a", "b")},
			resource.EndpointType: {cla("a")},
		}},
		// More references than resources, every resource referenced: some
		// references are missing (both clusters to endpoints and listeners
		// to routes).
		{"references missing", missingRoutes},
		// A scoped route configuration references its route configuration.
		{"scoped route's route configuration missing", xds.Resources{
			resource.ScopedRouteType: {&routev3.ScopedRouteConfiguration{Name: "scope", RouteConfigurationName: "r",
				Key: &routev3.ScopedRouteConfiguration_Key{Fragments: []*routev3.ScopedRouteConfiguration_Key_Fragment{{
					Type: &routev3.ScopedRouteConfiguration_Key_Fragment_StringKey{StringKey: "k"}}}}}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range []*resCache{nil, newResCache()} {
				if _, _, err := buildSnapshotCached(tc.res, c, nil); err == nil || !strings.Contains(err.Error(), "inconsistent snapshot") {
					t.Fatalf("cache %t: got %v, want an inconsistent snapshot", c != nil, err)
				}
			}
		})
	}
}

// slackClock is a fake clock that moves by move while the debouncer arms
// its second timer, as a test stepping the clock then might; it reports
// every timer armed.
type slackClock struct {
	*clocktesting.FakeClock
	move  time.Duration
	mu    sync.Mutex
	n     int
	armed chan int
}

func (c *slackClock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	if n == 2 {
		c.FakeClock.Step(c.move)
	}
	t := c.FakeClock.NewTimer(d)
	select {
	case c.armed <- n:
	default: // a loop arming timers without end: the test has failed already
	}
	return t
}

// TestDebounceArmSlack: a timer armed while the clock moved armSlack or
// less is kept (the round comes late by that much); one armed while it
// moved more is re-armed from the new time (the round comes on time).
func TestDebounceArmSlack(t *testing.T) {
	for _, tc := range []struct {
		move    time.Duration
		rearmed bool
		round   time.Duration
	}{
		{armSlack, false, 100*time.Millisecond + armSlack},
		{2 * armSlack, true, 100 * time.Millisecond},
	} {
		t.Run(tc.move.String(), func(t *testing.T) {
			c := &slackClock{FakeClock: wefttest.FakeClock(t), move: tc.move, armed: make(chan int, 1000)}
			t0 := c.Now()
			fired := make(chan time.Duration, 10)
			d := newDebouncer(c, 100*time.Millisecond, time.Second, func() { fired <- c.Since(t0) })
			// The change comes before the loop runs, so its kick is
			// waiting: the loop arms a timer, takes the kick (the timer
			// stopped) and arms the second, which the move is made for;
			// no other kick can come.
			d.changed()
			ctx, cancel := context.WithCancel(context.Background())
			stopped := make(chan struct{})
			go func() { defer close(stopped); d.run(ctx) }()
			defer func() {
				cancel()
				// Bounded: a loop that re-arms without end never looks at
				// ctx, and the failure it caused must still be reported.
				select {
				case <-stopped:
				case <-time.After(wefttest.EventuallyTimeout):
					t.Error("the debouncer did not stop")
				}
			}()
			for want := 1; want <= 2; want++ {
				if n := wefttest.Receive(t, c.armed, "a timer"); n != want {
					t.Fatalf("timer %d, want %d", n, want)
				}
			}
			if tc.rearmed {
				wefttest.Receive(t, c.armed, "the timer re-armed")
			} else {
				// Re-arming takes the loop microseconds; a second timer
				// within a second is one.
				select {
				case n := <-c.armed:
					t.Fatalf("timer %d armed: a move of armSlack re-armed the timer", n)
				case <-time.After(time.Second):
				}
			}
			c.Step(100*time.Millisecond - tc.move) // t0 + 100ms
			if tc.round > 100*time.Millisecond {
				select {
				case at := <-fired:
					t.Fatalf("round at %v, want %v", at, tc.round)
				case <-time.After(100 * time.Millisecond): // a round would come at once
				}
				c.Step(tc.round - 100*time.Millisecond)
			}
			if at := wefttest.Receive(t, fired, "the round"); at != tc.round {
				t.Fatalf("round at %v, want %v", at, tc.round)
			}
		})
	}
}

// TestDeltaResumeOfSomeOfAType: a delta stream that resumes subscribing by
// name to some of a type's resources, holding exactly those, is SYNCED
// though it holds none of the others (go-control-plane sends it nothing);
// one that resumes the whole type (no names) holding a version that
// differs is not SYNCED until it ACKs what it is sent.
func TestDeltaResumeOfSomeOfAType(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	held := map[string]string{}
	for _, res := range c.next().GetResources() {
		held[res.GetName()] = res.GetVersion()
	}
	if len(held) != 2 {
		t.Fatalf("listeners %v, want inbound and outbound", held)
	}
	c.cancel()
	wefttest.Eventually(t, "the node forgotten", func() bool { return len(h.srv.Status()) == 0 })

	c = openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{"inbound"}, InitialResourceVersions: map[string]string{"inbound": held["inbound"]}})
	wefttest.Eventually(t, "listeners SYNCED", func() bool {
		return h.typeStatus("app-1.demo", resource.ListenerType).State == StateSynced
	})
	c.cancel()
	wefttest.Eventually(t, "the node forgotten", func() bool { return len(h.srv.Status()) == 0 })

	c = openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType,
		InitialResourceVersions: map[string]string{"inbound": held["inbound"], "outbound": "an older version"}})
	r := c.next() // sent after the request was tracked
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "outbound" {
		t.Fatalf("sent %v, want outbound only", r.GetResources())
	}
	if ts := h.typeStatus("app-1.demo", resource.ListenerType); ts.State == StateSynced || ts.Acked != "" {
		t.Fatalf("before its ACK, a stream holding an older outbound is %s, acked %q", ts.State, ts.Acked)
	}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	wefttest.Eventually(t, "listeners SYNCED after the ACK", func() bool {
		return h.typeStatus("app-1.demo", resource.ListenerType).State == StateSynced
	})
}
