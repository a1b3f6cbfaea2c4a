// Package v1alpha1 holds weft's custom resources (group weft.dev, version
// v1alpha1): MeshConfig, MTLSPolicy, AuthorizationPolicy and EgressPolicy.
//
// The Go types carry kubebuilder markers; controller-gen turns them into the
// deepcopy functions (zz_generated.deepcopy.go) and the CRD manifests under
// crds/ (run ./generate.sh after editing a type). The doc comments on the
// fields become the CRDs' descriptions, which is what `kubectl explain`
// shows users.
//
// This package is a pure core: it imports Kubernetes API machinery only,
// nothing of weft's.
//
// +kubebuilder:object:generate=true
// +groupName=weft.dev
package v1alpha1
