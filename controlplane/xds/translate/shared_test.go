package translate

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/controlplane/xds"
)

// relatedSnapshots is a sequence of registry snapshots, each an edit of the
// one before (endpoints, injection, a deleted Service, the outbound mode, a
// ClusterIP moving, an unchanged copy), going back and forth: fed to one
// Generator, they make it share resources between sidecars and reuse an
// unchanged Service's resources across snapshots.
func relatedSnapshots(t *testing.T) []*mesh.Snapshot {
	t.Helper()
	a := bigMesh(40, 3)
	edit := func(s *mesh.Snapshot, f func(c *mesh.Contents)) *mesh.Snapshot {
		c := s.Contents
		c.Services = slices.Clone(c.Services)
		c.Namespaces = slices.Clone(c.Namespaces)
		f(&c)
		return mesh.NewSnapshot(0, c)
	}
	svc := func(c *mesh.Contents, name string) *mesh.Service {
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
	b := edit(a, func(c *mesh.Contents) { svc(c, "svc-0003").Endpoints[1].Ready = false })
	cc := edit(b, func(c *mesh.Contents) {
		svc(c, "svc-0004").Endpoints[0].Injected = false
		svc(c, "svc-0005").Endpoints = nil
		for i := range c.Namespaces {
			if c.Namespaces[i].Name == "ns-06" {
				c.Namespaces[i].Injection = false
			}
		}
		c.Services = slices.DeleteFunc(c.Services, func(s *mesh.Service) bool { return s.Name == "svc-0007" })
	})
	d := edit(cc, func(c *mesh.Contents) { c.Mesh.OutboundMode = v1alpha1.OutboundAllowAny })
	e := edit(d, func(*mesh.Contents) {}) // same content, new snapshot
	// A ClusterIP claimed by an earlier Service, then free again.
	f := edit(e, func(c *mesh.Contents) { svc(c, "svc-0010").ClusterIPs = svc(c, "svc-0009").ClusterIPs })
	g := edit(f, func(c *mesh.Contents) {
		c.Services = slices.DeleteFunc(c.Services, func(s *mesh.Service) bool { return s.Name == "svc-0009" })
	})
	return []*mesh.Snapshot{a, b, cc, a, d, e, f, g, f}
}

// TestSharedMatchesFresh: one Generator, fed related snapshots, gives every
// sidecar exactly what a fresh Generator gives, and shares what is the same
// for every sidecar.
// forBothRoutings runs f with Generator.HTTPRouting off and on: the
// shared resources of both must keep the invariants.
func forBothRoutings(t *testing.T, f func(t *testing.T, http bool)) {
	for _, http := range []bool{false, true} {
		t.Run(fmt.Sprintf("HTTPRouting=%v", http), func(t *testing.T) { f(t, http) })
	}
}

func TestSharedMatchesFresh(t *testing.T) { forBothRoutings(t, testSharedMatchesFresh) }

func testSharedMatchesFresh(t *testing.T, http bool) {
	snaps := relatedSnapshots(t)
	cur := snaps[0]
	shared := translatorFor(cur)
	shared.Snapshot = func() *mesh.Snapshot { return cur }
	shared.HTTPRouting = http
	for _, snap := range snaps {
		cur = snap
		var first xds.Resources
		for _, w := range snap.Workloads {
			node := xds.Node{Name: w.Name, Namespace: w.Namespace, ID: w.Identity}
			got, err := shared.Generate(node)
			if err != nil {
				t.Fatal(err)
			}
			fresh := translatorFor(snap)
			fresh.HTTPRouting = http
			want, err := fresh.Generate(node)
			if err != nil {
				t.Fatal(err)
			}
			for typ := range want {
				if len(got[typ]) != len(want[typ]) {
					t.Fatalf("%s %s: %d resources, want %d", w.Name, typ, len(got[typ]), len(want[typ]))
				}
				for i := range want[typ] {
					gb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(got[typ][i])
					wb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(want[typ][i])
					if string(gb) != string(wb) {
						t.Fatalf("%s %s #%d differs from a fresh translation", w.Name, typ, i)
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

// TestGeneratedResourcesNeverChange checks the invariant of
// controlplane/xds (its package doc) that ads caches by: a resource Generate
// returned, and every message it points to, is never modified afterwards.
// One Generator is fed related snapshots, every sidecar of each; a deep copy
// of every resource is taken as it is returned, and after every later
// generation each resource returned so far must still equal its copy. A
// generation that edited a shared resource in place (a cluster, a
// ClusterLoadAssignment, the outbound listener or the trust bundle handed to
// an earlier sidecar or kept from an earlier snapshot) fails here.
func TestGeneratedResourcesNeverChange(t *testing.T) {
	forBothRoutings(t, testGeneratedResourcesNeverChange)
}

func testGeneratedResourcesNeverChange(t *testing.T, http bool) {
	snaps := relatedSnapshots(t)
	cur := snaps[0]
	gen := translatorFor(cur)
	gen.Snapshot = func() *mesh.Snapshot { return cur }
	gen.HTTPRouting = http
	type kept struct {
		what      string
		got, copy types.Resource
	}
	seen := map[types.Resource]bool{}
	var all []kept
	for i, snap := range snaps {
		cur = snap
		for _, w := range snap.Workloads {
			res, err := gen.Generate(xds.Node{Name: w.Name, Namespace: w.Namespace, ID: w.Identity})
			if err != nil {
				t.Fatal(err)
			}
			for _, typ := range slices.Sorted(maps.Keys(res)) {
				for _, r := range res[typ] {
					if !seen[r] {
						seen[r] = true
						all = append(all, kept{fmt.Sprintf("snapshot %d, %s.%s: %s %q", i, w.Name, w.Namespace, typ, cachev3.GetResourceName(r)), r, proto.Clone(r)})
					}
				}
			}
			for _, k := range all {
				if !proto.Equal(k.got, k.copy) {
					t.Fatalf("generating for %s.%s of snapshot %d modified a resource returned before (%s)", w.Name, w.Namespace, i, k.what)
				}
			}
		}
	}
	if len(all) == 0 {
		t.Fatal("nothing generated")
	}
}
