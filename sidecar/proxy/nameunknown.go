package proxy

import (
	"net/netip"

	"github.com/weftmesh/weft/sidecar/egress"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// reasonNameUnknown is the refusal reason (and the audit Reason's prefix)
// of an egress connection whose name could not be learned where a rule by
// name would decide it more strictly than its chain does.
const reasonNameUnknown = "name_unknown"

// Results of weft_sidecar_egress_name_unknown_total.
const (
	unknownDenied  = "denied"  // Enforce: the connection is refused
	unknownFlagged = "flagged" // Audit: forwarded, and its audit event says why
)

// nameUnknown decides an egress connection that took a chain without
// learning its name: no trusted TLS server_name (none, ECH, a name no DNS
// name is), and not an HTTP/1 request routed by its Host (the bytes were
// neither, or stalled, or the HTTP request took a chain without routes).
// Such a connection could be going to any host, so where its chain was
// not an EgressPolicy rule's about its address and a rule naming hosts
// applies to its destination and decides more strictly than the chain
// (egress.NameUnknown: deny before audit), that rule's decision holds: refused under Enforce (name_unknown), forwarded and flagged
// under Audit; either way its audit event carries the reason. Chains
// decided by a name, HTTP chains (httpEgress decides each request by its Host) and chains
// that are not egress are left alone.
func (p *Proxy) nameUnknown(cfg *model.Config, fc *model.FilterChain, dst netip.AddrPort, sn sniffed, cn *conn) *refusal {
	if fc.Egress == nil || fc.Target.RouteConfig != "" {
		return nil
	}
	why := sn.unknown
	switch {
	case why != "":
	case sn.transport == transportTLS:
		return nil // a server_name that can be trusted: the chain decided by it
	case len(sn.appProtos) > 0:
		why = "HTTP request on a chain that does not route by Host"
	default:
		why = "nothing sniffed"
	}
	d, ok := egress.NameUnknown(cfg, dst, fc)
	if !ok {
		return nil
	}
	cn.mu.Lock()
	cn.egressReason = reasonNameUnknown + ": " + why + " (" + d.Reason + ")"
	cn.nameUnknown = &d
	cn.mu.Unlock()
	if d.Action == egress.Audit {
		p.m.nameUnknown.With(unknownFlagged).Inc()
		p.log.Warn("egress connection without a name where a rule by name audits (Audit: forwarded)", "src", cn.src, "dst", cn.dst,
			"chain", fc.Name, "policy", d.Policy, "rule", d.Rule, "reason", why)
		return nil
	}
	p.m.nameUnknown.With(unknownDenied).Inc()
	return refused(reasonNameUnknown, "proxy: egress to %s without a name: %s (%s)", dst, why, d.Reason)
}
