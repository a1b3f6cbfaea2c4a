// Package xds is the sidecar's xDS client: it receives Envoy resources
// from the control plane, checks them against the contract and builds the
// configuration the proxy runs (sidecar/xds/model).
//
// # Validation and client
//
// [Build] turns one set of Envoy v3 resources into a [model.Config]. It
// accepts exactly the subset described in README.md (the contract with the
// control plane) and returns an error naming the resource and field for
// anything else, which the client sends back as a NACK: the sidecar never
// silently ignores configuration it cannot honour.
//
// [Client] holds one ADS stream to the control plane, state-of-the-world or
// delta, on a connection that presents the pod's SVID and carries the
// pod's token on every stream (sidecar/identity.TokenCredentials): the
// control plane takes ADS only with both, since the app holds the SVID.
// Every response is applied to a copy of the current resources and the
// whole set is rebuilt; only a consistent result replaces the current one,
// so a bad response changes nothing. A listener, once accepted, is kept as
// the model it built (reused until the listener changes), the route
// configurations it names and a digest of its encoding, not as its decoded
// resource: at scale its chain per Service address is most of a sidecar's
// memory, and an endpoint change need not rebuild it. A configuration becomes current
// once it is complete (listeners, clusters, the endpoints of every EDS
// cluster, every referenced route configuration and the trust bundle);
// until then the previous complete one keeps serving, as Envoy warms
// listeners and clusters. Losing the control plane clears nothing: the last
// good configuration keeps serving while the client reconnects with
// exponential backoff and jitter. ADS streams receive messages up to
// names.MaxXDSMessageSize (the contract's limit); a stream that ends on a
// message too large (ResourceExhausted) is logged, counted (Status.TooLarge)
// and does not reset the backoff, even if it received responses first.
//
// # On demand
//
// With ClientConfig.OnDemand (delta only) clusters are subscribed by name:
// those the configuration requires (model.Config.RequiredClusters) and the
// in-mesh Services' clusters (model.Config.OnDemandClusters) only once
// [Client.Demand] asks for one — the proxy does when a connection needs it,
// and holds the connection until a complete configuration has the cluster
// and its endpoints, or refuses it. A demanded cluster no connection has
// held for OnDemandIdle is unsubscribed and dropped. README.md, "Clusters
// on demand", is the contract.
//
// # Decoding
//
// Resources are decoded into the sidecar's own wire-compatible subset of
// Envoy's v3 protos (sidecar/internal/envoy), not go-control-plane's: the
// binary stays small, and a field outside the subset arrives as an unknown
// field, which decoding refuses with its path, Envoy's message and the field
// number. Decoding also checks the protoc-gen-validate rules Envoy's API
// declares on the fields of the subset (conform.go). A differential test and
// fuzz target (FuzzSubsetNeverLooserThanEnvoy) check against
// go-control-plane that the sidecar never accepts what Envoy's validation
// refuses. The ADS streams are opened by method name; no generated Envoy
// service code is linked.
//
// Imports: sidecar/xds/model, the subset (sidecar/internal/envoy),
// api/names (the message limit), gRPC, protobuf, go-spiffe,
// k8s.io/utils/clock, internal/sleep. Never controlplane/* or
// go-control-plane (tests may use go-control-plane to build resources and
// as the reference).
package xds
