// Package sidecar wires weft's sidecar ([Run], weft-sidecar run): the pod's
// identity (sidecar/identity) fetched from the control plane's certificate
// service and renewed, and the SPIFFE Workload API for the app containers;
// the DNS proxy on 127.0.0.1:15053 and [::1]:15053 (sidecar/dnsproxy,
// dns.go), bound before the app starts; the ADS client (sidecar/xds) and the
// egress audit recorder (sidecar/audit), both on one connection to the
// control plane that presents the SVID and carries the pod's token; the
// proxy (sidecar/proxy: inbound 15006, outbound 127.0.0.1:15001 and
// [::1]:15001, admin 127.0.0.1:15000); and the health port 15020 on the pod
// IP (/healthz/ready, /metrics, the app's rewritten probes under
// /app-health/). Ports and paths: docs/architecture.md.
//
// The sidecar trusts the control plane only under the trust bundle mounted
// from the ConfigMap weft-trust-bundle and only as the SPIFFE ID
// spiffe://<td>/ns/weft-system/sa/weft-controlplane.
//
// This package imports the sidecar packages it wires; it must not import
// controlplane/* or injector.
package sidecar
