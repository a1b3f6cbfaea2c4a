package mesh

import (
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weftmesh/weft/api/v1alpha1"
)

// MTLSPolicy is an accepted MTLSPolicy.
type MTLSPolicy struct {
	Namespace, Name string
	Created         time.Time
	// Selector is nil for a namespace-wide policy.
	Selector  labels.Selector
	Mode      v1alpha1.MTLSMode
	PortModes map[uint16]v1alpha1.MTLSMode // nil when none
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
