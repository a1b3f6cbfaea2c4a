package balance

import (
	"net/netip"
	"testing"
	"time"
)

func TestPickAddr(t *testing.T) {
	a := netip.MustParseAddrPort("198.18.0.1:80")
	b := netip.MustParseAddrPort("198.18.0.2:80")
	bl := New(Config{})
	bl.Update([]netip.AddrPort{a, b})
	r, ok := bl.PickAddr(b)
	if !ok || r.Addr != b {
		t.Fatalf("PickAddr(%s) = %v, %v; want it", b, r, ok)
	}
	// In flight like a Pick's: the next Pick prefers a.
	if p, _ := bl.Pick(); p.Addr != a {
		t.Errorf("Pick with %s in flight chose it", b)
	} else {
		p.Done(Success)
	}
	r.Done(Success)
	if _, ok := bl.PickAddr(netip.MustParseAddrPort("198.18.0.3:80")); ok {
		t.Error("PickAddr of an address that is not an endpoint succeeded")
	}
}

// TestPickAddrCountsAsTheLatestPick: a request PickAddr sent to an
// endpoint makes it the one picked last, as a Pick would, so of two
// endpoints that cost alike the next Pick chooses the other.
func TestPickAddrCountsAsTheLatestPick(t *testing.T) {
	for seed := range uint64(8) {
		bl, c, eps := newBalancer(t, seed, 2)
		first := pick(t, bl)
		c.Step(5 * time.Millisecond)
		first.Done(Success)
		other := eps[0]
		if other == first.Addr {
			other = eps[1]
		}
		r, ok := bl.PickAddr(other)
		if !ok {
			t.Fatalf("PickAddr(%s) refused", other)
		}
		c.Step(5 * time.Millisecond)
		r.Done(Success)
		if next := pick(t, bl); next.Addr != first.Addr {
			t.Fatalf("seed %d: %s was picked before %s was PickAddr'd; the next Pick chose %s", seed, first.Addr, other, next.Addr)
		}
	}
}

// TestRequestHost: a pick's Host is its address as text, IPv4 and IPv6
// (brackets), from Pick and PickAddr alike, and stays right for an
// endpoint kept across an Update.
func TestRequestHost(t *testing.T) {
	v4 := netip.MustParseAddrPort("198.18.0.7:8080")
	v6 := netip.MustParseAddrPort("[2001:db8::7]:8443")
	bl := New(Config{})
	bl.Update([]netip.AddrPort{v4, v6})
	bl.Update([]netip.AddrPort{v6, v4}) // both kept: their state, text included
	for _, a := range []netip.AddrPort{v4, v6} {
		r, ok := bl.PickAddr(a)
		if !ok || r.Host != a.String() {
			t.Errorf("PickAddr(%s).Host = %q, want %q", a, r.Host, a.String())
		}
		r.Done(Success)
	}
	for range 8 {
		r, err := bl.Pick()
		if err != nil {
			t.Fatal(err)
		}
		if r.Host != r.Addr.String() {
			t.Errorf("Pick: Host %q for Addr %s", r.Host, r.Addr)
		}
		r.Done(Success)
	}
}
