package egress

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// NameUnknown decides a connection to dst whose name could not be learned
// (TLS without server_name or with encrypted_client_hello, bytes that are
// neither a ClientHello nor an HTTP request, a client that stalled) and
// that took chain fc.
//
// It applies when fc decided without a rule about dst: the outbound
// policy or a policy's defaultAction did (rule "default"), or fc matched on server_names, by a name that cannot be
// trusted (the outer name of an ECH ClientHello). A chain of an
// EgressPolicy rule by address (CIDR) stands: that rule decided about
// this destination whatever the name.
//
// The rules by name that apply to dst are those of the chains that the
// destination_port and prefix_ranges steps of the match leave for dst
// ([model.Listener.Candidates]): chains with server_names, and the virtual
// hosts that name hosts (not "*") in the route configurations of HTTP
// chains among them. The connection could be going to any of those hosts,
// so it gets the strictest of their decisions when that is stricter than
// fc's: deny (a Deny rule of an Enforce policy, or a chain that fails
// closed) before audit (a Deny rule of an Audit policy) before allow.
// Allow rules by name never make it stricter: a connection without a name
// cannot claim them. Of several rules of that strictness the decision
// names the one that comes first by policy ("<ns>/<name>"), then rule
// index, so that it does not depend on how the translator ordered chains;
// ok is false when fc's decision stands.
func NameUnknown(cfg *model.Config, dst netip.AddrPort, fc *model.FilterChain) (Decision, bool) {
	if cfg == nil || cfg.Outbound == nil || fc == nil || fc.Egress == nil {
		return Decision{}, false
	}
	d := ForChain(cfg, fc, "")
	if d.Action == Deny || fc.Egress.Policy != "" && fc.Egress.Rule != "default" && len(fc.Match.ServerNames) == 0 {
		return d, false
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap().WithZone(""), dst.Port())
	var best Decision
	var hosts []string
	for _, c := range cfg.Outbound.Candidates(dst) {
		if c.Egress == nil {
			continue
		}
		if len(c.Match.ServerNames) > 0 {
			if n := ForChain(cfg, c, ""); before(n, best) {
				best, hosts = n, c.Match.ServerNames
			}
		}
		rc := cfg.Routes[c.Target.RouteConfig]
		if c.Target.RouteConfig == "" || rc == nil {
			continue
		}
		base := fromMeta(c.Egress)
		base.Chain = c.Name
		for _, vh := range rc.VirtualHosts {
			if slices.Contains(vh.Domains, "*") {
				continue
			}
			if n := forVirtualHost(cfg, base, rc.Name, vh, vh.Name); before(n, best) {
				best, hosts = n, vh.Domains
			}
		}
	}
	if strictness(best.Action) <= strictness(d.Action) {
		return d, false
	}
	out := Decision{Action: best.Action, Policy: best.Policy, Rule: best.Rule, Chain: d.Chain, Route: d.Route, NameUnknown: true}
	who := "outbound policy"
	if best.Policy != "" {
		who = best.Policy + " rule " + best.Rule
	}
	verb := "denies"
	if best.Action == Audit {
		verb = "audits"
	}
	out.Reason = "egress: no name learned, and " + who + " " + verb + " " + strings.Join(hosts, ", ") + " at " + dst.String()
	return out, true
}

// before orders the decisions NameUnknown chooses from: stricter first,
// then by policy, then by rule index (numerically; "default" and
// "rejected" after every index).
func before(a, b Decision) bool {
	if sa, sb := strictness(a.Action), strictness(b.Action); sa != sb {
		return sa > sb
	}
	if a.Policy != b.Policy {
		return a.Policy < b.Policy
	}
	ia, ea := strconv.Atoi(a.Rule)
	ib, eb := strconv.Atoi(b.Rule)
	switch {
	case ea == nil && eb == nil:
		return ia < ib
	case ea == nil || eb == nil:
		return ea == nil
	}
	return a.Rule < b.Rule
}

// Unnamed reports whether chain fc decided c without a name that a rule by
// name could judge: c is not TLS with a server_name and fc does not route
// HTTP by Host (TLS without SNI, opaque bytes, a CONNECT tunnel, an HTTP
// request on a chain without routes). The proxy learns more (an ECH outer
// name, a stalled client) and decides those the same way.
func Unnamed(fc *model.FilterChain, c Conn) bool {
	c = c.normalise() // a CONNECT is opaque TCP
	if fc == nil || fc.Egress == nil || fc.Target.RouteConfig != "" {
		return false
	}
	return c.Transport != "tls" || c.SNI == ""
}

// strictness orders actions: deny, then audit, then allow.
func strictness(a Action) int {
	switch a {
	case Deny:
		return 3
	case Audit:
		return 2
	case Allow:
		return 1
	}
	return 0
}
