package model

import (
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestOnDemandClusters: the clusters learnt on demand are the targets of
// the outbound listener's in-mesh TCP chains that nothing else names; a
// configuration that learns them on demand is complete without them, and
// one that does not is not.
func TestOnDemandClusters(t *testing.T) {
	c := &Config{
		Inbound: &Listener{Name: InboundListener, Chains: []*FilterChain{
			{Name: "in-8080", Target: Target{Cluster: "inbound|8080"}},
			{Name: "in-loop", Target: Target{Cluster: "outbound|80|in"}}, // named by the inbound listener too
		}},
		Outbound: &Listener{Name: OutboundListener,
			Chains: []*FilterChain{
				{Name: "a", Target: Target{Cluster: "outbound|80|a"}},
				{Name: "a-pod", Target: Target{Cluster: "outbound|80|a"}}, // the same Service by pod address
				{Name: "b", Target: Target{Cluster: "outbound|80|b"}},
				{Name: "in", Target: Target{Cluster: "outbound|80|in"}},
				{Name: "routed", Target: Target{Cluster: "outbound|80|routed"}}, // and by a route
				{Name: "logged", Target: Target{Cluster: "outbound|80|logged"}, AccessLog: true},
				{Name: "egress", Target: Target{Cluster: "outbound|80|egress"}, Egress: &EgressMeta{}},
				{Name: "http", Target: Target{RouteConfig: "80"}},
				{Name: "passthrough", Target: Target{Cluster: PassthroughCluster}},
				nil,
			},
			Default: &FilterChain{Name: "egress|default", Target: Target{Cluster: "outbound|80|default"}}},
		Routes: map[string]*RouteConfig{"80": {Name: "80", VirtualHosts: []*VirtualHost{
			{Name: "r", Routes: []*Route{{Clusters: []WeightedCluster{{Name: "outbound|80|routed"}}}}}}}},
	}
	wantOD := []string{"outbound|80|a", "outbound|80|b", "outbound|80|logged"}
	if got := c.OnDemandClusters(); !slices.Equal(got, wantOD) {
		t.Fatalf("OnDemandClusters = %q, want %q", got, wantOD)
	}
	all := []string{"inbound|8080", PassthroughCluster, ControlPlaneCluster, "outbound|80|a", "outbound|80|b", "outbound|80|default",
		"outbound|80|egress", "outbound|80|in", "outbound|80|logged", "outbound|80|routed"}
	slices.Sort(all)
	if got := c.RequiredClusters(); !slices.Equal(got, all) {
		t.Errorf("RequiredClusters without OnDemand = %q, want every cluster named %q", got, all)
	}
	c.OnDemand = true
	required := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return slices.Contains(wantOD, n) })
	if got := c.RequiredClusters(); !slices.Equal(got, required) {
		t.Errorf("RequiredClusters = %q, want %q", got, required)
	}

	c.Clusters = map[string]*Cluster{}
	for _, n := range required {
		c.Clusters[n] = &Cluster{Name: n, Kind: KindStatic}
	}
	c.TrustBundle = x509bundle.New(spiffeid.RequireTrustDomainFromString("cluster.local"))
	if got := c.Missing(); len(got) != 0 {
		t.Errorf("on demand, without the demanded clusters: Missing = %q", got)
	}
	// One that arrives needs its endpoints, as any EDS cluster does.
	c.Clusters["outbound|80|b"] = &Cluster{Name: "outbound|80|b", Kind: KindEDS}
	if got := c.Missing(); !slices.Equal(got, []string{"endpoints outbound|80|b"}) {
		t.Errorf("a demanded cluster without its endpoints: Missing = %q", got)
	}
	c.Endpoints = map[string][]Endpoint{"outbound|80|b": nil}
	c.OnDemand = false
	if got, want := c.Missing(), []string{"cluster outbound|80|a", "cluster outbound|80|logged"}; !slices.Equal(got, want) {
		t.Errorf("not on demand: Missing = %q, want %q", got, want)
	}

	if got := (&Config{Inbound: c.Inbound}).OnDemandClusters(); got != nil {
		t.Errorf("no outbound listener: OnDemandClusters = %q", got)
	}
	if got := (&Config{Outbound: &Listener{Chains: []*FilterChain{{Target: Target{Cluster: PassthroughCluster}}}}}).OnDemandClusters(); got != nil {
		t.Errorf("no in-mesh chain: OnDemandClusters = %q", got)
	}
}

// TestClustersARouteAnswersFor: a route with cluster_not_found_response_code
// answers for a cluster it lacks, so its clusters are not required (the
// control plane names "unresolved|…" for a backendRef that does not
// resolve, which no configuration has) but are subscribed to, and one of
// them is never learnt on demand; a route without it requires its clusters.
func TestClustersARouteAnswersFor(t *testing.T) {
	for _, onDemand := range []bool{false, true} {
		c := &Config{OnDemand: onDemand,
			Outbound: &Listener{Name: OutboundListener, Chains: []*FilterChain{
				{Name: "split", Target: Target{Cluster: "outbound|80|split"}},
				{Name: "tcp", Target: Target{Cluster: "outbound|80|tcp"}},
			}},
			Routes: map[string]*RouteConfig{"80": {Name: "80", VirtualHosts: []*VirtualHost{{Name: "v", Routes: []*Route{
				{ClusterNotFound: 500, Clusters: []WeightedCluster{{Name: "unresolved|80|missing.demo"}, {Name: "outbound|80|split"}}},
				{Clusters: []WeightedCluster{{Name: "outbound|80|routed"}}},
			}}}}},
		}
		required := []string{"outbound|80|routed", "outbound|80|split", "outbound|80|tcp"}
		subscribed := []string{"outbound|80|routed", "outbound|80|split", "outbound|80|tcp", "unresolved|80|missing.demo"}
		if onDemand {
			// tcp is learnt on demand; split is named by a route, so it
			// is subscribed to, not learnt on demand, and required by
			// neither its chain (on demand) nor its route (which answers
			// for it): a connection on its chain waits for it.
			required = []string{"outbound|80|routed"}
			subscribed = []string{"outbound|80|routed", "outbound|80|split", "unresolved|80|missing.demo"}
			if got := c.OnDemandClusters(); !slices.Equal(got, []string{"outbound|80|tcp"}) {
				t.Errorf("OnDemandClusters = %q", got)
			}
		}
		if got := c.RequiredClusters(); !slices.Equal(got, required) {
			t.Errorf("on demand %t: RequiredClusters = %q, want %q", onDemand, got, required)
		}
		if got := c.SubscribedClusters(); !slices.Equal(got, subscribed) {
			t.Errorf("on demand %t: SubscribedClusters = %q, want %q", onDemand, got, subscribed)
		}
	}
}
