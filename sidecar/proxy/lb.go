package proxy

import (
	"net/netip"
	"sync"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// balancer spreads connections over a cluster's healthy endpoints: round
// robin, or least-request (fewest open connections through this proxy,
// ties broken round robin).
type balancer struct {
	mu     sync.Mutex
	next   map[string]int         // by cluster: round-robin position
	active map[netip.AddrPort]int // open connections per endpoint
}

func newBalancer() *balancer {
	return &balancer{next: map[string]int{}, active: map[netip.AddrPort]int{}}
}

// order returns cluster's healthy endpoints, the one to try first first,
// the others after it in round-robin order (a failed connect retries the
// next one).
func (b *balancer) order(cluster string, policy model.LBPolicy, eps []model.Endpoint) []netip.AddrPort {
	healthy := make([]netip.AddrPort, 0, len(eps))
	for _, e := range eps {
		if e.Health == model.Healthy {
			healthy = append(healthy, e.Addr)
		}
	}
	n := len(healthy)
	if n == 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	start := b.next[cluster] % n
	b.next[cluster] = start + 1
	if policy == model.LeastRequest {
		best := start
		for i := range n {
			j := (start + i) % n
			if b.active[healthy[j]] < b.active[healthy[best]] {
				best = j
			}
		}
		start = best
	}
	out := make([]netip.AddrPort, 0, n)
	for i := range n {
		out = append(out, healthy[(start+i)%n])
	}
	return out
}

// acquire counts an open connection to a until the returned func is called.
func (b *balancer) acquire(a netip.AddrPort) func() {
	b.mu.Lock()
	b.active[a]++
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		if b.active[a]--; b.active[a] <= 0 {
			delete(b.active, a)
		}
		b.mu.Unlock()
	}
}
