// Package integration runs weft's real components together in one process,
// on loopback, with a client-go fake clientset standing in for the API
// server: the control plane's TLS gRPC server, the sidecar and a go-spiffe
// Workload API client. The end-to-end suite (test/e2e) runs the same parts on
// a real cluster.
package integration
