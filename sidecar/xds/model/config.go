package model

import (
	"iter"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/api/names"
)

// Type URLs of the resources the sidecar subscribes to.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// Names fixed by the contract (api/names, which the translator uses too).
const (
	InboundListener  = names.InboundListener
	OutboundListener = names.OutboundListener
	// TrustBundleSecret is the SDS secret holding every root of the mesh.
	TrustBundleSecret = names.TrustBundleSecret
	// SVIDSecret names the sidecar's own certificate in TLS contexts; it is
	// never sent, the sidecar resolves it itself.
	SVIDSecret = names.SVIDSecret
	// ControlPlaneCluster is the target of the gRPC access logs; the sidecar
	// maps it to its existing control-plane connection.
	ControlPlaneCluster = names.ControlPlane
)

// Cluster names the contract fixes.
const (
	PassthroughCluster        = names.PassthroughCluster
	InboundPassthroughCluster = names.InboundPassthroughCluster
	BlackHoleCluster          = names.BlackHoleCluster
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
	Version  map[string]string
	Inbound  *Listener
	Outbound *Listener
	// Destinations are the listeners of in-mesh destinations by the
	// address and port each stands for (names.DestinationListener; they do
	// not bind): a connection the outbound listener receives whose original
	// destination has one is matched in its chains instead (Envoy's
	// original-destination hand-off; Config.OutboundFor).
	Destinations map[netip.AddrPort]*Listener `json:",omitempty"`
	Clusters     map[string]*Cluster
	Endpoints    map[string][]Endpoint // by EDS cluster name; present once received, even if empty
	Routes       map[string]*RouteConfig
	// TrustBundle holds the roots of SDS secret trust_bundle.
	TrustBundle *x509bundle.Bundle
	// OnDemand: the clusters of in-mesh TCP chains (OnDemandClusters) are
	// learnt when a connection first needs them, not with the listener, so
	// a configuration is complete without them (Missing). Set by the client
	// that asks for them (sidecar/xds.ClientConfig.OnDemand).
	OnDemand bool `json:",omitempty"`
	// LookUp: destination listeners are looked up on demand, one at a
	// connection's first use of its destination (sidecar/xds
	// Client.Destination): the proxy asks before OutboundFor. Set by the
	// client that asks for them.
	LookUp bool `json:",omitempty"`
}

// OnDemandPrefix begins the name of every in-mesh Service port's cluster,
// "outbound|<port>|<service>.<namespace>": the clusters a sidecar may learn
// on demand.
const OnDemandPrefix = "outbound|"

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
	Name  string
	Match ChainMatch
	TLS   *DownstreamTLS // nil: no TLS termination
	RBAC  []RBACFilter   // in order; a shadow filter only records its decision
	// HTTPRBAC are the http_connection_manager's envoy.filters.http.rbac
	// filters (inbound h2 chains only), in order: each request is
	// authorized by them (AllowsRequest), after the connection passed RBAC.
	HTTPRBAC []RBACFilter `json:",omitempty"`
	Target   Target
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
	// Service and Host, on the chains and virtual hosts of an ExternalName
	// Service's names: the Service ("<ns>/<name>") and the name it points
	// at, by which the connection was decided.
	Service, Host string
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

// RBACFilter is one RBAC rule set: a network filter's rules (or
// shadow_rules when Shadow is set: evaluated and audited, never enforced),
// decided per connection by Allows, or an HTTP filter's rules (never
// shadow), decided per request by AllowsRequest.
type RBACFilter struct {
	Action   RBACAction
	Policies []RBACPolicy
	Shadow   bool
}

// RBACPolicy matches when any principal matches and its permissions do. A
// network filter's policy has Ports (empty: any port) and no Permissions;
// an HTTP filter's policy has Permissions, of which one must match the
// request, and no Ports.
type RBACPolicy struct {
	Name        string
	Principals  []Principal
	Ports       []uint16     // network filters; empty: any port
	Permissions []Permission `json:",omitempty"` // HTTP filters; empty: Ports decides
}

// Permission is one alternative of an HTTP RBAC policy's permissions (an
// AuthorizationPolicy's to entry): it matches a request when every field it
// sets matches, each field by any of its values. An empty Permission
// matches every request (Envoy's any).
type Permission struct {
	Ports   []uint16    `json:",omitempty"` // destination ports
	Methods []string    `json:",omitempty"` // ":method" values, compared exactly
	Paths   []PathMatch `json:",omitempty"` // the path without its query
}

// PathMatch is a url_path matcher: exactly one of Exact and Prefix is set
// (both start with "/"), compared case-sensitively.
type PathMatch struct {
	Exact  string `json:",omitempty"`
	Prefix string `json:",omitempty"`
}

// Matches reports whether path (without its query) is this path.
func (m PathMatch) Matches(path string) bool {
	if m.Exact != "" {
		return path == m.Exact
	}
	return strings.HasPrefix(path, m.Prefix)
}

// Matches reports whether the permission covers a request of method for
// path on port.
func (p Permission) Matches(port uint16, method, path string) bool {
	return (len(p.Ports) == 0 || slices.Contains(p.Ports, port)) &&
		(len(p.Methods) == 0 || slices.Contains(p.Methods, method)) &&
		(len(p.Paths) == 0 || slices.ContainsFunc(p.Paths, func(m PathMatch) bool { return m.Matches(path) }))
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

// Matches reports whether the policy covers peer connecting to port (a
// network filter's policy).
func (p RBACPolicy) Matches(peer string, port uint16) bool {
	if len(p.Ports) > 0 && !slices.Contains(p.Ports, port) {
		return false
	}
	return slices.ContainsFunc(p.Principals, func(pr Principal) bool { return pr.Matches(peer) })
}

// MatchesRequest reports whether the policy covers peer's request of method
// for path (without its query) on port: a principal matches, and one of
// Permissions does (none: Ports decides, as for a connection).
func (p RBACPolicy) MatchesRequest(peer string, port uint16, method, path string) bool {
	if len(p.Permissions) == 0 {
		return p.Matches(peer, port)
	}
	if !slices.ContainsFunc(p.Permissions, func(pm Permission) bool { return pm.Matches(port, method, path) }) {
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

// AllowsRequest evaluates the filter (an HTTP RBAC filter) for peer's
// request of method for path (without its query) on port, as Envoy's HTTP
// RBAC filter does: the first matching policy decides by the action; none
// matching, an ALLOW filter denies and a DENY filter allows.
//
// A DENY filter's methods are matched more widely than they are written,
// so that it denies what the app may take for them: case aside ("get" is
// GET to some frameworks), and HEAD for GET (Go's ServeMux, like most
// routers, serves a GET route for HEAD). An ALLOW filter's are exact.
func (f RBACFilter) AllowsRequest(peer string, port uint16, method, path string) (allowed bool, policy string) {
	methods := []string{method}
	if f.Action == RBACDeny {
		if up := strings.ToUpper(method); up != method {
			methods = append(methods, up)
		}
		if strings.EqualFold(method, "HEAD") {
			methods = append(methods, "GET")
		}
	}
	for _, p := range f.Policies {
		for _, m := range methods {
			if p.MatchesRequest(peer, port, m, path) {
				return f.Action == RBACAllow, p.Name
			}
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

	// HTTP (typed_extension_protocol_options
	// envoy.extensions.upstreams.http.v3.HttpProtocolOptions): the protocol
	// requests are sent in to this cluster's endpoints. HTTPNone for a
	// cluster that carries connections (tcp_proxy), not requests.
	HTTP HTTPProtocol
	// Outlier (outlier_detection; EDS clusters of HTTP ports): when an
	// endpoint is ejected from request balancing. Nil: never.
	Outlier *OutlierDetection
	// RetryBudget (circuit_breakers.thresholds[0].retry_budget): how many
	// retries may be in flight at once. Nil: Envoy's default for a
	// threshold without a budget applies (max_retries 3).
	RetryBudget *RetryBudget
}

// HTTPProtocol is what a cluster's endpoints are sent requests in.
type HTTPProtocol int

// HTTP protocols of a cluster.
const (
	HTTPNone HTTPProtocol = iota // not an HTTP cluster
	HTTP1                        // explicit_http_config.http_protocol_options
	HTTP2                        // explicit_http_config.http2_protocol_options (h2 over mTLS, h2c to the app)
)

func (p HTTPProtocol) String() string { return [...]string{"none", "http/1.1", "h2"}[p] }

// OutlierDetection is Envoy's outlier_detection for consecutive 5xx (a
// connect failure, reset or timeout counts as a 5xx, as in Envoy): an
// endpoint that answers Consecutive5xx failures in a row is ejected for
// BaseEjectionTime × the number of times it was ejected, up to
// MaxEjectionTime, while at most MaxEjectionPercent of the cluster's
// endpoints are ejected. Interval is how often ejections are reconsidered.
type OutlierDetection struct {
	Consecutive5xx     uint32
	Interval           time.Duration
	BaseEjectionTime   time.Duration
	MaxEjectionTime    time.Duration
	MaxEjectionPercent uint32
}

// RetryBudget is Envoy's circuit_breakers retry_budget: retries in flight
// at most BudgetPercent of the cluster's active requests, and at least
// MinRetryConcurrency.
type RetryBudget struct {
	BudgetPercent       float64
	MinRetryConcurrency uint32
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

// RouteConfig routes HTTP requests by Host: plain-HTTP egress (one route
// per virtual host: Cluster or Deny), and the requests of an in-mesh HTTP
// service port (Routes).
type RouteConfig struct {
	Name         string
	VirtualHosts []*VirtualHost
}

// VirtualHost is a set of Host names and what happens to their requests.
//
// An egress virtual host (its route configuration is referenced by an
// egress chain) has exactly one route matching every path: its requests
// are routed to Cluster, or answered with Deny, and Routes is empty. A
// virtual host of an in-mesh HTTP port (outbound|<port>|<service>.<ns>,
// inbound|<port>) has Routes, in order, the first that matches a request
// deciding it (Envoy's semantics), and Cluster, Deny and Egress unset.
type VirtualHost struct {
	Name    string
	Domains []string // exact, "*.suffix", "prefix*", "*"; may carry ":port"
	Cluster string
	Deny    *DirectResponse
	Egress  *EgressMeta // the route's filter_metadata "weft.egress": which rule decided

	Routes []*Route
}

// Route is one route of an in-mesh virtual host: the requests it matches
// and what they get. A route either forwards (Clusters) or answers with a
// redirect (Redirect), never both.
type Route struct {
	Name  string // cosmetic; metrics label the route by it ("" : the virtual host's)
	Match RouteMatch
	// Clusters the route splits its requests over by weight (route.cluster
	// is one cluster of weight 1; weighted_clusters keeps its weights,
	// every weight > 0, their sum > 0). Empty for a redirect.
	Clusters []WeightedCluster
	// ClusterNotFound is the status of a request whose share of Clusters
	// goes to a cluster the configuration does not have
	// (route.cluster_not_found_response_code: 503, 404 or 500); 0 when
	// unset, Envoy's default 503. The control plane names such a cluster
	// for a Gateway API backendRef that does not resolve, with 500.
	ClusterNotFound int
	// Timeout of the whole request, to the end of its response
	// (route.timeout; Envoy's default 15 s when unset, 0 = none).
	Timeout time.Duration
	Retry   *RetryPolicy // nil: no retries

	// Redirect (Route.redirect): the client sidecar answers every request
	// of the route with a redirect itself; nothing is forwarded. Clusters,
	// Timeout, Retry and the rewrites are then unset; RequestHeaders, if
	// set, have no effect (as in Envoy: there is no request to edit).
	Redirect *Redirect
	// RequestHeaders edits a request's header fields before it is
	// forwarded (request_headers_to_remove, then request_headers_to_add).
	RequestHeaders HeaderMutation
	// ResponseHeaders edits the header fields of every response of the
	// route, the app's and the sidecar's own (its errors, a redirect),
	// before the client gets it (response_headers_to_remove, then
	// response_headers_to_add).
	ResponseHeaders HeaderMutation
	// PathRewrite changes the path of a forwarded request
	// (route.prefix_rewrite or route.regex_rewrite); nil: none.
	PathRewrite *PathRewrite
	// HostRewrite replaces the request's Host (:authority) when forwarded
	// (route.host_rewrite_literal); "": kept.
	HostRewrite string
}

// RouteMatch: a path match (exactly one of Prefix, Path and
// PathSeparatedPrefix is set; Prefix "/" matches every request), then
// headers and query parameters that must all match.
type RouteMatch struct {
	// Prefix of the request's :path, its query included (match.prefix;
	// "" in the configuration is "/").
	Prefix string
	// Path: the :path without its query equals it (match.path).
	Path string
	// PathSeparatedPrefix: the :path without its query equals it or
	// continues it with "/" (match.path_separated_prefix: "/api" matches
	// /api, /api/ and /api/v1, not /apiv1). It never ends in "/".
	PathSeparatedPrefix string
	Headers             []HeaderMatch
	Query               []QueryMatch // match.query_parameters
}

// HeaderMatch matches one request header by name (case-insensitive):
// Exact or Prefix (string_match), or Present; Invert negates the result.
// A header that occurs more than once matches on its values joined by ","
// (Envoy's semantics). The one pseudo-header matched is ":method", whose
// value is the request's method and which is always present.
type HeaderMatch struct {
	Name    string // lower case
	Exact   string
	Prefix  string
	Present bool
	Invert  bool
}

// QueryMatch matches one query parameter (match.query_parameters) as
// Envoy does: the query of the :path is split on "&", each parameter at
// its first "=" (none: the value is ""), names and values compared as
// sent, not percent-decoded; the first parameter of the name decides,
// by Exact or Prefix (string_match), or its presence (Present:
// present_match true, or no matcher). An absent parameter never matches.
type QueryMatch struct {
	Name    string
	Exact   string
	Prefix  string
	Present bool
}

// HeaderMutation is how a route edits header fields (Envoy's
// headers_to_remove and headers_to_add): Remove first, then Add, the
// conditions of Add judged on the header fields as Remove left them.
type HeaderMutation struct {
	Remove []string // names, lower case
	Add    []HeaderValue
}

// HeaderValue is one header field to add (HeaderValueOption).
type HeaderValue struct {
	Name  string // lower case
	Value string // literal ("%%" in the configuration is "%")
	// Action: append_action.
	Action AppendAction
	// KeepEmpty adds an empty Value too (keep_empty_value); otherwise an
	// empty value adds nothing, as in Envoy.
	KeepEmpty bool
}

// AppendAction is HeaderValueOption.append_action, Envoy's values.
type AppendAction uint8

const (
	// AppendIfExistsOrAdd adds the value as one more field of the name
	// (Gateway API's "add").
	AppendIfExistsOrAdd AppendAction = iota
	// AddIfAbsent adds it only if no field of the name is there.
	AddIfAbsent
	// OverwriteIfExistsOrAdd replaces every field of the name with it
	// (Gateway API's "set").
	OverwriteIfExistsOrAdd
	// OverwriteIfExists replaces the fields of the name, if any.
	OverwriteIfExists
)

// PathRewrite is route.prefix_rewrite or route.regex_rewrite (one of
// Prefix and Regex is set), and a redirect's prefix_rewrite (Prefix).
type PathRewrite struct {
	// Matched is the route's path match as configured (its prefix, path or
	// path_separated_prefix): the start of the :path that Prefix replaces.
	Matched string
	// Prefix replaces Matched at the start of the :path, query kept.
	Prefix string
	// Regex is matched against the path without its query; every match is
	// replaced by Substitution, in RE2's syntax (\0 to \9 are the groups,
	// \\ a backslash). A result of "" leaves the path as it was.
	Regex        *regexp.Regexp
	Substitution string
}

// Redirect is Route.redirect: the response to every request of the route,
// 301, 302, 303, 307 or 308, whose Location is the request's URL as Envoy
// rebuilds it (scheme, host, port, path and query) with what is set here
// replaced.
type Redirect struct {
	Status int // response_code
	// Scheme replaces the request's (scheme_redirect; "https" for
	// https_redirect); "" keeps it.
	Scheme string
	// Host replaces the request's host and drops its port (host_redirect);
	// "": the request's Host, its port dropped when Port is set or the
	// scheme changes away from its default port's.
	Host string
	Port uint32 // port_redirect; 0: none
	// Path replaces the path (path_redirect), and its query too when it
	// has one; PathRewrite (prefix_rewrite) replaces the matched prefix.
	// At most one is set.
	Path        string
	PathRewrite *PathRewrite
	// StripQuery drops the request's query (strip_query), unless Path has
	// a query of its own.
	StripQuery bool
}

// WeightedCluster is one cluster of a route's split.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// RetryOn is the set of retry conditions of Envoy's retry_on that the
// sidecar honours; a route that names any other is refused (NACK).
type RetryOn uint16

// Retry conditions (Envoy's retry_on names).
const (
	RetryConnectFailure       RetryOn = 1 << iota // "connect-failure": the try never reached an endpoint
	RetryRefusedStream                            // "refused-stream": HTTP/2 REFUSED_STREAM (the server did not process it)
	RetryReset                                    // "reset": the connection or stream failed before a response
	Retry5xx                                      // "5xx": any 5xx response (and what "reset" covers)
	RetryGatewayError                             // "gateway-error": 502, 503, 504
	RetryRetriableStatusCodes                     // "retriable-status-codes": RetryPolicy.StatusCodes
	RetryUnavailable                              // "unavailable": gRPC UNAVAILABLE (14) in a trailers-only response
)

// RetryPolicy is Envoy's route retry_policy, as far as the sidecar honours
// it. One deviation from Envoy, on purpose: a request that may have
// reached the app (a reset, a 5xx, a per-try timeout) is retried only when
// its method is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE),
// whatever On says; a try that never reached an endpoint may always be
// retried (docs/l7.md).
type RetryPolicy struct {
	On            RetryOn
	NumRetries    uint32        // num_retries; Envoy's default 1 when unset
	PerTryTimeout time.Duration // per_try_timeout; 0: the route's timeout bounds each try
	// PreviousHosts (retry_host_predicate
	// envoy.retry_host_predicates.previous_hosts): a retry avoids the
	// endpoints already tried.
	PreviousHosts bool
	StatusCodes   []int // retriable_status_codes, with RetryRetriableStatusCodes
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

// OutboundFor is the listener a connection the outbound listener receives
// for original destination dst is matched in: dst's destination listener
// if there is one, else the outbound listener (nil if neither).
func (c *Config) OutboundFor(dst netip.AddrPort) *Listener {
	if l := c.Destinations[netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())]; l != nil {
		return l
	}
	return c.Outbound
}

// outboundSide is the outbound listener, if any, then the destination
// listeners in no order (what reads it collects a set: the destinations
// are up to thousands, and sorting them on every read was most of what a
// lookup cost with many held).
func (c *Config) outboundSide() iter.Seq[*Listener] {
	return func(yield func(*Listener) bool) {
		if c.Outbound != nil && !yield(c.Outbound) {
			return
		}
		for _, l := range c.Destinations {
			if !yield(l) {
				return
			}
		}
	}
}

// All is every listener of c: the inbound one, the outbound one, then
// the destinations' in no order (Listeners sorts them).
func (c *Config) All() iter.Seq[*Listener] {
	return func(yield func(*Listener) bool) {
		if c.Inbound != nil && !yield(c.Inbound) {
			return
		}
		for l := range c.outboundSide() {
			if !yield(l) {
				return
			}
		}
	}
}

// Listeners is every listener of c: the inbound one, then the outbound
// one, then the destinations' in address order.
func (c *Config) Listeners() []*Listener {
	var ls []*Listener
	if c.Inbound != nil {
		ls = append(ls, c.Inbound)
	}
	if c.Outbound != nil {
		ls = append(ls, c.Outbound)
	}
	for _, ap := range slices.SortedFunc(maps.Keys(c.Destinations), netip.AddrPort.Compare) {
		ls = append(ls, c.Destinations[ap])
	}
	return ls
}

// Listener returns the listener of name c holds: inbound, outbound or a
// destination listener; nil if none.
func (c *Config) Listener(name string) *Listener {
	switch name {
	case InboundListener:
		return c.Inbound
	case OutboundListener:
		return c.Outbound
	}
	if ap, ok := names.ParseDestinationListener(name); ok {
		if l := c.Destinations[ap]; l != nil && l.Name == name {
			return l
		}
	}
	return nil
}

// RouteNames returns the route configurations the listeners reference, sorted.
func (c *Config) RouteNames() []string {
	var names []string
	for l := range c.All() {
		for _, fc := range append(slices.Clip(l.Chains), l.Default) {
			if fc != nil && fc.Target.RouteConfig != "" {
				names = append(names, fc.Target.RouteConfig)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// refs returns the clusters chains, routes and access logs name, sorted,
// without the targets of the outbound listener's non-default chains that
// skip says to leave out, and (unless optional) without those of routes
// that answer for a cluster they lack (cluster_not_found_response_code).
func (c *Config) refs(skip func(*FilterChain) bool, optional bool) []string {
	var names []string
	for l := range c.All() {
		for _, fc := range append(slices.Clip(l.Chains), l.Default) {
			if fc != nil && fc.Target.Cluster != "" && !(l != c.Inbound && fc != l.Default && skip(fc)) {
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
			for _, r := range vh.Routes {
				if r.ClusterNotFound != 0 && !optional {
					continue
				}
				for _, wc := range r.Clusters {
					names = append(names, wc.Name)
				}
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// OnDemandClusters returns the clusters that may be learnt on demand,
// sorted: the targets of the outbound listener's in-mesh TCP chains (not
// egress, not the default chain, tcp_proxy to an "outbound|" cluster) that
// nothing else names (the inbound listener, another chain, a route, an
// access log). The proxy asks for one when a connection matches its chain
// (OnDemandChain), and holds the connection until it has it.
func (c *Config) OnDemandClusters() []string {
	cand := map[string]bool{}
	for l := range c.outboundSide() {
		for _, fc := range l.Chains {
			if OnDemandChain(fc) {
				cand[fc.Target.Cluster] = true
			}
		}
	}
	if len(cand) == 0 {
		return nil
	}
	for _, n := range c.refs(OnDemandChain, true) {
		delete(cand, n)
	}
	return slices.Sorted(maps.Keys(cand))
}

// OnDemandChain reports whether fc is an in-mesh TCP chain whose cluster
// may be learnt on demand: a tcp_proxy to an "outbound|" cluster, not an
// egress chain. Only the outbound listener's non-default chains count
// (OnDemandClusters).
func OnDemandChain(fc *FilterChain) bool {
	return fc != nil && fc.Egress == nil && fc.Target.RouteConfig == "" && strings.HasPrefix(fc.Target.Cluster, OnDemandPrefix)
}

// RequiredClusters returns the clusters a complete configuration holds,
// sorted: every cluster chains, routes and access logs name, less the
// on-demand ones when c.OnDemand, and less those named only by routes
// that answer for a cluster they lack (cluster_not_found_response_code:
// the control plane names such a cluster, "unresolved|…", for a backendRef
// that does not resolve, and no configuration ever has it).
func (c *Config) RequiredClusters() []string { return c.wanted(false) }

// SubscribedClusters returns the clusters a client subscribes to by name
// (on demand), sorted: RequiredClusters and those named only by routes that
// answer for a cluster they lack, which are used when they come.
func (c *Config) SubscribedClusters() []string { return c.wanted(true) }

func (c *Config) wanted(optional bool) []string {
	skip := func(*FilterChain) bool { return false }
	if c.OnDemand {
		skip = OnDemandChain
	}
	refs := c.refs(skip, optional)
	if !c.OnDemand {
		return refs
	}
	od := c.OnDemandClusters()
	return slices.DeleteFunc(refs, func(n string) bool { _, ok := slices.BinarySearch(od, n); return ok })
}

// Missing lists what the configuration references but has not received:
// the listeners, endpoints of EDS clusters, route configurations, clusters
// named by chains, routes and access logs (but for those learnt on demand,
// RequiredClusters), the trust bundle. A configuration is complete when
// Missing is empty.
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
	for _, n := range c.RequiredClusters() {
		if _, ok := c.Clusters[n]; !ok {
			m = append(m, "cluster "+n)
		}
	}
	if c.TrustBundle == nil {
		m = append(m, "secret "+TrustBundleSecret)
	}
	return m
}
