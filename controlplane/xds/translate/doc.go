// Package translate turns weft's mesh model into the Envoy v3 resources of
// each sidecar, following the contract in sidecar/xds/README.md: a
// [Generator] reads the mesh snapshot it is given and returns one
// sidecar's listeners, clusters, endpoints, routes and trust bundle
// ([xds.Resources]). It is pure: no gRPC, no client-go, no goroutines;
// equal input gives byte-identical output, golden-tested under
// testdata/golden (go test ./controlplane/xds/translate -run
// TestTranslateGolden -update rewrites them).
//
// What every sidecar of a mesh snapshot gets alike is built once and
// shared (shared.go), under the invariant of package xds: a generated
// resource is never modified.
//
// Imports: controlplane/xds (node and resource types), controlplane/mesh
// (the model it reads; controlplane/registry, which makes the snapshots from
// informers, is never imported, so the translator links no client-go),
// api/v1alpha1, api/names, api/audit, go-control-plane's Envoy protos,
// go-spiffe's spiffeid. Never controlplane/xds/ads, gRPC or sidecar/* (its
// tests use both to check the sidecar agrees with it).
package translate
