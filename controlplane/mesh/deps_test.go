package mesh

import (
	"os/exec"
	"strings"
	"testing"
)

// TestReadersLinkNoClient: the model and the translator that reads it link
// neither client-go nor the registry that watches the cluster; that is why
// the model is a package of its own (STYLE.md: the translation from model
// to Envoy resources stays pure).
func TestReadersLinkNoClient(t *testing.T) {
	for _, pkg := range []string{".", "../xds/translate"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, p := range strings.Fields(string(out)) {
			if strings.HasPrefix(p, "k8s.io/client-go/") || p == "github.com/weftmesh/weft/controlplane/registry" {
				t.Errorf("%s links %s", pkg, p)
			}
		}
	}
}
