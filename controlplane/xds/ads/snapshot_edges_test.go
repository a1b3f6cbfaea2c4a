package ads

import (
	"testing"

	"github.com/weftmesh/weft/controlplane/xds"
)

// A valid set of resources, cached or not, gives a snapshot, never a nil
// one without an error. The mutation run's survivors of buildSnapshotSized
// (an error check turned around at snapshot.go:82 and :89) returned
// exactly that, which the stream tests only show by hanging until the
// test binary's timeout; this fails at once.
func TestBuildSnapshotOfValidResources(t *testing.T) {
	for _, res := range []xds.Resources{{}, testResources(0, false)} {
		for _, cache := range []*resCache{nil, newResCache()} {
			snap, versions, sizes, err := buildSnapshotSized(res, cache, nil, true)
			if err != nil || snap == nil {
				t.Fatalf("buildSnapshotSized(%d types, cache %v) = %v, %v; want a snapshot", len(res), cache != nil, snap, err)
			}
			if err := snap.Consistent(); err != nil {
				t.Errorf("snapshot not consistent: %v", err)
			}
			if len(versions) != len(sizes) || len(versions) == 0 {
				t.Errorf("versions %v, sizes %v: want one of each per type", versions, sizes)
			}
		}
	}
}
