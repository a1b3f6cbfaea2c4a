// Package xds is the sidecar's xDS client and the model of what the proxy
// runs.
//
// # The room
//
// [Config] is the sidecar's own configuration: plain immutable Go values
// (listeners, filter chains with their match rules, RBAC, clusters,
// endpoints, routes, the trust bundle), built from Envoy v3 resources by
// [Build]. [Build] accepts exactly the subset described in README.md (the
// contract with the control plane) and returns an error naming the resource
// and field for anything else, which the client sends back as a NACK: the
// sidecar never silently ignores configuration it cannot honour.
//
// [Client] holds one ADS stream to the control plane, state-of-the-world or
// delta. Every response is applied to a copy of the current resources and
// the whole set is rebuilt; only a consistent result replaces the current
// one, so a bad response changes nothing. A configuration becomes current
// once it is complete (listeners, clusters, the endpoints of every EDS
// cluster, every referenced route configuration and the trust bundle);
// until then the previous complete one keeps serving, as Envoy warms
// listeners and clusters. Losing the control plane clears nothing: the last
// good configuration keeps serving while the client reconnects with
// exponential backoff and jitter.
//
// [Listener.Match] chooses the filter chain for a connection with Envoy's
// precedence; the proxy relies on it.
//
// Imports: go-control-plane's Envoy types, gRPC, go-spiffe, k8s.io/utils/clock.
// Never controlplane/*.
package xds
