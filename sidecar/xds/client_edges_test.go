package xds

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/testutil"
	listenerv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/listener/v3"
	discoveryv3 "github.com/weftmesh/weft/sidecar/internal/envoy/service/discovery/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Tests of edges the mutation run of 2026-12-03 found unpinned
// ([test-honesty] #24, docs/mutation.md).

// TestNewClientConfig: what New requires and the Backoff it defaults: a
// zero Initial is 500ms, a Max under Initial (zero included) is 30s or
// Initial if longer; values given are kept, a Max equal to Initial too.
func TestNewClientConfig(t *testing.T) {
	if _, err := New(ClientConfig{NodeID: testNode}); err == nil || err.Error() != "xds: Conn or Dial is required" {
		t.Errorf("neither Conn nor Dial: %v", err)
	}
	if _, err := New(ClientConfig{NodeID: testNode, Conn: &grpc.ClientConn{}}); err != nil {
		t.Errorf("Conn alone: %v", err)
	}
	if _, err := New(ClientConfig{NodeID: testNode, Dial: nopDial}); err != nil {
		t.Errorf("Dial alone: %v", err)
	}
	for _, tc := range []struct {
		in, want Backoff
	}{
		{Backoff{}, Backoff{500 * time.Millisecond, 30 * time.Second}},
		{Backoff{Initial: -time.Second}, Backoff{500 * time.Millisecond, 30 * time.Second}},
		{Backoff{Initial: time.Second, Max: 5 * time.Second}, Backoff{time.Second, 5 * time.Second}},
		{Backoff{Initial: time.Second, Max: time.Second}, Backoff{time.Second, time.Second}},
		{Backoff{Initial: time.Second, Max: time.Millisecond}, Backoff{time.Second, 30 * time.Second}},
		{Backoff{Initial: time.Minute}, Backoff{time.Minute, time.Minute}},
	} {
		c, err := New(ClientConfig{NodeID: testNode, Dial: nopDial, Backoff: tc.in})
		if err != nil {
			t.Fatal(err)
		}
		if c.cfg.Backoff != tc.want {
			t.Errorf("Backoff %+v became %+v, want %+v", tc.in, c.cfg.Backoff, tc.want)
		}
	}
}

// TestBackoffDelayOfTinyDurations: the jitter is drawn from [d/2, d] for
// every positive d, the shortest ones too (rand.N panics on an empty
// range).
func TestBackoffDelayOfTinyDurations(t *testing.T) {
	for _, d := range []time.Duration{1, 2, 3, 4} {
		b := Backoff{Initial: d, Max: d}
		for range 100 {
			if got := b.delay(0); got < d/2 || got > d {
				t.Fatalf("delay of %v: %v", d, got)
			}
		}
	}
}

// TestMessageTooLarge: a stream ended by a message too large is gRPC's
// ResourceExhausted or an error that says so in words; nothing else is,
// no error included.
func TestMessageTooLarge(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.ResourceExhausted, "grpc: received message larger than max (5 vs. 4)"), true},
		{status.Error(codes.ResourceExhausted, "quota"), true},
		{fmt.Errorf("xds: recv: %w", errors.New("trying to send message larger than max (9 vs. 8)")), true},
		{status.Error(codes.Unavailable, "connection refused"), false},
		{errors.New("EOF"), false},
		{nil, false},
	} {
		if got := messageTooLarge(tc.err); got != tc.want {
			t.Errorf("messageTooLarge(%v) = %t, want %t", tc.err, got, tc.want)
		}
	}
}

// TestStatusCounts: every ACK (of a response that changes nothing, or of
// one that leaves the configuration incomplete) and every NACK is counted
// once, by resource kind.
func TestStatusCounts(t *testing.T) {
	c, err := New(ClientConfig{NodeID: testNode, Dial: nopDial})
	if err != nil {
		t.Fatal(err)
	}
	c.accepted(nil)
	c.accepted(&model.Config{}) // no clusters or listeners received: incomplete
	c.rejected(model.ListenerType, "v2", errors.New("bad"))
	c.rejected(model.ListenerType, "v3", errors.New("bad"))
	st := c.Status()
	if st.Acks != 2 || st.Nacks["listener"] != 2 || len(st.Nacks) != 1 {
		t.Errorf("acks %d, NACKs %v; want 2 and listener 2", st.Acks, st.Nacks)
	}
}

// TestReconnectsCounted: Status.Reconnects counts the streams after the
// first.
func TestReconnectsCounted(t *testing.T) {
	clock := testutil.FakeClock(t)
	var dials atomic.Int32
	c, err := New(ClientConfig{NodeID: testNode, Clock: clock, Backoff: Backoff{Initial: time.Second, Max: time.Second},
		Dial: func(context.Context) (grpc.ClientConnInterface, error) {
			dials.Add(1)
			return nil, errors.New("control plane away")
		}})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c.Run)
	for n := int32(1); n <= 3; n++ {
		testutil.Eventually(t, fmt.Sprintf("dial %d failed, its backoff armed", n), func() bool {
			return dials.Load() == n && clock.HasWaiters()
		})
		if got := c.Status().Reconnects; got != uint64(n-1) {
			t.Fatalf("after %d streams: %d reconnects, want %d", n, got, n-1)
		}
		clock.Step(time.Second)
	}
}

// TestApplyOnlyWhatChanges: a response of the version accepted with the
// same resources changes nothing (nil: no new configuration); a new
// version of the same resources is a configuration of that version.
func TestApplyOnlyWhatChanges(t *testing.T) {
	c, err := New(ClientConfig{NodeID: testNode, Dial: nopDial})
	if err != nil {
		t.Fatal(err)
	}
	res := mesh{services: []string{"server.demo"}}.resources(t)
	u := func(version string) update {
		u := update{typeURL: model.ClusterType, version: version, upsert: map[string]entry{}, full: true}
		for _, r := range res[model.ClusterType] {
			m, err := toSubset(r)
			if err != nil {
				t.Fatal(err)
			}
			u.upsert[resourceName(r)] = entry{msg: m}
		}
		return u
	}
	if cfg, err := c.apply(u("v1")); err != nil || cfg == nil {
		t.Fatalf("first clusters: %v, %v", cfg, err)
	}
	if cfg, err := c.apply(u("v1")); err != nil || cfg != nil {
		t.Fatalf("the same response again: %v, %v; want nothing", cfg, err)
	}
	cfg, err := c.apply(u("v2"))
	if err != nil || cfg == nil || cfg.Version[model.ClusterType] != "v2" {
		t.Fatalf("the same clusters as v2: %v, %v; want a configuration of v2", cfg, err)
	}
}

func TestNACKKeepsTheStreamSotW(t *testing.T)  { testNACKKeepsTheStream(t, false) }
func TestNACKKeepsTheStreamDelta(t *testing.T) { testNACKKeepsTheStream(t, true) }

// testNACKKeepsTheStream: a response the client NACKs leaves the stream
// open: the next good configuration comes on it, with no reconnect.
func testNACKKeepsTheStream(t *testing.T, delta bool) {
	v1 := mesh{services: []string{"server.demo"}}
	cache, _, c := serveV1(t, v1, delta)
	waitConfig(t, c, "v1", func(*model.Config) bool { return true })

	bad := v1
	bad.extraFilter = "envoy.filters.network.redis_proxy"
	setSnapshot(t, cache, bad, "v2")
	testutil.Eventually(t, "the NACK of v2", func() bool { return c.Status().Nacks["listener"] > 0 })
	setSnapshot(t, cache, mesh{services: []string{"server.demo", "third.demo"}}, "v3")
	waitConfig(t, c, "v3", func(cfg *model.Config) bool { return cfg.Version[model.ListenerType] == "v3" })
	if st := c.Status(); st.Reconnects != 0 {
		t.Errorf("%d reconnects after a NACK (last error %q): the stream ended", st.Reconnects, st.LastError)
	}
}

// TestLateAnswers: a resource is a late answer to an earlier request
// (dropped) when it was requested by name once and is no longer:
// endpoints, routes, the trust bundle and, on demand, clusters. A type
// subscribed to as a wildcard (listeners, and clusters when not on demand)
// names nothing, so nothing of it is late.
func TestLateAnswers(t *testing.T) {
	s := newSubscriptions()
	for _, typ := range subscribeOrder {
		s.set(typ, []string{"old"})
		s.set(typ, []string{"new"})
	}
	for _, typ := range subscribeOrder {
		if !s.late(typ, "old") {
			t.Errorf("%s \"old\", requested before: not late", kindName(typ))
		}
		if s.late(typ, "new") || s.late(typ, "never") {
			t.Errorf("%s: a name requested now, or never, taken for a late answer", kindName(typ))
		}
	}
	w := newSubscriptions()
	w.set(model.ListenerType, nil)
	w.set(model.ListenerType, nil)
	if w.late(model.ListenerType, "old") {
		t.Error("a wildcard subscription's resource taken for a late answer")
	}
}

// TestSotWListenersComeWhole: a SotW listener response is the whole set:
// a listener it leaves out is gone (here outbound, so the configuration
// is refused), not kept from the last response.
func TestSotWListenersComeWhole(t *testing.T) {
	c, err := New(ClientConfig{NodeID: testNode, Dial: nopDial})
	if err != nil {
		t.Fatal(err)
	}
	env := mesh{services: []string{"server.demo"}}.envoy(t)
	s := &sotwStream{subscriptions: newSubscriptions(), nonce: map[string]string{}, rejected: map[string]string{}, repeats: map[string]int{}}
	resp := func(typ, version string, names ...string) *discoveryv3.DiscoveryResponse {
		r := &discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: version}
		for name, m := range env[typ] {
			if len(names) > 0 && !slices.Contains(names, name) {
				continue
			}
			a, err := anypb.New(m)
			if err != nil {
				t.Fatal(err)
			}
			r.Resources = append(r.Resources, a)
		}
		return r
	}
	for _, typ := range []string{model.ClusterType, model.ListenerType} {
		if _, err := c.applySotw(s, resp(typ, "v1")); err != nil {
			t.Fatalf("%s: %v", kindName(typ), err)
		}
	}
	if len(env[model.ListenerType]) < 2 || env[model.ListenerType]["inbound"] == nil {
		t.Fatalf("fixture listeners: %v", slices.Collect(maps.Keys(env[model.ListenerType])))
	}
	if _, err := c.applySotw(s, resp(model.ListenerType, "v2", "inbound")); err != nil {
		t.Logf("listeners without outbound refused: %v", err)
		return
	}
	if _, kept := c.res[model.ListenerType]["outbound"]; kept {
		t.Fatal("a listener the SotW response left out was kept")
	}
}

// TestSotWRepeatedNACK: a SotW response the client rejects is NACKed at
// once; the same version sent again is NACKed only after a backoff (of
// the second attempt: 1 to 2 s with Initial 1 s), and the stream goes on:
// the next good version arrives on it.
func TestSotWRepeatedNACK(t *testing.T) {
	clock := testutil.FakeClock(t)
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	v1 := mesh{services: []string{"server.demo"}}
	setSnapshot(t, cache, v1, "v1")
	p := startPeer(t, "127.0.0.1:0", cache)
	c, err := New(ClientConfig{NodeID: testNode, Clock: clock, Backoff: Backoff{Initial: time.Second, Max: 8 * time.Second},
		Dial: func(context.Context) (grpc.ClientConnInterface, error) {
			return grpc.NewClient("passthrough:///"+p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c.Run)
	waitConfig(t, c, "v1", func(*model.Config) bool { return true })

	count := func() int { // listener NACKs the peer received
		p.mu.Lock()
		defer p.mu.Unlock()
		n := 0
		for _, r := range p.sotw {
			if r.GetTypeUrl() == model.ListenerType && r.GetErrorDetail() != nil {
				n++
			}
		}
		return n
	}

	bad := v1
	bad.extraFilter = "envoy.filters.network.redis_proxy"
	setSnapshot(t, cache, bad, "v2")
	testutil.Eventually(t, "the first NACK, sent without waiting", func() bool { return count() == 1 })
	testutil.Eventually(t, "v2 sent again, its NACK held back", func() bool { return c.Status().Nacks["listener"] == 2 && clock.HasWaiters() })
	clock.Step(999 * time.Millisecond)
	select {
	case <-time.After(200 * time.Millisecond): // a NACK due now would be sent at once
	}
	if n := count(); n != 1 {
		t.Fatalf("%d NACKs 999ms after the repeat, want 1: the backoff of a repeat is 1-2 s", n)
	}
	clock.Step(time.Second)
	testutil.Eventually(t, "the held-back NACK", func() bool { return count() >= 2 })
	// The server answers the NACK with v2 once more, the client holds that
	// NACK back again (2-4 s); v3 comes after it, on the same stream.
	testutil.Eventually(t, "the third v2 held back", func() bool { return c.Status().Nacks["listener"] == 3 && clock.HasWaiters() })
	setSnapshot(t, cache, mesh{services: []string{"server.demo", "third.demo"}}, "v3")
	clock.Step(4 * time.Second)
	waitConfig(t, c, "v3", func(cfg *model.Config) bool { return cfg.Version[model.ListenerType] == "v3" })
	if st := c.Status(); st.Reconnects != 0 {
		t.Errorf("%d reconnects (last error %q): a held-back NACK ended the stream", st.Reconnects, st.LastError)
	}
}

// TestListenersBuiltOnce: an update that leaves the listeners alone
// rebuilds the configuration with the listeners already built (the same
// model), equal to what a fresh Build of every resource makes; the client
// keeps an accepted listener as built, not decoded; a new listener is
// built anew, and a refused update changes nothing of what is kept.
func TestListenersBuiltOnce(t *testing.T) {
	c, err := New(ClientConfig{NodeID: testNode, Dial: nopDial})
	if err != nil {
		t.Fatal(err)
	}
	res := mesh{services: []string{"server.demo", "other.demo"}, httpEgress: true}.resources(t)
	all := Resources{}
	full := func(typ string, version string) update {
		u := update{typeURL: typ, version: version, upsert: map[string]entry{}, full: true}
		all[typ] = map[string]proto.Message{}
		for _, r := range res[typ] {
			m, err := toSubset(r)
			if err != nil {
				t.Fatal(err)
			}
			u.upsert[resourceName(r)] = entry{msg: m}
			all[typ][resourceName(r)] = m
		}
		return u
	}
	first := applyEachType(t, c, func(typ string) update { return full(typ, "v1") })
	next, err := c.apply(full(model.EndpointType, "v2"))
	if err != nil || next == nil {
		t.Fatalf("endpoints v2: %v, %v", next, err)
	}
	if next.Outbound != first.Outbound || next.Inbound != first.Inbound {
		t.Error("an endpoints update rebuilt the listeners")
	}
	for n, e := range c.res[model.ListenerType] {
		if e.msg != nil || e.built == nil {
			t.Errorf("listener %s kept decoded (%v), not built", n, e.msg != nil)
		}
	}
	fresh, err := Build(c.cfg.TrustDomain, all)
	if err != nil {
		t.Fatal(err)
	}
	fresh.Version, fresh.OnDemand = next.Version, next.OnDemand
	if !reflect.DeepEqual(fresh, next) {
		t.Error("the configuration built with the listeners kept differs from a fresh Build")
	}
	// A refused listener update: nothing of it is kept.
	bad := full(model.ListenerType, "v3")
	for n, e := range bad.upsert {
		l := proto.Clone(e.msg).(*listenerv3.Listener)
		l.FilterChains = append(l.FilterChains, l.FilterChains[0]) // a duplicate matcher
		bad.upsert[n] = entry{msg: l}
	}
	if _, err := c.apply(bad); err == nil {
		t.Fatal("a listener with a duplicate chain accepted")
	}
	if got := c.res.builtListeners(); len(got) != 2 || got[model.OutboundListener] != first.Outbound {
		t.Errorf("after a refused update the client keeps %d listeners built (outbound the first's: %t), want the 2 in force",
			len(got), got[model.OutboundListener] == first.Outbound)
	}
	// A new listener is built anew.
	next, err = c.apply(full(model.ListenerType, "v4"))
	if err != nil || next == nil || next.Outbound == first.Outbound {
		t.Fatalf("listeners v4: %v; the same listener model kept for new listener resources", err)
	}
}

// applyEachType applies one update of each type, made by mk, in the order
// a server sends a first configuration (clusters, listeners, endpoints,
// routes, secrets), and returns the configuration the last one completes;
// it fails t if an update is refused or leaves no configuration.
func applyEachType(t *testing.T, c *Client, mk func(typeURL string) update) *model.Config {
	t.Helper()
	var cfg *model.Config
	for _, typ := range []string{model.ClusterType, model.ListenerType, model.EndpointType, model.RouteType, model.SecretType} {
		var err error
		if cfg, err = c.apply(mk(typ)); err != nil || cfg == nil {
			t.Fatalf("%s: %v, %v", typ, cfg, err)
		}
	}
	return cfg
}
