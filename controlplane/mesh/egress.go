package mesh

import (
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/weftmesh/weft/api/v1alpha1"
)

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
