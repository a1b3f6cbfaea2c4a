package ads

import (
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// TestNamedClustersSyncedOnWhatWasSent: a sidecar that subscribes to
// clusters by name (on demand: sidecar/xds README, "Clusters on demand")
// is sent only what changes of the clusters it named, so a new version of
// the node's clusters that changes none of them reaches it not at all: its
// clusters stay SYNCED at the last version it was sent, not STALE against
// the snapshot's; a wildcard sidecar is compared with the snapshot, as
// before.
func TestNamedClustersSyncedOnWhatWasSent(t *testing.T) {
	gen := newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7", "outbound|80|db.demo": "198.18.0.8"})
	h := newHarness(t, harnessOpts{gen: gen})
	c := openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"inbound|8080", "outbound|80|web.demo"}})
	var cds *discovery.DeltaDiscoveryResponse
	for range 2 {
		r := c.next()
		if r.GetTypeUrl() == resource.ClusterType {
			cds = r
			if len(r.GetResources()) != 2 {
				t.Fatalf("named clusters: sent %d resources, want the 2 named", len(r.GetResources()))
			}
		}
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}
	if cds == nil {
		t.Fatal("no clusters response")
	}
	wild, _ := openMeshDelta(t, h, "web", "web-1.demo", "outbound|80|db.demo")
	wefttest.Eventually(t, "both nodes' clusters SYNCED", func() bool {
		return h.typeStatus("app-1.demo", resource.ClusterType).State == StateSynced &&
			h.typeStatus("web-1.demo", resource.ClusterType).State == StateSynced
	})
	before := h.typeStatus("web-1.demo", resource.ClusterType).Version

	// A cluster neither names: the node's cluster version moves.
	gen.set(func(g *meshGen) { g.addr["outbound|80|new.demo"] = "198.18.0.9" })
	h.change()
	r := wild.next()
	if r.GetTypeUrl() != resource.ClusterType || r.GetSystemVersionInfo() == before {
		t.Fatalf("the wildcard node got %s at %q, want clusters at a new version", typeName(r.GetTypeUrl()), r.GetSystemVersionInfo())
	}
	if ts := h.typeStatus("web-1.demo", resource.ClusterType); ts.State != StateStale || ts.Version != r.GetSystemVersionInfo() {
		t.Errorf("wildcard node before its ACK: %s wanting %q, want STALE wanting the new version", ts.State, ts.Version)
	}
	wild.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	wefttest.Eventually(t, "the wildcard node SYNCED at the new version", func() bool {
		ts := h.typeStatus("web-1.demo", resource.ClusterType)
		return ts.State == StateSynced && ts.Version == r.GetSystemVersionInfo()
	})
	if ts := h.typeStatus("app-1.demo", resource.ClusterType); ts.State != StateSynced || ts.Version != cds.GetSystemVersionInfo() {
		t.Errorf("named node after a change to a cluster it did not name: %s wanting %q, want SYNCED at %q (what it was sent)",
			ts.State, ts.Version, cds.GetSystemVersionInfo())
	}
	// Sentinel: the named node's next response is its listener change.
	gen.set(func(g *meshGen) { g.rev["app-1.demo"] = 1 })
	h.change()
	if r := c.next(); r.GetTypeUrl() != resource.ListenerType {
		t.Fatalf("named node's next response is %s, want the sentinel listeners", typeName(r.GetTypeUrl()))
	}
}
