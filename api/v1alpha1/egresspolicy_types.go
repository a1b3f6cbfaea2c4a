package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// EgressPolicy decides connections from the selected workloads to
// destinations outside the mesh (anything that is neither a Service's
// ClusterIP and port nor a pod with a weft sidecar).
//
// An egress connection is matched against the rules of every accepted
// EgressPolicy that selects its source workload: by TLS SNI or HTTP Host
// against hosts, by destination IP against cidrs, and by destination port.
// A matching Deny rule wins over a matching Allow rule, and a matching rule
// of any selecting policy wins over every policy's defaultAction: what the
// policies allow adds up, as with NetworkPolicies. When no rule matches,
// defaultAction decides: Deny (the default) refuses, so a policy's Allow
// rules are an allow-list; Allow leaves it to MeshConfig's
// outboundTrafficPolicy (ALLOW_ANY or REGISTRY_ONLY).
//
// In Audit mode the policy's decisions are recorded but not enforced: a
// connection it would deny (by a Deny rule or by defaultAction Deny) is let
// through and flagged (decision "audit"). An Audit-mode policy never
// changes what is enforced: its Allow rules do not open what an Enforce
// policy or REGISTRY_ONLY refuses. Connections to the mesh (a Service's
// ClusterIP and port, a pod with a weft sidecar) are never egress. Every
// egress connection produces an audit event naming the rule that decided
// (its index), or "default" when a policy's defaultAction did.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=weft
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Default",type=string,JSONPath=`.spec.defaultAction`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type EgressPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says which workloads, which mode and which destinations.
	Spec EgressPolicySpec `json:"spec"`

	// status is written by the control plane.
	// +optional
	Status Status `json:"status,omitempty"`
}

// EgressMode says whether an EgressPolicy is enforced.
// +kubebuilder:validation:Enum=Enforce;Audit
type EgressMode string

const (
	// EgressEnforce enforces the policy's decisions.
	EgressEnforce EgressMode = "Enforce"
	// EgressAudit records the decisions; denied connections go through,
	// flagged.
	EgressAudit EgressMode = "Audit"
)

// EgressAction is what a matching egress rule, or a policy's defaultAction,
// does.
// +kubebuilder:validation:Enum=Allow;Deny
type EgressAction string

const (
	EgressAllow EgressAction = "Allow" // let the connection through
	EgressDeny  EgressAction = "Deny"  // refuse it
)

// EgressProtocol says how a port's traffic is matched against hosts.
// +kubebuilder:validation:Enum=HTTP;TLS;TCP
type EgressProtocol string

const (
	EgressHTTP EgressProtocol = "HTTP" // plain HTTP: hosts match the Host header
	EgressTLS  EgressProtocol = "TLS"  // TLS: hosts match the SNI
	EgressTCP  EgressProtocol = "TCP"  // opaque TCP: only cidrs can match
)

// EgressPolicySpec says which workloads, which mode and which destinations.
// +kubebuilder:validation:XValidation:rule="!has(self.defaultAction) || self.defaultAction == 'Deny' || (has(self.rules) && size(self.rules) > 0)",message="a policy with defaultAction Allow needs at least one rule"
type EgressPolicySpec struct {
	// selector picks the source pods, by label, in the policy's namespace.
	// When both selector and serviceAccounts are set a pod must match both;
	// when neither is, the policy applies to every workload of the
	// namespace.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// serviceAccounts picks the source pods by the service account they run
	// as (names in the policy's namespace).
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +optional
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`

	// mode is Enforce (decisions are enforced) or Audit (recorded and
	// flagged, not enforced).
	// +kubebuilder:default=Enforce
	// +optional
	Mode EgressMode `json:"mode,omitempty"`

	// defaultAction decides the selected workloads' egress that no rule
	// matches: Deny or Allow.
	//
	// Deny (the default) makes the policy an allow-list, as selecting a pod
	// for egress in a Kubernetes NetworkPolicy does: what no rule allows is
	// refused (in Audit mode: let through and flagged), under ALLOW_ANY as
	// under REGISTRY_ONLY. It is Deny whatever the rules are, rather than
	// "Deny when there is an Allow rule", so that a policy keeps its meaning
	// when its rules are edited and `kubectl get -o yaml` shows what is in
	// force; a policy without rules refuses all egress. Policies stored
	// before this field existed read as Deny.
	//
	// Allow leaves egress no rule matches to MeshConfig's
	// outboundTrafficPolicy: let through under ALLOW_ANY, refused under
	// REGISTRY_ONLY. Use it for a policy of Deny rules only (a block-list).
	//
	// When several policies select a workload, what they allow adds up: a
	// matching rule of any of them wins over every defaultAction. When no
	// rule matches, an Enforce policy's Deny refuses the connection (the
	// audit record and the HTTP 403 name "<namespace>/<name> default");
	// otherwise REGISTRY_ONLY refuses it; otherwise an Audit policy's Deny
	// flags it (decision "audit"); otherwise ALLOW_ANY lets it out. Rules of
	// Audit-mode policies count for what is flagged, never for what is
	// enforced: their Allow rules do not open what an Enforce policy's Deny
	// or REGISTRY_ONLY refuses.
	// +kubebuilder:default=Deny
	// +optional
	DefaultAction EgressAction `json:"defaultAction,omitempty"`

	// rules match egress destinations. A policy without rules must have
	// defaultAction Deny: it refuses all egress of the workloads it selects.
	// +kubebuilder:validation:MaxItems=128
	// +optional
	Rules []EgressRule `json:"rules,omitempty"`
}

// EgressRule matches a destination: by any of hosts or cidrs, and by any of
// ports (all ports when ports is absent).
// +kubebuilder:validation:XValidation:rule="(has(self.hosts) && size(self.hosts) > 0) || (has(self.cidrs) && size(self.cidrs) > 0)",message="a rule needs at least one of hosts or cidrs"
// +kubebuilder:validation:XValidation:rule="!has(self.hosts) || !has(self.ports) || self.ports.all(p, p.protocol != 'TCP')",message="hosts can only be matched on HTTP or TLS ports; use cidrs for TCP"
type EgressRule struct {
	// hosts are DNS names, lowercase: exact ("api.example.com") or a
	// wildcard for every subdomain ("*.example.com", which does not match
	// example.com itself). Matched against the TLS SNI or the HTTP Host.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Hosts []string `json:"hosts,omitempty"`

	// cidrs are destination IPv4 or IPv6 ranges ("203.0.113.0/24",
	// "2001:db8::/32"); a single address is written as /32 or /128.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self.all(c, isCIDR(c))",message="cidrs must be IPv4 or IPv6 CIDRs such as 203.0.113.0/24"
	// +optional
	CIDRs []string `json:"cidrs,omitempty"`

	// ports limit the rule to destination ports and say how each is
	// matched. Absent: every port.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Ports []EgressPort `json:"ports,omitempty"`

	// action is Allow or Deny.
	// +kubebuilder:default=Allow
	// +optional
	Action EgressAction `json:"action,omitempty"`
}

// EgressPort is a destination port and its protocol.
type EgressPort struct {
	// number is the destination port.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Number int32 `json:"number"`

	// protocol is HTTP (hosts match the Host header), TLS (hosts match the
	// SNI) or TCP (only cidrs can match).
	Protocol EgressProtocol `json:"protocol"`
}

// EgressPolicyList is a list of EgressPolicies.
// +kubebuilder:object:root=true
type EgressPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EgressPolicy `json:"items"`
}
