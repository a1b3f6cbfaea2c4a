package model

import (
	"os/exec"
	"strings"
	"testing"
)

// TestReadersLinkNoClient: the packages that read the configuration link
// neither the ADS client (sidecar/xds) nor gRPC, protobuf or Envoy's types;
// that is why the model is a package of its own.
func TestReadersLinkNoClient(t *testing.T) {
	for _, pkg := range []string{"../../proxy", "../../egress", "."} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, p := range strings.Fields(string(out)) {
			if p == "github.com/weftmesh/weft/sidecar/xds" || strings.HasPrefix(p, "google.golang.org/grpc") ||
				strings.HasPrefix(p, "google.golang.org/protobuf") || strings.Contains(p, "/sidecar/internal/envoy") {
				t.Errorf("%s links %s", pkg, p)
			}
		}
	}
}
