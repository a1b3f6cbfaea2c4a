package translate

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/v1alpha1"
	sxds "github.com/weftmesh/weft/sidecar/xds"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

func onDemand(c *sxds.ClientConfig) { c.Delta, c.OnDemand = true, true }

// TestSidecarOnDemandAgrees: sidecars that learn Services on demand, from
// this package's ADS server (streamauth, the endpoint cache, the snapshot
// cache), run what sidecars that are sent the whole mesh run: the same
// listeners, routes and required clusters, and each in-mesh Service's
// cluster and endpoints, once demanded, equal to theirs. Before a demand
// they hold no Service's cluster or endpoints. The golden mesh with 50
// more Services (the bench's), L4 and HTTP routing.
func TestSidecarOnDemandAgrees(t *testing.T) {
	for _, http := range []bool{false, true} {
		t.Run(map[bool]string{false: "l4", true: "http"}[http], func(t *testing.T) {
			contents := bigContents(v1alpha1.OutboundAllowAny, 50, 3)
			whole := newAgreeMeshWith(t, http)
			od := newAgreeMeshWith(t, http, onDemand)
			_, want, err := whole.push(contents)
			if err != nil {
				t.Fatal(err)
			}
			_, got, err := od.push(contents)
			if err != nil {
				t.Fatal(err)
			}
			for node, w := range want {
				g := got[node]
				if !g.OnDemand || w.OnDemand {
					t.Fatalf("%s: OnDemand %t (want true), whole mesh's %t (want false)", node, g.OnDemand, w.OnDemand)
				}
				lazy := g.OnDemandClusters()
				if len(lazy) < 50 && !http {
					t.Errorf("%s: only %d clusters learnt on demand (%q), want every in-mesh Service's", node, len(lazy), lazy)
				}
				for _, n := range lazy {
					if g.Clusters[n] != nil {
						t.Errorf("%s: holds %s before any connection asked for it", node, n)
					}
					if _, ok := g.Endpoints[n]; ok {
						t.Errorf("%s: holds %s's endpoints before any connection asked for it", node, n)
					}
				}
				if !reflect.DeepEqual(g.Outbound, w.Outbound) || !reflect.DeepEqual(g.Inbound, w.Inbound) || !reflect.DeepEqual(g.Routes, w.Routes) {
					t.Errorf("%s: listeners or routes differ from the whole mesh's", node)
				}
				for _, n := range g.RequiredClusters() {
					if !reflect.DeepEqual(g.Clusters[n], w.Clusters[n]) || !reflect.DeepEqual(g.Endpoints[n], w.Endpoints[n]) {
						t.Errorf("%s: required cluster %s differs from the whole mesh's", node, n)
					}
				}
				// Demanded, each comes as the whole mesh has it.
				c := od.nodes[node]
				for _, n := range lazy {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					cfg, release, err := c.Demand(ctx, n)
					cancel()
					if err != nil {
						t.Fatalf("%s: Demand(%s): %v; status %+v", node, n, err, c.Status())
					}
					if !reflect.DeepEqual(cfg.Clusters[n], w.Clusters[n]) || !reflect.DeepEqual(cfg.Endpoints[n], w.Endpoints[n]) {
						t.Errorf("%s: demanded %s = %+v with endpoints %+v, whole mesh's %+v with %+v", node, n,
							cfg.Clusters[n], cfg.Endpoints[n], w.Clusters[n], w.Endpoints[n])
					}
					release()
				}
				final := c.Current()
				if !reflect.DeepEqual(final.Clusters, w.Clusters) || !reflect.DeepEqual(final.Endpoints, w.Endpoints) {
					t.Errorf("%s: with every Service demanded, clusters or endpoints differ from the whole mesh's", node)
				}
				if got := c.Status().Demanded; !slices.Equal(got, lazy) {
					t.Errorf("%s: Status.Demanded = %q, want %q", node, got, lazy)
				}
				// A cluster the node's snapshot does not hold is never
				// served, whatever it asks for: the control plane
				// answers that it has none.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, _, err := c.Demand(ctx, model.OnDemandPrefix+"80|nowhere.demo")
				cancel()
				if !errors.Is(err, sxds.ErrNoSuchCluster) {
					t.Errorf("%s: Demand of a cluster no snapshot holds = %v", node, err)
				}
			}
		})
	}
}

// BenchmarkDemand: what a connection to a Service not yet held waits for
// on top of the connection itself, on loopback: the sidecar asks for the
// cluster, receives it, asks for its endpoints, receives them, and
// rebuilds its configuration at each step, in a mesh of N Services × 10
// endpoints. Reported per demand, for the first 20 in-mesh Services of
// each of the harness's two sidecars in turn. lookup-*: the same
// Services' ClusterIPs by a sidecar that looks destinations up (the
// default): first the destination's listener, then the cluster and its
// endpoints, in the same run.
//
//	go test ./controlplane/xds/translate/ -run=NONE -bench=Demand -benchtime=1x
func BenchmarkDemand(b *testing.B) {
	for _, services := range []int{10, 1000} {
		b.Run(fmt.Sprintf("services=%d", services), func(b *testing.B) {
			var waits, lookups []time.Duration
			for range b.N {
				contents := bigContents(v1alpha1.OutboundAllowAny, services, 10)
				m := newAgreeMeshWith(b, false, onDemand)
				_, cfgs, err := m.push(contents)
				if err != nil {
					b.Fatal(err)
				}
				look := newAgreeMeshWith(b, false, lookUp)
				if _, _, err := look.push(contents); err != nil {
					b.Fatal(err)
				}
				for node, cfg := range cfgs {
					lazy := cfg.OnDemandClusters()
					for _, n := range lazy[:min(20, len(lazy))] {
						ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
						start := time.Now()
						_, release, err := m.nodes[node].Demand(ctx, n)
						waits = append(waits, time.Since(start))
						cancel()
						if err != nil {
							b.Fatal(err)
						}
						release()
					}
					for _, n := range lazy[:min(20, len(lazy))] {
						var ap netip.AddrPort
						for _, fc := range cfg.Outbound.Chains {
							if fc.Target.Cluster == n && len(fc.Match.Prefixes) > 0 {
								ap = netip.AddrPortFrom(fc.Match.Prefixes[0].Addr(), fc.Match.DestPort)
								break
							}
						}
						c := look.nodes[node]
						ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
						start := time.Now()
						dcfg, release, err := c.Destination(ctx, ap)
						if err != nil {
							b.Fatal(err)
						}
						release()
						fc := dcfg.OutboundFor(ap).Match(ap, "raw_buffer", "", nil)
						if fc == nil || fc.Target.Cluster != n {
							b.Fatalf("%s: %s looked up matches %v, want a chain to %s", node, ap, chainName(fc), n)
						}
						_, release, err = c.Demand(ctx, n)
						lookups = append(lookups, time.Since(start))
						cancel()
						if err != nil {
							b.Fatal(err)
						}
						release()
					}
				}
			}
			slices.Sort(waits)
			slices.Sort(lookups)
			b.ReportMetric(float64(waits[len(waits)/2].Microseconds())/1e3, "p50-ms")
			b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds())/1e3, "p99-ms")
			b.ReportMetric(float64(lookups[len(lookups)/2].Microseconds())/1e3, "lookup-p50-ms")
			b.ReportMetric(float64(lookups[len(lookups)*99/100].Microseconds())/1e3, "lookup-p99-ms")
			b.ReportMetric(float64(len(waits)), "demands")
		})
	}
}
