package registry

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weftmesh/weft/api/v1alpha1"
)

// Snapshot is the mesh model at one point in time. A published Snapshot is
// immutable: neither the registry nor its readers may modify it or anything
// it points to, so readers share it without locks.
type Snapshot struct {
	// Version increases by one with every published change; equal content
	// keeps the Version.
	Version uint64

	Mesh            MeshConfig
	Namespaces      []Namespace      // by name
	ServiceAccounts []ServiceAccount // by namespace, name
	Services        []*Service       // by namespace, name
	Workloads       []*Workload      // by namespace, name

	// Policies that passed validation, by namespace and name (MTLSPolicies:
	// by namespace, then oldest first, as precedence needs).
	MTLSPolicies          []*MTLSPolicy
	AuthorizationPolicies []*AuthorizationPolicy
	EgressPolicies        []*EgressPolicy

	// Rejected lists the weft objects left out, by kind, namespace, name.
	Rejected []Rejected

	idx index // lookups; derived from the fields above
}

type index struct {
	services   map[Key]*Service
	byNS       map[string][]*Service // services per namespace
	workloads  map[Key]*Workload
	podIPs     map[netip.Addr]*Workload // workloads not on the host network
	clusterIPs map[netip.AddrPort]serviceAddr
	namespaces map[string]*Namespace
}

type serviceAddr struct {
	svc  *Service
	port int // index into svc.Ports
}

// Key names a namespaced object.
type Key struct{ Namespace, Name string }

func (k Key) String() string { return k.Namespace + "/" + k.Name }

// MeshConfig is the mesh-wide configuration in force.
type MeshConfig struct {
	TrustDomain  spiffeid.TrustDomain
	MTLSMode     v1alpha1.MTLSMode     // STRICT or PERMISSIVE
	OutboundMode v1alpha1.OutboundMode // ALLOW_ANY or REGISTRY_ONLY
	// FromObject is true when the MeshConfig "default" was found and
	// accepted; false means the defaults (the control plane's trust
	// domain, STRICT, ALLOW_ANY).
	FromObject bool
}

// Namespace is a Kubernetes namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
	// Injection is true when the namespace has weft.dev/inject=enabled.
	Injection bool
}

// ServiceAccount is a Kubernetes service account and the SPIFFE ID its pods
// run as.
type ServiceAccount struct {
	Namespace, Name string
	ID              spiffeid.ID
}

// AppProtocol is what a service port carries, from its appProtocol or its
// name's prefix ("http-web", "grpc", "tcp-db"). Empty means unknown: the
// sidecar sniffs.
type AppProtocol string

const (
	AppProtocolUnknown AppProtocol = ""
	AppProtocolHTTP    AppProtocol = "http"
	AppProtocolHTTP2   AppProtocol = "http2"
	AppProtocolGRPC    AppProtocol = "grpc"
	AppProtocolTCP     AppProtocol = "tcp"
	AppProtocolTLS     AppProtocol = "tls"
)

// Service is a Kubernetes Service and its endpoints.
type Service struct {
	Namespace, Name string
	Type            string       // ClusterIP, NodePort, LoadBalancer, ExternalName
	ClusterIPs      []netip.Addr // none for headless and ExternalName services
	ExternalName    string
	// Selector picks the service's pods; nil when the service has none
	// (its EndpointSlices are managed by hand).
	Selector  map[string]string
	Ports     []ServicePort
	Endpoints []Endpoint // by address
	// Identities are the SPIFFE IDs of the pods behind the service, sorted
	// and unique: what a client must accept from the server's certificate.
	Identities []spiffeid.ID
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name string
	Port uint16
	// TargetPort is the pod port when given as a number; TargetPortName
	// when given as a container port's name (then each endpoint's Ports
	// say the number).
	TargetPort     uint16
	TargetPortName string
	Protocol       string // TCP, UDP or SCTP
	AppProtocol    AppProtocol
}

// Endpoint is one address behind a Service, from its EndpointSlices.
type Endpoint struct {
	Address netip.Addr
	// Ports are the endpoint's ports by service port name. Endpoints of one
	// EndpointSlice share this slice.
	Ports                       []EndpointPort
	Ready, Serving, Terminating bool
	NodeName                    string
	// Pod is the pod behind the endpoint; nil when it is not a pod or the
	// pod is not (yet) known.
	Pod *Key
	// Identity is the SPIFFE ID the pod runs as; zero when Pod is nil.
	Identity spiffeid.ID
	// Injected is true when the pod runs weft's sidecar.
	Injected bool
}

// EndpointPort is the port an endpoint serves a named service port on.
type EndpointPort struct {
	Name     string // the service port's name ("" for a single unnamed port)
	Port     uint16
	Protocol string
}

// Port returns the endpoint's port for the service port named name.
func (e *Endpoint) Port(name string) (uint16, bool) {
	for _, p := range e.Ports {
		if p.Name == name {
			return p.Port, true
		}
	}
	return 0, false
}

// Workload is a pod that is not finished.
type Workload struct {
	Namespace, Name string
	UID             string
	IPs             []netip.Addr
	Labels          map[string]string
	ServiceAccount  string
	Identity        spiffeid.ID
	// Injected is true when the pod has a container or init container named
	// weft-proxy.
	Injected    bool
	HostNetwork bool
	NodeName    string
	// InboundLoopbackPorts are the ports the pod's apps listen on at
	// 127.0.0.1 only (its weft.dev/inbound-loopback-ports): its sidecar
	// delivers inbound connections for them to 127.0.0.1, the rest to the
	// pod's own address. Sorted, unique.
	InboundLoopbackPorts []uint16
}

// Key is the workload's namespace and name.
func (w *Workload) Key() Key { return Key{w.Namespace, w.Name} }

// NodeID is the xDS node ID the workload's sidecar uses: "<pod>.<namespace>".
func (w *Workload) NodeID() string { return w.Name + "." + w.Namespace }

// MTLSPolicy is an accepted MTLSPolicy.
type MTLSPolicy struct {
	Namespace, Name string
	Created         time.Time
	// Selector is nil for a namespace-wide policy.
	Selector  labels.Selector
	Mode      v1alpha1.MTLSMode
	PortModes map[uint16]v1alpha1.MTLSMode // nil when none
}

// AuthorizationPolicy is an accepted AuthorizationPolicy. Its semantics are
// those of the API type (see api/v1alpha1): DENY first, then, when any ALLOW
// policy selects a workload, only what an ALLOW rule matches.
type AuthorizationPolicy struct {
	Namespace, Name string
	// Selector is nil when the policy selects the whole namespace.
	Selector labels.Selector
	Action   v1alpha1.AuthorizationAction // ALLOW or DENY
	// Rules: the policy matches when any rule does; none matches nothing.
	Rules []AuthorizationRule
}

// AuthorizationRule matches when any From source matches the peer (or From
// is empty) and any To destination matches where the connection or request
// goes (or To is empty).
type AuthorizationRule struct {
	From []Source
	To   []Destination // empty: anywhere
}

// Destination matches where a connection or request goes: every non-empty
// field must match (AND); within a field any value may (OR). Every
// Destination has at least one non-empty field.
//
// Methods and Paths are HTTP fields, decided on requests only. On a
// connection (docs/l7.md, "Where HTTP fields apply") a Destination with
// HTTP fields matches nothing in an ALLOW policy and is applied without
// them in a DENY policy (ConnectionPorts).
type Destination struct {
	Ports   []uint16    // sorted, unique; empty: any port
	Methods []string    // upper case, unique, in policy order; empty: any method
	Paths   []PathMatch // unique, in policy order; empty: any path
}

// HasHTTP reports whether d sets an HTTP field (methods or paths).
func (d *Destination) HasHTTP() bool { return len(d.Methods) > 0 || len(d.Paths) > 0 }

// MatchesRequest reports whether a request to port with method and path
// (its query, if any, is ignored) matches d.
func (d *Destination) MatchesRequest(port uint16, method, path string) bool {
	if len(d.Ports) > 0 && !slices.Contains(d.Ports, port) {
		return false
	}
	if len(d.Methods) > 0 && !slices.Contains(d.Methods, method) {
		return false
	}
	path, _, _ = strings.Cut(path, "?")
	return len(d.Paths) == 0 || slices.ContainsFunc(d.Paths, func(p PathMatch) bool { return p.Matches(path) })
}

// PathMatch matches a request's path, without its query, as sent: equal to
// Value, or, with Prefix, starting with it. The policy's "*" (any path) is
// Prefix with an empty Value.
type PathMatch struct {
	Value  string
	Prefix bool
}

// Any reports whether p matches every path (the policy's "*").
func (p PathMatch) Any() bool { return p.Prefix && p.Value == "" }

// Matches reports whether path matches p.
func (p PathMatch) Matches(path string) bool {
	if p.Prefix {
		return strings.HasPrefix(path, p.Value)
	}
	return path == p.Value
}

// String is the path as the policy writes it.
func (p PathMatch) String() string {
	if p.Prefix {
		return p.Value + "*"
	}
	return p.Value
}

// Source matches an authenticated peer. Each non-empty field must match
// (AND); within a field any value may (OR). Every Source has at least one
// non-empty field; none matches a plaintext peer.
type Source struct {
	Principals      []Principal
	Namespaces      []string
	ServiceAccounts []Key
}

// Principal matches a peer's SPIFFE ID as a string: equal to Value, or,
// with Prefix, starting with it. "*" in the policy is the prefix
// "spiffe://<trust domain>/".
type Principal struct {
	Value  string
	Prefix bool
}

// Matches reports whether id matches the principal.
func (p Principal) Matches(id spiffeid.ID) bool {
	if id.IsZero() {
		return false
	}
	if p.Prefix {
		return strings.HasPrefix(id.String(), p.Value)
	}
	return id.String() == p.Value
}

// Matches reports whether the authenticated peer id matches the source; a
// zero id (a plaintext peer) matches no source.
func (s Source) Matches(td spiffeid.TrustDomain, id spiffeid.ID) bool {
	if id.IsZero() || id.TrustDomain() != td {
		return false
	}
	ns, sa, ok := namespaceAndSA(id)
	if len(s.Principals) > 0 && !slices.ContainsFunc(s.Principals, func(p Principal) bool { return p.Matches(id) }) {
		return false
	}
	if len(s.Namespaces) > 0 && (!ok || !slices.Contains(s.Namespaces, ns)) {
		return false
	}
	if len(s.ServiceAccounts) > 0 && (!ok || !slices.Contains(s.ServiceAccounts, Key{ns, sa})) {
		return false
	}
	return true
}

// matchesFrom reports whether the peer (zero when plaintext) matches the
// rule's From.
func (r *AuthorizationRule) matchesFrom(td spiffeid.TrustDomain, peer spiffeid.ID) bool {
	return len(r.From) == 0 || slices.ContainsFunc(r.From, func(s Source) bool { return s.Matches(td, peer) })
}

// ConnectionPorts is what the rule's To matches on a connection, in a
// policy of action (docs/l7.md, "Where HTTP fields apply"): ok is false
// when it matches no connection (an ALLOW rule whose every to entry sets
// HTTP fields, which are dropped); otherwise ports are the ports it
// matches, nil for any port. A DENY rule's entries are applied without
// their HTTP fields, so an entry with HTTP fields and no ports makes the
// rule match every port: it fails closed.
func (r *AuthorizationRule) ConnectionPorts(action v1alpha1.AuthorizationAction) (ports []uint16, ok bool) {
	if len(r.To) == 0 {
		return nil, true
	}
	for i := range r.To {
		d := &r.To[i]
		if d.HasHTTP() && action != v1alpha1.ActionDeny {
			continue
		}
		if len(d.Ports) == 0 {
			return nil, true
		}
		ports = append(ports, d.Ports...)
		ok = true
	}
	slices.Sort(ports)
	return slices.Compact(ports), ok
}

// MatchesConnection reports whether a connection from peer (zero when
// plaintext) to port matches the rule in a policy of action: its HTTP
// fields apply as ConnectionPorts says.
func (r *AuthorizationRule) MatchesConnection(td spiffeid.TrustDomain, action v1alpha1.AuthorizationAction, peer spiffeid.ID, port uint16) bool {
	ports, ok := r.ConnectionPorts(action)
	if !ok || ports != nil && !slices.Contains(ports, port) {
		return false
	}
	return r.matchesFrom(td, peer)
}

// MatchesRequest reports whether a request from peer to port with method
// and path matches the rule: every field applies.
func (r *AuthorizationRule) MatchesRequest(td spiffeid.TrustDomain, peer spiffeid.ID, port uint16, method, path string) bool {
	if len(r.To) > 0 && !slices.ContainsFunc(r.To, func(d Destination) bool { return d.MatchesRequest(port, method, path) }) {
		return false
	}
	return r.matchesFrom(td, peer)
}

// Matches reports whether any rule of the policy matches a connection from
// peer to port (AuthorizationRule.MatchesConnection).
func (p *AuthorizationPolicy) Matches(td spiffeid.TrustDomain, peer spiffeid.ID, port uint16) bool {
	for i := range p.Rules {
		if p.Rules[i].MatchesConnection(td, p.Action, peer, port) {
			return true
		}
	}
	return false
}

// MatchesRequest reports whether any rule of the policy matches a request.
func (p *AuthorizationPolicy) MatchesRequest(td spiffeid.TrustDomain, peer spiffeid.ID, port uint16, method, path string) bool {
	for i := range p.Rules {
		if p.Rules[i].MatchesRequest(td, peer, port, method, path) {
			return true
		}
	}
	return false
}

// HasHTTP reports whether a rule of the policy sets HTTP fields.
func (p *AuthorizationPolicy) HasHTTP() bool {
	for _, r := range p.Rules {
		if slices.ContainsFunc(r.To, func(d Destination) bool { return d.HasHTTP() }) {
			return true
		}
	}
	return false
}

// EgressPolicy is an accepted EgressPolicy.
type EgressPolicy struct {
	Namespace, Name string
	// Selector is nil when the policy has no label condition.
	Selector labels.Selector
	// ServiceAccounts, when not empty, limit the policy to pods running as
	// one of them (in the policy's namespace).
	ServiceAccounts []string
	Mode            v1alpha1.EgressMode // Enforce or Audit
	// DefaultAction decides the workload's egress no rule matches: Deny
	// (refused; flagged in Audit mode) or Allow (left to the outbound
	// policy). The registry always sets it; empty reads as Deny, the API's
	// default.
	DefaultAction v1alpha1.EgressAction
	Rules         []EgressRule // may be empty with DefaultAction Deny: all egress refused
}

// DefaultDeny reports whether egress no rule matches is denied (or, in
// Audit mode, flagged) by the policy's defaultAction.
func (p *EgressPolicy) DefaultDeny() bool { return p.DefaultAction != v1alpha1.EgressAllow }

// EgressRule matches a destination by any of Hosts or CIDRs and, when Ports
// is not empty, by port.
type EgressRule struct {
	Hosts  []string       // lowercase; "*.example.com" matches subdomains only
	CIDRs  []netip.Prefix // masked
	Ports  []EgressPort
	Action v1alpha1.EgressAction // Allow or Deny
}

// EgressPort is a destination port and how hosts are matched on it.
type EgressPort struct {
	Number   uint16
	Protocol v1alpha1.EgressProtocol // HTTP, TLS or TCP
}

// Selects reports whether the policy applies to egress from w.
func (p *EgressPolicy) Selects(w *Workload) bool {
	if w.Namespace != p.Namespace {
		return false
	}
	if p.Selector != nil && !p.Selector.Matches(labels.Set(w.Labels)) {
		return false
	}
	return len(p.ServiceAccounts) == 0 || slices.Contains(p.ServiceAccounts, w.ServiceAccount)
}

// Rejected is a weft object left out of the model, and why.
type Rejected struct {
	Kind            string // MeshConfig, MTLSPolicy, AuthorizationPolicy, EgressPolicy
	Namespace, Name string
	Generation      int64
	Reason, Message string // the Accepted condition's
}

// WorkloadPolicies are the policies in force for one workload.
type WorkloadPolicies struct {
	MTLS MTLSSettings
	// Authorization lists the policies selecting the workload: DENY
	// policies first, then ALLOW, each by name.
	Authorization []*AuthorizationPolicy
	// Egress lists the egress policies selecting the workload, by name.
	Egress []*EgressPolicy
}

// MTLSSettings is a workload's resolved inbound mTLS mode.
type MTLSSettings struct {
	Mode  v1alpha1.MTLSMode            // for ports not in Ports
	Ports map[uint16]v1alpha1.MTLSMode // per-port overrides; nil when none
	// Policy is the MTLSPolicy that decided; nil when MeshConfig did.
	Policy *MTLSPolicy
}

// ModeFor returns the mode of an inbound port.
func (m MTLSSettings) ModeFor(port uint16) v1alpha1.MTLSMode {
	if mode, ok := m.Ports[port]; ok {
		return mode
	}
	return m.Mode
}

// Authorize decides an inbound connection from peer (zero when plaintext)
// to port with the policies' semantics, and returns the policy that decided
// (nil when no policy did: allowed because no ALLOW policy applies). HTTP
// fields apply to a connection as AuthorizationRule.ConnectionPorts says.
// It is the reference the xDS translation's network RBAC filters (every L4
// chain) must agree with.
func (p *WorkloadPolicies) Authorize(td spiffeid.TrustDomain, peer spiffeid.ID, port uint16) (bool, *AuthorizationPolicy) {
	return p.decide(func(ap *AuthorizationPolicy) bool { return ap.Matches(td, peer, port) })
}

// AuthorizeRequest decides an inbound request from peer to port with
// method and path (its query ignored), on a port whose requests the
// sidecars route, as Authorize decides a connection but with every field
// of the rules. It is the reference the HTTP RBAC filters of chain
// inbound|<port>|h2 must agree with.
func (p *WorkloadPolicies) AuthorizeRequest(td spiffeid.TrustDomain, peer spiffeid.ID, port uint16, method, path string) (bool, *AuthorizationPolicy) {
	return p.decide(func(ap *AuthorizationPolicy) bool { return ap.MatchesRequest(td, peer, port, method, path) })
}

// decide: a matching DENY policy denies; otherwise no ALLOW policy allows;
// otherwise a matching ALLOW policy allows; otherwise the first ALLOW
// policy denies.
func (p *WorkloadPolicies) decide(matches func(*AuthorizationPolicy) bool) (bool, *AuthorizationPolicy) {
	var allows []*AuthorizationPolicy
	for _, ap := range p.Authorization {
		if ap.Action == v1alpha1.ActionDeny {
			if matches(ap) {
				return false, ap
			}
			continue
		}
		allows = append(allows, ap)
	}
	if len(allows) == 0 {
		return true, nil
	}
	for _, ap := range allows {
		if matches(ap) {
			return true, ap
		}
	}
	return false, allows[0]
}

// WorkloadByNode finds the workload of an xDS node ID "<pod>.<namespace>".
// Pod names may contain dots, namespaces may not.
func (s *Snapshot) WorkloadByNode(nodeID string) (*Workload, bool) {
	i := strings.LastIndexByte(nodeID, '.')
	if i <= 0 || i == len(nodeID)-1 {
		return nil, false
	}
	return s.Workload(nodeID[i+1:], nodeID[:i])
}

// Workload finds a workload by namespace and name.
func (s *Snapshot) Workload(namespace, name string) (*Workload, bool) {
	w, ok := s.idx.workloads[Key{namespace, name}]
	return w, ok
}

// WorkloadByIP finds the workload with a pod IP (host-network pods are not
// found).
func (s *Snapshot) WorkloadByIP(ip netip.Addr) (*Workload, bool) {
	w, ok := s.idx.podIPs[ip.Unmap()]
	return w, ok
}

// Service finds a service by namespace and name.
func (s *Snapshot) Service(namespace, name string) (*Service, bool) {
	svc, ok := s.idx.services[Key{namespace, name}]
	return svc, ok
}

// ServiceByAddr finds the service whose ClusterIP and port is addr.
func (s *Snapshot) ServiceByAddr(addr netip.AddrPort) (*Service, ServicePort, bool) {
	sa, ok := s.idx.clusterIPs[netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())]
	if !ok {
		return nil, ServicePort{}, false
	}
	return sa.svc, sa.svc.Ports[sa.port], true
}

// Namespace finds a namespace.
func (s *Snapshot) Namespace(name string) (*Namespace, bool) {
	ns, ok := s.idx.namespaces[name]
	return ns, ok
}

// ServicesFor returns the services whose selector selects w (its namespace's
// services with a non-empty selector matching its labels), by name.
func (s *Snapshot) ServicesFor(w *Workload) []*Service {
	var out []*Service
	for _, svc := range s.idx.byNS[w.Namespace] {
		if len(svc.Selector) > 0 && labels.SelectorFromValidatedSet(svc.Selector).Matches(labels.Set(w.Labels)) {
			out = append(out, svc)
		}
	}
	return out
}

// InMesh reports whether an outbound destination is in the mesh: a
// Service's ClusterIP and port, or any port of a pod that runs weft's
// sidecar. Everything else is egress.
func (s *Snapshot) InMesh(addr netip.AddrPort) bool {
	if _, _, ok := s.ServiceByAddr(addr); ok {
		return true
	}
	w, ok := s.WorkloadByIP(addr.Addr())
	return ok && w.Injected
}

// PoliciesFor resolves the policies in force for w.
func (s *Snapshot) PoliciesFor(w *Workload) WorkloadPolicies {
	set := labels.Set(w.Labels)
	selects := func(ns string, sel labels.Selector) bool {
		return ns == w.Namespace && (sel == nil || sel.Matches(set))
	}
	out := WorkloadPolicies{MTLS: MTLSSettings{Mode: s.Mesh.MTLSMode}}
	// MTLSPolicies are sorted oldest first: the first match of each kind
	// wins, a selector policy over a namespace-wide one.
	var nsWide, selected *MTLSPolicy
	for _, p := range s.MTLSPolicies {
		switch {
		case !selects(p.Namespace, p.Selector):
		case p.Selector == nil && nsWide == nil:
			nsWide = p
		case p.Selector != nil && selected == nil:
			selected = p
		}
	}
	if p := cmpOr(selected, nsWide); p != nil {
		out.MTLS = MTLSSettings{Mode: p.Mode, Ports: p.PortModes, Policy: p}
	}
	for _, p := range s.AuthorizationPolicies {
		if selects(p.Namespace, p.Selector) {
			out.Authorization = append(out.Authorization, p)
		}
	}
	slices.SortStableFunc(out.Authorization, func(a, b *AuthorizationPolicy) int {
		return boolRank(a.Action != v1alpha1.ActionDeny) - boolRank(b.Action != v1alpha1.ActionDeny)
	})
	for _, p := range s.EgressPolicies {
		if p.Selects(w) {
			out.Egress = append(out.Egress, p)
		}
	}
	return out
}

func cmpOr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// namespaceAndSA splits a weft workload ID /ns/<ns>/sa/<sa>.
func namespaceAndSA(id spiffeid.ID) (ns, sa string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return "", "", false
	}
	return parts[1], parts[3], true
}

// NewSnapshot returns a published-form copy of contents: sorted as the
// registry sorts and indexed, so the lookups work. It is for tests and tools
// that make a model by hand (the xDS translation's golden tests); the
// registry builds its own. The slices are copied; what they point to is
// shared and must not be modified afterwards.
func NewSnapshot(contents Snapshot) *Snapshot {
	s := contents
	s.Namespaces = slices.Clone(s.Namespaces)
	s.ServiceAccounts = slices.Clone(s.ServiceAccounts)
	s.Services = slices.Clone(s.Services)
	s.Workloads = slices.Clone(s.Workloads)
	s.MTLSPolicies = slices.Clone(s.MTLSPolicies)
	s.AuthorizationPolicies = slices.Clone(s.AuthorizationPolicies)
	s.EgressPolicies = slices.Clone(s.EgressPolicies)
	s.Rejected = slices.Clone(s.Rejected)
	s.sort()
	s.index()
	return &s
}
