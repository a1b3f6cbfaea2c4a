package translate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
)

// inboundListener is listener "inbound" on 15006: per app port a TLS chain
// (and a plaintext one in PERMISSIVE), then catch-all chains for other
// ports, all behind the rbac filters.
func (b *builder) inboundListener() (*listenerv3.Listener, error) {
	var chains []*listenerv3.FilterChain
	httpPorts := b.inboundHTTPPorts()
	for _, port := range b.inboundPorts() {
		name := "inbound|" + strconv.Itoa(int(port))
		cluster := inboundCluster(name, port, slices.Contains(b.w.InboundLoopbackPorts, port))
		if p, ok := httpPorts[port]; ok {
			// Requests from client sidecars that negotiate h2 (http.go);
			// the L4 chains below stay for the others.
			cluster.TypedExtensionProtocolOptions = httpProtocolOptions(appSpeaksH2(p))
			b.routes[name] = inboundHTTPRoutes(port)
			chains = append(chains, b.inboundHTTPChain(name, port, b.pol.MTLS.ModeFor(port)))
		}
		b.addCluster(cluster)
		chains = append(chains, b.inboundChains(name, wrapperspb.UInt32(uint32(port)), b.pol.MTLS.ModeFor(port), name)...)
	}
	// Before the catch-all (by destination_port, more specific): the
	// sidecar's own ports never go to InboundPassthroughCluster
	// (loop.go).
	chains = append(chains, sidecarGuards()...)
	chains = append(chains, b.inboundChains("inbound|passthrough", nil, b.pol.MTLS.Mode, clusterInboundPassthrough)...)
	return &listenerv3.Listener{
		Name:    listenerInbound,
		Address: socketAddress("0.0.0.0", inboundPort),
		ListenerFilters: []*listenerv3.ListenerFilter{
			listenerFilter(wellknown.OriginalDestination, &origdstv3.OriginalDst{}),
			listenerFilter(wellknown.TLSInspector, &tlsinspectorv3.TlsInspector{}),
		},
		FilterChains: chains,
	}, nil
}

// Inbound delivery's source addresses, which the capture rules exempt
// (sidecar/capture): Istio's InboundPassthroughBindIpv4 and
// InboundPassthroughBindIpv6.
const (
	inboundSourceIPv4 = "127.0.0.6"
	inboundSourceIPv6 = "::6"
)

// inboundCluster is cluster inbound|<port>: the app's port on the pod's
// own address, which is the connection's original destination
// (ORIGINAL_DST), or, for a port the pod delivers on loopback
// (weft.dev/inbound-loopback-ports), 127.0.0.1. Either way from 127.0.0.6
// (::6 over IPv6), so that an app listening on 127.0.0.1 is reached only
// when the pod says so.
func inboundCluster(name string, port uint16, loopback bool) *clusterv3.Cluster {
	if loopback {
		c := staticCluster(name, "127.0.0.1", uint32(port))
		c.UpstreamBindConfig = &corev3.BindConfig{SourceAddress: bindAddress(inboundSourceIPv4)}
		return c
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(1e9),
		UpstreamBindConfig:   inboundBindConfig(),
	}
}

// inboundBindConfig: from 127.0.0.6, and ::6 to an IPv6 address.
func inboundBindConfig() *corev3.BindConfig {
	return &corev3.BindConfig{
		SourceAddress:        bindAddress(inboundSourceIPv4),
		ExtraSourceAddresses: []*corev3.ExtraSourceAddress{{Address: bindAddress(inboundSourceIPv6)}},
	}
}

// bindAddress is a source address with any port.
func bindAddress(ip string) *corev3.SocketAddress {
	return &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}
}

// inboundPorts are the workload's app ports: the target ports of the
// Services selecting it, the ports its MTLSPolicy sets a mode for, and the
// ports it delivers on loopback (weft.dev/inbound-loopback-ports: a port
// no Service names would otherwise take the passthrough chain, to the
// pod's address), less the sidecar's own ports.
func (b *builder) inboundPorts() []uint16 {
	ports := slices.Clone(b.w.InboundLoopbackPorts)
	for _, svc := range b.snap.ServicesFor(b.w) {
		for _, sp := range svc.Ports {
			if sp.Protocol != "" && sp.Protocol != "TCP" {
				continue
			}
			if p, ok := b.targetPortOfSelf(svc, sp); ok {
				ports = append(ports, p)
			}
		}
	}
	for p := range b.pol.MTLS.Ports {
		ports = append(ports, p)
	}
	// The sidecar's own ports are never an app's: a chain for one would
	// deliver to the sidecar itself (loop.go).
	ports = slices.DeleteFunc(ports, isSidecarPort)
	slices.Sort(ports)
	return slices.Compact(ports)
}

// inboundHTTPPorts are the workload's inbound ports that an in-mesh HTTP
// Service port targets, with the protocol the app is sent requests in:
// the first such Service port's (Services by namespace and name, ports in
// order) when two disagree. Nil unless Generator.HTTPRouting.
func (b *builder) inboundHTTPPorts() map[uint16]mesh.AppProtocol {
	if !b.httpRouting {
		return nil
	}
	ports := map[uint16]mesh.AppProtocol{}
	for _, svc := range b.snap.ServicesFor(b.w) {
		for _, sp := range svc.Ports {
			if sp.Protocol != "" && sp.Protocol != "TCP" || !isHTTP(sp.AppProtocol) {
				continue
			}
			if p, ok := b.targetPortOfSelf(svc, sp); ok && !isSidecarPort(p) {
				if _, seen := ports[p]; !seen {
					ports[p] = sp.AppProtocol
				}
			}
		}
	}
	return ports
}

// inboundHTTPChain is chain inbound|<port>|h2: the port's TLS connections
// whose client offers ALPN h2 (a client sidecar's HTTP cluster), with the
// same client-certificate requirement as the L4 chain, then the
// http_connection_manager of route configuration inbound|<port>, whose
// http rbac filters decide each request (httpRBACFilters) where the L4
// chain's network rbac filters decide connections. While a policy is
// rejected, the network DENY-all filter stays first. In PERMISSIVE,
// plaintext callers keep the L4 plaintext chain.
func (b *builder) inboundHTTPChain(name string, port uint16, mode v1alpha1.MTLSMode) *listenerv3.FilterChain {
	common := commonTLS(nil)
	common.AlpnProtocols = []string{alpnH2}
	var filters []*listenerv3.Filter
	if f := b.rejectedFilter(); f != nil {
		filters = append(filters, f)
	}
	filters = append(filters, hcmFilter(name, name, b.httpRBACFilters()...))
	return &listenerv3.FilterChain{
		Name: name + "|h2",
		FilterChainMatch: &listenerv3.FilterChainMatch{
			DestinationPort:      wrapperspb.UInt32(uint32(port)),
			TransportProtocol:    "tls",
			ApplicationProtocols: []string{alpnH2},
		},
		TransportSocket: transportSocket(&tlsv3.DownstreamTlsContext{
			RequireClientCertificate: wrapperspb.Bool(true),
			CommonTlsContext:         common,
		}),
		Filters:  filters,
		Metadata: b.inboundMetadata(mode),
	}
}

// targetPortOfSelf resolves sp's target port on the workload itself; a named
// target port is read from the workload's own endpoint.
func (b *builder) targetPortOfSelf(svc *mesh.Service, sp mesh.ServicePort) (uint16, bool) {
	if sp.TargetPort != 0 {
		return sp.TargetPort, true
	}
	if sp.TargetPortName == "" {
		return sp.Port, true
	}
	key := b.w.Key()
	for i := range svc.Endpoints {
		if ep := &svc.Endpoints[i]; ep.Pod != nil && *ep.Pod == key {
			return ep.Port(sp.Name)
		}
	}
	return 0, false
}

// inboundChains are the chains of one port (nil: the catch-all): TLS with
// a required client certificate, and in PERMISSIVE also plaintext.
func (b *builder) inboundChains(name string, port *wrapperspb.UInt32Value, mode v1alpha1.MTLSMode, cluster string) []*listenerv3.FilterChain {
	filters := append(b.rbacFilters(name), networkFilter(wellknown.TCPProxy, &tcpproxyv3.TcpProxy{
		StatPrefix:       name,
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
	}))
	downstream := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext:         commonTLS(nil),
	}
	chains := []*listenerv3.FilterChain{{
		Name:             name + "|tls",
		FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: port, TransportProtocol: "tls"},
		TransportSocket:  transportSocket(downstream),
		Filters:          filters,
		Metadata:         b.inboundMetadata(mode),
	}}
	if mode == v1alpha1.MTLSPermissive {
		chains = append(chains, &listenerv3.FilterChain{
			Name:             name + "|plaintext",
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: port, TransportProtocol: "raw_buffer"},
			Filters:          filters,
			Metadata:         b.inboundMetadata(mode),
		})
	}
	return chains
}

// inboundMetadata says on each inbound chain which mode is in force and,
// when it fails closed, which rejected policies made it.
func (b *builder) inboundMetadata(mode v1alpha1.MTLSMode) *corev3.Metadata {
	fields := map[string]*structpb.Value{"mode": structpb.NewStringValue(string(mode))}
	if len(b.rejectedInbound) > 0 {
		fields["rejected"] = structpb.NewStringValue(rejectedMessage(b.rejectedInbound))
	}
	return metadata(inboundMetadataKey, fields)
}

func rejectedMessage(rs []mesh.Rejected) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%s %s/%s rejected (%s): %s", r.Kind, r.Namespace, r.Name, r.Reason, r.Message))
	}
	return "weft: inbound denied: " + strings.Join(parts, "; ")
}

// rbacFilters are the network rbac filters of one inbound L4 chain, which
// decide connections: DENY-all when a policy of the namespace was
// rejected; otherwise DENY policies, then ALLOW policies, as
// mesh.WorkloadPolicies.Authorize decides.
func (b *builder) rbacFilters(statPrefix string) []*listenerv3.Filter {
	if f := b.rejectedFilter(); f != nil {
		return []*listenerv3.Filter{f}
	}
	var out []*listenerv3.Filter
	for _, set := range b.rbacSets() {
		out = append(out, networkFilter(wellknown.RoleBasedAccessControl, &netrbacv3.RBAC{
			StatPrefix: statPrefix,
			Rules:      &rbacv3.RBAC{Action: set.action, Policies: b.rbacPolicies(set.policies)},
		}))
	}
	return out
}

// rejectedFilter is the network rbac filter that denies every connection
// while a policy of the namespace is rejected (fail closed), on every
// inbound chain, h2 included; nil when none is.
func (b *builder) rejectedFilter() *listenerv3.Filter {
	if len(b.rejectedInbound) == 0 {
		return nil
	}
	policies := map[string]*rbacv3.Policy{}
	for _, r := range b.rejectedInbound {
		policies[fmt.Sprintf("rejected %s %s/%s", r.Kind, r.Namespace, r.Name)] = anyPolicy()
	}
	return networkFilter(wellknown.RoleBasedAccessControl, &netrbacv3.RBAC{
		StatPrefix: "weft_rejected_policy",
		Rules:      &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: policies},
	})
}

// rbacSet is the policies of one rbac filter.
type rbacSet struct {
	action   rbacv3.RBAC_Action
	policies []*mesh.AuthorizationPolicy
}

// rbacSets are the workload's authorization policies in filter order: the
// DENY ones, then the ALLOW ones; a set without policies has no filter.
func (b *builder) rbacSets() []rbacSet {
	var deny, allow []*mesh.AuthorizationPolicy
	for _, p := range b.pol.Authorization {
		if p.Action == v1alpha1.ActionDeny {
			deny = append(deny, p)
		} else {
			allow = append(allow, p)
		}
	}
	var out []rbacSet
	for _, set := range []rbacSet{{rbacv3.RBAC_DENY, deny}, {rbacv3.RBAC_ALLOW, allow}} {
		if len(set.policies) > 0 {
			out = append(out, set)
		}
	}
	return out
}

// httpRBACFilters are the http rbac filters of chain inbound|<port>|h2,
// which decide each request, in the network filters' order and with their
// policy names and principals, the permissions being every field of the
// rules (httpRBACPolicies), as mesh.WorkloadPolicies.AuthorizeRequest
// decides. None while a policy is rejected: the chain's network DENY-all
// filter refuses every connection before any request.
func (b *builder) httpRBACFilters() []*hcmv3.HttpFilter {
	if len(b.rejectedInbound) > 0 {
		return nil
	}
	var out []*hcmv3.HttpFilter
	for _, set := range b.rbacSets() {
		out = append(out, &hcmv3.HttpFilter{
			Name: wellknown.HTTPRoleBasedAccessControl,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&httprbacv3.RBAC{
				Rules: &rbacv3.RBAC{Action: set.action, Policies: b.httpRBACPolicies(set.policies)},
			})},
		})
	}
	return out
}

// httpRBACPolicies translates authorization policies for requests: one
// RBAC policy per rule, named as rbacPolicies names it, whose permissions
// are its to entries (any of which may match), each an and_rules of its
// fields (requestPermission); any when the rule has no to.
func (b *builder) httpRBACPolicies(aps []*mesh.AuthorizationPolicy) map[string]*rbacv3.Policy {
	out := map[string]*rbacv3.Policy{}
	for _, ap := range aps {
		for i, rule := range ap.Rules {
			p := &rbacv3.Policy{Principals: b.rulePrincipals(rule)}
			for _, d := range rule.To {
				p.Permissions = append(p.Permissions, requestPermission(d))
			}
			if len(p.Permissions) == 0 {
				p.Permissions = []*rbacv3.Permission{anyPermission()}
			}
			out[rbacPolicyName(ap, i)] = p
		}
	}
	return out
}

// requestPermission is a to entry on a request: and_rules of its
// destination_port (or_rules of several), its :method header, exact (or_rules
// of several), and its url_path, exact or prefix (or_rules of several; none
// when a path is "*", any path); any when it sets only paths with "*".
func requestPermission(d mesh.Destination) *rbacv3.Permission {
	var and []*rbacv3.Permission
	if len(d.Ports) > 0 {
		var or []*rbacv3.Permission
		for _, port := range d.Ports {
			or = append(or, destinationPort(port))
		}
		and = append(and, orRules(or))
	}
	if len(d.Methods) > 0 {
		var or []*rbacv3.Permission
		for _, m := range d.Methods {
			or = append(or, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
				Name:                 ":method",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactMatcher(m)},
			}}})
		}
		and = append(and, orRules(or))
	}
	if len(d.Paths) > 0 && !slices.ContainsFunc(d.Paths, mesh.PathMatch.Any) {
		var or []*rbacv3.Permission
		for _, p := range d.Paths {
			m := exactMatcher(p.Value)
			if p.Prefix {
				m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p.Value}}
			}
			or = append(or, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
				Rule: &matcherv3.PathMatcher_Path{Path: m},
			}}})
		}
		and = append(and, orRules(or))
	}
	if len(and) == 0 {
		return anyPermission()
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: and}}}
}

func orRules(rules []*rbacv3.Permission) *rbacv3.Permission {
	if len(rules) == 1 {
		return rules[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: rules}}}
}

func exactMatcher(v string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

// rbacPolicies translates authorization policies for a connection: one
// RBAC policy per rule, named "<namespace>/<name>#<rule index>", whose
// permissions are the ports the rule matches on a connection
// (mesh.AuthorizationRule.ConnectionPorts: an ALLOW rule's to entries
// with HTTP fields are dropped, a DENY rule's are applied without them). A
// rule that matches no connection, like a policy without rules, adds
// nothing, so it matches nothing.
func (b *builder) rbacPolicies(aps []*mesh.AuthorizationPolicy) map[string]*rbacv3.Policy {
	out := map[string]*rbacv3.Policy{}
	for _, ap := range aps {
		for i, rule := range ap.Rules {
			ports, ok := rule.ConnectionPorts(ap.Action)
			if !ok {
				continue
			}
			p := &rbacv3.Policy{Principals: b.rulePrincipals(rule)}
			for _, port := range ports {
				p.Permissions = append(p.Permissions, destinationPort(port))
			}
			if len(p.Permissions) == 0 {
				p.Permissions = []*rbacv3.Permission{anyPermission()}
			}
			out[rbacPolicyName(ap, i)] = p
		}
	}
	return out
}

// rbacPolicyName names the RBAC policy of rule i of ap, in network and
// HTTP filters alike.
func rbacPolicyName(ap *mesh.AuthorizationPolicy, i int) string {
	return fmt.Sprintf("%s/%s#%d", ap.Namespace, ap.Name, i)
}

// rulePrincipals are a rule's sources, any of which may match; any peer
// when it has none.
func (b *builder) rulePrincipals(rule mesh.AuthorizationRule) []*rbacv3.Principal {
	var out []*rbacv3.Principal
	for _, src := range rule.From {
		out = append(out, b.sourcePrincipal(src))
	}
	if len(out) == 0 {
		out = []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}
	}
	return out
}

func destinationPort(port uint16) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(port)}}
}

func anyPermission() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}

// sourcePrincipal is a Source: every non-empty field must match (and_ids),
// any value of a field may (or_ids), all by authenticated SPIFFE ID.
func (b *builder) sourcePrincipal(src mesh.Source) *rbacv3.Principal {
	var and []*rbacv3.Principal
	if len(src.Principals) > 0 {
		var or []*rbacv3.Principal
		for _, p := range src.Principals {
			or = append(or, authenticated(p.Value, p.Prefix))
		}
		and = append(and, orIDs(or))
	}
	if len(src.Namespaces) > 0 {
		var or []*rbacv3.Principal
		for _, ns := range src.Namespaces {
			or = append(or, authenticated(b.td.IDString()+"/ns/"+ns+"/sa/", true))
		}
		and = append(and, orIDs(or))
	}
	if len(src.ServiceAccounts) > 0 {
		var or []*rbacv3.Principal
		for _, sa := range src.ServiceAccounts {
			or = append(or, authenticated(b.td.IDString()+"/ns/"+sa.Namespace+"/sa/"+sa.Name, false))
		}
		and = append(and, orIDs(or))
	}
	if len(and) == 1 {
		return and[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: and}}}
}

func orIDs(ids []*rbacv3.Principal) *rbacv3.Principal {
	if len(ids) == 1 {
		return ids[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
}

func authenticated(value string, prefix bool) *rbacv3.Principal {
	m := exactMatcher(value)
	if prefix {
		m.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: value}
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
		Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m},
	}}
}

func anyPolicy() *rbacv3.Policy {
	return &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
		Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
	}
}
