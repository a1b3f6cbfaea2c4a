// Package xds is the contract inside the control plane between the
// translator (controlplane/xds/translate), which turns the mesh model into
// Envoy v3 resources, and the ADS server (controlplane/xds/ads), which
// serves them: a sidecar's [Node], its [Resources], the [Generator] that
// makes one from the other, and the node ID's syntax ([NodeID],
// [ParseNodeID]). It holds no logic of either side, so each imports it and
// neither imports the other.
//
// # Generated resources are immutable
//
// A resource a Generator returns, and every message it points to, is never
// modified afterwards: not by the generator in a later call, not by the
// server, not by go-control-plane (they only read and marshal it). Code
// that wants to change a generated resource must proto.Clone it first.
//
// The translator relies on this to hand the SAME proto pointers to many
// sidecars and to keep them across registry snapshots (translate/shared.go);
// the server relies on it to cache what it computes of a shared resource
// (deterministic encoding, version, validation, references) by pointer
// identity, without looking at its content again (ads/snapshot.go). A
// generator says which resources it shares with a method
// SharedResources() func(types.Resource) bool; the server caches only
// those, and computes everything afresh for any other resource or generator.
//
// Tests: translate's TestGeneratedResourcesNeverChange (deep copies taken at
// every Generate stay equal to what was returned, across later generations
// from related snapshots) and ads's TestSharedResourcesCachedByPointer (the
// server's reliance on pointer identity).
//
// Imports: go-control-plane's resource types, go-spiffe's spiffeid and
// apimachinery's name validation. No gRPC, no goroutines.
package xds
