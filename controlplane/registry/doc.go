// Package registry watches Kubernetes with client-go shared informers and
// publishes an immutable model of the mesh: services with their ports, app
// protocols, endpoints and the SPIFFE IDs behind them; workloads (pods) with
// their identities; namespaces; and weft's policies (api/v1alpha1), validated
// and resolved into plain Go values.
//
// Every change rebuilds a Snapshot from the informers' caches; a rebuild that
// changes nothing (a resync, an unrelated pod update) publishes nothing. A
// weft object that fails validation is left out of the snapshot, listed in
// Snapshot.Rejected, and reported on the object itself (status condition
// Accepted=False) and with a Kubernetes Event; the rest is served.
//
// The model carries no Envoy types: controlplane/xds/translate translates it. This
// package imports api/v1alpha1 and Kubernetes client libraries only, nothing
// else of weft's.
package registry
