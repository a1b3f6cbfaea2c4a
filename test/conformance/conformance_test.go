//go:build conformance

// Package conformance runs the Gateway API's own conformance suite
// (sigs.k8s.io/gateway-api/conformance, the version pinned in go.mod) against
// weft on the test cluster. The suite is configured by its own flags, which
// `make conformance` (test/conformance/run.sh) passes after -args: the
// profiles (MESH-HTTP, MESH-GRPC), the supported features, the label that
// makes its namespaces injected, and where to write the report.
package conformance

import (
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
)

func TestConformance(t *testing.T) {
	conformance.RunConformance(t)
}
