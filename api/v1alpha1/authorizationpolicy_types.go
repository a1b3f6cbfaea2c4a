package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// AuthorizationPolicy allows or denies inbound connections, and requests,
// to the selected workloads by the caller's authenticated identity, the port
// called and, for requests the sidecars route, the HTTP method and path.
//
// How a connection (or, on a port whose requests the sidecars route, each
// request) to a workload is decided, given every accepted policy that
// selects it:
//  1. if a rule of a DENY policy matches, the connection is denied;
//  2. otherwise, if no ALLOW policy selects the workload, it is allowed;
//  3. otherwise, if a rule of an ALLOW policy matches, it is allowed;
//  4. otherwise it is denied.
//
// An ALLOW policy without rules therefore allows nothing (it denies every
// connection to the workloads it selects); a rule with neither from nor to
// matches every connection. Identities come from the caller's mTLS
// certificate: a plaintext connection (PERMISSIVE mode) has none, so it
// matches only rules without from. The HTTP fields of a to entry (methods,
// paths) match requests only; see AuthorizationDestination for how they
// apply to connections.
//
// A policy the control plane rejects (see status) is ignored as a whole.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=weft
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says which workloads, which action and which connections.
	Spec AuthorizationPolicySpec `json:"spec"`

	// status is written by the control plane.
	// +optional
	Status Status `json:"status,omitempty"`
}

// AuthorizationAction is what a matching rule does.
// +kubebuilder:validation:Enum=ALLOW;DENY
type AuthorizationAction string

const (
	// ActionAllow allows matching connections (and, once any ALLOW policy
	// selects a workload, only those).
	ActionAllow AuthorizationAction = "ALLOW"
	// ActionDeny denies matching connections, before any ALLOW policy.
	ActionDeny AuthorizationAction = "DENY"
)

// AuthorizationPolicySpec says which workloads, which action and which
// connections.
type AuthorizationPolicySpec struct {
	// selector picks the pods, by label, in the policy's namespace whose
	// inbound connections this policy decides. Absent: every workload of
	// the namespace.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// action is ALLOW or DENY.
	// +kubebuilder:default=ALLOW
	// +optional
	Action AuthorizationAction `json:"action,omitempty"`

	// rules match connections (and requests); the policy matches a
	// connection when any rule does. No rules: the policy matches nothing (so an ALLOW policy
	// without rules denies everything to the selected workloads).
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Rules []AuthorizationRule `json:"rules,omitempty"`
}

// AuthorizationRule matches a connection (or request) when any from entry
// matches its source and any to entry matches its destination; an absent
// from or to matches everything.
type AuthorizationRule struct {
	// from lists the callers; a caller matches when any entry matches it.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	From []AuthorizationSource `json:"from,omitempty"`

	// to lists the destinations on the selected workloads; a connection
	// or request matches when any entry matches it.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	To []AuthorizationDestination `json:"to,omitempty"`
}

// AuthorizationSource matches the caller's authenticated SPIFFE ID. Every
// field that is set must match (AND); within a field any value may match
// (OR). An entry with no field set matches any authenticated caller.
// +kubebuilder:validation:XValidation:rule="has(self.principals) || has(self.namespaces) || has(self.serviceAccounts)",message="a from entry needs principals, namespaces or serviceAccounts"
type AuthorizationSource struct {
	// principals are SPIFFE IDs of callers, in the mesh's trust domain:
	// exact ("spiffe://cluster.local/ns/shop/sa/frontend"), a prefix ending
	// in "*" ("spiffe://cluster.local/ns/shop/*"), or "*" for any
	// authenticated caller.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:items:Pattern=`^(\*|spiffe://[^*]*\*?)$`
	// +optional
	Principals []string `json:"principals,omitempty"`

	// namespaces of callers: a caller matches when its service account is
	// in one of them.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`

	// serviceAccounts of callers, as "<namespace>/<name>".
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=317
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +optional
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
}

// AuthorizationDestination matches where a connection or a request goes on
// the selected workload. Every field that is set must match (AND: ports and
// methods and paths); within a field any value may match (OR). An entry sets
// at least one field.
//
// methods and paths are HTTP fields: they are decided on each request of a
// port whose requests the sidecars route (a port that an HTTP, HTTP/2 or
// gRPC Service port targets, with HTTP routing on). Everywhere else the
// sidecar sees connections, not requests, and the policy never opens more
// than it says: an ALLOW entry that sets methods or paths matches no
// connection (a rule whose every to entry sets them allows nothing there);
// a DENY entry that sets them is applied without them (it denies every
// connection to its ports, or to every port when it sets none).
// +kubebuilder:validation:XValidation:rule="has(self.ports) || has(self.methods) || has(self.paths)",message="a to entry needs ports, methods or paths"
type AuthorizationDestination struct {
	// ports the application listens on in the pod (container ports, not
	// Service ports). A connection or request to any of them matches.
	// Absent: any port.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	// +optional
	Ports []int32 `json:"ports,omitempty"`

	// methods are HTTP request methods, upper case as sent ("GET",
	// "POST"; gRPC calls are "POST"). A request whose method is one of
	// them matches. Absent: any method. An HTTP field (see above).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=32
	// +kubebuilder:validation:items:Pattern=`^[A-Z0-9_-]+$`
	// +optional
	Methods []string `json:"methods,omitempty"`

	// paths are HTTP request paths, compared with the request's path
	// without its query, as sent: exact ("/api/v1/users"), a prefix ending
	// in "*" ("/api/*" matches "/api/" and everything under it, not
	// "/api"), or "*" for any path. A gRPC method's path is
	// "/<package>.<Service>/<Method>". Absent: any path. An HTTP field
	// (see above).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=1024
	// +kubebuilder:validation:items:Pattern=`^(\*|/[^*?#]*\*?)$`
	// +optional
	Paths []string `json:"paths,omitempty"`
}

// AuthorizationPolicyList is a list of AuthorizationPolicies.
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthorizationPolicy `json:"items"`
}
