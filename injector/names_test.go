package injector

import (
	"strconv"
	"testing"

	"github.com/weftmesh/weft/api/names"
)

// TestDefaultAddrIsTheInjectorPort: the server's default address spells
// the port api/names (and the manifests) give the webhook.
func TestDefaultAddrIsTheInjectorPort(t *testing.T) {
	if want := ":" + strconv.Itoa(names.InjectorPort); DefaultAddr != want {
		t.Fatalf("DefaultAddr = %q, api/names says %q", DefaultAddr, want)
	}
}
