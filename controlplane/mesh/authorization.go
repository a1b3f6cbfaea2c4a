package mesh

import (
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weftmesh/weft/api/v1alpha1"
)

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

// namespaceAndSA splits a weft workload ID /ns/<ns>/sa/<sa>.
func namespaceAndSA(id spiffeid.ID) (ns, sa string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return "", "", false
	}
	return parts[1], parts[3], true
}
