package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/controlplane/xds"
)

// Tests of edges the mutation run of 2026-12-03 found unpinned
// ([test-honesty] #24, docs/mutation.md).

// TestEgressChainNamesNumbered: egress chains of one name (port, kind,
// verdict) that do not merge, as the HTTP chains of three CIDRs of one
// rule, are told apart by a number from the second on: |2, |3.
func TestEgressChainNamesNumbered(t *testing.T) {
	pfx := netip.MustParsePrefix
	c := meshContents(v1alpha1.OutboundAllowAny)
	c.EgressPolicies = []*mesh.EgressPolicy{{Namespace: "demo", Name: "p", ServiceAccounts: []string{"client"},
		Mode: v1alpha1.EgressEnforce, DefaultAction: v1alpha1.EgressAllow, Rules: []mesh.EgressRule{
			{Hosts: []string{"api.example.com"}, Ports: []mesh.EgressPort{{Number: 80, Protocol: v1alpha1.EgressHTTP}}, Action: v1alpha1.EgressAllow},
			{CIDRs: []netip.Prefix{pfx("198.18.200.0/24"), pfx("198.18.201.0/24"), pfx("198.18.202.0/24")}, Action: v1alpha1.EgressAllow},
		}}}
	res := generate(t, mesh.NewSnapshot(0, c), "client-7d9f.demo")
	names := map[string]int{}
	for _, ch := range listener(res, "outbound").GetFilterChains() {
		names[ch.GetName()]++
	}
	const base = "egress|80|http|allow|demo/p#1"
	for _, n := range []string{base, base + "|2", base + "|3"} {
		if names[n] != 1 {
			t.Errorf("%d chains named %s, want 1", names[n], n)
		}
	}
	for n, k := range names {
		if k > 1 {
			t.Errorf("%d chains named %s", k, n)
		}
	}
	if t.Failed() {
		t.Log(fmt.Sprint(names))
	}
}

// TestInboundPortsOfServicePorts: the app ports a Service gives its
// workloads: a TCP port (Protocol "TCP", or unset as TCP is the default)
// at its target port, a named target port at the number the workload's
// endpoint gives that name; a UDP or SCTP port none. With HTTP routing,
// an HTTP port among them gets the h2 chain, again only over TCP.
func TestInboundPortsOfServicePorts(t *testing.T) {
	c := meshContents(v1alpha1.OutboundAllowAny)
	svc := c.Services[0] // demo/server, selects server-v1-5b7c
	if svc.Name != "server" {
		t.Fatalf("Services[0] is %s", svc.Name)
	}
	svc.Ports = append(svc.Ports,
		mesh.ServicePort{Name: "admin", Port: 81, TargetPortName: "admin-port", Protocol: "TCP", AppProtocol: mesh.AppProtocolHTTP},
		mesh.ServicePort{Name: "metrics", Port: 9100, TargetPort: 9101, AppProtocol: mesh.AppProtocolHTTP}, // Protocol unset
		mesh.ServicePort{Name: "dns", Port: 53, TargetPort: 5353, Protocol: "UDP", AppProtocol: mesh.AppProtocolHTTP},
		mesh.ServicePort{Name: "sctp", Port: 7000, TargetPort: 7001, Protocol: "SCTP"},
	)
	for i := range svc.Endpoints {
		ep := &svc.Endpoints[i]
		ep.Ports = append(slices.Clone(ep.Ports), mesh.EndpointPort{Name: "admin", Port: 8081, Protocol: "TCP"})
	}
	snap := mesh.NewSnapshot(0, c)
	var got []string
	for name := range inboundClusters(generate(t, snap, "server-v1-5b7c.demo")) {
		got = append(got, name)
	}
	slices.Sort(got)
	want := []string{clusterInboundPassthrough, "inbound|8080", "inbound|8081", "inbound|9101"}
	if !slices.Equal(got, want) {
		t.Errorf("inbound clusters %v, want %v", got, want)
	}
	var h2 []string
	gen := translatorFor(snap)
	gen.HTTPRouting = true
	for _, ch := range listener(generateWith(t, gen, snap, "server-v1-5b7c.demo"), "inbound").GetFilterChains() {
		if n := ch.GetName(); len(n) > 3 && n[len(n)-3:] == "|h2" {
			h2 = append(h2, n)
		}
	}
	slices.Sort(h2)
	if want := []string{"inbound|8080|h2", "inbound|8081|h2", "inbound|9101|h2"}; !slices.Equal(h2, want) {
		t.Errorf("h2 chains %v, want %v", h2, want)
	}
}

// TestEgressCIDRsOfOneAddress: rule CIDRs of one address and different
// lengths, one repeated (here /24, /23, /24 in rule order), give one leaf
// each: the /24 once. Prefixes are ordered by address, then length, so
// the repeated /24s end up side by side and are merged; were they not,
// the /24's HTTP chains (which never merge) would be two chains with one
// match, and the translation would fail.
func TestEgressCIDRsOfOneAddress(t *testing.T) {
	pfx := netip.MustParsePrefix
	c := meshContents(v1alpha1.OutboundAllowAny)
	c.EgressPolicies = []*mesh.EgressPolicy{{Namespace: "demo", Name: "p", ServiceAccounts: []string{"client"},
		Mode: v1alpha1.EgressEnforce, DefaultAction: v1alpha1.EgressAllow, Rules: []mesh.EgressRule{
			{CIDRs: []netip.Prefix{pfx("198.18.200.0/24")}, Action: v1alpha1.EgressDeny},
			{CIDRs: []netip.Prefix{pfx("198.18.200.0/23")}, Action: v1alpha1.EgressAllow},
			{CIDRs: []netip.Prefix{pfx("198.18.200.0/24")}, Action: v1alpha1.EgressAllow},
			{Hosts: []string{"api.example.com"}, Ports: []mesh.EgressPort{{Number: 80, Protocol: v1alpha1.EgressHTTP}}, Action: v1alpha1.EgressAllow},
		}}}
	res := generate(t, mesh.NewSnapshot(0, c), "client-7d9f.demo")
	for _, tc := range []struct {
		c    conn
		want outcome
	}{
		{conn{netip.MustParseAddr("198.18.200.7"), 80, "http", "api.example.com"}, outcome{decisionDeny, "demo/p", "0"}},
		{conn{netip.MustParseAddr("198.18.201.7"), 80, "http", "api.example.com"}, outcome{decisionAllow, "demo/p", "1"}},
		{conn{netip.MustParseAddr("198.18.200.7"), 5432, "tcp", ""}, outcome{decisionDeny, "demo/p", "0"}},
	} {
		if got := simulate(t, res, tc.c); got != tc.want {
			t.Errorf("%v: %+v, want %+v", tc.c, got, tc.want)
		}
	}
}

// gammaWith generates nodeID's resources with HTTP routing from c.
func gammaWith(t *testing.T, c mesh.Contents, nodeID string) map[string]*routev3.RouteConfiguration {
	t.Helper()
	snap := mesh.NewSnapshot(0, c)
	gen := translatorFor(snap)
	gen.HTTPRouting = true
	res := generateWith(t, gen, snap, nodeID)
	out := map[string]*routev3.RouteConfiguration{}
	for _, name := range []string{"outbound|80|server.demo", "outbound|81|server.demo"} {
		out[name] = routeConfig(res, name)
	}
	return out
}

// serverWithPort81 is gammaContents with demo/server's second HTTP port 81
// (target 8081).
func serverWithPort81(routes ...*mesh.Route) mesh.Contents {
	c := gammaContents(routes...)
	for i, s := range c.Services {
		if s.Namespace == "demo" && s.Name == "server" {
			cp := *s
			cp.Ports = append(slices.Clone(s.Ports), mesh.ServicePort{Name: "http-alt", Port: 81, TargetPort: 8081, Protocol: "TCP", AppProtocol: mesh.AppProtocolHTTP})
			c.Services[i] = &cp
		}
	}
	return c
}

// TestGAMMAConsumerRouteOfOnePort: a consumer route whose parentRef names
// a port replaces the route configuration of that port only.
func TestGAMMAConsumerRouteOfOnePort(t *testing.T) {
	c := serverWithPort81(
		gammaRoute("demo", "producer", 0, onServer80, mesh.RouteRule{Backends: to(backend(serverKey, 80, 1))}),
		gammaRoute("legacy", "to-canary", 0, []mesh.RouteParent{{Service: serverKey, Port: 81}},
			mesh.RouteRule{Backends: to(backend(canaryKey, 80, 1))}),
	)
	rcs := gammaWith(t, c, "legacy-app-0.legacy")
	if got := routeNames(rcs["outbound|81|server.demo"]); !slices.Equal(got, []string{"legacy/to-canary#0"}) {
		t.Errorf("port 81: routes %q, want the consumer route", got)
	}
	if got := routeNames(rcs["outbound|80|server.demo"]); !slices.Equal(got, []string{"demo/producer#0"}) {
		t.Errorf("port 80: routes %q, want the producer route", got)
	}
}

// routedClusters are the clusters the routes of rc send requests to.
func routedClusters(rc *routev3.RouteConfiguration) []string {
	var out []string
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if c := r.GetRoute().GetCluster(); c != "" {
				out = append(out, c)
			}
			for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
				out = append(out, wc.GetName())
			}
		}
	}
	return out
}

// TestGAMMABackendsThatTakeRequests: a backend is routed to when its
// Service port is TCP (Protocol unset is TCP) and HTTP, and the Service
// is in the mesh: an endpoint with the sidecar, or (none yet) its
// namespace injected.
func TestGAMMABackendsThatTakeRequests(t *testing.T) {
	c := gammaContents(gammaRoute("demo", "split", 0, onServer80,
		mesh.RouteRule{Backends: to(backend(canaryKey, 80, 1), backend(mesh.Key{Namespace: "demo", Name: "fresh"}, 80, 1))}))
	for i, s := range c.Services {
		if s.Name == "canary" {
			cp := *s
			cp.Ports = []mesh.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, AppProtocol: mesh.AppProtocolHTTP}} // Protocol unset
			c.Services[i] = &cp
		}
	}
	c.Services = append(c.Services, &mesh.Service{ // no endpoints yet, in injected demo
		Namespace: "demo", Name: "fresh", Type: "ClusterIP", ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.22")},
		Selector: map[string]string{"app": "fresh"},
		Ports:    []mesh.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: "TCP", AppProtocol: mesh.AppProtocolHTTP}},
	})
	got := routedClusters(gammaWith(t, c, "client-7d9f.demo")["outbound|80|server.demo"])
	slices.Sort(got)
	if want := []string{"outbound|80|canary.demo", "outbound|80|fresh.demo"}; !slices.Equal(got, want) {
		t.Errorf("routed to %q, want %q", got, want)
	}
}

// TestOutboundServicePorts: a Service of an injected namespace without
// endpoints yet is in the mesh (its EDS cluster, its chain); its TCP
// ports get chains (Protocol unset is TCP), a UDP port none. A Service of
// a namespace the snapshot does not have (yet) is not in the mesh and
// does not fail the translation.
func TestOutboundServicePorts(t *testing.T) {
	c := meshContents(v1alpha1.OutboundAllowAny)
	c.Services = append(slices.Clone(c.Services),
		&mesh.Service{
			Namespace: "demo", Name: "fresh", Type: "ClusterIP", ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.22")},
			Selector: map[string]string{"app": "fresh"},
			Ports: []mesh.ServicePort{{Name: "http", Port: 80, TargetPort: 8080},
				{Name: "dns", Port: 53, TargetPort: 5353, Protocol: "UDP"}},
		},
		&mesh.Service{
			Namespace: "nowhere", Name: "ghost", Type: "ClusterIP", ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.23")},
			Ports: []mesh.ServicePort{{Name: "tcp", Port: 5000, TargetPort: 5000, Protocol: "TCP"}},
		},
	)
	res := generate(t, mesh.NewSnapshot(0, c), "client-7d9f.demo")
	var got []string
	for _, n := range chainNames(listener(res, "outbound")) {
		if strings.Contains(n, "fresh.demo") || strings.Contains(n, "ghost.nowhere") {
			got = append(got, n)
		}
	}
	slices.Sort(got)
	if want := []string{"outbound|80|fresh.demo", "passthrough|5000|ghost.nowhere"}; !slices.Equal(got, want) {
		t.Errorf("chains %q, want %q", got, want)
	}
	// No endpoints: a ClusterLoadAssignment without localities.
	for _, r := range res[resource.EndpointType] {
		if cla := r.(*endpointv3.ClusterLoadAssignment); cla.GetClusterName() == "outbound|80|fresh.demo" && len(cla.GetEndpoints()) != 0 {
			t.Errorf("endpoints of a Service without any: %v", cla.GetEndpoints())
		}
	}
}

// TestUnchangedServiceReusedAcrossSnapshots: a Generator given a new
// snapshot of equal contents (new copies of every Service) hands out the
// clusters, endpoints and filter chains it built for the previous one,
// the same pointers (shared.go).
func TestUnchangedServiceReusedAcrossSnapshots(t *testing.T) {
	c := meshContents(v1alpha1.OutboundAllowAny)
	cur := mesh.NewSnapshot(0, c)
	gen := translatorFor(cur)
	gen.Snapshot = func() *mesh.Snapshot { return cur }
	node := xds.Node{Name: "client-7d9f", Namespace: "demo", ID: workloadID("demo", "client")}
	pick := func(res xds.Resources) (cluster, cla types.Resource) {
		for _, r := range res[resource.ClusterType] {
			if r.(*clusterv3.Cluster).GetName() == "outbound|80|server.demo" {
				cluster = r
			}
		}
		for _, r := range res[resource.EndpointType] {
			if r.(*endpointv3.ClusterLoadAssignment).GetClusterName() == "outbound|80|server.demo" {
				cla = r
			}
		}
		if cluster == nil || cla == nil {
			t.Fatal("no cluster or endpoints outbound|80|server.demo")
		}
		return cluster, cla
	}
	chain := func(res xds.Resources) *listenerv3.FilterChain {
		for _, ch := range listener(res, "outbound").GetFilterChains() {
			if ch.GetName() == "outbound|80|server.demo" {
				return ch
			}
		}
		t.Fatal("no chain outbound|80|server.demo")
		return nil
	}
	first, err := gen.Generate(node)
	if err != nil {
		t.Fatal(err)
	}
	c1, e1 := pick(first)
	ch1 := chain(first)
	// The next snapshot's Services are copies: equal, not the same.
	c.Services = slices.Clone(c.Services)
	for i, svc := range c.Services {
		cp := *svc
		cp.Endpoints = slices.Clone(svc.Endpoints)
		c.Services[i] = &cp
	}
	cur = mesh.NewSnapshot(0, c)
	second, err := gen.Generate(node)
	if err != nil {
		t.Fatal(err)
	}
	if c2, e2 := pick(second); c2 != c1 || e2 != e1 {
		t.Errorf("an unchanged Service's cluster (same %t) and endpoints (same %t) were built again", c2 == c1, e2 == e1)
	}
	if chain(second) != ch1 {
		t.Error("an unchanged Service's filter chain was built again")
	}
}

// TestEndpointPortFallbacks: the port an endpoint serves a Service port
// on: its EndpointSlice's port of that name (not 0), else the numeric
// target port, else, with no target port at all, the Service port; a
// named target port the endpoint does not have, none.
func TestEndpointPortFallbacks(t *testing.T) {
	named := &mesh.Endpoint{Ports: []mesh.EndpointPort{{Name: "http", Port: 9090}, {Name: "zero", Port: 0}}}
	for _, tc := range []struct {
		name string
		sp   mesh.ServicePort
		want uint16
		ok   bool
	}{
		{"from the endpoint", mesh.ServicePort{Name: "http", Port: 80, TargetPort: 8080}, 9090, true},
		{"endpoint's port 0", mesh.ServicePort{Name: "zero", Port: 80, TargetPort: 8080}, 8080, true},
		{"target port", mesh.ServicePort{Name: "other", Port: 80, TargetPort: 8080}, 8080, true},
		{"no target port", mesh.ServicePort{Name: "other", Port: 80}, 80, true},
		{"named target port missing", mesh.ServicePort{Name: "other", Port: 80, TargetPortName: "web"}, 0, false},
	} {
		if got, ok := endpointPort(named, tc.sp); got != tc.want || ok != tc.ok {
			t.Errorf("%s: %d %t, want %d %t", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// TestRejectedPolicyFailsClosed: a sidecar that no accepted EgressPolicy
// selects (whose outbound listener would be the shared one) fails closed,
// TLS and TCP alike, while MeshConfig "default" is rejected (the mesh is
// REGISTRY_ONLY for every sidecar) and while an EgressPolicy of its own
// namespace is rejected.
func TestRejectedPolicyFailsClosed(t *testing.T) {
	outside := netip.MustParseAddr("198.18.200.4") // no Service's, no pod's
	for _, tc := range []struct {
		name     string
		rejected mesh.Rejected
		want     outcome
	}{
		{"MeshConfig", mesh.Rejected{Kind: v1alpha1.MeshConfigKind, Name: v1alpha1.DefaultMeshConfigName, Reason: v1alpha1.ReasonTrustDomainMismatch},
			outcome{decisionDeny, "MeshConfig/default", "rejected"}},
		{"EgressPolicy", mesh.Rejected{Kind: v1alpha1.EgressPolicyKind, Namespace: "legacy", Name: "broken"},
			outcome{decisionDeny, "legacy/broken", "rejected"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := meshContents(v1alpha1.OutboundAllowAny)
			c.Rejected = []mesh.Rejected{tc.rejected}
			res := generate(t, mesh.NewSnapshot(0, c), "legacy-app-0.legacy")
			for _, cn := range []conn{{outside, 443, "tls", "unknown.example.net"}, {outside, 5432, "tcp", ""}} {
				if got := simulate(t, res, cn); got != tc.want {
					t.Errorf("%v: %+v, want %+v", cn, got, tc.want)
				}
			}
		})
	}
}

// TestTrustBundleSecretShared: the trust_bundle secret is one pointer for
// every sidecar while the bundle stays, and SharedResources says so; a new
// bundle makes a new one.
func TestTrustBundleSecretShared(t *testing.T) {
	snap := mesh.NewSnapshot(0, meshContents(v1alpha1.OutboundAllowAny))
	gen := translatorFor(snap)
	bundle := []byte(testBundle)
	gen.Bundle = func() []byte { return bundle }
	secret := func(node string) types.Resource {
		res := generateWith(t, gen, snap, node)
		if len(res[resource.SecretType]) != 1 {
			t.Fatalf("%s: %d secrets", node, len(res[resource.SecretType]))
		}
		return res[resource.SecretType][0]
	}
	a, b := secret("client-7d9f.demo"), secret("legacy-app-0.legacy")
	if a != b {
		t.Error("two sidecars got different trust_bundle secrets for one bundle")
	}
	if !gen.SharedResources()(a) {
		t.Error("the trust_bundle secret is not reported shared")
	}
	bundle = append(slices.Clone(bundle), '\n')
	if c := secret("client-7d9f.demo"); c == a {
		t.Error("a new bundle kept the old secret")
	}
}
