// Package mesh is the control plane's immutable model of the mesh: the
// values the registry (controlplane/registry) makes from Kubernetes objects
// and the translator (controlplane/xds/translate) turns into Envoy
// resources. It holds services with their ports, app protocols, endpoints
// and the SPIFFE IDs behind them; workloads (pods) with their identities;
// namespaces and service accounts; the MeshConfig in force; weft's accepted
// policies (api/v1alpha1) as plain Go values, with their semantics (which
// policies select a workload, how an AuthorizationPolicy decides a
// connection or a request, which egress rules apply); the Gateway API
// routes attached to Services (GAMMA: routes.go, which routes a client's
// requests to a Service port meet, in the Gateway API's precedence); and the lookups a
// translator needs (a workload by xDS node ID or pod IP, a service by
// ClusterIP and port).
//
// A Snapshot is made only by NewSnapshot or Snapshot.Next, which sort its
// Contents and derive its index from them, so its lookups always agree with
// its fields. Once made, neither its maker nor its readers modify it or
// anything it points to, so readers share it without locks.
//
// This package imports api/v1alpha1, go-spiffe, apimachinery's labels (for
// the policies' selectors; api/v1alpha1 already links it) and the standard
// library: never client-go, nothing that watches or writes, and no Envoy
// types. Reading Kubernetes objects into the model, validating weft's
// objects and writing their status is controlplane/registry's.
package mesh
