package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/controlplane/xds"
)

// conn is an outbound connection as the sidecar sees it.
type conn struct {
	ip    netip.Addr
	port  uint16
	proto string // "tls", "http" or "tcp"
	name  string // SNI (tls) or Host (http); may be empty
}

func (c conn) String() string { return fmt.Sprintf("%s %s:%d %q", c.proto, c.ip, c.port, c.name) }

// ---- Envoy's filter chain match, as documented for FilterChainMatch ----

// matchChain narrows by destination port, destination IP (longest
// prefix), server name (exact, then the longest wildcard), transport
// protocol and application protocol, each to the most specific candidate
// and never back; nil means the default chain.
func matchChain(t *testing.T, l *listenerv3.Listener, c conn) *listenerv3.FilterChain {
	t.Helper()
	cands := l.FilterChains
	narrow := func(keep func(*listenerv3.FilterChainMatch) bool, fallback func(*listenerv3.FilterChainMatch) bool) {
		var out []*listenerv3.FilterChain
		for _, ch := range cands {
			if keep(ch.GetFilterChainMatch()) {
				out = append(out, ch)
			}
		}
		if len(out) == 0 && fallback != nil {
			for _, ch := range cands {
				if fallback(ch.GetFilterChainMatch()) {
					out = append(out, ch)
				}
			}
		}
		cands = out
	}
	narrow(func(m *listenerv3.FilterChainMatch) bool { return m.GetDestinationPort().GetValue() == uint32(c.port) },
		func(m *listenerv3.FilterChainMatch) bool { return m.GetDestinationPort() == nil })
	// No prefix_ranges is 0.0.0.0/0 and ::/0: a match of length 0, like a
	// range of a whole family.
	best := -1
	bestLen := func(m *listenerv3.FilterChainMatch) int {
		if len(m.GetPrefixRanges()) == 0 {
			return 0
		}
		n := -1
		for _, r := range m.GetPrefixRanges() {
			p := netip.PrefixFrom(netip.MustParseAddr(r.AddressPrefix), int(r.GetPrefixLen().GetValue()))
			if p.Contains(c.ip) && p.Bits() > n {
				n = p.Bits()
			}
		}
		return n
	}
	for _, ch := range cands {
		best = max(best, bestLen(ch.GetFilterChainMatch()))
	}
	narrow(func(m *listenerv3.FilterChainMatch) bool { return best >= 0 && bestLen(m) == best }, nil)
	sni := ""
	if c.proto == "tls" {
		sni = c.name
	}
	serverName := ""
	if sni != "" {
		for _, candidate := range append([]string{sni}, wildcards(sni)...) {
			for _, ch := range cands {
				for _, n := range ch.GetFilterChainMatch().GetServerNames() {
					if n == candidate && serverName == "" {
						serverName = candidate
					}
				}
			}
			if serverName != "" {
				break
			}
		}
	}
	narrow(func(m *listenerv3.FilterChainMatch) bool {
		if serverName == "" {
			return len(m.GetServerNames()) == 0
		}
		for _, n := range m.GetServerNames() {
			if n == serverName {
				return true
			}
		}
		return false
	}, nil)
	transport := "raw_buffer"
	if c.proto == "tls" {
		transport = "tls"
	}
	narrow(func(m *listenerv3.FilterChainMatch) bool { return m.GetTransportProtocol() == transport },
		func(m *listenerv3.FilterChainMatch) bool { return m.GetTransportProtocol() == "" })
	narrow(func(m *listenerv3.FilterChainMatch) bool {
		for _, a := range m.GetApplicationProtocols() {
			if c.proto == "http" && a == "http/1.1" {
				return true
			}
		}
		return false
	}, func(m *listenerv3.FilterChainMatch) bool { return len(m.GetApplicationProtocols()) == 0 })
	switch len(cands) {
	case 0:
		return nil
	case 1:
		return cands[0]
	}
	t.Fatalf("%v matches %d chains", c, len(cands))
	return nil
}

// wildcards are Envoy's wildcard server names for name, longest first:
// a.b.c -> *.b.c, *.c.
func wildcards(name string) []string {
	var out []string
	labels := strings.Split(name, ".")
	for i := 1; i < len(labels); i++ {
		out = append(out, "*."+strings.Join(labels[i:], "."))
	}
	return out
}

// matchVirtualHost picks a route configuration's virtual host for a Host
// header: exact domain, then the longest suffix wildcard, then "*".
func matchVirtualHost(rc *routev3.RouteConfiguration, host string) *routev3.VirtualHost {
	var wild *routev3.VirtualHost
	wildLen := -1
	var any *routev3.VirtualHost
	for _, vh := range rc.VirtualHosts {
		for _, d := range vh.Domains {
			switch {
			case d == host:
				return vh
			case d == "*":
				any = vh
			case strings.HasPrefix(d, "*") && strings.HasSuffix(host, d[1:]) && len(host) > len(d)-1 && len(d) > wildLen:
				wild, wildLen = vh, len(d)
			}
		}
	}
	if wild != nil {
		return wild
	}
	return any
}

type outcome struct{ decision, policy, rule string }

func metaOutcome(md map[string]*structpb.Struct) outcome {
	f := md["weft.egress"].GetFields()
	return outcome{f["decision"].GetStringValue(), f["policy"].GetStringValue(), f["rule"].GetStringValue()}
}

// simulate is what the generated config does with c.
func simulate(t *testing.T, res xds.Resources, c conn) outcome {
	t.Helper()
	l := listener(res, "outbound")
	ch := matchChain(t, l, c)
	if ch == nil {
		ch = l.DefaultFilterChain
	}
	last := ch.Filters[len(ch.Filters)-1]
	if route := httpRoute(t, res, ch, c); route != nil {
		out := metaOutcome(route.GetMetadata().GetFilterMetadata())
		if (route.GetDirectResponse() != nil) != (out.decision == decisionDeny) {
			t.Errorf("%v: route %v does not do what its metadata says", c, route)
		}
		return out
	}
	out := metaOutcome(ch.GetMetadata().GetFilterMetadata())
	tp := &tcpproxyv3.TcpProxy{}
	if err := last.GetTypedConfig().UnmarshalTo(tp); err != nil {
		t.Fatal(err)
	}
	if (tp.GetCluster() == clusterBlackHole) != (out.decision == decisionDeny) {
		t.Errorf("%v: chain %s sends to %s but says %q", c, ch.Name, tp.GetCluster(), out.decision)
	}
	if (len(ch.Filters) == 2) != (out.decision == decisionAudit) {
		t.Errorf("%v: chain %s: audit needs exactly the shadow rbac filter", c, ch.Name)
	}
	return out
}

// httpRoute is the route an HTTP chain ch picks for c; nil when ch is not
// an HTTP chain.
func httpRoute(t *testing.T, res xds.Resources, ch *listenerv3.FilterChain, c conn) *routev3.Route {
	t.Helper()
	last := ch.Filters[len(ch.Filters)-1]
	if last.Name != "envoy.filters.network.http_connection_manager" {
		return nil
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := last.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	var rc *routev3.RouteConfiguration
	for _, r := range res[resource.RouteType] {
		if r.(*routev3.RouteConfiguration).Name == hcm.GetRds().GetRouteConfigName() {
			rc = r.(*routev3.RouteConfiguration)
		}
	}
	host := c.name
	if hcm.GetStripAnyHostPort() {
		host, _, _ = strings.Cut(host, ":")
	}
	return matchVirtualHost(rc, host).Routes[0]
}

// ---- the policy semantics, written from the API's documentation ----

func refHostMatches(pattern, name string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		return strings.HasSuffix(name, "."+rest)
	}
	return pattern == name
}

// reference decides c by EgressPolicy's documented semantics
// (api/v1alpha1: EgressPolicy, EgressPolicySpec.defaultAction), given base:
// the outbound policy's decision, or a rejected policy's fail-closed deny.
//
// A connection is first judged by the Enforce-mode policies alone: if they
// deny it, it is denied. Otherwise it is judged again as if every policy
// were enforced: if that denies it, an Audit-mode policy would, and it goes
// through flagged ("audit", naming what would deny it). Otherwise it is
// allowed, named by the enforced Allow rule if one matched, else by what
// the second judgement found (an audited Allow rule, or base).
func reference(pols []*mesh.EgressPolicy, base outcome, c conn) outcome {
	var enforced []*mesh.EgressPolicy
	for _, p := range pols {
		if p.Mode != v1alpha1.EgressAudit {
			enforced = append(enforced, p)
		}
	}
	e := refJudge(enforced, base, c)
	if e.decision == decisionDeny {
		return e
	}
	all := refJudge(pols, base, c)
	if all.decision == decisionDeny {
		return outcome{decisionAudit, all.policy, all.rule}
	}
	if e.policy != "" {
		return e
	}
	return all
}

// refJudge decides c by pols, all taken as enforced: a matching Deny rule
// (the first, policies in order), else a matching Allow rule (the first),
// else a rejected policy's deny (base), else the first policy whose
// defaultAction is Deny (absent reads as Deny), else base.
func refJudge(pols []*mesh.EgressPolicy, base outcome, c conn) outcome {
	var allow *outcome
	for _, p := range pols {
		for i, r := range p.Rules {
			if !refRuleMatches(r, c) {
				continue
			}
			o := outcome{decisionAllow, p.Namespace + "/" + p.Name, fmt.Sprint(i)}
			if r.Action == v1alpha1.EgressDeny {
				o.decision = decisionDeny
				return o
			}
			if allow == nil {
				allow = &o
			}
		}
	}
	switch {
	case allow != nil:
		return *allow
	case base.rule == "rejected":
		return base
	}
	for _, p := range pols {
		if p.DefaultAction != v1alpha1.EgressAllow {
			return outcome{decisionDeny, p.Namespace + "/" + p.Name, "default"}
		}
	}
	return base
}

// refRuleMatches: a rule matches by port (every port when it has none) and
// by a CIDR containing the IP or a host matching the SNI (TLS ports) or
// Host (HTTP ports).
func refRuleMatches(r mesh.EgressRule, c conn) bool {
	portOK, tlsOK, httpOK := len(r.Ports) == 0, len(r.Ports) == 0, len(r.Ports) == 0
	for _, rp := range r.Ports {
		if rp.Number == c.port {
			portOK = true
			tlsOK = tlsOK || rp.Protocol == v1alpha1.EgressTLS
			httpOK = httpOK || rp.Protocol == v1alpha1.EgressHTTP
		}
	}
	if !portOK {
		return false
	}
	for _, cidr := range r.CIDRs {
		if cidr.Contains(c.ip) {
			return true
		}
	}
	host, _, _ := strings.Cut(c.name, ":")
	for _, h := range r.Hosts {
		if host != "" && ((c.proto == "tls" && tlsOK) || (c.proto == "http" && httpOK)) && refHostMatches(h, host) {
			return true
		}
	}
	return false
}

func overlappingEgress() []*mesh.EgressPolicy {
	tls := func(n uint16) mesh.EgressPort {
		return mesh.EgressPort{Number: n, Protocol: v1alpha1.EgressTLS}
	}
	http := func(n uint16) mesh.EgressPort {
		return mesh.EgressPort{Number: n, Protocol: v1alpha1.EgressHTTP}
	}
	tcp := func(n uint16) mesh.EgressPort {
		return mesh.EgressPort{Number: n, Protocol: v1alpha1.EgressTCP}
	}
	pfx := netip.MustParsePrefix
	return []*mesh.EgressPolicy{
		{Namespace: "demo", Name: "a-broad", Mode: v1alpha1.EgressEnforce, DefaultAction: v1alpha1.EgressAllow, Rules: []mesh.EgressRule{
			{Hosts: []string{"*.example.com"}, Ports: []mesh.EgressPort{tls(443), http(80)}, Action: v1alpha1.EgressAllow},
			{Hosts: []string{"bad.example.com", "*.bad.example.com"}, Ports: []mesh.EgressPort{tls(443)}, Action: v1alpha1.EgressDeny},
			{CIDRs: []netip.Prefix{pfx("203.0.113.0/24")}, Action: v1alpha1.EgressAllow},
			{CIDRs: []netip.Prefix{pfx("203.0.113.128/25")}, Ports: []mesh.EgressPort{tcp(22)}, Action: v1alpha1.EgressDeny},
			{Hosts: []string{"docs.example.org"}, Action: v1alpha1.EgressAllow},
			{Hosts: []string{"*.internal.example"}, Ports: []mesh.EgressPort{http(8080)}, Action: v1alpha1.EgressAllow},
		}},
		{Namespace: "demo", Name: "b-audit", Mode: v1alpha1.EgressAudit, DefaultAction: v1alpha1.EgressDeny, Rules: []mesh.EgressRule{
			{Hosts: []string{"api.example.com"}, Ports: []mesh.EgressPort{tls(443)}, Action: v1alpha1.EgressDeny},
			{CIDRs: []netip.Prefix{pfx("203.0.113.0/24")}, Ports: []mesh.EgressPort{tls(443)}, Action: v1alpha1.EgressDeny},
			{Hosts: []string{"docs.example.org"}, Ports: []mesh.EgressPort{http(80)}, Action: v1alpha1.EgressAllow},
		}},
	}
}

// TestEgressAgreesWithPolicy proves the egress translation: for the golden
// policies and a deliberately overlapping set, under each outbound policy,
// every probe connection ends where the EgressPolicy semantics say.
func TestEgressAgreesWithPolicy(t *testing.T) {
	ips := []string{"1.2.3.4", "203.0.113.5", "203.0.113.200", "198.18.100.7", "140.82.112.3", "198.18.9.9"}
	ports := []uint16{22, 80, 443, 8080, 9000, 1234}
	tlsNames := []string{"", "api.example.com", "x.example.com", "a.b.example.com", "example.com", "bad.example.com",
		"x.bad.example.com", "docs.example.org", "x.github.com", "github.com", "evil.example.com", "other.org"}
	httpNames := []string{"", "evil.example.com", "evil.example.com:80", "api.example.com", "docs.example.org", "docs.example.org:8080",
		"a.internal.example", "a.internal.example:8080", "internal.example", "other.org"}
	actions := []v1alpha1.EgressAction{v1alpha1.EgressAllow, v1alpha1.EgressDeny}
	for _, set := range []string{"golden", "overlapping"} {
		// Both sets hold an Enforce policy and an Audit one: every pair of
		// their defaultActions.
		for _, defs := range [][]v1alpha1.EgressAction{actions[:1], actions[1:], {actions[0], actions[1]}, {actions[1], actions[0]}} {
			for _, mode := range []v1alpha1.OutboundMode{v1alpha1.OutboundAllowAny, v1alpha1.OutboundRegistryOnly} {
				t.Run(fmt.Sprintf("%s/default-%v/%s", set, defs, mode), func(t *testing.T) {
					c := meshContents(mode)
					if set == "overlapping" {
						c.EgressPolicies = overlappingEgress()
					}
					c.EgressPolicies = withDefaults(c.EgressPolicies, defs...)
					agreeWithReference(t, c, mode, ips, ports, tlsNames, httpNames)
				})
			}
		}
	}
}

// agreeWithReference checks every probe connection of the client (ips ×
// ports × TLS with each SNI, HTTP with each Host, opaque TCP) against
// reference.
func agreeWithReference(t *testing.T, c mesh.Contents, mode v1alpha1.OutboundMode, ips []string, ports []uint16, tlsNames, httpNames []string) {
	t.Helper()
	res := generate(t, mesh.NewSnapshot(0, c), "client-7d9f.demo")
	if err := checkChainMatches(listener(res, "outbound")); err != nil {
		t.Fatal(err)
	}
	def := outcome{decision: decisionAllow}
	if mode == v1alpha1.OutboundRegistryOnly {
		def.decision = decisionDeny
	}
	n := 0
	for _, ip := range ips {
		for _, port := range ports {
			a := netip.MustParseAddr(ip)
			conns := []conn{{a, port, "tcp", ""}}
			for _, name := range tlsNames {
				conns = append(conns, conn{a, port, "tls", name})
			}
			for _, name := range httpNames {
				conns = append(conns, conn{a, port, "http", name})
			}
			for _, cn := range conns {
				n++
				want := reference(c.EgressPolicies, def, cn)
				if got := simulate(t, res, cn); got != want {
					t.Errorf("%v: got %+v, want %+v", cn, got, want)
				}
			}
		}
	}
	t.Logf("%d connections agree", n)
}

// TestInMeshBeatsEgress: a Service's ClusterIP and a sidecar pod's port go
// to the mesh even where an egress CIDR covers them.
func TestInMeshBeatsEgress(t *testing.T) {
	c := meshContents(v1alpha1.OutboundRegistryOnly)
	c.EgressPolicies = append(c.EgressPolicies, &mesh.EgressPolicy{Namespace: "demo", Name: "deny-cluster", Mode: v1alpha1.EgressEnforce, DefaultAction: v1alpha1.EgressDeny,
		Rules: []mesh.EgressRule{{CIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("198.19.0.20/32")}, Action: v1alpha1.EgressDeny}}})
	res := generate(t, mesh.NewSnapshot(0, c), "client-7d9f.demo")
	l := listener(res, "outbound")
	for _, tc := range []struct {
		c    conn
		want string
	}{
		{conn{netip.MustParseAddr("198.19.0.20"), 80, "http", "server"}, "outbound|80|server.demo"},
		{conn{netip.MustParseAddr("198.18.1.11"), 8080, "tls", ""}, "outbound|80|server.demo|8080"},
		{conn{netip.MustParseAddr("198.19.0.1"), 443, "tls", "kubernetes.default"}, "passthrough|443|kubernetes.default"},
		{conn{netip.MustParseAddr("198.19.0.20"), 81, "tcp", ""}, "egress|*|tcp|deny|demo/deny-cluster#0"},
	} {
		if ch := matchChain(t, l, tc.c); ch == nil || ch.Name != tc.want {
			t.Errorf("%v: chain %v, want %s", tc.c, ch.GetName(), tc.want)
		}
	}
}

// TestRejectedEgressFailsClosed: a rejected EgressPolicy in the workload's
// namespace makes unmatched egress deny (accepted rules still apply); a
// rejected MeshConfig "default" makes the mesh REGISTRY_ONLY; one with
// another name is ignored. A rejection that fails closed is named before
// an accepted policy's defaultAction Deny (what the operator must mend).
func TestRejectedEgressFailsClosed(t *testing.T) {
	byDefault := outcome{decisionDeny, "demo/client-egress", "default"}
	for _, tc := range []struct {
		rejected mesh.Rejected
		want     outcome // client-egress with defaultAction Allow
		wantDeny outcome // with defaultAction Deny
	}{
		{mesh.Rejected{Kind: v1alpha1.EgressPolicyKind, Namespace: "demo", Name: "broken"}, outcome{decisionDeny, "demo/broken", "rejected"}, outcome{decisionDeny, "demo/broken", "rejected"}},
		{mesh.Rejected{Kind: v1alpha1.EgressPolicyKind, Namespace: "legacy", Name: "broken"}, outcome{decision: decisionAllow}, byDefault},
		{mesh.Rejected{Kind: v1alpha1.MeshConfigKind, Name: "default", Reason: v1alpha1.ReasonTrustDomainMismatch}, outcome{decisionDeny, "MeshConfig/default", "rejected"}, outcome{decisionDeny, "MeshConfig/default", "rejected"}},
		{mesh.Rejected{Kind: v1alpha1.MeshConfigKind, Name: "other", Reason: v1alpha1.ReasonNotDefault}, outcome{decision: decisionAllow}, byDefault},
	} {
		for _, def := range []v1alpha1.EgressAction{v1alpha1.EgressAllow, v1alpha1.EgressDeny} {
			c := meshContents(v1alpha1.OutboundAllowAny)
			c.EgressPolicies = withDefaults(c.EgressPolicies, def)
			c.Rejected = []mesh.Rejected{tc.rejected}
			res := generate(t, mesh.NewSnapshot(0, c), "client-7d9f.demo")
			name := tc.rejected.Kind + " " + tc.rejected.Namespace + "/" + tc.rejected.Name + ", defaultAction " + string(def)
			want := tc.want
			if def == v1alpha1.EgressDeny {
				want = tc.wantDeny
			}
			for _, cn := range []conn{
				{netip.MustParseAddr("1.2.3.4"), 443, "tls", "unknown.example.net"},
				{netip.MustParseAddr("1.2.3.4"), 80, "http", "unknown.example.net"},
				{netip.MustParseAddr("1.2.3.4"), 5432, "tcp", ""},
			} {
				if got := simulate(t, res, cn); got != want {
					t.Errorf("%s: %v: got %+v, want %+v", name, cn, got, want)
				}
			}
			allowed := conn{netip.MustParseAddr("1.2.3.4"), 443, "tls", "api.example.com"}
			if got := simulate(t, res, allowed); got.decision != decisionAllow {
				t.Errorf("%s: an accepted Allow rule no longer applies: %+v", name, got)
			}
		}
	}
}

// withDefaults copies pols with every defaultAction set to def.
func withDefaults(pols []*mesh.EgressPolicy, def ...v1alpha1.EgressAction) []*mesh.EgressPolicy {
	out := make([]*mesh.EgressPolicy, len(pols))
	for i, p := range pols {
		cp := *p
		cp.DefaultAction = def[min(i, len(def)-1)]
		out[i] = &cp
	}
	return out
}

// TestEgressWholeFamilyCIDR: a rule CIDR of a whole address family
// (0.0.0.0/0, ::/0) is Envoy's "any IP" of that family, which empty
// prefix_ranges are too. With a host rule without ports beside it, the
// translator used to emit the host's TLS chain twice, once for any IP and
// once for 0.0.0.0/0: chains Envoy calls identical (the sidecar NACKed).
// Every shape here must give distinct matches (generate's checkResources,
// checkChainMatches) and the verdicts of the policy model for IPv4 and
// IPv6 destinations.
func TestEgressWholeFamilyCIDR(t *testing.T) {
	pfx := netip.MustParsePrefix
	tls := func(n uint16) mesh.EgressPort {
		return mesh.EgressPort{Number: n, Protocol: v1alpha1.EgressTLS}
	}
	host := mesh.EgressRule{Hosts: []string{"api.example.com"}, Action: v1alpha1.EgressAllow}
	deny := func(cidrs ...string) mesh.EgressRule {
		r := mesh.EgressRule{Action: v1alpha1.EgressDeny}
		for _, c := range cidrs {
			r.CIDRs = append(r.CIDRs, pfx(c))
		}
		return r
	}
	cases := []struct {
		name  string
		mode  v1alpha1.EgressMode
		rules []mesh.EgressRule
	}{
		{"ipv4", v1alpha1.EgressEnforce, []mesh.EgressRule{host, deny("0.0.0.0/0")}},
		{"ipv6", v1alpha1.EgressEnforce, []mesh.EgressRule{host, deny("::/0")}},
		{"both-families", v1alpha1.EgressEnforce, []mesh.EgressRule{host, deny("0.0.0.0/0", "::/0")}},
		{"both-families-two-rules", v1alpha1.EgressEnforce, []mesh.EgressRule{host, deny("::/0"), deny("0.0.0.0/0")}},
		{"ipv4-audit", v1alpha1.EgressAudit, []mesh.EgressRule{host, deny("0.0.0.0/0")}},
		{"ipv4-with-narrower", v1alpha1.EgressEnforce, []mesh.EgressRule{host, deny("0.0.0.0/0"),
			{CIDRs: []netip.Prefix{pfx("203.0.113.0/24"), pfx("2001:db8::/32")}, Action: v1alpha1.EgressAllow}}},
		{"ipv4-allow-ported-host", v1alpha1.EgressEnforce, []mesh.EgressRule{
			{Hosts: []string{"api.example.com", "*.github.com"}, Ports: []mesh.EgressPort{tls(443)}, Action: v1alpha1.EgressAllow},
			{CIDRs: []netip.Prefix{pfx("0.0.0.0/0")}, Ports: []mesh.EgressPort{tls(443)}, Action: v1alpha1.EgressDeny}}},
		{"ipv6-ported-deny-portless-host", v1alpha1.EgressEnforce, []mesh.EgressRule{host,
			{CIDRs: []netip.Prefix{pfx("::/0")}, Ports: []mesh.EgressPort{tls(443)}, Action: v1alpha1.EgressDeny}}},
	}
	ips := []string{"1.2.3.4", "203.0.113.5", "140.82.112.3", "2001:db8::1", "2606:4700::1111"}
	ports := []uint16{22, 80, 443, 8080, 9000}
	tlsNames := []string{"", "api.example.com", "x.github.com", "other.org"}
	httpNames := []string{"api.example.com", "api.example.com:8080", "other.org"}
	for _, tc := range cases {
		for _, def := range []v1alpha1.EgressAction{v1alpha1.EgressAllow, v1alpha1.EgressDeny} {
			for _, mode := range []v1alpha1.OutboundMode{v1alpha1.OutboundAllowAny, v1alpha1.OutboundRegistryOnly} {
				t.Run(tc.name+"/default-"+string(def)+"/"+string(mode), func(t *testing.T) {
					c := meshContents(mode)
					c.EgressPolicies = []*mesh.EgressPolicy{{Namespace: "demo", Name: "lockdown", Mode: tc.mode, DefaultAction: def, Rules: tc.rules}}
					agreeWithReference(t, c, mode, ips, ports, tlsNames, httpNames)
				})
			}
		}
	}
}

// TestCheckChainMatchesEnvoySemantics: the test helper reads prefixes as
// Envoy does, so the translator's tests catch chains that differ only in
// how they spell the same addresses.
func TestCheckChainMatchesEnvoySemantics(t *testing.T) {
	chain := func(name string, sni string, prefixes ...string) *listenerv3.FilterChain {
		m := &listenerv3.FilterChainMatch{TransportProtocol: "tls", ServerNames: []string{sni}}
		for _, p := range prefixes {
			m.PrefixRanges = append(m.PrefixRanges, cidrRange(netip.MustParsePrefix(p)))
		}
		return &listenerv3.FilterChain{Name: name, FilterChainMatch: m}
	}
	for _, tc := range []struct {
		name   string
		chains []*listenerv3.FilterChain
		dup    bool
	}{
		{"empty and 0.0.0.0/0", []*listenerv3.FilterChain{chain("a", "x.example"), chain("b", "x.example", "0.0.0.0/0")}, true},
		{"empty and ::/0", []*listenerv3.FilterChain{chain("a", "x.example"), chain("b", "x.example", "::/0")}, true},
		{"unmasked", []*listenerv3.FilterChain{chain("a", "x.example", "198.18.0.0/15"), {Name: "b", FilterChainMatch: &listenerv3.FilterChainMatch{
			TransportProtocol: "tls", ServerNames: []string{"x.example"},
			PrefixRanges: []*corev3.CidrRange{{AddressPrefix: "198.19.2.3", PrefixLen: wrapperspb.UInt32(15)}}}}}, true},
		{"empty and ::/0 with 0.0.0.0/0, other names", []*listenerv3.FilterChain{chain("a", "x.example"), chain("b", "y.example", "::/0", "0.0.0.0/0")}, false},
		{"the two families apart", []*listenerv3.FilterChain{chain("a", "x.example", "::/0"), chain("b", "x.example", "0.0.0.0/0")}, false},
	} {
		err := checkChainMatches(&listenerv3.Listener{Name: "outbound", FilterChains: tc.chains})
		if (err != nil) != tc.dup {
			t.Errorf("%s: checkChainMatches = %v, want a duplicate: %t", tc.name, err, tc.dup)
		}
	}
}

// TestEgressDistinctMatches: the translator's own check refuses what the
// sidecar would NACK, before it is sent.
func TestEgressDistinctMatches(t *testing.T) {
	v := verdict{decision: decisionAllow}
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		name   string
		chains []egressChain
		taken  map[meshKey]bool
		want   string
	}{
		{"any IP and 0.0.0.0/0", []egressChain{{kind: kindTLS, hosts: []string{"api.example.com"}, v: v},
			{prefixes: []netip.Prefix{pfx("0.0.0.0/0")}, kind: kindTLS, hosts: []string{"api.example.com"}, v: v}},
			nil, `egress chains 0 and 1 have the same match (port *, prefix 0.0.0.0/0, server name "api.example.com", tls)`},
		{"any IP and ::/0", []egressChain{{port: 443, kind: kindTCP, v: v}, {port: 443, prefixes: []netip.Prefix{pfx("::/0")}, kind: kindTCP, v: v}},
			nil, `egress chains 0 and 1 have the same match (port 443, prefix ::/0, server name "", tcp)`},
		{"in-mesh leaf", []egressChain{{port: 80, prefixes: []netip.Prefix{pfx("198.19.0.20/32")}, kind: kindHTTP, v: v}},
			map[meshKey]bool{{80, pfx("198.19.0.20/32")}: true}, `egress chain 0 (port 80, 198.19.0.20/32) has the leaf of an in-mesh chain`},
		{"distinct", []egressChain{{kind: kindTLS, hosts: []string{"a.example"}, v: v}, {kind: kindTCP, v: v},
			{prefixes: []netip.Prefix{pfx("::/0")}, kind: kindTLS, hosts: []string{"b.example"}, v: v},
			{port: 80, prefixes: []netip.Prefix{pfx("198.19.0.20/32")}, kind: kindHTTP, v: v}},
			map[meshKey]bool{{81, pfx("198.19.0.20/32")}: true}, ""},
	} {
		err := distinctMatches(tc.chains, tc.taken)
		if got := fmt.Sprint(err); tc.want == "" && err != nil || tc.want != "" && got != tc.want {
			t.Errorf("%s: distinctMatches = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestEgressDefaultAction spells out, connection by connection, what an
// EgressPolicy's defaultAction does (api/v1alpha1 EgressPolicySpec): an
// allow-list refuses what it does not name under ALLOW_ANY; what several
// policies allow adds up; an Audit-mode policy flags and never opens; a
// policy without rules refuses all egress but not the mesh; the HTTP 403
// and the metadata say "<ns>/<name> default".
func TestEgressDefaultAction(t *testing.T) {
	tls443 := []mesh.EgressPort{{Number: 443, Protocol: v1alpha1.EgressTLS}}
	http80 := []mesh.EgressPort{{Number: 80, Protocol: v1alpha1.EgressHTTP}}
	allow := func(host string, ports []mesh.EgressPort) mesh.EgressRule {
		return mesh.EgressRule{Hosts: []string{host}, Ports: ports, Action: v1alpha1.EgressAllow}
	}
	deny := func(host string, ports []mesh.EgressPort) mesh.EgressRule {
		return mesh.EgressRule{Hosts: []string{host}, Ports: ports, Action: v1alpha1.EgressDeny}
	}
	pol := func(name string, mode v1alpha1.EgressMode, def v1alpha1.EgressAction, rules ...mesh.EgressRule) *mesh.EgressPolicy {
		return &mesh.EgressPolicy{Namespace: "demo", Name: name, ServiceAccounts: []string{"client"}, Mode: mode, DefaultAction: def, Rules: rules}
	}
	ext := netip.MustParseAddr("1.2.3.4")
	api := conn{ext, 443, "tls", "api.example.com"}
	gh := conn{ext, 443, "tls", "x.github.com"}
	other := conn{ext, 443, "tls", "other.example.net"}
	otherHTTP := conn{ext, 80, "http", "other.example.net"}
	evilHTTP := conn{ext, 80, "http", "evil.example.com"}
	tcp := conn{ext, 5432, "tcp", ""}
	type want struct {
		c conn
		o outcome
	}
	byRule := func(d, p, r string) outcome { return outcome{d, "demo/" + p, r} }
	outbound := func(d string) outcome { return outcome{decision: d} }
	for _, tc := range []struct {
		name     string
		outbound v1alpha1.OutboundMode
		pols     []*mesh.EgressPolicy
		want     []want
	}{
		{"allow-list under ALLOW_ANY", v1alpha1.OutboundAllowAny,
			[]*mesh.EgressPolicy{pol("list", v1alpha1.EgressEnforce, v1alpha1.EgressDeny, allow("api.example.com", tls443), deny("evil.example.com", http80))},
			[]want{{api, byRule("allow", "list", "0")}, {other, byRule("deny", "list", "default")}, {otherHTTP, byRule("deny", "list", "default")},
				{evilHTTP, byRule("deny", "list", "1")}, {tcp, byRule("deny", "list", "default")}}},
		{"block-list under ALLOW_ANY", v1alpha1.OutboundAllowAny,
			[]*mesh.EgressPolicy{pol("block", v1alpha1.EgressEnforce, v1alpha1.EgressAllow, deny("evil.example.com", http80))},
			[]want{{other, outbound("allow")}, {otherHTTP, outbound("allow")}, {evilHTTP, byRule("deny", "block", "0")}, {tcp, outbound("allow")}}},
		{"block-list under REGISTRY_ONLY", v1alpha1.OutboundRegistryOnly,
			[]*mesh.EgressPolicy{pol("block", v1alpha1.EgressEnforce, v1alpha1.EgressAllow, deny("evil.example.com", http80))},
			[]want{{other, outbound("deny")}, {otherHTTP, outbound("deny")}, {evilHTTP, byRule("deny", "block", "0")}}},
		{"allows add up", v1alpha1.OutboundAllowAny,
			[]*mesh.EgressPolicy{pol("a", v1alpha1.EgressEnforce, v1alpha1.EgressDeny, allow("api.example.com", tls443)),
				pol("b", v1alpha1.EgressEnforce, v1alpha1.EgressAllow, allow("*.github.com", tls443))},
			[]want{{api, byRule("allow", "a", "0")}, {gh, byRule("allow", "b", "0")}, {other, byRule("deny", "a", "default")}}},
		{"first Enforce policy with Deny names the default", v1alpha1.OutboundAllowAny,
			[]*mesh.EgressPolicy{pol("a", v1alpha1.EgressEnforce, v1alpha1.EgressAllow, allow("api.example.com", tls443)),
				pol("b", v1alpha1.EgressAudit, v1alpha1.EgressDeny, allow("api.example.com", tls443)),
				pol("c", v1alpha1.EgressEnforce, v1alpha1.EgressDeny, allow("api.example.com", tls443)),
				pol("d", v1alpha1.EgressEnforce, v1alpha1.EgressDeny, allow("api.example.com", tls443))},
			[]want{{api, byRule("allow", "a", "0")}, {other, byRule("deny", "c", "default")}}},
		{"audit allow-list flags the rest", v1alpha1.OutboundAllowAny,
			[]*mesh.EgressPolicy{pol("trial", v1alpha1.EgressAudit, v1alpha1.EgressDeny, allow("api.example.com", tls443))},
			[]want{{api, byRule("allow", "trial", "0")}, {other, byRule("audit", "trial", "default")}, {otherHTTP, byRule("audit", "trial", "default")},
				{tcp, byRule("audit", "trial", "default")}}},
		{"audit allow-list under REGISTRY_ONLY opens nothing", v1alpha1.OutboundRegistryOnly,
			[]*mesh.EgressPolicy{pol("trial", v1alpha1.EgressAudit, v1alpha1.EgressDeny, allow("api.example.com", tls443), deny("evil.example.com", http80))},
			[]want{{api, outbound("deny")}, {other, outbound("deny")}, {evilHTTP, outbound("deny")}}},
		{"an Audit policy does not open an Enforce default", v1alpha1.OutboundAllowAny,
			[]*mesh.EgressPolicy{pol("enforced", v1alpha1.EgressEnforce, v1alpha1.EgressDeny, allow("api.example.com", tls443)),
				pol("trial", v1alpha1.EgressAudit, v1alpha1.EgressAllow, allow("*.github.com", tls443), deny("evil.example.com", http80), deny("api.example.com", tls443))},
			[]want{{gh, byRule("deny", "enforced", "default")}, {evilHTTP, byRule("deny", "enforced", "default")}, {other, byRule("deny", "enforced", "default")},
				{api, byRule("audit", "trial", "2")}}},
		{"an enforced Allow rule beats an Audit default", v1alpha1.OutboundAllowAny,
			[]*mesh.EgressPolicy{pol("enforced", v1alpha1.EgressEnforce, v1alpha1.EgressAllow, allow("api.example.com", tls443)),
				pol("trial", v1alpha1.EgressAudit, v1alpha1.EgressDeny, allow("*.github.com", tls443))},
			[]want{{api, byRule("allow", "enforced", "0")}, {gh, byRule("allow", "trial", "0")}, {other, byRule("audit", "trial", "default")}}},
		{"no rules: all egress refused", v1alpha1.OutboundAllowAny,
			[]*mesh.EgressPolicy{pol("lockdown", v1alpha1.EgressEnforce, v1alpha1.EgressDeny)},
			[]want{{api, byRule("deny", "lockdown", "default")}, {otherHTTP, byRule("deny", "lockdown", "default")}, {tcp, byRule("deny", "lockdown", "default")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := meshContents(tc.outbound)
			c.EgressPolicies = tc.pols
			res := generate(t, mesh.NewSnapshot(0, c), "client-7d9f.demo")
			base := outbound("allow")
			if tc.outbound == v1alpha1.OutboundRegistryOnly {
				base = outbound("deny")
			}
			for _, w := range tc.want {
				if got := simulate(t, res, w.c); got != w.o {
					t.Errorf("%v: got %+v, want %+v", w.c, got, w.o)
				}
				if ref := reference(tc.pols, base, w.c); ref != w.o {
					t.Errorf("%v: the reference model says %+v, this test %+v", w.c, ref, w.o)
				}
			}
		})
	}

	// The HTTP 403 and the chain metadata name the policy's default; the
	// mesh is not egress.
	c := meshContents(v1alpha1.OutboundAllowAny)
	c.EgressPolicies = []*mesh.EgressPolicy{pol("list", v1alpha1.EgressEnforce, v1alpha1.EgressDeny, allow("api.example.com", http80))}
	res := generate(t, mesh.NewSnapshot(0, c), "client-7d9f.demo")
	l := listener(res, "outbound")
	route := httpRoute(t, res, matchChain(t, l, otherHTTP), otherHTTP)
	if body := route.GetDirectResponse().GetBody().GetInlineString(); route.GetDirectResponse().GetStatus() != 403 ||
		body != "weft: egress to this host denied by demo/list default (defaultAction Deny)\n" {
		t.Errorf("HTTP to a host no rule names: %v", route)
	}
	f := l.DefaultFilterChain.GetMetadata().GetFilterMetadata()["weft.egress"].GetFields()
	for k, v := range map[string]string{"decision": "deny", "policy": "demo/list", "rule": "default", "mode": "Enforce", "outbound": "ALLOW_ANY"} {
		if got := f[k].GetStringValue(); got != v {
			t.Errorf("default chain metadata %s = %q, want %q", k, got, v)
		}
	}
	c.EgressPolicies = []*mesh.EgressPolicy{pol("lockdown", v1alpha1.EgressEnforce, v1alpha1.EgressDeny)}
	l = listener(generate(t, mesh.NewSnapshot(0, c), "client-7d9f.demo"), "outbound")
	if ch := matchChain(t, l, conn{netip.MustParseAddr("198.19.0.20"), 80, "http", "server"}); ch.GetName() != "outbound|80|server.demo" {
		t.Errorf("the server Service under a deny-all policy: chain %q, want outbound|80|server.demo", ch.GetName())
	}
}

// TestExternalNameEgress: an ExternalName Service's names are decided as
// the name it points at, with the verdict naming the Service and that
// name (the audit record's Service and DstHost); a name a rule names is
// decided by that rule, as sent; its short name is its own namespace's
// only. Without egress rules, the workloads of one namespace
// share one outbound listener, and the mesh without ExternalName Services
// keeps the one listener of every such workload.
func TestExternalNameEgress(t *testing.T) {
	ext := netip.MustParseAddr("198.18.100.7")
	tls := func(name string) conn { return conn{ext, 443, "tls", name} }
	plain := func(name string) conn { return conn{ext, 80, "http", name} }
	c := meshContents(v1alpha1.OutboundAllowAny)
	c.Services = append(slices.Clone(c.Services), agreeExternalNames...)
	c.EgressPolicies = []*mesh.EgressPolicy{{Namespace: "demo", Name: "list", ServiceAccounts: []string{"client"},
		Mode: v1alpha1.EgressEnforce, DefaultAction: v1alpha1.EgressAllow, Rules: []mesh.EgressRule{
			{Hosts: []string{"api.example.com"}, Ports: []mesh.EgressPort{{Number: 443, Protocol: v1alpha1.EgressTLS}, {Number: 80, Protocol: v1alpha1.EgressHTTP}},
				Action: v1alpha1.EgressDeny},
			{Hosts: []string{"ext.demo.svc.cluster.local"}, Action: v1alpha1.EgressAllow},
		}}}
	snap := mesh.NewSnapshot(0, c)
	res := generate(t, snap, "client-7d9f.demo")
	l := listener(res, "outbound")
	byRule := outcome{decisionDeny, "demo/list", "0"}
	for _, probe := range []conn{tls("ext.demo"), tls("ext"), tls("ext.demo.svc"), plain("ext.demo"), plain("ext:80"), plain("ext.demo.svc")} {
		if got := simulate(t, res, probe); got != byRule {
			t.Errorf("%v: %+v, want %+v (as api.example.com)", probe, got, byRule)
		}
		md := matchChain(t, l, probe).GetMetadata().GetFilterMetadata()
		if r := httpRoute(t, res, matchChain(t, l, probe), probe); r != nil {
			md = r.GetMetadata().GetFilterMetadata()
			if body := r.GetDirectResponse().GetBody().GetInlineString(); !strings.Contains(body, "(ExternalName demo/ext → api.example.com) denied by demo/list rule 0") {
				t.Errorf("%v: the 403 says %q", probe, body)
			}
		}
		f := md["weft.egress"].GetFields()
		if f["service"].GetStringValue() != "demo/ext" || f["host"].GetStringValue() != "api.example.com" {
			t.Errorf("%v: metadata %v, want service demo/ext and host api.example.com", probe, f)
		}
	}
	// The name a rule names: that rule's, as sent.
	for _, probe := range []conn{tls("ext.demo.svc.cluster.local"), plain("ext.demo.svc.cluster.local")} {
		if got := simulate(t, res, probe); got != (outcome{decisionAllow, "demo/list", "1"}) {
			t.Errorf("%v: %+v, want allowed by rule 1, which names it", probe, got)
		}
	}
	// Names it does not have: another namespace's short name, a Service
	// pointing at an address, a name under the Service's.
	for _, probe := range []conn{tls("docs"), plain("byip.demo"), tls("x.ext.demo.svc.cluster.local")} {
		if got := simulate(t, res, probe); got.decision != decisionAllow {
			t.Errorf("%v: %+v, want the default (allow)", probe, got)
		}
		if f := matchChain(t, l, probe).GetMetadata().GetFilterMetadata()["weft.egress"].GetFields(); f["service"] != nil {
			t.Errorf("%v: decided as an ExternalName Service's name: %v", probe, f)
		}
	}
	// A workload of namespace legacy has no policy: ext is not its name,
	// ext.demo is, decided by the outbound policy.
	legacy := generate(t, snap, "legacy-app-0.legacy")
	ll := listener(legacy, "outbound")
	if f := matchChain(t, ll, tls("ext")).GetMetadata().GetFilterMetadata()["weft.egress"].GetFields(); f["service"] != nil {
		t.Errorf("legacy: ext decided as demo's Service: %v", f)
	}
	if f := matchChain(t, ll, tls("ext.demo")).GetMetadata().GetFilterMetadata()["weft.egress"].GetFields(); f["service"].GetStringValue() != "demo/ext" || f["decision"].GetStringValue() != decisionAllow {
		t.Errorf("legacy: ext.demo: %v, want allowed as demo/ext", f)
	}

	// Sharing: the two sidecars of demo without egress rules get one
	// listener; legacy's differs; without ExternalName Services, all three
	// get the mesh's one.
	gen := translatorFor(snap)
	outboundOf := func(g *Generator, nodeID string) *listenerv3.Listener {
		return listener(generateWith(t, g, snap, nodeID), "outbound")
	}
	v1, v2 := outboundOf(gen, "server-v1-5b7c.demo"), outboundOf(gen, "server-v2-8e2a.demo")
	if v1 != v2 || v1 == outboundOf(gen, "legacy-app-0.legacy") {
		t.Error("ExternalName Services in the mesh: the outbound listener is not one per namespace")
	}
	c.Services = slices.DeleteFunc(slices.Clone(c.Services), func(s *mesh.Service) bool { return s.Type == "ExternalName" })
	snap = mesh.NewSnapshot(1, c)
	gen = translatorFor(snap)
	if v1 := outboundOf(gen, "server-v1-5b7c.demo"); v1 != outboundOf(gen, "legacy-app-0.legacy") ||
		slices.ContainsFunc(v1.FilterChains, func(fc *listenerv3.FilterChain) bool { return strings.Contains(fc.Name, "externalname") }) {
		t.Error("no ExternalName Service: the outbound listener of workloads without egress rules is not the mesh's one")
	}
}

// TestExternalNameBudget: Services created in any namespace cannot push a
// sidecar's outbound listener past the xDS size limit: the names of at
// most maxExternalNameChains / (ports × IP leaves) ExternalName Services
// get chains, the workload's own namespace's first, then the oldest; the
// rest are names like any other. 2,000 Services created after the
// namespace's own one leave it its chains, and the listener within budget.
func TestExternalNameBudget(t *testing.T) {
	c := meshContents(v1alpha1.OutboundAllowAny)
	var old time.Time // only the Services' order matters
	c.Services = append(slices.Clone(c.Services),
		&mesh.Service{Namespace: "demo", Name: "ext", Type: "ExternalName", ExternalName: "api.example.com", Created: old.Add(time.Hour)},
		&mesh.Service{Namespace: "shop", Name: "docs", Type: "ExternalName", ExternalName: "docs.example.org", Created: old})
	for i := range 2000 {
		c.Services = append(c.Services, &mesh.Service{Namespace: "aaa-flood", Name: fmt.Sprintf("s%04d", i), Type: "ExternalName",
			ExternalName: fmt.Sprintf("h%d.example.net", i), Created: old.Add(2 * time.Hour)})
	}
	snap := mesh.NewSnapshot(0, c)
	for _, node := range []string{"client-7d9f.demo", "server-v1-5b7c.demo", "legacy-app-0.legacy"} {
		l := listener(generate(t, snap, node), "outbound")
		services := map[string]bool{}
		for _, fc := range l.FilterChains {
			if svc := fc.GetMetadata().GetFilterMetadata()["weft.egress"].GetFields()["service"].GetStringValue(); svc != "" {
				services[svc] = true
			}
		}
		size := proto.Size(l)
		t.Logf("%s: %d chains, %d ExternalName Services with names, listener %d KiB", node, len(l.FilterChains), len(services), size>>10)
		if len(l.FilterChains) > maxExternalNameChains+200 || size > 4<<20 {
			t.Errorf("%s: %d chains, %d bytes: past the budget", node, len(l.FilterChains), size)
		}
		if !services["shop/docs"] || node != "legacy-app-0.legacy" && !services["demo/ext"] {
			t.Errorf("%s: the oldest Services and the namespace's own lost their names to 2,000 newer ones: %d kept", node, len(services))
		}
		if len(services) >= 2002 || len(services) < 10 {
			t.Errorf("%s: %d Services kept their names, want the budget's share", node, len(services))
		}
	}
}
