package ads

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/controlplane/xds"
)

// TestSubscribedNamesBounded: a client holding a pod's SVID subscribes by
// name to whatever it likes, one request after another, each under the
// message limit. The stream is refused (ResourceExhausted) once it
// subscribes to more than MaxSubscribedNames of one type; names it
// unsubscribes from free room, and another type has its own room.
func TestSubscribedNamesBounded(t *testing.T) {
	h := newHarness(t, harnessOpts{gen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"})})
	c := openDelta(h, saID("demo", "app"))
	ask := func(typ string, sub, unsub []string) {
		t.Helper()
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub})
	}
	// answered reads responses (acking each) until one of typ removes
	// name: the control plane's "does not exist" for it.
	answered := func(typ, name string) {
		t.Helper()
		for {
			r := c.next()
			c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
			for _, n := range r.GetRemovedResources() {
				if r.GetTypeUrl() == typ && n == name {
					return
				}
			}
		}
	}
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{"*"}})
	const chunk = 1 << 13
	names := func(prefix string, from, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s|%d", prefix, from+i)
		}
		return out
	}
	for i := 0; i < MaxSubscribedNames; i += chunk {
		batch := names("outbound|80|scan", i, chunk)
		ask(resource.ClusterType, batch, nil)
		answered(resource.ClusterType, batch[chunk-1])
	}
	// At the limit: one unsubscribed, one more subscribed.
	ask(resource.ClusterType, []string{"outbound|80|swap"}, []string{"outbound|80|scan|0"})
	answered(resource.ClusterType, "outbound|80|swap")
	// Another type's names are counted apart.
	ask(resource.EndpointType, []string{"outbound|80|elsewhere"}, nil)
	answered(resource.EndpointType, "outbound|80|elsewhere")
	if v := testutil.ToFloat64(h.srv.metrics.refused.WithLabelValues("ResourceExhausted")); v != 0 {
		t.Fatalf("refused{ResourceExhausted} = %v at the limit", v)
	}
	// Past it.
	ask(resource.ClusterType, []string{"outbound|80|one-too-many"}, nil)
	err := c.ended()
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("stream subscribed past MaxSubscribedNames ended with %v, want ResourceExhausted", err)
	}
	if v := testutil.ToFloat64(h.srv.metrics.refused.WithLabelValues("ResourceExhausted")); v != 1 {
		t.Fatalf("refused{ResourceExhausted} = %v", v)
	}
}

// lookUpGen is meshGen with destination listeners: every name of dests
// exists in the mesh; a node that looks destinations up is generated the
// ones it subscribes to, another all (as the translator does). It
// records the nodes it was asked for.
type lookUpGen struct {
	*meshGen
	dests []string
	mu    sync.Mutex
	asked []xds.Node
}

func (g *lookUpGen) Generate(n xds.Node) (xds.Resources, error) {
	res, err := g.meshGen.Generate(n)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.asked = append(g.asked, n)
	dests := g.dests
	g.mu.Unlock()
	for _, name := range dests {
		if n.DestinationListeners && (!n.LookedUp || slices.Contains(n.Destinations, name)) {
			ap := netip.MustParseAddrPort(name)
			res[resource.ListenerType] = append(res[resource.ListenerType], &listenerv3.Listener{Name: name,
				Address: socket(ap.Addr().String(), uint32(ap.Port())), BindToPort: wrapperspb.Bool(false)})
		}
	}
	return res, nil
}

// HasDestination is translate.Generator's: whether name exists.
func (g *lookUpGen) HasDestination(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Contains(g.dests, name)
}

// setDests replaces the destinations that exist.
func (g *lookUpGen) setDests(dests []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dests = dests
}

func (g *lookUpGen) last() xds.Node {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.asked[len(g.asked)-1]
}

// TestDestinationsGeneratedAsAsked: a node that looks destinations up
// (client feature weft.destination_listeners, listeners by name) is
// generated the destination listeners it subscribes to, not every one of
// the mesh, so what it costs follows what it uses; a new destination
// subscribed to is generated at once, before the request is answered: the
// response carries its listener, or says it does not exist, with no change
// of the mesh.
func TestDestinationsGeneratedAsAsked(t *testing.T) {
	gen := &lookUpGen{meshGen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"}),
		dests: []string{"198.19.0.10:80", "198.19.0.11:80", "198.19.0.12:80"}}
	h := newHarness(t, harnessOpts{gen: gen})
	c := openDelta(h, saID("demo", "app"))
	next := func() *discovery.DeltaDiscoveryResponse {
		t.Helper()
		for {
			r := c.next()
			c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
			if r.GetTypeUrl() == resource.ListenerType {
				return r
			}
		}
	}
	sent := func(r *discovery.DeltaDiscoveryResponse) []string {
		var out []string
		for _, res := range r.GetResources() {
			out = append(out, res.GetName())
		}
		slices.Sort(out)
		return out
	}
	c.send(&discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "app-1.demo", ClientFeatures: []string{names.FeatureDestinationListeners}},
		TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{"inbound", "outbound"}})
	if got := sent(next()); !slices.Equal(got, []string{"inbound", "outbound"}) {
		t.Fatalf("first listeners %v", got)
	}
	if n := gen.last(); !n.DestinationListeners || !n.LookedUp || len(n.Destinations) != 0 {
		t.Fatalf("generated for %+v, want a node that looks destinations up and has asked for none", n)
	}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{"198.19.0.11:80", "198.19.0.99:80"}})
	r := next()
	if got := sent(r); !slices.Equal(got, []string{"198.19.0.11:80"}) || !slices.Equal(r.GetRemovedResources(), []string{"198.19.0.99:80"}) {
		t.Fatalf("asking for a destination and a missing one: sent %v, removed %v", got, r.GetRemovedResources())
	}
	if n := gen.last(); !slices.Equal(n.Destinations, []string{"198.19.0.11:80", "198.19.0.99:80"}) {
		t.Fatalf("generated for destinations %v, want those subscribed to", n.Destinations)
	}
	// A change of the mesh: still only those subscribed to.
	gen.mu.Lock()
	before := len(gen.asked)
	gen.mu.Unlock()
	h.change()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) { // polling, not pacing
		gen.mu.Lock()
		n := len(gen.asked)
		gen.mu.Unlock()
		if n > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no generation after a change")
		}
	}
	if n := gen.last(); !n.LookedUp || !slices.Equal(n.Destinations, []string{"198.19.0.11:80", "198.19.0.99:80"}) {
		t.Fatalf("after a change, generated for %+v", n)
	}
}
