package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Status is what the control plane reports about one of weft's objects.
type Status struct {
	// observedGeneration is the metadata.generation the control plane last
	// looked at.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions of the object. The control plane sets `Accepted`: True
	// when the object is in force, False (with a reason and a message saying
	// what is wrong) when it was rejected and is ignored.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// ConditionAccepted is the condition type the control plane maintains.
const ConditionAccepted = "Accepted"

// Reasons of the Accepted condition.
const (
	ReasonAccepted            = "Accepted"            // in force
	ReasonInvalid             = "Invalid"             // fails weft's validation; see the message
	ReasonNotDefault          = "NotDefault"          // a MeshConfig not named "default"
	ReasonTrustDomainMismatch = "TrustDomainMismatch" // MeshConfig names another trust domain than the control plane's
)

// MTLSMode says whether a workload's inbound traffic must be mTLS.
// +kubebuilder:validation:Enum=STRICT;PERMISSIVE
type MTLSMode string

const (
	// MTLSStrict accepts only mTLS connections presenting an X.509-SVID of
	// the mesh's trust domain.
	MTLSStrict MTLSMode = "STRICT"
	// MTLSPermissive accepts mTLS and plaintext connections.
	MTLSPermissive MTLSMode = "PERMISSIVE"
)
