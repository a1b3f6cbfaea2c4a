package ads

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/controlplane/xds"
	"github.com/weftmesh/weft/controlplane/xds/translate"
)

// The translator is the generator the server caches for.
var (
	_ xds.Generator    = (*translate.Generator)(nil)
	_ sharingGenerator = (*translate.Generator)(nil)
)

// TestSharedResourcesCachedByPointer shows where the server relies on the
// invariant of controlplane/xds: a resource the generator says it shares is
// known by its pointer, and what the server computed of it (encoding,
// version, validation) is reused without looking at its content again, so
// a shared resource edited in place would be served with its old version.
// A resource not shared is looked at every time.
func TestSharedResourcesCachedByPointer(t *testing.T) {
	cluster := func() *clusterv3.Cluster {
		return &clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(time.Second)}
	}
	sharedC, ownC := cluster(), cluster()
	shared := func(r types.Resource) bool { return r == types.Resource(sharedC) }
	c := newResCache()
	entry := func(r types.Resource) *resEntry {
		t.Helper()
		e := c.entries(resource.ClusterType, []types.Resource{r}, shared)[0]
		if e == nil {
			t.Fatal("no entry")
		}
		return e
	}

	first := entry(sharedC)
	if own := entry(ownC); own != first {
		t.Fatal("equal content, another pointer: want the same interned entry")
	}
	sharedC.ConnectTimeout = durationpb.New(2 * time.Second) // what the invariant forbids
	if e := entry(sharedC); e != first {
		t.Fatal("a shared resource was looked at again: the pointer cache is not used")
	}
	ownC.ConnectTimeout = durationpb.New(2 * time.Second)
	e := entry(ownC)
	if e == first || e.version == first.version {
		t.Fatal("a resource the generator does not share was served from the pointer cache")
	}
	if want, _ := (proto.MarshalOptions{Deterministic: true}).Marshal(ownC); string(e.enc) != string(want) {
		t.Fatal("the entry of an unshared resource is not its current encoding")
	}
	// The pointer cache lives for two rounds: a resource the generator no
	// longer hands out is forgotten.
	c.rotate()
	c.rotate()
	if e := entry(sharedC); e == first {
		t.Fatal("a shared resource is still known by pointer two rounds after its last use")
	}
}
