package translate

import (
	"fmt"
	"net/netip"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/controlplane/xds"
)

// The sidecar never connects to itself.
//
// The sidecar listens on sidecarPorts: inbound 15006 (every address),
// outbound 15001, admin 15000, DNS 15053 (loopback), health 15020. The
// capture rules never redirect a connection to one of them (sidecar/capture:
// prerouting rules 1-5, output's loopback returns), so a connection
// reaches one only when it was addressed to it: a peer dialling
// podIP:15006, the app dialling 127.0.0.1:15001. Forwarding such a
// connection to its original destination would hand it to the sidecar
// again, and again. So the translator never emits a chain for one of
// those ports but the guards below, which send it to BlackHoleCluster:
//
//   - inbound: a "sidecar|<port>" chain per port, more specific than the
//     catch-all (destination_port), so the catch-all's
//     InboundPassthroughCluster never sees one; the workload's inbound
//     ports (Services' target ports, MTLSPolicy ports,
//     weft.dev/inbound-loopback-ports) leave them out;
//   - outbound: a "sidecar|<port>" chain per port for loopback
//     destinations (127.0.0.0/8, ::1), more specific than any chain that
//     could forward them (the mesh chains match ClusterIPs and endpoint
//     IPs, the egress chains rule CIDRs, which leave out CIDRs inside
//     loopback at those ports). The pod's own addresses never reach the
//     outbound listener: the kernel routes them over lo, which is not
//     captured.
//
// checkNoSelfTraffic verifies the whole of a sidecar's resources at
// generation time and fails the generation otherwise, as distinctMatches
// does: a translator bug must not become a loop in a pod.

// The sidecar's own listening ports (api/names; sidecar/capture's
// InboundPort, OutboundPort, AdminPort, HealthPort, DNSPort).
const (
	adminPort  = names.SidecarAdminPort
	healthPort = names.SidecarHealthPort
	dnsPort    = names.SidecarDNSPort
)

var sidecarPorts = []uint16{outboundPort, inboundPort, adminPort, healthPort, dnsPort}

func isSidecarPort(p uint16) bool { return slices.Contains(sidecarPorts, p) }

// Loopback, as the outbound guards match it.
var (
	loopback4 = netip.MustParsePrefix("127.0.0.0/8")
	loopback6 = netip.MustParsePrefix("::1/128")
)

// inLoopback reports whether every address of p is a loopback address.
func inLoopback(p netip.Prefix) bool {
	p = p.Masked()
	return p.Bits() >= loopback4.Bits() && loopback4.Contains(p.Addr()) || p == loopback6
}

// sidecarGuards are the chains that send connections addressed to the
// sidecar's own ports to BlackHoleCluster: with prefixes (loopback, for
// the outbound listener) or without (inbound: every address).
func sidecarGuards(prefixes ...netip.Prefix) []*listenerv3.FilterChain {
	var out []*listenerv3.FilterChain
	for _, p := range sidecarPorts {
		m := &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(p))}
		for _, pfx := range prefixes {
			m.PrefixRanges = append(m.PrefixRanges, cidrRange(pfx))
		}
		name := fmt.Sprintf("sidecar|%d", p)
		out = append(out, &listenerv3.FilterChain{
			Name:             name,
			FilterChainMatch: m,
			Filters: []*listenerv3.Filter{networkFilter(wellknown.TCPProxy, &tcpproxyv3.TcpProxy{
				StatPrefix:       name,
				ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: clusterBlackHole},
			})},
		})
	}
	return out
}

// checkNoSelfTraffic fails when res could send a connection to one of the
// sidecar's own ports on one of the pod's addresses (self) or loopback:
// a chain of the inbound listener at such a port, or of the outbound
// listener at such a port for a destination inside loopback, that does not
// go to BlackHoleCluster; a listener without the guard of each port; a
// cluster with such an endpoint address. (The outbound listener's chains
// for the pod's own address at such a port - a Service whose target port
// it is, selecting the pod - are shared by every sidecar and never taken:
// the pod's own address is not captured. Their EDS endpoints are the
// pod's address, which the sidecar's own selfDial check leaves out.)
func checkNoSelfTraffic(res xds.Resources, self []netip.Addr) error {
	isSelf := func(a netip.Addr) bool {
		a = a.Unmap()
		return a.IsLoopback() || a.IsUnspecified() || slices.Contains(self, a)
	}
	for _, r := range res[resource.ListenerType] {
		l := r.(*listenerv3.Listener)
		guarded := map[uint16]bool{}
		for _, fc := range l.GetFilterChains() {
			m := fc.GetFilterChainMatch()
			if m.GetDestinationPort() == nil || !isSidecarPort(uint16(m.GetDestinationPort().GetValue())) {
				continue
			}
			port := uint16(m.GetDestinationPort().GetValue())
			// Inbound, any chain at the port; outbound, one for destinations
			// inside loopback (a wider one, or none, is less specific than
			// the guard, which takes loopback).
			toSelf := l.GetName() == listenerInbound
			for _, cr := range m.GetPrefixRanges() {
				a, err := netip.ParseAddr(cr.GetAddressPrefix())
				if err != nil {
					return fmt.Errorf("listener %s chain %s: prefix %q: %w", l.GetName(), fc.GetName(), cr.GetAddressPrefix(), err)
				}
				pfx := netip.PrefixFrom(a, int(cr.GetPrefixLen().GetValue()))
				if inLoopback(pfx) {
					toSelf = true
				}
			}
			if !toSelf {
				continue
			}
			if cl := chainCluster(fc); cl != clusterBlackHole {
				return fmt.Errorf("listener %s chain %s sends connections to the sidecar's own port %d to cluster %q: a loop", l.GetName(), fc.GetName(), port, cl)
			}
			guarded[port] = true
		}
		if l.GetName() != listenerInbound && l.GetName() != listenerOutbound {
			continue
		}
		for _, p := range sidecarPorts {
			if !guarded[p] {
				return fmt.Errorf("listener %s has no guard chain for the sidecar's own port %d: its catch-all would forward connections to it back to the sidecar", l.GetName(), p)
			}
		}
	}
	for _, r := range res[resource.ClusterType] {
		c := r.(*clusterv3.Cluster)
		for _, lle := range c.GetLoadAssignment().GetEndpoints() {
			for _, lbe := range lle.GetLbEndpoints() {
				sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
				a, err := netip.ParseAddr(sa.GetAddress())
				if err == nil && isSelf(a) && isSidecarPort(uint16(sa.GetPortValue())) {
					return fmt.Errorf("cluster %s has endpoint %s: the sidecar's own port, a loop", c.GetName(), netip.AddrPortFrom(a, uint16(sa.GetPortValue())))
				}
			}
		}
	}
	return nil
}

// chainCluster is the cluster a chain's tcp_proxy sends to ("" when it has
// none: an HTTP chain, whose routes say).
func chainCluster(fc *listenerv3.FilterChain) string {
	for _, f := range fc.GetFilters() {
		if f.GetName() != wellknown.TCPProxy {
			continue
		}
		var tp tcpproxyv3.TcpProxy
		if err := f.GetTypedConfig().UnmarshalTo(&tp); err == nil {
			return tp.GetCluster()
		}
	}
	return ""
}
