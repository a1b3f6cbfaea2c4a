package translate

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/controlplane/xds"
)

// describeInbound is what decides where a cluster of the inbound listener
// delivers: "<type> <address>" ("original destination" for ORIGINAL_DST)
// " from <source addresses>".
func describeInbound(c *clusterv3.Cluster) string {
	to := "original destination"
	if c.GetType() != clusterv3.Cluster_ORIGINAL_DST {
		var eps []string
		for _, lle := range c.GetLoadAssignment().GetEndpoints() {
			for _, lbe := range lle.GetLbEndpoints() {
				sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
				eps = append(eps, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
			}
		}
		to = c.GetType().String() + " " + strings.Join(eps, ",")
	}
	var from []string
	if bc := c.GetUpstreamBindConfig(); bc != nil {
		from = append(from, bc.GetSourceAddress().GetAddress())
		for _, e := range bc.GetExtraSourceAddresses() {
			from = append(from, e.GetAddress().GetAddress())
		}
	}
	return to + " from " + strings.Join(from, ",")
}

func inboundClusters(res xds.Resources) map[string]string {
	out := map[string]string{}
	for _, r := range res[resource.ClusterType] {
		c := r.(*clusterv3.Cluster)
		if strings.HasPrefix(c.GetName(), "inbound|") || c.GetName() == clusterInboundPassthrough {
			out[c.GetName()] = describeInbound(c)
		}
	}
	return out
}

// TestInboundClustersDeliverToThePod: every inbound cluster delivers to
// the original destination (the pod's own address: its IPv4 or its IPv6,
// whichever the peer reached) from 127.0.0.6 (::6 for IPv6), so an app
// listening on 127.0.0.1 is not reachable from other pods. Only the ports
// of weft.dev/inbound-loopback-ports go to 127.0.0.1 (from 127.0.0.6),
// a port no Service names included (it gets its chains). The sidecar's
// reading of these shapes: sidecar/xds TestInboundClusterShapes, and its
// TestGoldenAccepted on golden case server-v1-loopback. Before, every
// inbound|P was STATIC 127.0.0.1:P and InboundPassthroughCluster had no
// source: the sidecar sent everything to loopback.
func TestInboundClustersDeliverToThePod(t *testing.T) {
	const pod = "original destination from 127.0.0.6,::6"
	for _, tc := range []struct {
		name     string
		loopback []uint16
		want     map[string]string
	}{
		{"default", nil, map[string]string{
			"inbound|8080":            pod,
			clusterInboundPassthrough: pod,
		}},
		{"loopback 8080 and 9091", []uint16{8080, 9091}, map[string]string{
			"inbound|8080":            "STATIC 127.0.0.1:8080 from 127.0.0.6",
			"inbound|9091":            "STATIC 127.0.0.1:9091 from 127.0.0.6",
			clusterInboundPassthrough: pod,
		}},
		{"loopback 9091 only", []uint16{9091}, map[string]string{
			"inbound|8080":            pod,
			"inbound|9091":            "STATIC 127.0.0.1:9091 from 127.0.0.6",
			clusterInboundPassthrough: pod,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := withLoopbackPorts(meshContents(v1alpha1.OutboundAllowAny), "server-v1-5b7c", tc.loopback...)
			res := generate(t, mesh.NewSnapshot(0, c), "server-v1-5b7c.demo") // checks ValidateAll
			if got := inboundClusters(res); !mapsEqual(got, tc.want) {
				t.Errorf("inbound clusters:\n%v\nwant\n%v", got, tc.want)
			}
			chains := chainNames(listener(res, "inbound"))
			for _, p := range tc.loopback {
				if name := fmt.Sprintf("inbound|%d|tls", p); !slices.Contains(chains, name) {
					t.Errorf("no chain %s for a loopback port: %v", name, chains)
				}
			}

		})
	}
}

// withLoopbackPorts sets the weft.dev/inbound-loopback-ports of workload
// name in c.
func withLoopbackPorts(c mesh.Contents, name string, ports ...uint16) mesh.Contents {
	c.Workloads = slices.Clone(c.Workloads)
	i := slices.IndexFunc(c.Workloads, func(w *mesh.Workload) bool { return w.Name == name })
	w := *c.Workloads[i]
	w.InboundLoopbackPorts = ports
	c.Workloads[i] = &w
	return c
}
