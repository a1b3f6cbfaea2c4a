package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// MTLSPolicy sets the mTLS mode of the injected workloads in its namespace,
// overriding MeshConfig's default.
//
// Precedence, most specific first: a policy with a selector that selects the
// workload; a policy without a selector (the whole namespace); the
// MeshConfig. When several policies of one kind apply, the oldest wins
// (then the name in alphabetical order). portLevelMtls of the winning
// policy overrides its mode for the listed ports.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=weft
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MTLSPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says which workloads and which mode.
	Spec MTLSPolicySpec `json:"spec"`

	// status is written by the control plane.
	// +optional
	Status Status `json:"status,omitempty"`
}

// MTLSPolicySpec says which workloads and which mode.
type MTLSPolicySpec struct {
	// selector picks the pods, by label, in the policy's namespace. Absent:
	// every workload of the namespace.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// mode is STRICT (only mTLS from the mesh is accepted) or PERMISSIVE
	// (plaintext is accepted too).
	Mode MTLSMode `json:"mode"`

	// portLevelMtls overrides mode for single ports. Keys are the ports the
	// application listens on in the pod (container ports, not Service
	// ports), as strings: {"8080": PERMISSIVE}.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^[0-9]{1,5}$') && int(k) >= 1 && int(k) <= 65535)",message="portLevelMtls keys must be port numbers 1-65535"
	// +optional
	PortLevelMTLS map[string]MTLSMode `json:"portLevelMtls,omitempty"`
}

// MTLSPolicyList is a list of MTLSPolicies.
// +kubebuilder:object:root=true
type MTLSPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MTLSPolicy `json:"items"`
}
