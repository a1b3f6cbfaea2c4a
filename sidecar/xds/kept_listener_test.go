package xds

import (
	"maps"
	"strings"
	"testing"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestBuildWithKeptListener: a listener the client keeps built (not
// decoded again) is set in the configuration as a decoded one is, and one
// given both built and as a resource is refused: the client never builds
// from two versions of one listener.
func TestBuildWithKeptListener(t *testing.T) {
	r, err := mesh{}.envoy(t).subset()
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := Build(td, r)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Inbound == nil {
		t.Fatal("the mesh's resources build no inbound listener")
	}
	kept := Resources{}
	for typ, rs := range r {
		kept[typ] = maps.Clone(rs)
	}
	delete(kept[model.ListenerType], "inbound")
	built := map[string]*model.Listener{"inbound": fresh.Inbound}

	cfg, err := buildWith(td, kept, built)
	if err != nil {
		t.Fatalf("inbound kept built: %v", err)
	}
	if cfg.Inbound != fresh.Inbound {
		t.Fatal("the kept inbound listener is not the configuration's")
	}
	if cfg.Outbound == nil || len(cfg.Clusters) != len(fresh.Clusters) {
		t.Fatalf("with a kept listener: outbound %v, %d clusters; a fresh build has %d", cfg.Outbound != nil, len(cfg.Clusters), len(fresh.Clusters))
	}

	_, err = buildWith(td, r, built)
	if err == nil || !strings.Contains(err.Error(), `listener "inbound": given built and as a resource`) {
		t.Fatalf("inbound given built and as a resource: %v, want a refusal", err)
	}
}
