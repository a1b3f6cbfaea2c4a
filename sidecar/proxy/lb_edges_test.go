package proxy

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestLeastRequestPicksFewestOpenTiesInTurn: least-request starts with the
// healthy endpoint holding the fewest open connections through this proxy,
// ties broken round robin, the others after it in round-robin order; an
// endpoint whose connections have all closed leaves no count behind.
func TestLeastRequestPicksFewestOpenTiesInTurn(t *testing.T) {
	b := newBalancer()
	var eps []model.Endpoint
	var addrs []netip.AddrPort
	for _, s := range []string{"198.18.0.1:80", "198.18.0.2:80", "198.18.0.3:80"} {
		a := netip.MustParseAddrPort(s)
		eps, addrs = append(eps, model.Endpoint{Addr: a}), append(addrs, a)
	}
	eps = append(eps, model.Endpoint{Addr: netip.MustParseAddrPort("198.18.0.4:80"), Health: model.Unhealthy})
	rotated := func(i int) []netip.AddrPort { return append(slices.Clone(addrs[i:]), addrs[:i]...) }

	// Nothing open: every endpoint ties, and they take turns.
	for i := range 2 * len(addrs) {
		if got, want := b.order("c", model.LeastRequest, eps), rotated(i%len(addrs)); !slices.Equal(got, want) {
			t.Fatalf("call %d, nothing open: %v, want %v", i, got, want)
		}
	}
	// Connections open to the first two: the third goes first, whose turn
	// it is or not, the others in turn after it.
	release := []func(){b.acquire(addrs[0]), b.acquire(addrs[1]), b.acquire(addrs[1])}
	for i := range len(addrs) {
		if got := b.order("c", model.LeastRequest, eps); got[0] != addrs[2] || len(got) != len(addrs) {
			t.Fatalf("call %d, %v busy: %v, want %v first", i, addrs[:2], got, addrs[2])
		}
	}
	for _, r := range release {
		r()
	}
	b.mu.Lock()
	left := len(b.active)
	b.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d endpoints still counted once every connection closed", left)
	}
}
