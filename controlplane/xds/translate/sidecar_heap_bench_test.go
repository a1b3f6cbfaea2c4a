package translate

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/v1alpha1"
)

var sidecarHeapProfile = flag.String("sidecarheap.profile", "",
	"BenchmarkSidecarHeap: write the heap profile to <path>.<services> once the sidecars hold the mesh")

// sidecarPackages are the packages whose allocations are the sidecar's
// configuration: its xDS client (decoding, validation, Build) and the
// model it builds.
var sidecarPackages = []string{"github.com/weftmesh/weft/sidecar/xds."}

// sidecarHeldBytes sums the live bytes of every allocation made with a
// frame of sidecarPackages on its stack, from the runtime's memory profile
// (exact when runtime.MemProfileRate is 1 from before the allocations).
func sidecarHeldBytes() int64 {
	runtime.GC()
	runtime.GC()
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, false)
	for {
		recs = make([]runtime.MemProfileRecord, n+100)
		var ok bool
		if n, ok = runtime.MemProfile(recs, false); ok {
			recs = recs[:n]
			break
		}
	}
	var held int64
	for _, r := range recs {
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			if strings.HasPrefix(f.Function, sidecarPackages[0]) {
				held += r.InUseBytes()
				break
			}
			if !more {
				break
			}
		}
	}
	return held
}

// BenchmarkSidecarHeap: what a sidecar holds for its configuration, by
// the size of the mesh. The agreement harness's real sidecar xDS clients
// (sidecar/xds.Client over gRPC and mTLS from this package's ADS server:
// decoded, validated and built into the proxy's model exactly as in a
// sidecar) are pushed the translator's output for a mesh of N Services ×
// 10 endpoints; the bytes still live that were allocated under
// sidecar/xds are counted (the runtime's memory profile at rate 1) and
// divided by the number of sidecars. A sidecar sent the whole mesh holds
// every Service; one that learns them on demand (delta, OnDemand, as
// weft-sidecar runs by default) holds the clusters and endpoints of those it
// asked for (here 10: "demanded=10"), and still the listener's chain per
// Service address.
//
//	go test ./controlplane/xds/translate/ -run=NONE -bench=SidecarHeap -benchtime=1x
func BenchmarkSidecarHeap(b *testing.B) {
	rate := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	b.Cleanup(func() { runtime.MemProfileRate = rate })
	type run struct {
		services, demanded int
		lookup             bool
	}
	for _, r := range []run{{10, -1, false}, {1000, -1, false}, {10, 10, false}, {1000, 10, false}, {10, 10, true}, {1000, 10, true}} {
		services := r.services
		name := fmt.Sprintf("services=%d", services)
		if r.demanded >= 0 {
			name += fmt.Sprintf("/demanded=%d", r.demanded)
		}
		if r.lookup {
			name += "/lookup"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				var m *agreeMesh
				switch {
				case r.demanded < 0:
					m = newAgreeMesh(b)
				case r.lookup:
					m = newAgreeMeshWith(b, false, lookUp)
				default:
					m = newAgreeMeshWith(b, false, onDemand)
				}
				base := sidecarHeldBytes()
				_, cfgs, err := m.push(bigContents(v1alpha1.OutboundAllowAny, services, 10))
				if err != nil {
					b.Fatal(err)
				}
				for node, cfg := range cfgs {
					if r.lookup {
						// The first Services' ClusterIPs (bigContents), looked
						// up, then their clusters demanded, as a connection does.
						for s := range r.demanded {
							ap := netip.AddrPortFrom(bigServiceAddr(s), 80)
							ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
							next, release, err := m.nodes[node].Destination(ctx, ap)
							cancel()
							if err != nil {
								b.Fatal(err)
							}
							release()
							l := next.OutboundFor(ap)
							if l == next.Outbound || len(l.Chains) != 1 {
								b.Fatalf("%s: %s has no destination listener", node, ap)
							}
							ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
							_, release, err = m.nodes[node].Demand(ctx, l.Chains[0].Target.Cluster)
							cancel()
							if err != nil {
								b.Fatal(err)
							}
							defer release()
						}
						continue
					}
					for _, n := range cfg.OnDemandClusters()[:min(max(r.demanded, 0), len(cfg.OnDemandClusters()))] {
						ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
						_, release, err := m.nodes[node].Demand(ctx, n)
						cancel()
						if err != nil {
							b.Fatal(err)
						}
						defer release()
					}
				}
				held := sidecarHeldBytes()
				if *sidecarHeapProfile != "" {
					f, err := os.Create(fmt.Sprintf("%s.%s", *sidecarHeapProfile, strings.NewReplacer("=", "", "/", "-").Replace(name)))
					if err != nil {
						b.Fatal(err)
					}
					if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
						b.Fatal(err)
					}
					f.Close()
				}
				for _, c := range m.nodes {
					runtime.KeepAlive(c.Current())
				}
				b.ReportMetric(float64(held)/float64(len(m.nodes))/(1<<20), "MB/sidecar")
				b.ReportMetric(float64(held-base)/float64(len(m.nodes))/(1<<20), "added-MB/sidecar")
				b.ReportMetric(float64(services), "services")
			}
		})
	}
}
