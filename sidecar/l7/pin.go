package l7

import (
	"context"
	"net/netip"

	"github.com/weftmesh/weft/sidecar/balance"
)

// An app that connects to one endpoint's address (a pod IP, not a
// Service's) means that endpoint: its requests routed to a cluster that
// holds it go to it, retries included, rather than being balanced.

type endpointKey struct{}

// WithEndpoint returns ctx saying that its requests are addressed to the
// endpoint at addr: a request with it, routed to a cluster one of whose
// endpoints is addr, goes to addr (every try: a retry cannot pick another
// endpoint); routed to a cluster without it, it is balanced.
func WithEndpoint(ctx context.Context, addr netip.AddrPort) context.Context {
	return context.WithValue(ctx, endpointKey{}, addr)
}

// pick chooses the endpoint of a try of a request with ctx: the one the
// request is addressed to (WithEndpoint) when c has it, else the
// balancer's pick avoiding tried.
func (c *Cluster) pick(ctx context.Context, tried []netip.AddrPort) (*balance.Request, error) {
	if addr, ok := pinnedAddr(ctx); ok {
		if r, ok := c.Balancer.PickAddr(addr); ok {
			return r, nil
		}
	}
	return c.Balancer.Pick(tried...)
}

// pinnedAddr is the endpoint the requests with ctx are addressed to: the
// Handler's (served.pinned, when valid), else WithEndpoint's.
func pinnedAddr(ctx context.Context) (netip.AddrPort, bool) {
	if s := servedOf(ctx); s != nil && s.pinned.IsValid() {
		return s.pinned, true
	}
	addr, ok := ctx.Value(endpointKey{}).(netip.AddrPort)
	return addr, ok
}
