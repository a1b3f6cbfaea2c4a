package balance

import (
	"net/netip"
	"testing"
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
