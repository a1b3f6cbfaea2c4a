package xds

import (
	"context"
	"testing"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// BenchmarkDemandHeld is what on demand costs a connection to a Service
// whose cluster the sidecar already holds — every connection but a
// Service's first: Demand finds the cluster in the configuration in force
// and counts the connection, and release uncounts it when it ends. Run in
// parallel (one goroutine per GOMAXPROCS), as connections are accepted.
// The first connection's wait, with its round trips to the control plane,
// is BenchmarkDemand in controlplane/xds/translate.
func BenchmarkDemandHeld(b *testing.B) {
	const name = model.OnDemandPrefix + "80|server.demo"
	c, err := New(ClientConfig{NodeID: testNode, Dial: nopDial, Delta: true, OnDemand: true})
	if err != nil {
		b.Fatal(err)
	}
	c.current.Store(&model.Config{OnDemand: true, Clusters: map[string]*model.Cluster{name: {Name: name}}})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			cfg, release, err := c.Demand(ctx, name)
			if err != nil || cfg.Clusters[name] == nil {
				b.Fatalf("Demand of a held cluster: %v", err)
			}
			release()
		}
	})
	if d := c.demands[name]; d == nil || d.refs != 0 {
		b.Fatalf("after every release: demand %+v, want no reference left", d)
	}
}
