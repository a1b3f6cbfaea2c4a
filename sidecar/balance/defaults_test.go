package balance

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// TestDefaults: a zero Config gets Envoy's outlier defaults and Linkerd's
// estimator defaults, each observable: a new endpoint is estimated at
// DefaultRTT, which decays by 1/e over DefaultDecay; ejections last
// DefaultBaseEjection times the multiplier, capped at DefaultMaxEjection;
// an Interval in rotation takes one step of the multiplier back; with
// three endpoints, DefaultMaxEjectionPercent (10 %) still ejects one (the
// limit is at least one) and never two.
func TestDefaults(t *testing.T) {
	clock := testutil.FakeClock(t)
	var ejections []time.Duration
	b := New(Config{Outlier: Outlier{Consecutive: 1}, Clock: clock, Rand: seeded(1),
		OnEject: func(_ netip.AddrPort, d time.Duration) { ejections = append(ejections, d) }})
	eps := addrs(3)
	b.Update(eps)
	if got := b.State()[0].RTT; got != DefaultRTT {
		t.Fatalf("a new endpoint's estimate %v, want DefaultRTT %v", got, DefaultRTT)
	}
	clock.Step(DefaultDecay)
	rtt := float64(DefaultRTT)
	want := time.Duration(rtt / math.E)
	if got := b.State()[0].RTT; got < want-time.Microsecond || got > want+time.Microsecond {
		t.Fatalf("after DefaultDecay idle the estimate is %v, want %v (1/e of DefaultRTT)", got, want)
	}

	// Fail eps[0] again each time its ejection ends: the multiplier grows
	// by one each time, up to the cap.
	// A failed request to addr: a retry's avoid list keeps the others out.
	failOn := func(addr netip.AddrPort) {
		t.Helper()
		var others []netip.AddrPort
		for _, a := range eps {
			if a != addr {
				others = append(others, a)
			}
		}
		r := pick(t, b, others...)
		if r.Addr != addr {
			t.Fatalf("picked %v, want %v", r.Addr, addr)
		}
		r.Done(Failure)
	}
	last := func() time.Duration { return ejections[len(ejections)-1] }
	for i := 1; i <= 4; i++ {
		failOn(eps[0])
		if got, want := last(), time.Duration(i)*DefaultBaseEjection; len(ejections) != i || got != want {
			t.Fatalf("failure %d: ejection %d lasted %v, want %v", i, len(ejections), got, want)
		}
		clock.Step(last())
	}
	// Two Intervals in rotation: two steps of the multiplier back (4 → 2),
	// so the next ejection is the third.
	clock.Step(2 * DefaultInterval)
	failOn(eps[0])
	if got, want := last(), 3*DefaultBaseEjection; got != want {
		t.Fatalf("after 2 Intervals in rotation the ejection lasted %v, want %v", got, want)
	}
	// Failing again as soon as each ejection ends: the multiplier grows
	// past the cap, the length stops at DefaultMaxEjection.
	for m := 4; m <= 12; m++ {
		clock.Step(last())
		failOn(eps[0])
		if got, want := last(), min(time.Duration(m)*DefaultBaseEjection, DefaultMaxEjection); got != want {
			t.Fatalf("multiplier %d: ejection lasted %v, want %v", m, got, want)
		}
	}
	// eps[0] is ejected: at 10 % of 3 endpoints the limit is one, so a
	// second endpoint that fails is not ejected.
	n := len(ejections)
	failOn(eps[1])
	if len(ejections) != n {
		t.Fatalf("a second endpoint of three was ejected (limit %d %%)", DefaultMaxEjectionPercent)
	}
}

// TestCustomOutlierKept: values given are kept, not replaced by defaults.
func TestCustomOutlierKept(t *testing.T) {
	o := Outlier{Consecutive: 2, BaseEjection: time.Second, MaxEjection: 3 * time.Second, MaxEjectionPercent: 100, Interval: time.Minute}
	b := New(Config{Outlier: o, Decay: time.Second, DefaultRTT: time.Millisecond})
	if b.cfg.Outlier != o || b.cfg.Decay != time.Second || b.cfg.DefaultRTT != time.Millisecond {
		t.Fatalf("config %+v, want %+v kept", b.cfg.Outlier, o)
	}
	if b := New(Config{Outlier: Outlier{BaseEjection: time.Minute, MaxEjection: time.Second}}); b.cfg.Outlier.MaxEjection != time.Minute {
		t.Fatalf("MaxEjection below BaseEjection is raised to it: %v", b.cfg.Outlier.MaxEjection)
	}
}

// TestPendingCountsWhenEstimatesDecayed: long idle, every estimate has
// decayed to nothing; requests in flight still decide (cost adds 1 ns to
// the estimate before multiplying by pending+1).
func TestPendingCountsWhenEstimatesDecayed(t *testing.T) {
	b, clock, _ := newBalancer(t, 2, 2)
	clock.Step(1000 * DefaultDecay) // estimates ~0
	busy := pick(t, b)
	for range 50 {
		r := pick(t, b)
		if r.Addr == busy.Addr {
			t.Fatalf("picked %v with a request in flight over an idle endpoint", r.Addr)
		}
		r.Done(Cancelled)
	}
	busy.Done(Cancelled)
}

// TestEWMAUpdate: a faster answer moves the estimate by the weight of the
// time since the last one (Linkerd's peak-EWMA): after DefaultDecay, a
// 1 ms answer to an endpoint estimated at 10 ms leaves 10/e + 1 × (1 - 1/e) ms.
func TestEWMAUpdate(t *testing.T) {
	b, clock, _ := newBalancer(t, 3, 1)
	r := pick(t, b)
	r.Sent()
	clock.Step(10 * time.Millisecond)
	r.Done(Success)
	base := b.State()[0].RTT // the estimate then (DefaultRTT's decay, or the 10 ms peak)
	clock.Step(DefaultDecay)
	r = pick(t, b)
	r.Sent()
	clock.Step(time.Millisecond)
	r.Done(Success)
	w := math.Exp(-float64(DefaultDecay+time.Millisecond) / float64(DefaultDecay))
	want := time.Duration(w*float64(base) + (1-w)*float64(time.Millisecond))
	if got := b.State()[0].RTT; got < want-time.Microsecond || got > want+time.Microsecond {
		t.Fatalf("estimate %v after a 1 ms answer, want %v (from %v)", got, want, base)
	}
}

// TestDefaultValues pins the defaults to the values they are documented
// as: Linkerd's default RTT and decay, Envoy's outlier_detection defaults
// (base_ejection_time 30 s, max_ejection_time 300 s, interval 10 s,
// max_ejection_percent 10).
func TestDefaultValues(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"DefaultRTT", DefaultRTT, 30 * time.Millisecond},
		{"DefaultDecay", DefaultDecay, 10 * time.Second},
		{"DefaultBaseEjection", DefaultBaseEjection, 30 * time.Second},
		{"DefaultMaxEjection", DefaultMaxEjection, 300 * time.Second},
		{"DefaultInterval", DefaultInterval, 10 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if DefaultMaxEjectionPercent != 10 {
		t.Errorf("DefaultMaxEjectionPercent = %d, want 10", DefaultMaxEjectionPercent)
	}
}

// TestDefaultEjectionPercent: of 20 endpoints the default 10 % lets two be
// ejected at once, not a third.
func TestDefaultEjectionPercent(t *testing.T) {
	clock := testutil.FakeClock(t)
	ejected := 0
	b := New(Config{Outlier: Outlier{Consecutive: 1}, Clock: clock, Rand: seeded(4),
		OnEject: func(netip.AddrPort, time.Duration) { ejected++ }})
	eps := addrs(20)
	b.Update(eps)
	for i := range 3 {
		others := append(append([]netip.AddrPort(nil), eps[:i]...), eps[i+1:]...)
		r := pick(t, b, others...)
		r.Done(Failure)
	}
	if ejected != 2 {
		t.Fatalf("%d of 20 endpoints ejected after three failed, want 2 (10 %%)", ejected)
	}
}
