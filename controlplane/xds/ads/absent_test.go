package ads

import (
	"slices"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// TestAbsentNamesAnsweredOnce: a delta stream that subscribes by name to a
// cluster or an assignment the node's snapshot does not hold is told so at
// once, the name in removed_resources (the protocol's "does not exist";
// without it, a sidecar asking for a cluster on demand could only wait for
// its timeout); once, not in every later response; and is sent the
// resource when it appears, being still subscribed. A name it holds and
// subscribes to again is not reported absent, nor is one it unsubscribes
// from in the same request.
func TestAbsentNamesAnsweredOnce(t *testing.T) {
	gen := newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"})
	h := newHarness(t, harnessOpts{gen: gen})
	c := openDelta(h, saID("demo", "app"))
	ack := func(r *discovery.DeltaDiscoveryResponse) {
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}
	// next is the next response, which must be of type url.
	next := func(url string) *discovery.DeltaDiscoveryResponse {
		t.Helper()
		r := c.next()
		if r.GetTypeUrl() != url {
			t.Fatalf("got %s (%d resources, removed %v), want %s", typeName(r.GetTypeUrl()), len(r.GetResources()), r.GetRemovedResources(), typeName(url))
		}
		return r
	}
	names := func(r *discovery.DeltaDiscoveryResponse) []string {
		var out []string
		for _, res := range r.GetResources() {
			out = append(out, res.GetName())
		}
		return slices.Sorted(slices.Values(out))
	}

	c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	ack(next(resource.ListenerType))
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType,
		ResourceNamesSubscribe:   []string{"inbound|8080", "outbound|80|web.demo", "outbound|80|gone.demo", "outbound|80|never.demo"},
		ResourceNamesUnsubscribe: []string{"outbound|80|never.demo"}})
	r := next(resource.ClusterType)
	if got := names(r); !slices.Equal(got, []string{"inbound|8080", "outbound|80|web.demo"}) {
		t.Errorf("clusters sent %v, want the two that exist", got)
	}
	if got := r.GetRemovedResources(); !slices.Equal(got, []string{"outbound|80|gone.demo"}) {
		t.Errorf("removed_resources %v, want the absent name subscribed to (not the one unsubscribed at once)", got)
	}
	ack(r)
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{"outbound|80|web.demo", "outbound|80|gone.demo"}})
	r = next(resource.EndpointType)
	if got := names(r); !slices.Equal(got, []string{"outbound|80|web.demo"}) || !slices.Equal(r.GetRemovedResources(), []string{"outbound|80|gone.demo"}) {
		t.Errorf("endpoints: sent %v, removed %v; want web's sent and gone's removed", got, r.GetRemovedResources())
	}
	ack(r)

	// Asking again for what it holds, and for one more absent name: only
	// the new absent name is answered.
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"outbound|80|web.demo", "outbound|80|later.demo"}})
	r = next(resource.ClusterType)
	if len(r.GetResources()) != 0 || !slices.Equal(r.GetRemovedResources(), []string{"outbound|80|later.demo"}) {
		t.Errorf("second ask: sent %v, removed %v; want nothing sent and later's removed", names(r), r.GetRemovedResources())
	}
	ack(r)

	// A change of a cluster the stream holds: its response does not
	// repeat the absent names.
	gen.set(func(g *meshGen) { g.addr["outbound|80|web.demo"] = "198.18.0.17" })
	h.change()
	r = next(resource.EndpointType)
	if len(r.GetRemovedResources()) != 0 || !slices.Equal(names(r), []string{"outbound|80|web.demo"}) {
		t.Errorf("endpoint change: sent %v, removed %v; want web's alone", names(r), r.GetRemovedResources())
	}
	ack(r)

	// The absent cluster appears: sent, with its endpoints, as the stream
	// is still subscribed (in either order: the endpoints are put in their
	// cache before the snapshot naming the cluster is published).
	gen.set(func(g *meshGen) { g.addr["outbound|80|gone.demo"] = "198.18.0.9" })
	h.change()
	seen := map[string]bool{}
	for range 2 {
		r := c.next()
		url := r.GetTypeUrl()
		if url != resource.ClusterType && url != resource.EndpointType || seen[url] {
			t.Fatalf("once it exists: got %s (%v), want its cluster and its endpoints once each", typeName(url), names(r))
		}
		seen[url] = true
		if !slices.Equal(names(r), []string{"outbound|80|gone.demo"}) || len(r.GetRemovedResources()) != 0 {
			t.Errorf("%s once it exists: sent %v, removed %v; want gone's alone", typeName(url), names(r), r.GetRemovedResources())
		}
		ack(r)
	}
	// Sentinel: the next response is the listener change, not a repeat.
	gen.set(func(g *meshGen) { g.rev["app-1.demo"] = 1 })
	h.change()
	next(resource.ListenerType)
}

// TestAbsentEndpointsOfAWildcardStream: a wildcard EDS stream that also
// subscribes by name to an assignment its node is not served is told so
// (removed_resources), as the snapshot types' wildcard streams are; one
// it is served is sent, not reported absent. (An attack review, session
// 19: the wildcard branch never looked at the names asked for.)
func TestAbsentEndpointsOfAWildcardStream(t *testing.T) {
	e := newEDSCache()
	vs := map[string]string{"a": "va", "b": "vb"}
	if err := e.put("L", vs, map[string]types.ResourceWithTTL{
		"a": {Resource: claOf("a", "198.18.0.1")}, "b": {Resource: claOf("b", "198.18.0.2")}}); err != nil {
		t.Fatal(err)
	}
	e.hold("n", "L", vs)
	e.settle("n")
	ch := make(chan cachev3.DeltaResponse, 1)
	// The stream holds a (wildcard); it now also asks for b and zz by name,
	// and names "*" again, which is not a name: never reported absent.
	if _, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{Node: node("n"), TypeUrl: resource.EndpointType,
		ResponseNonce: "1", ResourceNamesSubscribe: []string{"*", "b", "zz"}}, subOf(true, map[string]string{"a": "va"}, "b", "zz"), ch); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		out, err := r.GetDeltaDiscoveryResponse()
		if err != nil {
			t.Fatal(err)
		}
		var sent []string
		for _, res := range out.GetResources() {
			sent = append(sent, res.GetName())
		}
		if !slices.Equal(sent, []string{"b"}) || !slices.Equal(out.GetRemovedResources(), []string{"zz"}) {
			t.Errorf("sent %v, removed %v; want b sent and zz removed", sent, out.GetRemovedResources())
		}
	default:
		t.Error("a wildcard EDS stream asking by name for an absent assignment got no answer")
	}
}
