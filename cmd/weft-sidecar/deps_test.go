package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoHeavyDependencies guards the sidecar's footprint: it decodes xDS
// into its own subset of Envoy's protos (sidecar/internal/envoy), and
// linking go-control-plane's generated packages again would add ~6 MB of
// resident memory to every pod (idle RSS 16.3 MB instead of 10.2 MB for a
// binary of sidecar/xds and sidecar/audit alone). Likewise its metrics are
// internal/metrics, not client_golang (0.73 MB of binary with procfs,
// client_model, expvar and database/sql).
func TestLinksNoHeavyDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	var bad []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/envoyproxy/") || strings.HasPrefix(p, "github.com/cncf/xds/") ||
			strings.HasPrefix(p, "github.com/prometheus/") || p == "database/sql" || p == "expvar" {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("weft-sidecar links %d packages it must not (Envoy/xDS protos, Prometheus client), e.g. %s", len(bad), bad[0])
	}
}
