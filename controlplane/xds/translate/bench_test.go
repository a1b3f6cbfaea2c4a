package translate

import (
	"fmt"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

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
