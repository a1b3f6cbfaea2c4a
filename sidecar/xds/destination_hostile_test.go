package xds

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startLookUp runs a client that looks destinations up against addr.
func startLookUp(t *testing.T, addr string) *Client {
	t.Helper()
	c, err := New(ClientConfig{
		NodeID: testNode, Delta: true, OnDemand: true, DestinationListeners: true,
		Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		Dial: func(context.Context) (grpc.ClientConnInterface, error) {
			return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c.Run)
	return c
}

// TestDestinationWaitsWithoutSpinning: a destination's listener that
// names a route configuration (an in-mesh HTTP Service port) is answered
// before the configuration holding it is complete (its route is asked for
// once the listener is accepted). A connection waiting for it sleeps until
// a configuration holding it comes: it does not go round its wait at once
// and again (a busy loop per waiting connection, for as long as the route
// does not come). Here the route never comes; the wait is 1 s, and the
// process's CPU over it is compared with a quarter of that (a busy loop
// used 0.85–0.96 s of it; a sleeping wait, under 2 ms).
func TestDestinationWaitsWithoutSpinning(t *testing.T) {
	r := mesh{services: []string{"server.demo"}, l7: true}.envoy(t)
	aps := toDestinations(t, r)
	if len(aps) != 1 {
		t.Fatalf("moved %d chains, want 1", len(aps))
	}
	// The destination's route configuration is not served.
	var dropped []string
	for n := range r[model.RouteType] {
		if n != "inbound|8080" {
			delete(r[model.RouteType], n)
			dropped = append(dropped, n)
		}
	}
	if len(dropped) == 0 {
		t.Fatalf("no outbound route to drop: %v", r[model.RouteType])
	}
	cache := servedCache(t, r)
	p := startPeer(t, "127.0.0.1:0", cache)
	c := startLookUp(t, p.addr)
	waitReady(t, c)

	const wait = time.Second
	before := cpuTime(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	_, _, err := c.Destination(ctx, aps[0])
	cancel()
	used := cpuTime(t) - before
	t.Logf("Destination(%s) = %v; CPU used while waiting %v: %v (route %v never served)", aps[0], err, wait, used, dropped)
	if used > wait/4 {
		t.Errorf("one connection waiting %v for a destination burnt %v of CPU: a busy loop", wait, used)
	}
}

// TestDestinationListenersKeptBuilt: the client keeps every listener the
// configuration holds as built (the model reused by the next
// configurations), destination listeners included, not decoded: a decoded
// one would be validated and built again by every later response of any
// type, and the app chooses how many are held (up to MaxDestinations).
// Here one Service's chain at 1,000 addresses, as 1,000 Services' would be.
func TestDestinationListenersKeptBuilt(t *testing.T) {
	// One Service's chain, at 1,000 addresses (as 1,000 Services would be).
	const n = 1000
	widen := func(r envoySet) {
		out := r[model.ListenerType][model.OutboundListener].(*listenerv3.Listener)
		var chains []*listenerv3.FilterChain
		for _, fc := range out.FilterChains {
			if !strings.HasPrefix(fc.GetName(), model.OnDemandPrefix) {
				chains = append(chains, fc)
				continue
			}
			for i := range n {
				c := proto.Clone(fc).(*listenerv3.FilterChain)
				c.Name = fc.GetName() + "#" + strconv.Itoa(i)
				c.FilterChainMatch.PrefixRanges[0].AddressPrefix = netip.AddrFrom4([4]byte{198, 19, 100 + byte(i>>8), byte(i)}).String()
				chains = append(chains, c)
			}
		}
		out.FilterChains = chains
	}
	classic := mesh{services: []string{"server.demo"}}.envoy(t)
	widen(classic)
	look := mesh{services: []string{"server.demo"}}.envoy(t)
	widen(look)
	if aps := toDestinations(t, look); len(aps) != n {
		t.Fatalf("%d destinations, want %d", len(aps), n)
	}
	clusterUpdate := func(t *testing.T, set Resources) {
		c, err := New(ClientConfig{NodeID: testNode, Dial: nopDial, Delta: true})
		if err != nil {
			t.Fatal(err)
		}
		applyEachType(t, c, func(typ string) update {
			u := update{typeURL: typ, version: "v1", upsert: map[string]entry{}}
			for n, m := range set[typ] {
				u.upsert[n] = entry{msg: m, version: "1"}
			}
			return u
		})
		var decoded []string
		for n, e := range c.res[model.ListenerType] {
			if e.msg != nil {
				decoded = append(decoded, n)
			}
		}
		if len(decoded) > 0 {
			t.Errorf("%d listeners the configuration holds kept decoded, not built (e.g. %q): rebuilt by every apply", len(decoded), decoded[0])
		}
		u := update{typeURL: model.ClusterType, version: "v2", upsert: map[string]entry{}}
		for n, m := range set[model.ClusterType] {
			u.upsert[n] = entry{msg: m, version: "2"}
		}
		cfg, err := c.apply(u)
		if err != nil || cfg == nil {
			t.Fatalf("cluster update: %v %v", cfg, err)
		}
		if _, decoded := c.res[model.ListenerType][model.OutboundListener]; decoded && c.res[model.ListenerType][model.OutboundListener].msg != nil {
			t.Error("the outbound listener kept decoded after a cluster update")
		}
	}
	clusterUpdate(t, classic.mustSubset(t))
	clusterUpdate(t, look.mustSubset(t))
}

// TestDestinationChainToControlPlaneRefused: a tcp_proxy chain to the
// control plane's cluster is refused in a destination's listener as in
// "inbound" or "outbound" (TestBuildRefusals "chain to the control
// plane"): a connection to that destination would be tunnelled to the
// control plane with the sidecar's own credentials.
func TestDestinationChainToControlPlaneRefused(t *testing.T) {
	r := mesh{services: []string{"server.demo"}}.envoy(t)
	aps := toDestinations(t, r)
	if len(aps) != 1 {
		t.Fatalf("moved %d chains, want 1", len(aps))
	}
	l := r[model.ListenerType][aps[0].String()].(*listenerv3.Listener)
	fs := l.FilterChains[0].Filters
	fs[len(fs)-1] = tcpProxy(t, "weft-controlplane", false)
	cfg, err := buildEnvoy(r)
	if err == nil {
		fc := cfg.OutboundFor(aps[0]).Match(aps[0], "raw_buffer", "", nil)
		t.Fatalf("a destination listener's tcp_proxy to the control plane accepted: %s matches chain %s to cluster %q (kind %v)",
			aps[0], fc.Name, fc.Target.Cluster, cfg.Clusters[fc.Target.Cluster].Kind)
	}
	if !strings.Contains(err.Error(), "is the control plane") {
		t.Fatalf("refused for another reason: %v", err)
	}
}
