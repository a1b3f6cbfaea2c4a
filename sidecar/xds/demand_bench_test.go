package xds

import (
	"context"
	"net/netip"
	"testing"

	"github.com/weftmesh/weft/api/names"
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

// BenchmarkDestinationHeld is what looking destinations up costs a
// connection to a destination the sidecar already holds — every
// connection but a destination's first: Destination finds its listener in
// the configuration in force and counts the connection, and release
// uncounts it. In parallel, as BenchmarkDemandHeld (its baseline in the
// same run: a lookup adds this to every connection, on top of the
// cluster's Demand). The first connection's wait is BenchmarkDemand's
// lookup-* cases in controlplane/xds/translate.
func BenchmarkDestinationHeld(b *testing.B) {
	ap := netip.MustParseAddrPort("198.19.0.20:80")
	c, err := New(ClientConfig{NodeID: testNode, Dial: nopDial, Delta: true, OnDemand: true, DestinationListeners: true})
	if err != nil {
		b.Fatal(err)
	}
	c.current.Store(&model.Config{OnDemand: true, Destinations: map[netip.AddrPort]*model.Listener{ap: {Name: names.DestinationListener(ap)}}})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			cfg, release, err := c.Destination(ctx, ap)
			if err != nil || cfg.Destinations[ap] == nil {
				b.Fatalf("Destination of a held destination: %v", err)
			}
			release()
		}
	})
	if d := c.dests[names.DestinationListener(ap)]; d == nil || d.refs != 0 {
		b.Fatalf("after every release: destination %+v, want no reference left", d)
	}
}
