package mesh

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Gateway API routes whose parent is a Service (GAMMA, docs/gamma.md):
// HTTPRoutes and GRPCRoutes resolved by the registry into plain values.
// Only what weft serves is here: a rule the registry refused is left out
// (its route's status says why), and a route with no parent left is not in
// the model at all. A rule whose backends do not resolve stays, its
// requests answered 500 (Backend.Unresolved); a route attached with no rule
// left stays too: requests to its parents then match nothing.

// Route kinds.
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
)

// Route is an HTTPRoute or a GRPCRoute attached to Services.
type Route struct {
	Kind            string // KindHTTPRoute or KindGRPCRoute
	Namespace, Name string
	// Created is the route's creationTimestamp: among matches of equal
	// precedence, the oldest route's wins.
	Created time.Time
	// Parents are the Services (and ports) the route attaches to; a parent
	// in the route's own namespace makes it a producer route there, one in
	// another namespace a consumer route for the route's namespace.
	Parents []RouteParent
	// Rules in the route's order; refused rules are left out.
	Rules []RouteRule
}

// Key is the route's namespace and name.
func (r *Route) Key() Key { return Key{r.Namespace, r.Name} }

// RouteParent is a Service a route attaches to.
type RouteParent struct {
	Service Key
	Port    uint16 // 0: every port of the Service
}

// RouteRule is one rule of a route.
type RouteRule struct {
	// Index is the rule's position in the route's spec: the last tie-break
	// of precedence, and the rule's name in the Envoy route ("<ns>/<name>#<index>").
	Index int
	// Matches are ORed; the registry gives a rule without any the
	// default, PathPrefix "/".
	Matches []RouteMatch
	// RequestHeaders and ResponseHeaders modify the request (before it is
	// forwarded) and the response; nil: none.
	RequestHeaders, ResponseHeaders *HeaderModifier
	// Redirect answers the request with a redirect instead of forwarding
	// it (then Backends is empty); nil: forward.
	Redirect *Redirect
	// Rewrite rewrites the forwarded request's Host and path; nil: none.
	Rewrite *Rewrite
	// Backends the requests are split between by weight; none (a rule
	// that forwards without a backendRef) answers every request 500, as
	// an Unresolved backend does its share.
	Backends []Backend
	// Timeout bounds the request from the client's view (retries
	// included), BackendTimeout each try; 0: none.
	Timeout, BackendTimeout time.Duration
}

// PathMatchType says how a RouteMatch's Path is compared.
type PathMatchType string

const (
	PathExact PathMatchType = "Exact"
	// PathPrefix matches the path's elements: "/a" matches "/a" and "/a/b",
	// never "/ab"; "/" matches every path.
	PathPrefix PathMatchType = "PathPrefix"
)

// RouteMatch is one match of a rule: every field it sets must match.
type RouteMatch struct {
	PathType PathMatchType
	Path     string // starts with "/"; a PathPrefix has no trailing "/" unless it is "/"
	// Headers (names lower case) and QueryParams must be present with
	// exactly these values.
	Headers     []NameValue
	QueryParams []NameValue
	Method      string // "": any
}

// NameValue is a header or query parameter and its value.
type NameValue struct{ Name, Value string }

// HeaderModifier sets (replacing), adds (appending) and removes headers.
type HeaderModifier struct {
	Set, Add []NameValue
	Remove   []string
}

// PathModifier replaces a path: the whole of it (ReplaceFullPath) or the
// part its rule's PathPrefix matched (ReplacePrefixMatch).
type PathModifier struct {
	Type  PathModifierType
	Value string
}

// PathModifierType is how a PathModifier replaces the path.
type PathModifierType string

const (
	ReplaceFullPath    PathModifierType = "ReplaceFullPath"
	ReplacePrefixMatch PathModifierType = "ReplacePrefixMatch"
)

// Redirect answers a request with a redirect; empty fields keep the
// request's.
type Redirect struct {
	Scheme, Hostname string
	Path             *PathModifier
	Port             uint16
	StatusCode       int // 301, 302, 303, 307 or 308
}

// Rewrite rewrites the forwarded request; empty fields keep the request's.
type Rewrite struct {
	Hostname string
	Path     *PathModifier
}

// Backend is a Service port requests are sent to, and its share.
type Backend struct {
	Service Key
	Port    uint16
	Weight  uint32
	// Unresolved: the backendRef names no Service port that routes may
	// send to (missing, not permitted, not HTTP, another kind); the
	// Gateway API answers its share of the rule's requests 500.
	Unresolved bool
}

// IsProducer reports whether p makes r a producer route: the Service is in
// the route's own namespace.
func (r *Route) IsProducer(p RouteParent) bool { return p.Service.Namespace == r.Namespace }

// RouteEntry is one match of one rule of a route, as the client sidecar
// tries them: Snapshot.RoutesFor orders them.
type RouteEntry struct {
	Route *Route
	Rule  *RouteRule
	Match RouteMatch
	// MatchIndex is the match's position in its rule.
	MatchIndex int
}

// attaches reports whether parent p takes the requests to port of svc.
func (p RouteParent) attaches(svc Key, port uint16) bool {
	return p.Service == svc && (p.Port == 0 || p.Port == port)
}

// RoutesFor returns what decides the requests a client in namespace
// clientNS sends to port of svc (its ClusterIP or name): the matches of the
// routes attached there, in the order the Gateway API gives them
// precedence. The consumer routes of clientNS (attached from clientNS to a
// Service of another namespace) replace the producer routes for its clients
// when there are any (GEP-1294: "requests from a namespace with consumer
// routes will utilize the set of routes in the consumer namespace"). nil
// means no route is attached for this client: every request goes to the
// Service itself; an empty list that routes are attached but none of their
// rules is served (their backends do not resolve), so no request matches.
func (s *Snapshot) RoutesFor(svc Key, port uint16, clientNS string) []RouteEntry {
	var producer, consumer []*Route
	for _, r := range s.index().routes[svc] {
		for _, p := range r.Parents {
			if !p.attaches(svc, port) {
				continue
			}
			switch {
			case r.IsProducer(p):
				producer = append(producer, r)
			case r.Namespace == clientNS:
				consumer = append(consumer, r)
			}
			break
		}
	}
	routes := producer
	if len(consumer) > 0 {
		routes = consumer
	}
	if len(routes) == 0 {
		return nil
	}
	out := []RouteEntry{} // attached, if with no rule left: no request matches
	for _, r := range routes {
		for i := range r.Rules {
			rule := &r.Rules[i]
			for j, m := range rule.Matches {
				out = append(out, RouteEntry{Route: r, Rule: rule, Match: m, MatchIndex: j})
			}
		}
	}
	slices.SortStableFunc(out, comparePrecedence)
	return out
}

// HasRoutes reports whether any route, producer or consumer, attaches to
// port of svc.
func (s *Snapshot) HasRoutes(svc Key, port uint16) bool {
	for _, r := range s.index().routes[svc] {
		for _, p := range r.Parents {
			if p.attaches(svc, port) {
				return true
			}
		}
	}
	return false
}

// ConsumerParents returns the Services (and ports: 0 for all) that
// consumer routes of namespace ns attach to, each once, sorted.
func (s *Snapshot) ConsumerParents(ns string) []RouteParent {
	var out []RouteParent
	for _, r := range s.Routes {
		if r.Namespace != ns {
			continue
		}
		for _, p := range r.Parents {
			if !r.IsProducer(p) {
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, func(a, b RouteParent) int {
		return cmp.Or(cmp.Compare(a.Service.String(), b.Service.String()), cmp.Compare(a.Port, b.Port))
	})
	return slices.Compact(out)
}

// comparePrecedence orders matches as the Gateway API says (HTTPRouteRule,
// "Precedence"): an exact path before a prefix; a longer path first; a
// method match first; more header matches first; more query parameter
// matches first; then the oldest route, then the route's namespace/name,
// then the rule's and the match's position.
func comparePrecedence(a, b RouteEntry) int {
	return cmp.Or(
		-cmp.Compare(rank(a.Match.PathType), rank(b.Match.PathType)),
		-cmp.Compare(len(a.Match.Path), len(b.Match.Path)),
		-cmp.Compare(boolRank(a.Match.Method != ""), boolRank(b.Match.Method != "")),
		-cmp.Compare(len(a.Match.Headers), len(b.Match.Headers)),
		-cmp.Compare(len(a.Match.QueryParams), len(b.Match.QueryParams)),
		a.Route.Created.Compare(b.Route.Created),
		cmp.Compare(a.Route.Namespace, b.Route.Namespace),
		cmp.Compare(a.Route.Name, b.Route.Name),
		strings.Compare(a.Route.Kind, b.Route.Kind),
		cmp.Compare(a.Rule.Index, b.Rule.Index),
		cmp.Compare(a.MatchIndex, b.MatchIndex),
	)
}

func rank(t PathMatchType) int {
	if t == PathExact {
		return 1
	}
	return 0
}

// Bytes the route's Envoy form may take, for budgets (the registry's, which
// bound what a namespace's routes cost every client of the Services they
// attach to). The constants are generous: controlplane/xds/translate's
// TestEncodedSizeBoundHolds holds the translator to EncodedSizeBound.
const (
	// routeOverhead is a forwarding Envoy route's fixed part: its action
	// (timeout, the default retry policy with its host predicate) and the
	// framing of its fields; redirectOverhead a redirect's.
	routeOverhead    = 256
	redirectOverhead = 64
	// itemOverhead is the framing of one match, header edit or backend:
	// nested messages' tags and lengths.
	itemOverhead = 16
)

// EncodedSizeBound bounds the bytes the route adds to the route
// configuration of each Service port it attaches to, as the translator
// encodes it: one Envoy route per match of each rule (two where a
// ReplacePrefixMatch splits), each carrying the rule's action and header
// edits (a header value's '%' doubled).
func (r *Route) EncodedSizeBound() int {
	name := len(r.Namespace) + len(r.Name) + itemOverhead
	n := 0
	for i := range r.Rules {
		rule := &r.Rules[i]
		per := routeOverhead + name + rule.actionBytes()
		if rule.Redirect != nil {
			per = redirectOverhead + name + rule.actionBytes()
		}
		forms := 1
		if p := rule.prefixModifier(); p != nil && p.Type == ReplacePrefixMatch {
			forms = 2
		}
		for _, m := range rule.Matches {
			n += forms * (per + m.encodedBytes())
		}
	}
	return n
}

// PortRoutesBound bounds the bytes a port of Service svc adds to the
// clients' route configuration once routes attach to it, besides the
// routes: route configuration outbound|<port>|<svc>.<ns>|direct, the
// default route of requests sent straight to its pods' addresses.
func PortRoutesBound(svc Key) int { return 256 + 8*(len(svc.Name)+len(svc.Namespace)) }

func (r *RouteRule) prefixModifier() *PathModifier {
	switch {
	case r.Redirect != nil:
		return r.Redirect.Path
	case r.Rewrite != nil:
		return r.Rewrite.Path
	}
	return nil
}

// actionBytes bounds a rule's part of each of its Envoy routes besides the
// match: backends, redirect or rewrite, header edits.
func (r *RouteRule) actionBytes() int {
	n := 0
	for _, b := range r.Backends {
		// outbound|<port>|<name>.<namespace> and its weight
		n += itemOverhead + len(b.Service.Name) + len(b.Service.Namespace) + 24
	}
	pathBytes := func(p *PathModifier) int {
		if p == nil {
			return 0
		}
		return 2*len(p.Value) + itemOverhead // a prefix split rewrites with the value and the value plus "/"
	}
	if rd := r.Redirect; rd != nil {
		n += 4*itemOverhead + len(rd.Scheme) + len(rd.Hostname) + pathBytes(rd.Path)
	}
	if rw := r.Rewrite; rw != nil {
		n += 2*itemOverhead + len(rw.Hostname) + pathBytes(rw.Path)
	}
	for _, m := range []*HeaderModifier{r.RequestHeaders, r.ResponseHeaders} {
		if m == nil {
			continue
		}
		for _, h := range append(slices.Clip(m.Set), m.Add...) {
			n += itemOverhead + len(h.Name) + 2*len(h.Value) // '%' is sent as "%%"
		}
		for _, name := range m.Remove {
			n += itemOverhead + len(name)
		}
	}
	return n
}

// encodedBytes bounds a match's part of an Envoy route.
func (m RouteMatch) encodedBytes() int {
	n := itemOverhead + len(m.Path) + 1 // a prefix split matches the path and the path plus "/"
	if m.Method != "" {
		n += itemOverhead + len(":method") + len(m.Method)
	}
	for _, h := range m.Headers {
		n += itemOverhead + len(h.Name) + len(h.Value)
	}
	for _, q := range m.QueryParams {
		n += itemOverhead + len(q.Name) + len(q.Value)
	}
	return n
}
