package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/controlplane/xds"
)

// bigMesh is the golden mesh plus services×endpoints more: services spread
// over 20 injected namespaces, each with one port and endpoints sidecar
// pods (one in ten not ready).
func bigMesh(services, endpoints int) *mesh.Snapshot {
	return mesh.NewSnapshot(0, bigContents(v1alpha1.OutboundRegistryOnly, services, endpoints))
}

// bigContents is bigMesh's contents, outbound policy mode.
func bigContents(mode v1alpha1.OutboundMode, services, endpoints int) mesh.Contents {
	c := meshContents(mode)
	for i := range 20 {
		c.Namespaces = append(c.Namespaces, mesh.Namespace{Name: fmt.Sprintf("ns-%02d", i), Injection: true})
	}
	for s := range services {
		ns, name := fmt.Sprintf("ns-%02d", s%20), fmt.Sprintf("svc-%04d", s)
		svc := &mesh.Service{
			Namespace: ns, Name: name, Type: "ClusterIP",
			ClusterIPs: []netip.Addr{bigServiceAddr(s)},
			Selector:   map[string]string{"app": name},
			Ports:      []mesh.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: "TCP", AppProtocol: mesh.AppProtocolHTTP}},
		}
		for e := range endpoints {
			n := s*endpoints + e
			k := mesh.Key{Namespace: ns, Name: fmt.Sprintf("%s-%d", name, e)}
			svc.Endpoints = append(svc.Endpoints, mesh.Endpoint{
				Address: bigEndpointAddr(n),
				Ports:   []mesh.EndpointPort{{Name: "http", Port: 8080, Protocol: "TCP"}},
				Ready:   e%10 != 9, Serving: true, Pod: &k, Identity: workloadID(ns, name), Injected: true,
			})
		}
		svc.Identities = identities(svc.Endpoints)
		c.Services = append(c.Services, svc)
	}
	return c
}

// bigServiceAddr is the s-th big Service's ClusterIP: 198.19.64.0/18, apart
// from the golden mesh's (config data: nothing dials it).
func bigServiceAddr(s int) netip.Addr { return bigAddr(198<<24|19<<16|64<<8, s) }

// bigEndpointAddr is the n-th big endpoint's address: 198.18.64.0/18.
func bigEndpointAddr(n int) netip.Addr { return bigAddr(198<<24|18<<16|64<<8, n) }

func bigAddr(base uint32, n int) netip.Addr {
	if n < 0 || n >= 1<<14 {
		panic(fmt.Sprintf("bigMesh: %d past its /18 of addresses", n))
	}
	v := base + uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func benchNode(b *testing.B, snap *mesh.Snapshot) (*Generator, xds.Node) {
	w, _ := snap.Workload("demo", "client-7d9f")
	return translatorFor(snap), xds.Node{Name: w.Name, Namespace: w.Namespace, ID: w.Identity}
}

// BenchmarkGenerate: one sidecar's resources in a mesh of 1,000 services
// × 10 endpoints.
func BenchmarkGenerate(b *testing.B) {
	snap := bigMesh(1000, 10)
	tr, node := benchNode(b, snap)
	res, err := tr.Generate(node)
	if err != nil {
		b.Fatal(err)
	}
	checkResources(b, res)
	size, count := 0, 0
	for _, items := range res {
		for _, r := range items {
			size += proto.Size(r)
			count++
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := tr.Generate(node); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(size), "bytes/resources")
	b.ReportMetric(float64(count), "resources")
}

// BenchmarkMarshalOnly is the baseline: proto.Marshal of the resources
// BenchmarkGenerate builds.
func BenchmarkMarshalOnly(b *testing.B) {
	snap := bigMesh(1000, 10)
	tr, node := benchNode(b, snap)
	res, err := tr.Generate(node)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for _, items := range res {
			for _, r := range items {
				if _, err := proto.Marshal(r); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

// BenchmarkGenerateLookedUp: one generation of a node that looks
// destinations up, by how many destination listeners it holds (its
// streams subscribe to), in a mesh of 1,000 Services × 10 endpoints: the
// Services' ClusterIPs first, then endpoints' addresses. What each
// lookup of a new destination costs the control plane (ads regenerates
// the node at once), so what a sidecar whose app cycles through
// destinations can make it spend.
//
//	go test ./controlplane/xds/translate/ -run=NONE -bench=GenerateLookedUp
func BenchmarkGenerateLookedUp(b *testing.B) {
	snap := bigMesh(1000, 10)
	tr, node := benchNode(b, snap)
	var all []string
	for s := range 1000 {
		all = append(all, names.DestinationListener(netip.AddrPortFrom(bigServiceAddr(s), 80)))
	}
	for n := range 10 * 1000 {
		all = append(all, names.DestinationListener(netip.AddrPortFrom(bigEndpointAddr(n), 8080)))
	}
	for _, held := range []int{10, 1000, 4096} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			node := node
			node.DestinationListeners, node.LookedUp = true, true
			node.Destinations = slices.Sorted(slices.Values(all[:held]))
			res, err := tr.Generate(node)
			if err != nil {
				b.Fatal(err)
			}
			got := 0
			for _, r := range res[resource.ListenerType] {
				if _, ok := names.ParseDestinationListener(r.(interface{ GetName() string }).GetName()); ok {
					got++
				}
			}
			if got != held {
				b.Fatalf("%d destination listeners generated, want %d", got, held)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tr.Generate(node); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPrepareBuildsTheSharedSet: Prepare builds the newest snapshot's
// shared set and its destination listeners, so that a Generate after it
// (the ADS server's, charged to one node's lookup budget) builds neither;
// with no snapshot yet, or a control plane address that is not host:port,
// it builds nothing and does not panic.
func TestPrepareBuildsTheSharedSet(t *testing.T) {
	snap := bigMesh(20, 2)
	tr := translatorFor(snap)
	tr.Prepare()
	s := tr.memo.sets[0]
	if s == nil || s.snap != snap || !s.ready.Load() || s.dest.Load() == nil {
		t.Fatalf("after Prepare: shared set %+v", s)
	}
	if _, err := tr.Generate(benchNodeOf(snap)); err != nil {
		t.Fatal(err)
	}
	if tr.memo.sets[0] != s {
		t.Error("Generate after Prepare built another shared set")
	}

	(&Generator{Snapshot: func() *mesh.Snapshot { return nil }, Bundle: tr.Bundle}).Prepare()
	bad := translatorFor(snap)
	bad.ControlPlaneAddr = "no-port"
	bad.Prepare()
	if bad.memo.sets[0] != nil {
		t.Error("Prepare with a control plane address that is not host:port built a shared set")
	}
}

func benchNodeOf(snap *mesh.Snapshot) xds.Node {
	w, _ := snap.Workload("demo", "client-7d9f")
	return xds.Node{Name: w.Name, Namespace: w.Namespace, ID: w.Identity}
}
