package xds

import (
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/registry"
)

// TestSharedMatchesFresh: one Translator, fed a sequence of snapshots (so
// it shares resources between sidecars and reuses unchanged Services'
// resources across snapshots), gives every sidecar exactly what a fresh
// Translator gives, and shares what is the same for every sidecar.
func TestSharedMatchesFresh(t *testing.T) {
	a := bigMesh(40, 3)
	edit := func(s *registry.Snapshot, f func(c *registry.Snapshot)) *registry.Snapshot {
		c := *s
		c.Services = slices.Clone(c.Services)
		c.Namespaces = slices.Clone(c.Namespaces)
		f(&c)
		return registry.NewSnapshot(c)
	}
	svc := func(c *registry.Snapshot, name string) *registry.Service {
		for i, s := range c.Services {
			if s.Name == name {
				cp := *s
				cp.Endpoints = slices.Clone(s.Endpoints)
				c.Services[i] = &cp
				return &cp
			}
		}
		t.Fatalf("no service %s", name)
		return nil
	}
	b := edit(a, func(c *registry.Snapshot) { svc(c, "svc-0003").Endpoints[1].Ready = false })
	cc := edit(b, func(c *registry.Snapshot) {
		svc(c, "svc-0004").Endpoints[0].Injected = false
		svc(c, "svc-0005").Endpoints = nil
		for i := range c.Namespaces {
			if c.Namespaces[i].Name == "ns-06" {
				c.Namespaces[i].Injection = false
			}
		}
		c.Services = slices.DeleteFunc(c.Services, func(s *registry.Service) bool { return s.Name == "svc-0007" })
	})
	d := edit(cc, func(c *registry.Snapshot) { c.Mesh.OutboundMode = v1alpha1.OutboundAllowAny })
	e := edit(d, func(*registry.Snapshot) {}) // same content, new snapshot
	// A ClusterIP claimed by an earlier Service, then free again.
	f := edit(e, func(c *registry.Snapshot) { svc(c, "svc-0010").ClusterIPs = svc(c, "svc-0009").ClusterIPs })
	g := edit(f, func(c *registry.Snapshot) {
		c.Services = slices.DeleteFunc(c.Services, func(s *registry.Service) bool { return s.Name == "svc-0009" })
	})
	cur := a
	shared := translatorFor(a)
	shared.Snapshot = func() *registry.Snapshot { return cur }
	for _, snap := range []*registry.Snapshot{a, b, cc, a, d, e, f, g, f} {
		cur = snap
		var first Resources
		for _, w := range snap.Workloads {
			node := Node{Name: w.Name, Namespace: w.Namespace, ID: w.Identity}
			got, err := shared.Generate(node)
			if err != nil {
				t.Fatal(err)
			}
			want, err := translatorFor(snap).Generate(node)
			if err != nil {
				t.Fatal(err)
			}
			for typ := range want {
				if len(got[typ]) != len(want[typ]) {
					t.Fatalf("%s %s: %d resources, want %d", w.Name, typeName(typ), len(got[typ]), len(want[typ]))
				}
				for i := range want[typ] {
					gb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(got[typ][i])
					wb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(want[typ][i])
					if string(gb) != string(wb) {
						t.Fatalf("%s %s #%d differs from a fresh translation", w.Name, typeName(typ), i)
					}
				}
			}
			if first == nil {
				first = got
				continue
			}
			// The EDS resources are the same pointers for every sidecar.
			if !slices.EqualFunc(first[resource.EndpointType], got[resource.EndpointType], func(x, y types.Resource) bool { return x == y }) {
				t.Fatalf("%s: endpoints not shared", w.Name)
			}
		}
	}
}
