// Package sidecar wires weft's sidecar: the pod's identity (sidecar/identity)
// fetched from the control plane's certificate service and renewed, the SPIFFE
// Workload API for the app containers, and the health and metrics port 15020
// on the pod IP. The proxy, xDS client and egress rooms join here as they land.
//
// The sidecar trusts the control plane only under the trust bundle mounted
// from the ConfigMap weft-trust-bundle and only as the SPIFFE ID
// spiffe://<td>/ns/weft-system/sa/weft-controlplane.
//
// This package imports the sidecar rooms it wires; it must not import
// controlplane/* or injector.
package sidecar
