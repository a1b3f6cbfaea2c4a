package xds

import (
	"slices"
	"testing"
	"time"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestClusterNoLongerRequiredIsDropped: a cluster the client stops asking
// for is dropped with its endpoints, not kept unchanging. Regression (an
// attack review, session 17): a cluster the configuration
// required (an HTTP port's route names it) becomes an on-demand one (the
// port turns TCP). The client unsubscribes it (deps' subscribe after the
// listener ACK) but never drops it from what it holds: redemand alone drops
// unsubscribed clusters. The sidecar keeps a cluster the control plane no
// longer sends it changes of.
func TestClusterNoLongerRequiredIsDropped(t *testing.T) {
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	setSnapshot(t, cache, mesh{services: []string{"server.demo"}, l7: true}, "v1")
	p := startPeer(t, "127.0.0.1:0", cache)
	c := startOnDemand(t, p.addr, nil)
	cur := waitReady(t, c)
	if cur.Clusters["outbound|80|server.demo"] == nil {
		t.Fatalf("v1: the L7 (required) cluster is not held; missing %v", cur.Missing())
	}
	setSnapshot(t, cache, mesh{services: []string{"server.demo"}}, "v2")
	cfg := waitConfig(t, c, "v2 listeners", func(cfg *model.Config) bool { return cfg.Version[model.ListenerType] == "v2" })
	if od := cfg.OnDemandClusters(); !slices.Contains(od, "outbound|80|server.demo") {
		t.Fatalf("v2: server.demo is not on demand: %q", od)
	}
	time.Sleep(200 * time.Millisecond) // let any follow-up settle
	cfg = c.Current()
	if cl := cfg.Clusters["outbound|80|server.demo"]; cl != nil {
		t.Errorf("v2: cluster %s, neither required nor demanded (so unsubscribed), is still held (v1's version, never updated again); demanded %q",
			cl.Name, c.Status().Demanded)
	}
}

// TestDroppedClusterDoesNotFreezeConfig: configurations keep becoming
// current after such a Service is removed. Regression: continuing the above, the control
// plane removes the Service. Its endpoints (still subscribed: the stale
// cluster refers to them) are removed; the cluster (unsubscribed) never
// is. Every configuration from then on misses "endpoints
// outbound|80|server.demo", so nothing new ever becomes current: the
// sidecar runs v2 forever (new Services, new policies never applied).
func TestDroppedClusterDoesNotFreezeConfig(t *testing.T) {
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	setSnapshot(t, cache, mesh{services: []string{"server.demo"}, l7: true}, "v1")
	p := startPeer(t, "127.0.0.1:0", cache)
	c := startOnDemand(t, p.addr, nil)
	waitReady(t, c)
	setSnapshot(t, cache, mesh{services: []string{"server.demo"}}, "v2")
	waitConfig(t, c, "v2 listeners", func(cfg *model.Config) bool { return cfg.Version[model.ListenerType] == "v2" })
	// server.demo goes, other.demo comes.
	setSnapshot(t, cache, mesh{services: []string{"other.demo"}}, "v3")
	ch, unsubscribe := c.Subscribe()
	defer unsubscribe()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case cfg := <-ch:
			if cfg.Version[model.ListenerType] == "v3" {
				return
			}
		case <-deadline:
			st := c.Status()
			t.Fatalf("v3 never became current: the sidecar is frozen on listeners %q; waiting for %q", c.Current().Version[model.ListenerType], st.Waiting)
		}
	}
}
