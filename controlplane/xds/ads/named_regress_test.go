package ads

import (
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// TestNamedSurvivesUnsubscribe: a by-name subscription stays one when a
// later request only unsubscribes. Regression (an attack review, session
// 17): an on-demand sidecar whose idle
// cluster expires sends a delta request that only unsubscribes (no nonce,
// resource_names_subscribe empty). request treats every nonce-less request
// as "the first of the type" and sets named = false, so from then on the
// node's clusters are compared with the snapshot's version, which a named
// subscription is never sent: STALE although the sidecar holds exactly
// what it asked for.
func TestNamedSurvivesUnsubscribe(t *testing.T) {
	gen := newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7", "outbound|80|db.demo": "198.18.0.8"})
	h := newHarness(t, harnessOpts{gen: gen})
	c := openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"inbound|8080", "outbound|80|web.demo"}})
	for range 2 {
		r := c.next()
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}
	wefttest.Eventually(t, "clusters SYNCED", func() bool {
		return h.typeStatus("app-1.demo", resource.ClusterType).State == StateSynced
	})
	// The demanded cluster went idle: unsubscribed, nothing subscribed.
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesUnsubscribe: []string{"outbound|80|web.demo"}})
	// A cluster the node does not name changes, with a listener sentinel.
	gen.set(func(g *meshGen) { g.addr["outbound|80|new.demo"] = "198.18.0.9"; g.rev["app-1.demo"] = 1 })
	h.change()
	r := c.next()
	if r.GetTypeUrl() != resource.ListenerType {
		t.Fatalf("next response is %s, want the sentinel listeners", typeName(r.GetTypeUrl()))
	}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	wefttest.Eventually(t, "listeners SYNCED", func() bool {
		return h.typeStatus("app-1.demo", resource.ListenerType).State == StateSynced
	})
	if ts := h.typeStatus("app-1.demo", resource.ClusterType); ts.State != StateSynced {
		t.Errorf("named clusters after an unsubscribe-only request: %s wanting %q (acked %q, sent %q): the named flag was reset by a nonce-less request",
			ts.State, ts.Version, ts.Acked, ts.Sent)
	}
}
