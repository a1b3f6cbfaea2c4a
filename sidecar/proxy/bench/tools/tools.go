//go:build tools

// Package tools pins the load generator the sidecar benchmarks run
// (fortio, the tool Istio publishes its latency figures with) in a module
// of its own, so that it never enters weft's go.mod.
package tools

import _ "fortio.org/fortio"
