// Package registry watches Kubernetes with client-go shared informers and
// publishes the mesh model (controlplane/mesh): it reads Services,
// EndpointSlices, Pods, Namespaces and ServiceAccounts into the model's
// services, endpoints, workloads and identities (build.go), validates weft's
// objects (api/v1alpha1) and resolves those it accepts into the model's
// policies (validate.go), and writes each object's verdict back to it
// (status.go).
//
// Every change rebuilds the model's contents from the informers' caches; a
// rebuild that changes nothing (a resync, an unrelated pod update)
// publishes nothing (mesh.Snapshot.Next). A weft object that fails
// validation is left out of the snapshot, listed in Snapshot.Rejected, and
// reported on the object itself (status condition Accepted=False) and with
// a Kubernetes Event; the rest is served.
//
// With Config.GatewayAPI it also watches the Gateway API's HTTPRoutes,
// GRPCRoutes and ReferenceGrants, once discovery says the cluster serves
// them (gateway.go: asked at start and every GatewayAPIRecheck until all
// are served), resolves the routes whose parentRef is a Service into the
// model's routes (GAMMA, docs/gamma.md; routes.go) and writes their status
// the Gateway API's way: weft's entries (controllerName weft.dev/mesh) in
// status.parents, with Accepted, ResolvedRefs and PartiallyInvalid.
//
// This package imports controlplane/mesh, api/v1alpha1, api/names,
// Kubernetes client libraries and the Gateway API's types, nothing else of
// weft's. What reads the model
// (controlplane/xds/translate) imports controlplane/mesh, not this package,
// and so links no client-go.
package registry
