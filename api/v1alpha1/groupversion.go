package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and Version of weft's API.
const (
	Group   = "weft.dev"
	Version = "v1alpha1"
)

// GroupVersion is weft.dev/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// The resources, for dynamic clients and informers.
var (
	MeshConfigResource          = GroupVersion.WithResource("meshconfigs")
	MTLSPolicyResource          = GroupVersion.WithResource("mtlspolicies")
	AuthorizationPolicyResource = GroupVersion.WithResource("authorizationpolicies")
	EgressPolicyResource        = GroupVersion.WithResource("egresspolicies")
)

// The kinds.
const (
	MeshConfigKind          = "MeshConfig"
	MTLSPolicyKind          = "MTLSPolicy"
	AuthorizationPolicyKind = "AuthorizationPolicy"
	EgressPolicyKind        = "EgressPolicy"
)

// DefaultMeshConfigName is the only MeshConfig weft honours.
const DefaultMeshConfigName = "default"

// AddToScheme registers the types with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&MeshConfig{}, &MeshConfigList{},
		&MTLSPolicy{}, &MTLSPolicyList{},
		&AuthorizationPolicy{}, &AuthorizationPolicyList{},
		&EgressPolicy{}, &EgressPolicyList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
