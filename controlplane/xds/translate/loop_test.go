package translate

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/controlplane/xds"
)

// hostileToSelf is meshContents with every input of the model that could
// name one of the sidecar's own ports on the pod itself or on loopback:
// a Service selecting server-v1 whose target ports are the sidecar's
// ports (its endpoints are server-v1's address at those ports), an
// MTLSPolicy setting a mode for 15006, weft.dev/inbound-loopback-ports
// naming 15001 and 15053, and EgressPolicies allowing 127.0.0.1/32 and
// ::1/128 at 15001 and 15006, TLS and HTTP names at 15006, and every
// address (0.0.0.0/0, ::/0) at 15000.
func hostileToSelf() mesh.Contents {
	c := withLoopbackPorts(meshContents(v1alpha1.OutboundAllowAny), "server-v1-5b7c", 8080, 15001, 15053)
	v1 := c.Workloads[slices.IndexFunc(c.Workloads, func(w *mesh.Workload) bool { return w.Name == "server-v1-5b7c" })]
	svc := &mesh.Service{
		Namespace: "demo", Name: "evil", Type: "ClusterIP", ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.66")},
		Selector: map[string]string{"app": "server", "version": "v1"},
	}
	key := v1.Key()
	ep := mesh.Endpoint{Address: v1.IPs[0], Pod: &key, Injected: true, Identity: v1.Identity, Ready: true, Serving: true}
	for _, p := range sidecarPorts {
		name := "p" + portString(p)
		svc.Ports = append(svc.Ports, mesh.ServicePort{Name: name, Port: p, TargetPort: p, Protocol: "TCP"})
		ep.Ports = append(ep.Ports, mesh.EndpointPort{Name: name, Port: p, Protocol: "TCP"})
	}
	svc.Endpoints = []mesh.Endpoint{ep}
	svc.Identities = identities(svc.Endpoints)
	c.Services = append(slices.Clone(c.Services), svc)
	c.MTLSPolicies = append(slices.Clone(c.MTLSPolicies), &mesh.MTLSPolicy{Namespace: "demo", Name: "evil",
		Selector: labels.SelectorFromSet(labels.Set{"app": "server"}), Mode: v1alpha1.MTLSStrict,
		PortModes: map[uint16]v1alpha1.MTLSMode{inboundPort: v1alpha1.MTLSPermissive, outboundPort: v1alpha1.MTLSPermissive}})
	tcp := func(ports ...uint16) []mesh.EgressPort {
		var out []mesh.EgressPort
		for _, p := range ports {
			out = append(out, mesh.EgressPort{Number: p, Protocol: v1alpha1.EgressTCP})
		}
		return out
	}
	for _, w := range []string{"client", "server"} {
		c.EgressPolicies = append(c.EgressPolicies, &mesh.EgressPolicy{Namespace: "demo", Name: "evil-" + w,
			Selector: labels.SelectorFromSet(labels.Set{"app": w}), Mode: v1alpha1.EgressEnforce, DefaultAction: v1alpha1.EgressAllow,
			Rules: []mesh.EgressRule{
				{CIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}, Ports: tcp(outboundPort, inboundPort), Action: v1alpha1.EgressAllow},
				{CIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Ports: tcp(dnsPort), Action: v1alpha1.EgressAllow},
				{CIDRs: []netip.Prefix{anyIPv4, anyIPv6}, Ports: tcp(adminPort), Action: v1alpha1.EgressAllow},
				{Hosts: []string{"localhost", "self.example.com"}, Ports: []mesh.EgressPort{
					{Number: inboundPort, Protocol: v1alpha1.EgressTLS}, {Number: outboundPort, Protocol: v1alpha1.EgressHTTP}}, Action: v1alpha1.EgressAllow},
			}})
	}
	return c
}

// TestTranslatorNeverSendsToTheSidecar feeds the translator every hostile
// input hostileToSelf has and checks what it emits for the pods they
// name: no chain of the inbound listener at one of the sidecar's own ports
// but its guard (to BlackHoleCluster), no chain of the outbound listener
// at one of them for a loopback destination but its guard, a guard for
// every port on both listeners (ahead of the catch-alls by
// destination_port), and no cluster with an endpoint on the pod or
// loopback at one of them. Generation succeeds: hostile input costs the
// pod nothing but the ports it tried to claim.
func TestTranslatorNeverSendsToTheSidecar(t *testing.T) {
	snap := mesh.NewSnapshot(0, hostileToSelf())
	for _, node := range []string{"server-v1-5b7c.demo", "client-7d9f.demo", "server-v2-8e2a.demo"} {
		res := generate(t, snap, node)
		w, _ := snap.Workload("demo", strings.Split(node, ".")[0])
		self := func(a netip.Addr) bool { return a.IsLoopback() || slices.Contains(w.IPs, a) }
		for _, name := range []string{listenerInbound, listenerOutbound} {
			l := listener(res, name)
			guards := map[uint16]bool{}
			for _, fc := range l.GetFilterChains() {
				m := fc.GetFilterChainMatch()
				if m.GetDestinationPort() == nil || !isSidecarPort(uint16(m.GetDestinationPort().GetValue())) {
					continue
				}
				port := uint16(m.GetDestinationPort().GetValue())
				toSelf := name == listenerInbound
				for _, cr := range m.GetPrefixRanges() {
					a := netip.MustParseAddr(cr.GetAddressPrefix())
					pfx := netip.PrefixFrom(a, int(cr.GetPrefixLen().GetValue()))
					if name == listenerOutbound && inLoopback(pfx) || a.IsLoopback() && pfx.Bits() >= 8 {
						toSelf = true
					}
				}
				if !toSelf {
					continue
				}
				if cl := chainCluster(fc); cl != clusterBlackHole || !strings.HasPrefix(fc.GetName(), "sidecar|") {
					t.Errorf("%s: listener %s: chain %s sends the sidecar's port %d to %q", node, name, fc.GetName(), port, cl)
				}
				guards[port] = true
			}
			for _, p := range sidecarPorts {
				if !guards[p] {
					t.Errorf("%s: listener %s: no guard for the sidecar's port %d", node, name, p)
				}
			}
		}
		for _, r := range res[resource.ClusterType] {
			c := r.(*clusterv3.Cluster)
			for _, lle := range c.GetLoadAssignment().GetEndpoints() {
				for _, lbe := range lle.GetLbEndpoints() {
					sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
					if a, err := netip.ParseAddr(sa.GetAddress()); err == nil && self(a) && isSidecarPort(uint16(sa.GetPortValue())) {
						t.Errorf("%s: cluster %s delivers to %s:%d", node, c.GetName(), a, sa.GetPortValue())
					}
				}
			}
		}
		if node == "server-v1-5b7c.demo" {
			// The hostile inputs did reach it: its own port 8080 kept its
			// loopback delivery.
			if got := inboundClusters(res)["inbound|8080"]; got != "STATIC 127.0.0.1:8080 from 127.0.0.6" {
				t.Errorf("inbound|8080 = %q", got)
			}
		}
	}
}

// TestCheckNoSelfTraffic: the generation-time check refuses each way a
// translator bug could send a connection back to the sidecar.
func TestCheckNoSelfTraffic(t *testing.T) {
	snap := mesh.NewSnapshot(0, meshContents(v1alpha1.OutboundAllowAny))
	good := generate(t, snap, "server-v1-5b7c.demo")
	podIP := netip.MustParseAddr("198.18.1.11")
	if err := checkNoSelfTraffic(good, []netip.Addr{podIP}); err != nil {
		t.Fatalf("the translator's own output: %v", err)
	}
	mutate := func(f func(in, out *listenerv3.Listener) []*clusterv3.Cluster) xds.Resources {
		in := proto.Clone(listener(good, listenerInbound)).(*listenerv3.Listener)
		out := proto.Clone(listener(good, listenerOutbound)).(*listenerv3.Listener)
		res := xds.Resources{resource.ListenerType: {in, out}}
		for _, c := range f(in, out) {
			res[resource.ClusterType] = append(res[resource.ClusterType], c)
		}
		return res
	}
	dropGuard := func(chains []*listenerv3.FilterChain, port string) []*listenerv3.FilterChain {
		return slices.DeleteFunc(chains, func(fc *listenerv3.FilterChain) bool { return fc.GetName() == "sidecar|"+port })
	}
	for name, res := range map[string]xds.Resources{
		"inbound chain for 15006 to its ORIGINAL_DST cluster": mutate(func(in, _ *listenerv3.Listener) []*clusterv3.Cluster {
			in.FilterChains = append(in.FilterChains, inboundChainsForTest(inboundPort))
			return nil
		}),
		"inbound listener without the guard of 15020": mutate(func(in, _ *listenerv3.Listener) []*clusterv3.Cluster {
			in.FilterChains = dropGuard(in.FilterChains, "15020")
			return nil
		}),
		"outbound listener without the guard of 15001": mutate(func(_, out *listenerv3.Listener) []*clusterv3.Cluster {
			out.FilterChains = dropGuard(out.FilterChains, "15001")
			return nil
		}),
		"outbound chain for 127.0.0.1/32:15001 to PassthroughCluster": mutate(func(_, out *listenerv3.Listener) []*clusterv3.Cluster {
			fc := sidecarGuards(netip.MustParsePrefix("127.0.0.1/32"))[0]
			fc.Filters = inboundChainsForTest(outboundPort).Filters
			out.FilterChains = append(out.FilterChains, fc)
			return nil
		}),
		"cluster to 127.0.0.1:15001": mutate(func(*listenerv3.Listener, *listenerv3.Listener) []*clusterv3.Cluster {
			return []*clusterv3.Cluster{inboundCluster("inbound|15001", outboundPort, true)}
		}),
		"cluster to the pod's address at 15006": mutate(func(*listenerv3.Listener, *listenerv3.Listener) []*clusterv3.Cluster {
			return []*clusterv3.Cluster{staticCluster("self", podIP.String(), inboundPort)}
		}),
	} {
		if err := checkNoSelfTraffic(res, []netip.Addr{podIP}); err == nil {
			t.Errorf("%s: no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// inboundChainsForTest is a TLS chain for port to cluster inbound|<port>,
// as inboundChains builds one.
func inboundChainsForTest(port uint16) *listenerv3.FilterChain {
	b := &builder{pol: mesh.WorkloadPolicies{}}
	return b.inboundChains("inbound|"+portString(port), wrapperspb.UInt32(uint32(port)), v1alpha1.MTLSStrict, clusterPassthrough)[0]
}
