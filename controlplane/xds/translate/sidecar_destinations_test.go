package translate

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testutil"
	sxds "github.com/weftmesh/weft/sidecar/xds"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

func destinationListeners(c *sxds.ClientConfig) { c.DestinationListeners = true }

// TestDestinationListenersAgree: sidecars that take the in-mesh chains as
// destination listeners (client feature weft.destination_listeners, from
// this package's ADS server) decide every connection as sidecars sent the
// one outbound listener: for each (address, port) leaf of the classic
// listener's in-mesh chains, the destination listener of that leaf
// matches the same chain; other destinations (egress) go to the outbound
// listener, which holds no in-mesh chain and otherwise the same chains;
// clusters, endpoints, routes and the inbound listener are equal. The
// golden mesh with 50 more Services (the bench's), L4 and HTTP routing.
func TestDestinationListenersAgree(t *testing.T) {
	for _, http := range []bool{false, true} {
		t.Run(map[bool]string{false: "l4", true: "http"}[http], func(t *testing.T) {
			contents := bigContents(v1alpha1.OutboundAllowAny, 50, 3)
			whole := newAgreeMeshWith(t, http)
			dest := newAgreeMeshWith(t, http, destinationListeners)
			_, want, err := whole.push(contents)
			if err != nil {
				t.Fatal(err)
			}
			_, got, err := dest.push(contents)
			if err != nil {
				t.Fatal(err)
			}
			for node, w := range want {
				g := got[node]
				if len(w.Destinations) != 0 {
					t.Fatalf("%s: a classic sidecar was sent %d destination listeners", node, len(w.Destinations))
				}
				if !reflect.DeepEqual(g.Inbound, w.Inbound) || !reflect.DeepEqual(g.Routes, w.Routes) ||
					!reflect.DeepEqual(g.Clusters, w.Clusters) || !reflect.DeepEqual(g.Endpoints, w.Endpoints) {
					t.Errorf("%s: inbound listener, routes, clusters or endpoints differ from the classic sidecar's", node)
				}
				leaves := 0
				var rest []*model.FilterChain
				for _, fc := range w.Outbound.Chains {
					if fc.Egress != nil || fc.Match.DestPort == 0 || !strings.Contains(fc.Name, "|") {
						rest = append(rest, fc)
						continue
					}
					for _, p := range fc.Match.Prefixes {
						if !p.IsSingleIP() {
							rest = append(rest, fc)
							break
						}
						ap := netip.AddrPortFrom(p.Addr(), fc.Match.DestPort)
						leaves++
						l := g.OutboundFor(ap)
						if l == nil || l == g.Outbound {
							t.Errorf("%s: no destination listener for %s (chain %s)", node, ap, fc.Name)
							continue
						}
						for _, tr := range []string{"raw_buffer", "tls"} {
							wf, gf := w.Outbound.Match(ap, tr, "", nil), l.Match(ap, tr, "", nil)
							if wf == nil || gf == nil || wf.Name != gf.Name || !reflect.DeepEqual(wf.Target, gf.Target) {
								t.Errorf("%s: %s (%s) matches %v in its destination listener, %v in the classic one", node, ap, tr, chainName(gf), chainName(wf))
							}
						}
					}
				}
				if leaves == 0 || len(g.Destinations) != leaves {
					t.Errorf("%s: %d destination listeners for %d leaves of in-mesh chains", node, len(g.Destinations), leaves)
				}
				var gotRest []string
				for _, fc := range g.Outbound.Chains {
					gotRest = append(gotRest, fc.Name)
				}
				var wantRest []string
				for _, fc := range rest {
					wantRest = append(wantRest, fc.Name)
				}
				if !slices.Equal(gotRest, wantRest) || !reflect.DeepEqual(g.Outbound.Default, w.Outbound.Default) {
					t.Errorf("%s: outbound chains %q, want the classic listener's less its in-mesh ones %q", node, gotRest, wantRest)
				}
			}
		})
	}
}

func chainName(fc *model.FilterChain) string {
	if fc == nil {
		return "no chain"
	}
	return fc.Name
}

func lookUp(c *sxds.ClientConfig) { c.Delta, c.OnDemand, c.DestinationListeners = true, true, true }

// TestDestinationsLookedUpAgree: a sidecar that looks destinations up
// (delta, on demand, destination listeners by name) is ready holding none;
// looking each (address, port) leaf of the classic listener's in-mesh
// chains up gets that leaf's listener, which matches the classic chain; an
// address no Service has is answered "none" at once (the outbound
// listener decides it), and asked again is decided without a wait. L4 and
// HTTP routing (a looked-up destination's chain names its route
// configuration, which the node then gets, and only those).
func TestDestinationsLookedUpAgree(t *testing.T) {
	for _, http := range []bool{false, true} {
		t.Run(map[bool]string{false: "l4", true: "http"}[http], func(t *testing.T) {
			contents := bigContents(v1alpha1.OutboundAllowAny, 10, 2)
			whole := newAgreeMeshWith(t, http)
			look := newAgreeMeshWith(t, http, lookUp)
			_, want, err := whole.push(contents)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := look.push(contents); err != nil {
				t.Fatal(err)
			}
			for node, w := range want {
				c := look.nodes[node]
				cur := c.Current()
				// The harness looked the marker up (push); nothing else.
				if !cur.LookUp || len(cur.Destinations) != 1 || cur.Destinations[netip.AddrPortFrom(agreeMarkerIP, 7)] == nil {
					t.Fatalf("%s: LookUp %t, destination listeners %v held before any lookup but the marker's", node, cur.LookUp, slices.Collect(maps.Keys(cur.Destinations)))
				}
				leaves := 0
				for _, fc := range w.Outbound.Chains {
					if fc.Egress != nil || fc.Match.DestPort == 0 || !strings.HasPrefix(fc.Name, model.OnDemandPrefix) {
						continue
					}
					for _, p := range fc.Match.Prefixes {
						ap := netip.AddrPortFrom(p.Addr(), fc.Match.DestPort)
						leaves++
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						cfg, release, err := c.Destination(ctx, ap)
						cancel()
						if err != nil {
							t.Fatalf("%s: Destination(%s): %v", node, ap, err)
						}
						release()
						l := cfg.OutboundFor(ap)
						wf, gf := w.Outbound.Match(ap, "raw_buffer", "", nil), l.Match(ap, "raw_buffer", "", nil)
						if l == cfg.Outbound || gf == nil || wf.Name != gf.Name || !reflect.DeepEqual(wf.Target, gf.Target) {
							t.Errorf("%s: %s looked up matches %v, the classic listener %v", node, ap, chainName(gf), chainName(wf))
						}
					}
				}
				if leaves == 0 {
					t.Fatalf("%s: no in-mesh leaf to look up", node)
				}
				nowhere := netip.MustParseAddrPort("198.18.250.1:443")
				for i := range 2 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					cfg, release, err := c.Destination(ctx, nowhere)
					cancel()
					if err != nil {
						t.Fatalf("%s: Destination(%s), no Service's (ask %d): %v", node, nowhere, i+1, err)
					}
					release()
					if cfg.OutboundFor(nowhere) != cfg.Outbound {
						t.Errorf("%s: %s, no Service's, has a destination listener", node, nowhere)
					}
				}
			}
		})
	}
}

// TestDestinationsCapped: the app chooses destinations, so a sidecar
// keeps at most MaxDestinations looked up: past it the idlest one no
// connection is deciding on is forgotten, and with every one in use a new
// destination is refused (ErrTooManyDestinations), never passed through
// undecided. Here 3, with addresses no Service has (as an app scanning
// would ask).
func TestDestinationsCapped(t *testing.T) {
	m := newAgreeMeshWith(t, false, lookUp, func(c *sxds.ClientConfig) { c.MaxDestinations = 3 })
	if _, _, err := m.push(meshContents(v1alpha1.OutboundAllowAny)); err != nil {
		t.Fatal(err)
	}
	c := m.nodes[agreeClientNode]
	ask := func(i int) (func(), error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, release, err := c.Destination(ctx, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 251, byte(i)}), 443))
		return release, err
	}
	// The harness looked the marker up and released it: idle, evictable.
	var held []func()
	for i := range 3 {
		release, err := ask(i)
		if err != nil {
			t.Fatalf("destination %d of 3: %v", i, err)
		}
		held = append(held, release)
	}
	if _, err := ask(3); !errors.Is(err, sxds.ErrTooManyDestinations) {
		t.Fatalf("a 4th destination with 3 in use: %v, want %v", err, sxds.ErrTooManyDestinations)
	}
	held[0]()
	release, err := ask(3)
	if err != nil {
		t.Fatalf("a 4th destination once one is idle: %v", err)
	}
	release()
}

// inMeshLeaves are the (address, port) leaves of cfg's outbound listener's
// in-mesh chains (a classic sidecar's).
func inMeshLeaves(cfg *model.Config) []netip.AddrPort {
	var out []netip.AddrPort
	for _, fc := range cfg.Outbound.Chains {
		if fc.Egress != nil || fc.Match.DestPort == 0 || !strings.HasPrefix(fc.Name, model.OnDemandPrefix) {
			continue
		}
		for _, p := range fc.Match.Prefixes {
			out = append(out, netip.AddrPortFrom(p.Addr(), fc.Match.DestPort))
		}
	}
	return out
}

// TestDestinationsScannedThenIdle: an app that connects to every in-mesh
// address in turn (a scan) leaves its sidecar holding and subscribed to
// at most MaxDestinations destinations, each connection still decided by
// its destination's own listener; once no connection uses them they are
// forgotten OnDemandIdle after the last, their listeners dropped, and one
// a connection still decides on is kept; a forgotten destination looked
// up again is answered afresh.
func TestDestinationsScannedThenIdle(t *testing.T) {
	const maxDests, idle = 4, time.Minute
	clk := testutil.FakeClock(t)
	contents := bigContents(v1alpha1.OutboundAllowAny, 10, 2)
	whole := newAgreeMeshWith(t, false)
	look := newAgreeMeshWith(t, false, lookUp, func(c *sxds.ClientConfig) {
		c.MaxDestinations, c.OnDemandIdle, c.Clock = maxDests, idle, clk
	})
	_, want, err := whole.push(contents)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := look.push(contents); err != nil {
		t.Fatal(err)
	}
	c := look.nodes[agreeClientNode]
	leaves := inMeshLeaves(want[agreeClientNode])
	if len(leaves) < 3*maxDests {
		t.Fatalf("%d in-mesh leaves, want a scan of at least %d", len(leaves), 3*maxDests)
	}
	ask := func(ap netip.AddrPort) (*model.Config, func()) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cfg, release, err := c.Destination(ctx, ap)
		if err != nil {
			t.Fatalf("Destination(%s): %v; status %+v", ap, err, c.Status())
		}
		if l := cfg.OutboundFor(ap); l == nil || l == cfg.Outbound {
			t.Fatalf("%s, an in-mesh address, decided by the outbound listener", ap)
		}
		return cfg, release
	}
	// The scan; the last destination stays in use.
	var keep func()
	for i, ap := range leaves {
		_, release := ask(ap)
		if i == len(leaves)-1 {
			keep = release
		} else {
			release()
		}
		if n := len(c.Status().Destinations); n > maxDests {
			t.Fatalf("after %d destinations the sidecar looks %d up, over MaxDestinations %d", i+1, n, maxDests)
		}
	}
	held := func() []netip.AddrPort {
		return slices.SortedFunc(maps.Keys(c.Current().Destinations), netip.AddrPort.Compare)
	}
	waitFor := func(what string, ok func() bool, step time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) { // polling, not pacing
			if time.Now().After(deadline) {
				t.Fatalf("%s: holding %v, looking up %q", what, held(), c.Status().Destinations)
			}
			clk.Step(step)
		}
	}
	// Evicted destinations are unsubscribed and their listeners dropped.
	waitFor("the evicted destinations' listeners dropped", func() bool { return len(held()) <= maxDests }, 0)

	// Idle: the scanned destinations go, the one in use stays.
	last := leaves[len(leaves)-1]
	waitFor("the idle destinations forgotten", func() bool {
		return slices.Equal(held(), []netip.AddrPort{last}) &&
			slices.Equal(c.Status().Destinations, []string{names.DestinationListener(last)})
	}, idle/4)
	keep()
	// Looked up again: answered afresh, by its own listener.
	_, release := ask(leaves[0])
	release()
}
