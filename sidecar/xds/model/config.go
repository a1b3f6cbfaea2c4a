package model

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Type URLs of the resources the sidecar subscribes to.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// Names fixed by the contract.
const (
	InboundListener  = "inbound"
	OutboundListener = "outbound"
	// TrustBundleSecret is the SDS secret holding every root of the mesh.
	TrustBundleSecret = "trust_bundle"
	// SVIDSecret names the sidecar's own certificate in TLS contexts; it is
	// never sent, the sidecar resolves it itself.
	SVIDSecret = "default"
	// ControlPlaneCluster is the target of the gRPC access logs; the sidecar
	// maps it to its existing control-plane connection.
	ControlPlaneCluster = "weft-controlplane"
)

// Cluster names the contract fixes.
const (
	PassthroughCluster        = "PassthroughCluster"
	InboundPassthroughCluster = "InboundPassthroughCluster"
	BlackHoleCluster          = "BlackHoleCluster"
)

// The source addresses inbound delivery may bind (upstream_bind_config):
// the ones the capture rules exempt (sidecar/capture), as Istio's
// InboundPassthroughBindIpv4 and InboundPassthroughBindIpv6.
var (
	InboundSourceIPv4 = netip.AddrFrom4([4]byte{127, 0, 0, 6})
	InboundSourceIPv6 = netip.MustParseAddr("::6")
)

// Config is what the proxy runs: built by sidecar/xds.Build from one
// consistent set of xDS resources and never modified afterwards. Share it,
// do not copy into it.
type Config struct {
	// Version is the version of the last applied response per type URL
	// (SotW version_info, delta system_version_info).
	Version   map[string]string
	Inbound   *Listener
	Outbound  *Listener
	Clusters  map[string]*Cluster
	Endpoints map[string][]Endpoint // by EDS cluster name; present once received, even if empty
	Routes    map[string]*RouteConfig
	// TrustBundle holds the roots of SDS secret trust_bundle.
	TrustBundle *x509bundle.Bundle
}

// Listener is the inbound (0.0.0.0:15006) or outbound (127.0.0.1:15001)
// listener.
type Listener struct {
	Name           string
	Addr           netip.AddrPort
	UseOriginalDst bool // the destination is the connection's SO_ORIGINAL_DST
	InspectTLS     bool // listener filter tls_inspector: SNI, ALPN and "tls" vs "raw_buffer"
	InspectHTTP    bool // listener filter http_inspector: "http/1.1" or "h2c"
	Chains         []*FilterChain
	Default        *FilterChain // nil: unmatched connections are closed
}

// FilterChain is what a matched connection goes through: TLS termination
// (inbound), RBAC filters in order, then the target.
type FilterChain struct {
	Name   string
	Match  ChainMatch
	TLS    *DownstreamTLS // nil: no TLS termination
	RBAC   []RBACFilter   // in order; a shadow filter only records its decision
	Target Target
	// AccessLog: each connection through this chain produces one audit event
	// sent over the gRPC access-log protocol to the control plane.
	AccessLog bool
	Egress    *EgressMeta  // nil: not an egress chain
	Inbound   *InboundMeta // inbound chains: the mTLS mode
}

// ChainMatch is a filter_chain_match. Zero values match anything.
type ChainMatch struct {
	DestPort          uint16
	Prefixes          []netip.Prefix // destination IP ranges, masked
	TransportProtocol string         // "tls", "raw_buffer" or ""
	ServerNames       []string       // exact, or "*.example.com" (not example.com itself)
	AppProtocols      []string       // e.g. "http/1.1", "h2c", "h2"
}

// DownstreamTLS terminates TLS 1.3 with the sidecar's SVID, verifying peers
// against the trust bundle.
type DownstreamTLS struct {
	RequireClientCert bool
	ALPN              []string
}

// Target is where a chain sends a connection: exactly one field is set.
type Target struct {
	Cluster     string // tcp_proxy to this cluster
	RouteConfig string // http_connection_manager routed by this route configuration (RDS)
	// StripAnyHostPort (HTTP): remove any ":port" from Host before matching
	// virtual host domains.
	StripAnyHostPort bool
}

// EgressMeta is the chain's filter_metadata "weft.egress": which rule matched.
type EgressMeta struct {
	Policy   string // "<ns>/<name>", or empty for the outbound policy
	Rule     string
	Decision string // "allow", "deny" or "audit"
	// Mode is the deciding EgressPolicy's mode, "Enforce" or "Audit"; empty
	// when the outbound policy decided. What the sidecar checks beyond the
	// rule (an allowed name's binding to the destination address) is
	// enforced under Enforce and flagged under Audit.
	Mode     string
	Outbound string // the mesh's outbound policy when it decided: "ALLOW_ANY" or "REGISTRY_ONLY"
}

// InboundMeta is an inbound chain's filter_metadata "weft.inbound".
type InboundMeta struct {
	Mode     string // "STRICT" or "PERMISSIVE"
	Rejected string // set when the chain denies all because a policy was rejected: why
}

// RBACAction is what a matching RBAC policy does.
type RBACAction int

// RBAC actions.
const (
	RBACAllow RBACAction = iota // allow if a policy matches, deny otherwise
	RBACDeny                    // deny if a policy matches, allow otherwise
)

func (a RBACAction) String() string {
	if a == RBACDeny {
		return "DENY"
	}
	return "ALLOW"
}

// RBACFilter is one network RBAC rule set (rules, or shadow_rules when
// Shadow is set: evaluated and audited, never enforced).
type RBACFilter struct {
	Action   RBACAction
	Policies []RBACPolicy
	Shadow   bool
}

// RBACPolicy matches when any principal and any port match.
type RBACPolicy struct {
	Name       string
	Principals []Principal
	Ports      []uint16 // empty: any port
}

// Principal matches a peer's authenticated SPIFFE ID: exactly one of Any,
// the exact ID, an ID starting with Prefix (e.g. "spiffe://td/ns/shop/sa/"),
// every principal of And (Envoy's and_ids) or at least one of Or (or_ids
// inside and_ids; elsewhere or_ids become alternatives of the enclosing
// list). And and Or are never empty: Envoy refuses empty sets.
type Principal struct {
	Any    bool
	Exact  string
	Prefix string
	And    []Principal `json:",omitempty"`
	Or     []Principal `json:",omitempty"`
}

// Matches reports whether peer (the authenticated SPIFFE ID, "" for a
// plaintext peer) is this principal. As in Envoy, Any matches every peer,
// plaintext included, an exact or prefix name only an authenticated one,
// and sets combine their members' answers.
func (p Principal) Matches(peer string) bool {
	switch {
	case p.Any:
		return true
	case len(p.And) > 0:
		for _, q := range p.And {
			if !q.Matches(peer) {
				return false
			}
		}
		return true
	case len(p.Or) > 0:
		return slices.ContainsFunc(p.Or, func(q Principal) bool { return q.Matches(peer) })
	case peer == "":
		return false
	case p.Exact != "":
		return peer == p.Exact
	default:
		return strings.HasPrefix(peer, p.Prefix)
	}
}

// Matches reports whether the policy covers peer connecting to port.
func (p RBACPolicy) Matches(peer string, port uint16) bool {
	if len(p.Ports) > 0 && !slices.Contains(p.Ports, port) {
		return false
	}
	return slices.ContainsFunc(p.Principals, func(pr Principal) bool { return pr.Matches(peer) })
}

// Allows evaluates the filter for peer connecting to port, as Envoy's RBAC
// does. For a shadow filter the answer is to be recorded, not enforced.
func (f RBACFilter) Allows(peer string, port uint16) (allowed bool, policy string) {
	for _, p := range f.Policies {
		if p.Matches(peer, port) {
			return f.Action == RBACAllow, p.Name
		}
	}
	return f.Action == RBACDeny, ""
}

// ClusterKind says how a cluster finds its upstream.
type ClusterKind int

// Cluster kinds.
const (
	KindStatic       ClusterKind = iota // StaticEndpoints
	KindEDS                             // Config.Endpoints[name]
	KindOriginalDst                     // the connection's original destination
	KindBlackhole                       // close the connection; nothing leaves
	KindControlPlane                    // the sidecar's existing control-plane connection
)

func (k ClusterKind) String() string {
	return [...]string{"STATIC", "EDS", "ORIGINAL_DST", "BLACKHOLE", "CONTROLPLANE"}[k]
}

// LBPolicy balances connections across endpoints.
type LBPolicy int

// Load-balancing policies.
const (
	RoundRobin LBPolicy = iota
	LeastRequest
)

func (p LBPolicy) String() string {
	if p == LeastRequest {
		return "LEAST_REQUEST"
	}
	return "ROUND_ROBIN"
}

// Cluster is an upstream.
type Cluster struct {
	Name            string
	Kind            ClusterKind
	LB              LBPolicy
	ConnectTimeout  time.Duration
	StaticEndpoints []Endpoint // KindStatic
	// SourceAddrs (upstream_bind_config; inbound clusters only): connect
	// from the one of the upstream's IP version, 127.0.0.6 or ::6. Empty:
	// the kernel chooses.
	SourceAddrs []netip.Addr
	UpstreamTLS *UpstreamTLS // mTLS to the peer sidecar
}

// UpstreamTLS originates TLS 1.3 with the sidecar's SVID and accepts a peer
// whose SPIFFE ID is one of SANs, verified against the trust bundle.
type UpstreamTLS struct {
	SANs []spiffeid.ID
	SNI  string
	ALPN []string
}

// Health of an endpoint.
type Health int

// Endpoint health: only Healthy endpoints take new connections.
const (
	Healthy Health = iota
	Draining
	Unhealthy
)

func (h Health) String() string { return [...]string{"HEALTHY", "DRAINING", "UNHEALTHY"}[h] }

// Endpoint is one upstream address.
type Endpoint struct {
	Addr   netip.AddrPort
	Health Health
}

// RouteConfig routes plain-HTTP egress by Host.
type RouteConfig struct {
	Name         string
	VirtualHosts []*VirtualHost
}

// VirtualHost is a set of Host names and what happens to their requests:
// routed to Cluster, or answered with Deny.
type VirtualHost struct {
	Name    string
	Domains []string // exact, "*.suffix", "prefix*", "*"; may carry ":port"
	Cluster string
	Deny    *DirectResponse
	Egress  *EgressMeta // the route's filter_metadata "weft.egress": which rule decided
}

// DirectResponse answers a request without forwarding it.
type DirectResponse struct {
	Status int
	Body   string
}

// EDSClusters returns the names of the EDS clusters, sorted.
func (c *Config) EDSClusters() []string {
	var names []string
	for n, cl := range c.Clusters {
		if cl.Kind == KindEDS {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// RouteNames returns the route configurations the listeners reference, sorted.
func (c *Config) RouteNames() []string {
	var names []string
	for _, l := range []*Listener{c.Inbound, c.Outbound} {
		if l == nil {
			continue
		}
		for _, fc := range append(slices.Clip(l.Chains), l.Default) {
			if fc != nil && fc.Target.RouteConfig != "" {
				names = append(names, fc.Target.RouteConfig)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// clusterRefs returns the clusters chains, routes and access logs name, sorted.
func (c *Config) clusterRefs() []string {
	var names []string
	for _, l := range []*Listener{c.Inbound, c.Outbound} {
		if l == nil {
			continue
		}
		for _, fc := range append(slices.Clip(l.Chains), l.Default) {
			if fc != nil && fc.Target.Cluster != "" {
				names = append(names, fc.Target.Cluster)
			}
			if fc != nil && fc.AccessLog {
				names = append(names, ControlPlaneCluster)
			}
		}
	}
	for _, rc := range c.Routes {
		for _, vh := range rc.VirtualHosts {
			if vh.Cluster != "" {
				names = append(names, vh.Cluster)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Missing lists what the configuration references but has not received:
// the listeners, endpoints of EDS clusters, route configurations, clusters
// named by chains, routes and access logs, the trust bundle. A
// configuration is complete when Missing is empty.
func (c *Config) Missing() []string {
	var m []string
	if c.Inbound == nil {
		m = append(m, "listener "+InboundListener)
	}
	if c.Outbound == nil {
		m = append(m, "listener "+OutboundListener)
	}
	for _, n := range c.EDSClusters() {
		if _, ok := c.Endpoints[n]; !ok {
			m = append(m, "endpoints "+n)
		}
	}
	for _, n := range c.RouteNames() {
		if _, ok := c.Routes[n]; !ok {
			m = append(m, "routes "+n)
		}
	}
	for _, n := range c.clusterRefs() {
		if _, ok := c.Clusters[n]; !ok {
			m = append(m, "cluster "+n)
		}
	}
	if c.TrustBundle == nil {
		m = append(m, "secret "+TrustBundleSecret)
	}
	return m
}
