package translate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	grpclogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
)

const tcpGRPCAccessLog = "envoy.access_loggers.tcp_grpc"

// Egress decisions as the chains' "weft.egress" metadata says them.
const (
	decisionAllow = "allow"
	decisionDeny  = "deny"
	decisionAudit = "audit" // an Audit-mode policy would deny: let through, flagged
)

// verdict is what one leaf of the match tree decides and which rule did.
type verdict struct {
	decision string
	// policy and rule say what decided: "<ns>/<name>" and the rule's index;
	// rule "default" when the policy's defaultAction did, "rejected" when a
	// rejected policy fails closed; both empty when the outbound policy did.
	policy, rule string
	// mode is the deciding policy's mode (Enforce or Audit), on verdicts a
	// policy made: the sidecar enforces what it checks beyond the rule (a
	// name's binding to the destination address) only under Enforce.
	mode string
	// outbound is the outbound policy, on verdicts no rule made.
	outbound string
	// service and host, on the verdicts of an ExternalName Service's names:
	// the Service ("<ns>/<name>") and the name it points at, which decided.
	service, host string
}

// ruleDefault is the verdict's rule when a policy's defaultAction decided.
const ruleDefault = "default"

func (v verdict) cluster() string {
	if v.decision == decisionDeny {
		return clusterBlackHole
	}
	return clusterPassthrough
}

func (v verdict) key() string {
	return v.decision + "|" + v.policy + "#" + v.rule + "|" + v.mode + "|" + v.outbound + "|" + v.service + "|" + v.host
}

func (v verdict) metadata() *corev3.Metadata {
	fields := map[string]*structpb.Value{
		"policy":   structpb.NewStringValue(v.policy),
		"rule":     structpb.NewStringValue(v.rule),
		"decision": structpb.NewStringValue(v.decision),
	}
	if v.outbound != "" {
		fields["outbound"] = structpb.NewStringValue(v.outbound)
	}
	if v.mode != "" {
		fields["mode"] = structpb.NewStringValue(v.mode)
	}
	if v.service != "" {
		fields["service"] = structpb.NewStringValue(v.service)
		fields["host"] = structpb.NewStringValue(v.host)
	}
	return metadata(egressMetadataKey, fields)
}

// enforcedDefault is the verdict on egress that no rule of an Enforce-mode
// policy matches, before Audit-mode policies flag anything: deny when a
// policy that should decide was rejected (fail closed), then deny by the
// first Enforce policy whose defaultAction is Deny, then the outbound
// policy.
func (b *builder) enforcedDefault() verdict {
	mode := b.outboundMode()
	if b.rejectedEgress != nil {
		r := b.rejectedEgress
		return verdict{decision: decisionDeny, policy: r.Namespace + "/" + r.Name, rule: "rejected", outbound: string(mode)}
	}
	if b.rejectedMesh != nil {
		return verdict{decision: decisionDeny, policy: "MeshConfig/" + b.rejectedMesh.Name, rule: "rejected", outbound: string(mode)}
	}
	for _, p := range b.pol.Egress {
		if policyMode(p) == v1alpha1.EgressEnforce && p.DefaultDeny() {
			return verdict{decision: decisionDeny, policy: p.Namespace + "/" + p.Name, rule: ruleDefault,
				mode: string(v1alpha1.EgressEnforce), outbound: string(mode)}
		}
	}
	if mode == v1alpha1.OutboundRegistryOnly {
		return verdict{decision: decisionDeny, outbound: string(mode)}
	}
	return verdict{decision: decisionAllow, outbound: string(mode)}
}

// defaultVerdict decides egress no rule matches: the enforced default
// and, where that lets the connection out, the flag of the first Audit
// policy whose defaultAction is Deny.
func (b *builder) defaultVerdict() verdict {
	v := b.enforcedDefault()
	if v.decision == decisionDeny {
		return v
	}
	for _, p := range b.pol.Egress {
		if policyMode(p) == v1alpha1.EgressAudit && p.DefaultDeny() {
			return verdict{decision: decisionAudit, policy: p.Namespace + "/" + p.Name, rule: ruleDefault,
				mode: string(v1alpha1.EgressAudit), outbound: v.outbound}
		}
	}
	return v
}

// policyMode is p's mode, Enforce when unset.
func policyMode(p *mesh.EgressPolicy) v1alpha1.EgressMode {
	return cmp.Or(p.Mode, v1alpha1.EgressEnforce)
}

// ruleRef is one rule of an egress policy in force.
type ruleRef struct {
	pol  *mesh.EgressPolicy
	idx  int
	rule *mesh.EgressRule
	seq  int // position among all rules in force: policy by name, then rule
}

func (r ruleRef) deny() bool  { return r.rule.Action == v1alpha1.EgressDeny }
func (r ruleRef) audit() bool { return policyMode(r.pol) == v1alpha1.EgressAudit }

func (r ruleRef) verdict(decision string) verdict {
	return verdict{decision: decision, policy: r.pol.Namespace + "/" + r.pol.Name, rule: strconv.Itoa(r.idx), mode: string(policyMode(r.pol))}
}

// decide is the verdict of a leaf where the rules matches match (none: the
// default chain's). What is enforced comes from Enforce-mode policies: an
// enforced Deny rule, else an enforced Allow rule, else the enforced
// default. What that lets out, an audited Deny rule flags ("audit"); an
// enforced Allow rule, else an audited one, names what allowed it; with no
// rule at all, the default verdict (which an Audit policy's defaultAction
// Deny flags). Among rules of one kind the first (by seq) decides.
func (b *builder) decide(matches []ruleRef) verdict {
	first := func(keep func(ruleRef) bool) (ruleRef, bool) {
		var best ruleRef
		found := false
		for _, m := range matches {
			if keep(m) && (!found || m.seq < best.seq) {
				best, found = m, true
			}
		}
		return best, found
	}
	if r, ok := first(func(r ruleRef) bool { return !r.audit() && r.deny() }); ok {
		return r.verdict(decisionDeny)
	}
	allow, enforcedAllow := first(func(r ruleRef) bool { return !r.audit() && !r.deny() })
	if !enforcedAllow {
		if v := b.enforcedDefault(); v.decision == decisionDeny {
			return v
		}
	}
	if r, ok := first(func(r ruleRef) bool { return r.audit() && r.deny() }); ok {
		return r.verdict(decisionAudit)
	}
	if enforcedAllow {
		return allow.verdict(decisionAllow)
	}
	if r, ok := first(func(r ruleRef) bool { return r.audit() && !r.deny() }); ok {
		return r.verdict(decisionAllow)
	}
	return b.defaultVerdict()
}

// protocols says how a rule matches on a port: which of TLS, HTTP, TCP.
type protocols struct{ tls, http, tcp bool }

func (p protocols) isTLS() bool  { return p.tls }
func (p protocols) isHTTP() bool { return p.http }

// at is how r matches on port (0: a port no rule names); ok is false when
// the rule does not apply there. A rule without ports applies everywhere,
// hosts by SNI and by Host.
func (r ruleRef) at(port uint16) (p protocols, ok bool) {
	if len(r.rule.Ports) == 0 {
		return protocols{tls: true, http: true, tcp: true}, true
	}
	for _, rp := range r.rule.Ports {
		if port == 0 || rp.Number != port {
			continue
		}
		ok = true
		switch rp.Protocol {
		case v1alpha1.EgressTLS:
			p.tls = true
		case v1alpha1.EgressHTTP:
			p.http = true
		default:
			p.tcp = true
		}
	}
	return p, ok
}

// coversIP reports whether a CIDR of r contains the whole leaf prefix.
func (r ruleRef) coversIP(leaf netip.Prefix) bool {
	return slices.ContainsFunc(r.rule.CIDRs, func(c netip.Prefix) bool {
		return c.Bits() <= leaf.Bits() && c.Contains(leaf.Addr())
	})
}

// coversHost reports whether a host of r matches every name of the leaf
// host (an exact name or a "*." wildcard).
func (r ruleRef) coversHost(leaf string) bool {
	return slices.ContainsFunc(r.rule.Hosts, func(h string) bool { return hostCovers(h, leaf) })
}

// hostCovers reports whether pattern (exact, or "*.s": subdomains of s,
// never s itself) matches every name leaf stands for.
func hostCovers(pattern, leaf string) bool {
	if pattern == leaf {
		return true
	}
	suffix, ok := strings.CutPrefix(pattern, "*")
	return ok && strings.HasSuffix(leaf, suffix)
}

type chainKind int

const (
	kindTCP   chainKind = iota // matched by port and IP only
	kindTLS                    // by SNI (server_names)
	kindHTTP                   // plain HTTP: an HCM whose routes match the Host
	kindPlain                  // like kindTCP, for plaintext that is not HTTP
)

func (k chainKind) String() string { return [...]string{"tcp", "tls", "http", "plain"}[k] }

// egressChain is one egress filter chain before it is made an Envoy one.
type egressChain struct {
	port     uint16         // 0: any
	prefixes []netip.Prefix // none: any IP
	hosts    []string       // kindTLS: the server_names
	kind     chainKind
	v        verdict
	routes   string // kindHTTP: the RDS route configuration
}

// egressChains resolves the workload's egress rules into the leaves of
// Envoy's filter-chain match tree and returns their chains (and adds the
// HTTP route configurations). Envoy narrows by destination port, then
// destination IP, then SNI, then transport, always to the most specific
// candidate and never back; so every leaf a connection can end in carries
// the verdict of every rule that matches there: rules without ports are
// repeated on each port other chains name, CIDR rules under each SNI.
// Leaves no rule matches are left out: the default chain decides them.
//
// An ExternalName Service is egress to the name it points at: its names
// (externalNames) get leaves of their own, on every port and IP leaf, with
// the verdict of the rules that match that name there; the verdict names
// the Service and the name, so the audit record does. A name a rule's host
// covers is not one of them (externalNames).
func (b *builder) egressChains(taken map[meshKey]bool) ([]*listenerv3.FilterChain, error) {
	var refs []ruleRef
	for _, p := range b.pol.Egress {
		for i := range p.Rules {
			refs = append(refs, ruleRef{p, i, &p.Rules[i], len(refs)})
		}
	}
	aliases := b.externalNames()
	if len(refs) == 0 && len(aliases) == 0 {
		return nil, nil
	}
	var ports []uint16
	var prefixes []netip.Prefix
	portless := false
	for _, r := range refs {
		for _, rp := range r.rule.Ports {
			ports = append(ports, rp.Number)
		}
		portless = portless || len(r.rule.Ports) == 0
		prefixes = append(prefixes, r.rule.CIDRs...)
	}
	// Envoy narrows by port first: what applies on every port (rules
	// without ports, the names of ExternalName Services) is repeated on
	// the ports of the in-mesh chains and of the sidecar's own guard
	// chains too (those match only loopback: an outside address at such a
	// port would otherwise find no chain, and the default chain decide).
	if portless || len(aliases) > 0 {
		for k := range taken {
			ports = append(ports, k.port)
		}
		ports = append(ports, sidecarPorts...)
	}
	slices.Sort(ports)
	ports = append([]uint16{0}, slices.Compact(ports)...)
	slices.SortFunc(prefixes, comparePrefix)
	prefixes = slices.Compact(prefixes)
	aliases = withinBudget(aliases, len(ports)*(1+len(prefixes)))

	var leaves []egressChain
	for _, port := range ports {
		var here []ruleRef
		var tlsHosts, httpHosts []string
		for _, r := range refs {
			p, ok := r.at(port)
			if !ok {
				continue
			}
			here = append(here, r)
			if p.tls {
				tlsHosts = append(tlsHosts, r.rule.Hosts...)
			}
			if p.http {
				httpHosts = append(httpHosts, r.rule.Hosts...)
			}
		}
		slices.Sort(tlsHosts)
		tlsHosts = slices.Compact(tlsHosts)
		slices.Sort(httpHosts)
		httpHosts = slices.Compact(httpHosts)
		// Plain HTTP is judged by its Host only on ports where an HTTP
		// rule by host applies; where only other rules by name do, its
		// name is unknown (sidecar/egress NameUnknown), the Host of an
		// ExternalName Service's name included.
		httpAliases := aliases
		if len(httpHosts) == 0 && slices.ContainsFunc(here, func(r ruleRef) bool { return len(r.rule.Hosts) > 0 }) {
			httpAliases = nil
		}
		for _, il := range ipLeaves(port, prefixes, here, taken) {
			leaf := egressChain{port: port, prefixes: il.ranges}
			ipVerdict, ipMatched := b.decide(il.byIP), len(il.byIP) > 0
			if ipMatched {
				l := leaf
				l.kind, l.v = kindTCP, ipVerdict
				leaves = append(leaves, l)
			}
			for _, h := range tlsHosts {
				m := slices.Clone(il.byIP)
				for _, r := range here {
					if p, _ := r.at(port); p.tls && r.coversHost(h) {
						m = append(m, r)
					}
				}
				l := leaf
				l.kind, l.hosts = kindTLS, []string{h}
				l.v = b.decide(m)
				leaves = append(leaves, l)
			}
			for _, x := range aliases {
				l := leaf
				l.kind, l.hosts = kindTLS, x.names
				l.v = x.verdict(b.decide(x.matches(port, il.byIP, here, protocols.isTLS)))
				leaves = append(leaves, l)
			}
			if len(httpHosts) > 0 || len(httpAliases) > 0 {
				catchAll := ipVerdict // the default verdict when no IP rule matches
				l := leaf
				l.kind, l.v = kindHTTP, catchAll
				l.routes = b.egressRoutes(port, il.pfx, here, il.byIP, httpHosts, httpAliases, catchAll)
				leaves = append(leaves, l)
				if ipMatched {
					// Envoy narrows plaintext to the raw_buffer chains, and
					// then finds no application protocol for what is not
					// HTTP: give it the IP rules' verdict there too.
					l := leaf
					l.kind, l.v = kindPlain, ipVerdict
					leaves = append(leaves, l)
				}
			}
		}
	}
	chains := mergeLeaves(leaves)
	if err := distinctMatches(chains, taken); err != nil {
		return nil, fmt.Errorf("xds: translate: %w", err)
	}
	var out []*listenerv3.FilterChain
	names := map[string]int{}
	for _, c := range chains {
		name := fmt.Sprintf("egress|%s|%s|%s", portString(c.port), c.kind, c.v.decision)
		if c.v.policy != "" {
			name += "|" + c.v.policy + "#" + c.v.rule
		}
		if c.v.service != "" {
			name += "|externalname:" + c.v.service
		}
		if n := names[name]; n > 0 {
			names[name]++
			name = fmt.Sprintf("%s|%d", name, n+1)
		} else {
			names[name] = 1
		}
		out = append(out, b.egressFilterChain(name, c))
	}
	return out, nil
}

// ipLeaf is a destination-IP leaf of one port: the chains' prefix_ranges
// (none: any IP) and the rules matching there by IP.
type ipLeaf struct {
	pfx    netip.Prefix // the rule CIDR; invalid for the any-IP leaf
	ranges []netip.Prefix
	byIP   []ruleRef
}

// Whole address families, as rule CIDRs name them.
var (
	anyIPv4 = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	anyIPv6 = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
)

// ipLeaves are the destination-IP leaves of port: the any-IP leaf first,
// then each rule CIDR (sorted) that a rule of here covers and no in-mesh
// chain takes; a CIDR no rule covers here is the same as the any-IP leaf.
//
// Envoy matches empty prefix_ranges as 0.0.0.0/0 and ::/0, at prefix
// length 0: a rule CIDR of a whole family is the any-IP leaf of that
// family, and both in one listener would be two chains with the same
// match. So where such a CIDR has a leaf of its own, the any-IP leaf names
// only the other family (or, both families taken, does not exist).
func ipLeaves(port uint16, prefixes []netip.Prefix, here []ruleRef, taken map[meshKey]bool) []ipLeaf {
	var out []ipLeaf
	whole := map[netip.Prefix]bool{}
	for _, pfx := range prefixes {
		if taken[meshKey{port, pfx}] {
			continue // an in-mesh destination is never egress
		}
		if isSidecarPort(port) && inLoopback(pfx) {
			continue // the sidecar itself: its guard chain (loop.go)
		}
		var byIP []ruleRef
		for _, r := range here {
			if r.coversIP(pfx) {
				byIP = append(byIP, r)
			}
		}
		if len(byIP) == 0 {
			continue
		}
		if pfx.Bits() == 0 {
			whole[pfx] = true
		}
		out = append(out, ipLeaf{pfx: pfx, ranges: []netip.Prefix{pfx}, byIP: byIP})
	}
	anyIP := ipLeaf{}
	switch {
	case whole[anyIPv4] && whole[anyIPv6]:
		return out
	case whole[anyIPv4]:
		anyIP.ranges = []netip.Prefix{anyIPv6}
	case whole[anyIPv6]:
		anyIP.ranges = []netip.Prefix{anyIPv4}
	}
	return append([]ipLeaf{anyIP}, out...)
}

// distinctMatches checks what egressChains emits against Envoy's reading
// of the match tree (sidecar/xds's too): no (port, prefix, server name,
// transport, application protocol) leaf of two chains in common, empty
// prefix_ranges counting as 0.0.0.0/0 and ::/0; and none on a (port,
// prefix) an in-mesh chain takes. Such a listener is refused by the
// sidecar (NACK) and ambiguous to Envoy; failing the translation instead
// keeps the error on the control plane, with its cause.
func distinctMatches(chains []egressChain, taken map[meshKey]bool) error {
	type leafKey struct {
		port uint16
		pfx  netip.Prefix
		host string
		kind chainKind // one transport and application-protocol set each
	}
	seen := map[leafKey]int{}
	for i, c := range chains {
		prefixes := c.prefixes
		if len(prefixes) == 0 {
			prefixes = []netip.Prefix{anyIPv4, anyIPv6}
		}
		hosts := c.hosts
		if len(hosts) == 0 {
			hosts = []string{""}
		}
		for _, p := range prefixes {
			if taken[meshKey{c.port, p}] {
				return fmt.Errorf("egress chain %d (port %s, %s) has the leaf of an in-mesh chain", i, portString(c.port), p)
			}
			for _, h := range hosts {
				k := leafKey{c.port, p.Masked(), h, c.kind}
				if j, dup := seen[k]; dup && j != i {
					return fmt.Errorf("egress chains %d and %d have the same match (port %s, prefix %s, server name %q, %s)",
						j, i, portString(c.port), k.pfx, h, c.kind)
				}
				seen[k] = i
			}
		}
	}
	return nil
}

// mergeLeaves merges leaves that differ only in their SNI, then those that
// differ only in their destination prefix, keeping first-seen order.
func mergeLeaves(leaves []egressChain) []egressChain {
	merge := func(in []egressChain, key func(egressChain) string, add func(into *egressChain, c egressChain)) []egressChain {
		var out []egressChain
		at := map[string]int{}
		for _, c := range in {
			k := key(c)
			if i, ok := at[k]; ok && c.kind != kindHTTP {
				add(&out[i], c)
				continue
			}
			at[k] = len(out)
			out = append(out, c)
		}
		return out
	}
	byHost := merge(leaves, func(c egressChain) string {
		return fmt.Sprintf("%d|%s|%s|%s", c.port, joinPrefixes(c.prefixes), c.kind, c.v.key())
	}, func(into *egressChain, c egressChain) { into.hosts = append(into.hosts, c.hosts...) })
	return merge(byHost, func(c egressChain) string {
		// A leaf for any IP never merges with CIDR leaves.
		return fmt.Sprintf("%d|%t|%s|%s|%s", c.port, len(c.prefixes) == 0, strings.Join(c.hosts, ","), c.kind, c.v.key())
	}, func(into *egressChain, c egressChain) { into.prefixes = append(into.prefixes, c.prefixes...) })
}

func (b *builder) egressFilterChain(name string, c egressChain) *listenerv3.FilterChain {
	m := &listenerv3.FilterChainMatch{}
	if c.port != 0 {
		m.DestinationPort = wrapperspb.UInt32(uint32(c.port))
	}
	for _, p := range c.prefixes {
		m.PrefixRanges = append(m.PrefixRanges, cidrRange(p))
	}
	var filters []*listenerv3.Filter
	switch c.kind {
	case kindTLS:
		m.ServerNames = slices.Sorted(slices.Values(c.hosts))
		m.TransportProtocol = "tls"
	case kindPlain:
		m.TransportProtocol = "raw_buffer"
	case kindHTTP:
		m.TransportProtocol = "raw_buffer"
		m.ApplicationProtocols = []string{"http/1.0", "http/1.1", "h2c"}
		hcm := &hcmv3.HttpConnectionManager{
			StatPrefix: "egress_http",
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
				RouteConfigName: c.routes,
				ConfigSource:    adsSource(),
			}},
			HttpFilters: []*hcmv3.HttpFilter{{
				Name:       wellknown.Router,
				ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
			}},
			// Hosts are matched without a port, whatever port the Host
			// header names.
			StripPortMode: &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true},
			AccessLog: []*accesslogv3.AccessLog{{
				Name: wellknown.HTTPGRPCAccessLog,
				ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&grpclogv3.HttpGrpcAccessLogConfig{
					CommonConfig: grpcLogConfig(),
				})},
			}},
		}
		filters = append(filters, networkFilter(wellknown.HTTPConnectionManager, hcm))
	}
	if c.kind != kindHTTP {
		filters = b.egressTCPFilters(c.v)
	}
	return &listenerv3.FilterChain{Name: name, FilterChainMatch: m, Filters: filters, Metadata: c.v.metadata()}
}

// egressTCPFilters forward by the verdict with an access log; an audited
// connection first passes an rbac filter whose shadow rules record the
// deny the policy would make.
func (b *builder) egressTCPFilters(v verdict) []*listenerv3.Filter {
	var filters []*listenerv3.Filter
	if v.decision == decisionAudit {
		filters = append(filters, networkFilter(wellknown.RoleBasedAccessControl, &netrbacv3.RBAC{
			StatPrefix: "egress_audit",
			ShadowRules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
				v.policy + "#" + v.rule: anyPolicy(),
			}},
			ShadowRulesStatPrefix: "weft_audit_",
		}))
	}
	return append(filters, networkFilter(wellknown.TCPProxy, &tcpproxyv3.TcpProxy{
		StatPrefix:       "egress",
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: v.cluster()},
		AccessLog: []*accesslogv3.AccessLog{{
			Name: tcpGRPCAccessLog,
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&grpclogv3.TcpGrpcAccessLogConfig{
				CommonConfig: grpcLogConfig(),
			})},
		}},
	}))
}

func grpcLogConfig() *grpclogv3.CommonGrpcAccessLogConfig {
	return &grpclogv3.CommonGrpcAccessLogConfig{
		LogName: egressLogName,
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: clusterControlPlane},
		}},
		TransportApiVersion: corev3.ApiVersion_V3,
	}
}

// defaultEgressChain encodes the default verdict: the policies'
// defaultAction, the outbound policy, or the fail-closed deny.
func (b *builder) defaultEgressChain() *listenerv3.FilterChain {
	v := b.defaultVerdict()
	return &listenerv3.FilterChain{Name: "egress|default", Filters: b.egressTCPFilters(v), Metadata: v.metadata()}
}

// egressRoutes adds the route configuration of an HTTP leaf (port, pfx)
// and returns its name: a virtual host per Host name with the verdict of
// the rules matching there, and "*" with catchAll.
func (b *builder) egressRoutes(port uint16, pfx netip.Prefix, here, byIP []ruleRef, hosts []string, aliases []externalName, catchAll verdict) string {
	name := "egress|" + portString(port)
	if pfx.IsValid() {
		name += "|" + pfx.String()
	}
	rc := &routev3.RouteConfiguration{Name: name}
	for _, h := range hosts {
		m := slices.Clone(byIP)
		for _, r := range here {
			if p, _ := r.at(port); p.http && r.coversHost(h) {
				m = append(m, r)
			}
		}
		v := b.decide(m)
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
			Name:    h,
			Domains: []string{h},
			Routes:  []*routev3.Route{egressRoute(v, h)},
		})
	}
	for _, x := range aliases {
		v := x.verdict(b.decide(x.matches(port, byIP, here, protocols.isHTTP)))
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
			Name:    "externalname:" + x.service,
			Domains: x.names,
			Routes:  []*routev3.Route{egressRoute(v, x.names[0]+" (ExternalName "+x.service+" → "+x.target+")")},
		})
	}
	rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
		Name:    "*",
		Domains: []string{"*"},
		Routes:  []*routev3.Route{egressRoute(catchAll, "")},
	})
	b.routes[name] = rc
	return name
}

// egressRoute forwards to PassthroughCluster or answers 403 naming the
// host and what denied it.
func egressRoute(v verdict, host string) *routev3.Route {
	r := &routev3.Route{
		Match:    &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Metadata: v.metadata(),
	}
	if v.decision != decisionDeny {
		r.Action = &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: clusterPassthrough},
		}}
		return r
	}
	by := v.policy
	switch {
	case v.rule == "rejected":
		by += " (rejected policy: failing closed)"
	case v.rule == ruleDefault:
		by += " default (defaultAction Deny)"
	case by == "":
		by = "outbound policy " + v.outbound
	default:
		by += " rule " + v.rule
	}
	target := host
	if target == "" {
		target = "this host"
	}
	r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
		Status: 403,
		Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: fmt.Sprintf("weft: egress to %s denied by %s\n", target, by)}},
	}}
	return r
}

// comparePrefix orders prefixes by address, then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// externalName is an ExternalName Service as this workload's egress sees
// it: the names its clients can call it by, decided as the name it points
// at.
type externalName struct {
	service string    // "<ns>/<name>"
	target  string    // the name it points at (through ExternalName Services it names), lower case, no trailing dot
	names   []string  // the Service's DNS names that are its here
	created time.Time // the Service's creationTimestamp: the budget's order
}

// maxExternalNameChains bounds the TLS chains the names of ExternalName
// Services take in one sidecar's outbound listener (each Service's names
// are repeated on every port and IP leaf: egressChains): about 2.5 MiB of
// the 16 MiB an xDS response may be (api/names.MaxXDSMessageSize), so that
// Services created in any namespace cannot push a sidecar's configuration
// past it (the control plane would withhold it: no updates at all).
const maxExternalNameChains = 4096

// withinBudget keeps the first of aliases (externalNames' order: the
// workload's own namespace first, then the oldest) whose chains, leaves
// each (ports × IP leaves, counted from above), fit maxExternalNameChains.
// The names of the Services left out are decided as sent, as any name.
func withinBudget(aliases []externalName, leaves int) []externalName {
	if n := maxExternalNameChains / max(leaves, 1); len(aliases) > n {
		return aliases[:n]
	}
	return aliases
}

// maxExternalNameHops bounds the ExternalName Services followed from one
// (a Service that points at another's name), as the DNS proxy bounds a
// CNAME chain.
const maxExternalNameHops = 8

// externalNames are the mesh's ExternalName Services that point at a DNS
// name, each with the name it finally points at: through ExternalName
// Services it names (<svc>.<ns>.svc.cluster.local, as the cluster DNS
// follows the CNAMEs), at most maxExternalNameHops, a loop leaving it out.
// One that points at an IP address is decided by that address, as any
// connection to it.
//
// Their names: <name>.<ns>.svc.cluster.local, <name>.<ns>.svc and
// <name>.<ns>, and <name> alone for a workload of the same namespace
// (what its resolver's search list completes) — except a name that a host
// of one of the workload's rules covers (exactly or by wildcard): that
// name is decided as sent, by those rules, so that no Service (another
// namespace's, whose names outside cluster.local may be any DNS name: a
// Service "example" in a namespace "com") overrides a rule. The sidecar
// binds a connection by any of the names to the addresses the cluster DNS
// answers for <name>.<ns>.svc.cluster.local (the Service's CNAME, then the
// target's records), never to what the name sent resolves to elsewhere.
func (b *builder) externalNames() []externalName {
	byFQDN := map[string]*mesh.Service{}
	for _, svc := range b.snap.Services {
		if svc.Type == "ExternalName" {
			byFQDN[svc.Name+"."+svc.Namespace+".svc."+clusterDomain] = svc
		}
	}
	var ruleHosts []string
	for _, p := range b.pol.Egress {
		for _, r := range p.Rules {
			ruleHosts = append(ruleHosts, r.Hosts...)
		}
	}
	var out []externalName
	for _, svc := range b.snap.Services {
		if svc.Type != "ExternalName" {
			continue
		}
		target, ok := externalTarget(svc, byFQDN)
		if !ok {
			continue
		}
		x := externalName{service: svc.Namespace + "/" + svc.Name, target: target, created: svc.Created}
		names := []string{svc.Name + "." + svc.Namespace + ".svc." + clusterDomain, svc.Name + "." + svc.Namespace + ".svc", svc.Name + "." + svc.Namespace}
		if svc.Namespace == b.w.Namespace {
			names = append(names, svc.Name)
		}
		for _, n := range names {
			if !slices.ContainsFunc(ruleHosts, func(h string) bool { return hostCovers(h, n) }) {
				x.names = append(x.names, n)
			}
		}
		if len(x.names) > 0 {
			out = append(out, x)
		}
	}
	// Budget order (withinBudget): the workload's own namespace first, then
	// the oldest, so that Services created later elsewhere cannot crowd out
	// the ones a namespace relies on.
	own := b.w.Namespace + "/"
	slices.SortStableFunc(out, func(x, y externalName) int {
		ox, oy := strings.HasPrefix(x.service, own), strings.HasPrefix(y.service, own)
		switch {
		case ox && !oy:
			return -1
		case oy && !ox:
			return 1
		}
		return x.created.Compare(y.created)
	})
	return out
}

// externalTarget is the DNS name svc finally points at, following the
// ExternalName Services (byFQDN) it names; ok is false for an IP address,
// an empty name, a loop or a chain longer than maxExternalNameHops.
func externalTarget(svc *mesh.Service, byFQDN map[string]*mesh.Service) (string, bool) {
	for range maxExternalNameHops {
		target := strings.TrimSuffix(strings.ToLower(svc.ExternalName), ".")
		if target == "" {
			return "", false
		}
		if _, err := netip.ParseAddr(target); err == nil {
			return "", false
		}
		next, ok := byFQDN[target]
		if !ok {
			return target, true
		}
		svc = next
	}
	return "", false
}

// matches are the rules deciding x's names at port, for the protocol
// that carries them (speaks): the ones by IP of the leaf, and the rules
// of here whose hosts cover x's target there.
func (x externalName) matches(port uint16, byIP, here []ruleRef, speaks func(protocols) bool) []ruleRef {
	m := slices.Clone(byIP)
	for _, r := range here {
		if p, _ := r.at(port); speaks(p) && r.coversHost(x.target) {
			m = append(m, r)
		}
	}
	return m
}

// verdict is v naming x.
func (x externalName) verdict(v verdict) verdict {
	v.service, v.host = x.service, x.target
	return v
}
