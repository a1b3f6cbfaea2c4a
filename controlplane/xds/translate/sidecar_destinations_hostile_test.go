package translate

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/v1alpha1"
	sxds "github.com/weftmesh/weft/sidecar/xds"
)

// TestEvictedDestinationAskedAgainIsAnswered: an app at the
// MaxDestinations cap evicts destination A (an address no Service has,
// answered "none") by asking for B, then asks for A again before the xDS
// client's goroutine has handled the change (here GOMAXPROCS 1 makes that
// window certain; otherwise it is whenever that goroutine is busy). The
// stream still subscribes to A, and the control plane answers a name
// when it is newly subscribed, so the client unsubscribes A and asks again:
// the lookup is answered, not left to time out on every connection.
func TestEvictedDestinationAskedAgainIsAnswered(t *testing.T) {
	m := newAgreeMeshWith(t, false, lookUp, func(c *sxds.ClientConfig) { c.MaxDestinations = 1 })
	if _, _, err := m.push(meshContents(v1alpha1.OutboundAllowAny)); err != nil {
		t.Fatal(err)
	}
	c := m.nodes[agreeClientNode]
	a := netip.MustParseAddrPort("198.18.252.1:443")
	b := netip.MustParseAddrPort("198.18.252.2:443")
	ask := func(ap netip.AddrPort, d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, release, err := c.Destination(ctx, ap)
		if err == nil {
			release()
		}
		return err
	}
	if err := ask(a, 10*time.Second); err != nil {
		t.Fatalf("first lookup of %s: %v", a, err)
	}
	prev := runtime.GOMAXPROCS(1)
	// B evicts A (idle); a connection to B gives up at once.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, _ = c.Destination(done, b)
	// A again, evicting B, before Run read the wake-up.
	errA := ask(a, 2*time.Second)
	runtime.GOMAXPROCS(prev)
	if errA != nil {
		t.Errorf("%s looked up again after its eviction: %v", a, errA)
	}
	// And later, with Run idle: still never answered.
	time.Sleep(100 * time.Millisecond)
	if err := ask(a, 2*time.Second); err != nil {
		t.Errorf("%s looked up once more: %v (status: %+v)", a, err, c.Status())
	}
}

// BenchmarkLookUpWithHeld: what a lookup of a destination not yet held
// waits for (its listener asked for and received, the configuration
// rebuilt), by how many destinations the sidecar holds already: 1,200
// Services looked up in 4 batches of 300, per lookup in each batch
// ("held-0" … "held-900"). The client rebuilds its configuration at each
// answer, so a lookup's cost grows with what is held; the figure says by
// how much.
//
//	go test ./controlplane/xds/translate/ -run=NONE -bench=LookUpWithHeld -benchtime=1x
func BenchmarkLookUpWithHeld(b *testing.B) {
	const services, batch = 1200, 300
	per := make([]time.Duration, services/batch)
	for range b.N {
		m := newAgreeMeshWith(b, false, lookUp)
		if _, _, err := m.push(bigContents(v1alpha1.OutboundAllowAny, services, 0)); err != nil {
			b.Fatal(err)
		}
		c := m.nodes[agreeClientNode]
		for k := range services / batch {
			start := time.Now()
			for s := k * batch; s < (k+1)*batch; s++ {
				ap := netip.AddrPortFrom(bigServiceAddr(s), 80)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				cfg, release, err := c.Destination(ctx, ap)
				cancel()
				if err != nil {
					b.Fatalf("Destination(%s): %v", ap, err)
				}
				release()
				if cfg.OutboundFor(ap) == cfg.Outbound {
					b.Fatalf("%s: no destination listener", ap)
				}
			}
			per[k] += time.Since(start) / batch
		}
	}
	for k, d := range per {
		b.ReportMetric(float64((d/time.Duration(b.N)).Microseconds())/1e3, fmt.Sprintf("ms/lookup-held-%d", k*batch))
	}
}
