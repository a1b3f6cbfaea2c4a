package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/weftmesh/weft/internal/rawio"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Inbound delivery: where an accepted, authenticated and authorized
// inbound connection goes, as its chain's cluster says.
//
//   - inbound|P ORIGINAL_DST and InboundPassthroughCluster: to the
//     connection's original destination, which the inbound redirect
//     leaves in conntrack and which is the pod's own address (IPv4 or
//     IPv6, whichever the peer reached) and the app's port; from
//     127.0.0.6 or ::6 (the cluster's upstream_bind_config). An app
//     listening on 127.0.0.1 only is not reached, and sees every mesh
//     connection come from 127.0.0.6 (::6).
//   - inbound|P STATIC: to 127.0.0.1:P, for a port the pod opted into
//     loopback delivery (weft.dev/inbound-loopback-ports).
//
// The original destination, not an address from the downward API, is the
// pod's address here: it is the one address the peer reached, right per
// connection on a dual-stack pod (its IPv4 or its IPv6) with nothing to
// configure, and it is what Envoy's ORIGINAL_DST cluster dials too. What
// it could be besides the pod's own address is refused (inboundTarget):
// a peer on the pod's link can send a packet to any address it likes, and
// the redirect would hand it to the sidecar all the same.
//
// The sidecar's dials run as its UID 1337, which capture never
// redirects, and 127.0.0.6 / ::6 over lo are exempt from capture by rule
// of their own as well; a connection from the sidecar is never looked at
// by the prerouting (inbound) chain, so delivery does not come back to
// 15006. The original destination podIP:15006 is still refused as a loop
// (selfDial), before anything is dialled.

// reasonNotLocal refuses an inbound connection whose original destination
// is not an address of the pod.
const reasonNotLocal = "not_local"

// inboundTarget says why an inbound connection must not be delivered to
// its original destination through cl (nil: it may): the cluster dials
// the original destination and that is a loopback address or none of the
// pod's (the addresses of its interfaces when Run started).
func (p *Proxy) inboundTarget(cl *model.Cluster, dst netip.AddrPort) *refusal {
	if cl.Kind != model.KindOriginalDst {
		return nil
	}
	if a := dst.Addr().Unmap(); a.IsLoopback() || !p.local[a] {
		return refused(reasonNotLocal, "proxy: cluster %s: original destination %s is not an address of the pod", cl.Name, dst)
	}
	return nil
}

// dial connects to a for cluster cl: from the cluster's source address of
// a's IP version when it names source addresses (Config.DialFrom), else as
// the kernel chooses (Config.Dial).
func (p *Proxy) dial(ctx context.Context, cl *model.Cluster, a netip.AddrPort) (net.Conn, error) {
	c, err := p.dialSource(ctx, cl, a)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		// Reads and writes that do not wake the runtime's monitor
		// thread (internal/rawio).
		return rawio.Wrap(tc), nil
	}
	return c, nil
}

// dialSource is dial's connection as Config.Dial or Config.DialFrom made it.
func (p *Proxy) dialSource(ctx context.Context, cl *model.Cluster, a netip.AddrPort) (net.Conn, error) {
	if len(cl.SourceAddrs) == 0 {
		return p.cfg.Dial(ctx, "tcp", a.String())
	}
	v4 := a.Addr().Unmap().Is4()
	i := slices.IndexFunc(cl.SourceAddrs, func(s netip.Addr) bool { return s.Is4() == v4 })
	if i < 0 {
		return nil, fmt.Errorf("proxy: no source address for %s among %v", a, cl.SourceAddrs)
	}
	dialFrom := p.cfg.DialFrom
	if dialFrom == nil {
		dialFrom = dialFromAddr
	}
	return dialFrom(ctx, "tcp", cl.SourceAddrs[i], a.String())
}

// dialFromAddr is Config.DialFrom's default.
func dialFromAddr(ctx context.Context, network string, src netip.Addr, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
	return d.DialContext(ctx, network, addr)
}
