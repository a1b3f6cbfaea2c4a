package proxy

import (
	"context"
	"io"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// withDestination is cfg with its in-mesh chain moved out of the outbound
// listener into the listener of destination serviceIP:80, as the control
// plane sends it; chain, if not nil, changes the chain first.
func withDestination(cfg *model.Config, chain func(*model.FilterChain)) *model.Config {
	out := *cfg.Outbound
	i := slices.IndexFunc(out.Chains, func(fc *model.FilterChain) bool { return fc.Name == svcCluster })
	fc := *out.Chains[i]
	if chain != nil {
		chain(&fc)
	}
	out.Chains = slices.Delete(slices.Clone(out.Chains), i, i+1)
	ap := netip.AddrPortFrom(serviceIP, 80)
	c := *cfg
	c.Outbound = &out
	c.Destinations = map[netip.AddrPort]*model.Listener{ap: {Name: names.DestinationListener(ap), Addr: ap, Chains: []*model.FilterChain{&fc}}}
	return &c
}

// TestDestinationListenerHandedTheConnection: a connection whose original
// destination has a destination listener is matched in it: its in-mesh
// chain takes it over mTLS to the peer; and only in it (Envoy's hand-off):
// when none of its chains matches, the connection is closed (no_chain),
// not passed to the outbound listener's default chain.
func TestDestinationListenerHandedTheConnection(t *testing.T) {
	mp := newMeshPair(t, echo, nil)
	full := meshConfig([]spiffeid.ID{mp.b.id}, []model.Endpoint{{Addr: mp.b.inboundAddr()}}, nil, false)
	mp.a.cfg.Store(withDestination(full, nil))
	c := mp.dial()
	if _, err := c.Write([]byte("dest")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "dest" {
		t.Fatalf("echo through the destination's listener = %q, %v", buf, err)
	}
	c.Close()
	if got := mp.a.counter("handshakes", outbound); got != 1 {
		t.Errorf("outbound mTLS handshakes = %v, want 1", got)
	}

	// Its only chain no longer matches port 80: closed, not passed through.
	mp.a.cfg.Store(withDestination(full, func(fc *model.FilterChain) { fc.Match.DestPort = 8080 }))
	expectClosed(t, mp.dial())
	mp.a.waitCounter(1, "connection_failures", outbound, "no_chain")
	if got := mp.a.counter("handshakes", outbound); got != 1 {
		t.Errorf("outbound mTLS handshakes = %v after the refusal, want still 1", got)
	}
}

// TestLookUpDecidesBeforeMatching: a configuration that looks destinations
// up asks Config.Destination before matching: the configuration it returns
// decides (here one holding the destination's listener: the connection
// goes over mTLS); when the answer does not come within DemandTimeout the
// connection is refused (on_demand), never matched in the outbound
// listener's egress or default chains.
func TestLookUpDecidesBeforeMatching(t *testing.T) {
	asked := make(chan netip.AddrPort, 4)
	answer := make(chan *model.Config, 1)
	mp := &meshPair{ca: testutil.NewCA(t, td, nil)}
	mp.app = startApp(t, echo)
	mp.a = startPod(t, mp.ca, workloadID("shop", "frontend"), func(c *Config) {
		c.DemandTimeout = 200 * time.Millisecond
		c.Destination = func(ctx context.Context, dst netip.AddrPort) (*model.Config, func(), error) {
			asked <- dst
			select {
			case cfg := <-answer:
				return cfg, func() {}, nil
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
	})
	mp.b = startPod(t, mp.ca, workloadID("demo", "echo"))
	mp.b.nat.setDefault(netip.AddrPortFrom(podBIP, mp.app.port()))
	mp.b.cfg.Store(meshConfig(nil, nil, inboundChains(mp.app.port(), false, nil), false))
	full := meshConfig([]spiffeid.ID{mp.b.id}, []model.Endpoint{{Addr: mp.b.inboundAddr()}}, nil, false)
	decided := withDestination(full, nil)
	lean := *decided
	lean.Destinations, lean.LookUp = nil, true
	mp.a.cfg.Store(&lean)

	// No answer: refused, not passed to the default chain (Passthrough).
	expectClosed(t, mp.dial())
	select {
	case got := <-asked:
		if got != netip.AddrPortFrom(serviceIP, 80) {
			t.Fatalf("looked up %s, want %s", got, netip.AddrPortFrom(serviceIP, 80))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy never asked Config.Destination for the destination")
	}
	mp.a.waitCounter(1, "connection_failures", outbound, "on_demand")

	// Answered with its listener: through it, over mTLS.
	answer <- decided
	c := mp.dial()
	if _, err := c.Write([]byte("look")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "look" {
		t.Fatalf("echo after the lookup = %q, %v", buf, err)
	}
	c.Close()
	if got := mp.a.counter("handshakes", outbound); got != 1 {
		t.Errorf("outbound mTLS handshakes = %v, want 1", got)
	}
}

// TestLookUpWithoutDestinationIsRefused: a configuration that says its
// destinations are looked up, sent to a proxy given no Config.Destination
// to look them up with, refuses each outbound connection (on_demand) —
// never matched in the outbound listener's default chain, and the proxy
// goes on serving.
func TestLookUpWithoutDestinationIsRefused(t *testing.T) {
	mp := &meshPair{ca: testutil.NewCA(t, td, nil)}
	mp.app = startApp(t, echo)
	mp.a = startPod(t, mp.ca, workloadID("shop", "frontend"))
	mp.b = startPod(t, mp.ca, workloadID("demo", "echo"))
	mp.b.nat.setDefault(netip.AddrPortFrom(podBIP, mp.app.port()))
	mp.b.cfg.Store(meshConfig(nil, nil, inboundChains(mp.app.port(), false, nil), false))
	full := meshConfig([]spiffeid.ID{mp.b.id}, []model.Endpoint{{Addr: mp.b.inboundAddr()}}, nil, false)
	lean := *withDestination(full, nil)
	lean.Destinations, lean.LookUp = nil, true
	mp.a.cfg.Store(&lean)

	for i := range 2 {
		expectClosed(t, mp.dial())
		mp.a.waitCounter(float64(i+1), "connection_failures", outbound, "on_demand")
	}
	if got := mp.a.counter("handshakes", outbound); got != 0 {
		t.Errorf("outbound mTLS handshakes = %v, want 0", got)
	}
}
