package proxy

import (
	"context"
	"io"
	"maps"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// onDemandPair is a mesh pair whose client sidecar A learns the service's
// cluster on demand: its configuration lacks it until demand returns full.
type onDemandPair struct {
	*meshPair
	full    *model.Config // with the cluster and its endpoints
	asked   chan string   // each Demand's cluster
	gate    chan struct{} // Demand returns full once closed
	release atomic.Int32  // releases of what Demand returned
}

func newOnDemandPair(t *testing.T, timeout time.Duration) *onDemandPair {
	t.Helper()
	op := &onDemandPair{asked: make(chan string, 16), gate: make(chan struct{})}
	mp := &meshPair{ca: testutil.NewCA(t, td, nil)}
	mp.app = startApp(t, echo)
	mp.a = startPod(t, mp.ca, workloadID("shop", "frontend"), func(c *Config) {
		c.DemandTimeout = timeout
		c.Demand = func(ctx context.Context, cluster string) (*model.Config, func(), error) {
			op.asked <- cluster
			select {
			case <-op.gate:
				return op.full, func() { op.release.Add(1) }, nil
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
	})
	mp.b = startPod(t, mp.ca, workloadID("demo", "echo"))
	mp.b.nat.setDefault(netip.AddrPortFrom(podBIP, mp.app.port()))
	mp.b.cfg.Store(meshConfig(nil, nil, inboundChains(mp.app.port(), false, nil), false))
	op.meshPair = mp
	op.full = meshConfig([]spiffeid.ID{mp.b.id}, []model.Endpoint{{Addr: mp.b.inboundAddr()}}, nil, false)
	op.full.OnDemand = true
	lean := *op.full
	lean.Clusters, lean.Endpoints = maps.Clone(op.full.Clusters), map[string][]model.Endpoint{}
	delete(lean.Clusters, svcCluster)
	mp.a.cfg.Store(&lean)
	return op
}

// TestOnDemandWaitsForTheCluster: a connection to a Service whose cluster
// the sidecar learns on demand and lacks is held while the cluster is
// asked for, then forwarded with it over mTLS; the cluster is released
// when the connection ends.
func TestOnDemandWaitsForTheCluster(t *testing.T) {
	op := newOnDemandPair(t, 10*time.Second)
	c := op.dial()
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-op.asked:
		if got != svcCluster {
			t.Fatalf("Demand(%q), want %q", got, svcCluster)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy never asked for the cluster it lacks")
	}
	close(op.gate)
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "held" {
		t.Fatalf("echo through a cluster learnt on demand = %q, %v", buf, err)
	}
	if got := op.a.counter("handshakes", outbound); got != 1 {
		t.Errorf("outbound mTLS handshakes = %v, want 1", got)
	}
	if op.release.Load() != 0 {
		t.Error("released while the connection is open")
	}
	c.Close()
	for deadline := time.Now().Add(10 * time.Second); op.release.Load() != 1; time.Sleep(5 * time.Millisecond) { // polling
		if time.Now().After(deadline) {
			t.Fatalf("released %d times after the connection ended, want 1", op.release.Load())
		}
	}
}

// TestOnDemandFailsClosed: a cluster that does not come within
// DemandTimeout refuses the connection (reason on_demand), nothing is
// dialled; a configuration that does not learn on demand never asks and
// refuses a cluster it lacks as before (no_cluster).
func TestOnDemandFailsClosed(t *testing.T) {
	op := newOnDemandPair(t, 100*time.Millisecond)
	c := op.dial()
	if <-op.asked != svcCluster {
		t.Fatal("asked for the wrong cluster")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Fatalf("a connection whose cluster never came read %d bytes, %v", n, err)
	}
	op.a.waitCounter(1, "connection_failures", outbound, "on_demand")
	if got := op.a.counter("handshakes", outbound); got != 0 {
		t.Errorf("outbound handshakes = %v, want none", got)
	}
	if got := op.b.counter("connections_total", inbound); got != 0 {
		t.Errorf("the server sidecar saw %v connections", got)
	}

	lean := *op.a.cfg.Load()
	lean.OnDemand = false
	op.a.cfg.Store(&lean)
	c = op.dial()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Fatalf("a cluster not held, not on demand: read %d bytes, %v", n, err)
	}
	op.a.waitCounter(1, "connection_failures", outbound, "no_cluster")
	select {
	case got := <-op.asked:
		t.Errorf("asked for %q without OnDemand", got)
	default:
	}
}

// TestOnDemandChainChangedWhileWaiting: the configuration that brings the
// cluster may bring a new outbound listener too; a connection whose chain
// is the same in it goes on, one whose chain changed is refused (what was
// decided on the old chain would not hold), and the cluster is released.
func TestOnDemandChainChangedWhileWaiting(t *testing.T) {
	op := newOnDemandPair(t, 10*time.Second)
	close(op.gate)
	same := *op.full
	l := *op.full.Outbound
	l.Chains = slices.Clone(l.Chains)
	for i, fc := range l.Chains {
		c := *fc
		l.Chains[i] = &c
	}
	same.Outbound = &l
	op.full = &same
	c := op.dial()
	roundTrip(t, c, []byte("same chain, new listener"))
	c.Close()
	waitReleases := func(want int32) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); op.release.Load() != want; time.Sleep(5 * time.Millisecond) { // polling
			if time.Now().After(deadline) {
				t.Fatalf("released %d times, want %d", op.release.Load(), want)
			}
		}
	}
	waitReleases(1)

	changed := same
	l2 := l
	l2.Chains = slices.Clone(l.Chains)
	moved := *l2.Chains[0]
	moved.Name = svcCluster + "|renamed"
	l2.Chains[0] = &moved
	changed.Outbound = &l2
	op.full = &changed
	c = op.dial()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Fatalf("a connection whose chain changed while it waited read %d bytes, %v", n, err)
	}
	op.a.waitCounter(1, "connection_failures", outbound, "on_demand")
	waitReleases(2) // the refused connection's demand released too
}
