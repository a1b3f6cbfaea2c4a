package mesh

import (
	"net/netip"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/api/v1alpha1"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func TestNewSnapshotIndexes(t *testing.T) {
	w := &Workload{Namespace: "a", Name: "p.1", IPs: []netip.Addr{netip.MustParseAddr("198.18.210.1")}, Injected: true}
	s := NewSnapshot(0, Contents{
		Mesh:      MeshConfig{TrustDomain: td, MTLSMode: v1alpha1.MTLSStrict, OutboundMode: v1alpha1.OutboundAllowAny},
		Workloads: []*Workload{w},
		Services: []*Service{{Namespace: "a", Name: "s", ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.1")},
			Ports: []ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: "TCP"}}}},
	})
	if got, ok := s.WorkloadByNode("p.1.a"); !ok || got != w {
		t.Error("WorkloadByNode on a hand-made snapshot")
	}
	if !s.InMesh(netip.MustParseAddrPort("198.19.0.1:80")) || !s.InMesh(netip.MustParseAddrPort("198.18.210.1:1234")) {
		t.Error("InMesh on a hand-made snapshot")
	}
}

// TestNext: the first snapshot is Version 1; contents equal to the current
// ones, in any order, keep the snapshot; a change makes Version+1. The
// lists are copied and sorted, so the caller's are left as they were.
func TestNext(t *testing.T) {
	ns := func(names ...string) []Namespace {
		var out []Namespace
		for _, n := range names {
			out = append(out, Namespace{Name: n})
		}
		return out
	}
	var none *Snapshot
	in := ns("b", "a")
	first := none.Next(Contents{Namespaces: in})
	if first.Version != 1 || first.Namespaces[0].Name != "a" || in[0].Name != "b" {
		t.Fatalf("first: version %d, namespaces %v (input now %v), want 1, sorted, input untouched", first.Version, first.Namespaces, in)
	}
	if same := first.Next(Contents{Namespaces: ns("a", "b")}); same != first {
		t.Errorf("equal contents made version %d, want the same snapshot", same.Version)
	}
	next := first.Next(Contents{Namespaces: ns("a", "b", "c")})
	if next.Version != 2 {
		t.Errorf("changed contents: version %d, want 2", next.Version)
	}
	if _, ok := next.Namespace("c"); !ok {
		t.Error("the next snapshot's index misses namespace c")
	}
	if _, ok := first.Namespace("c"); ok {
		t.Error("the first snapshot changed")
	}
}

// TestLookupsNeedAnIndex: a Snapshot not made by NewSnapshot or Next
// cannot be looked up in, rather than answering "not found".
func TestLookupsNeedAnIndex(t *testing.T) {
	defer func() {
		if r := recover(); r != "mesh: Snapshot not made by NewSnapshot or Next: it has no index" {
			t.Errorf("recovered %v", r)
		}
	}()
	s := &Snapshot{Contents: Contents{Namespaces: []Namespace{{Name: "a"}}}}
	s.Namespace("a")
}
