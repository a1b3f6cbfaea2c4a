package ads

import (
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// Cases an attack review of the endpoint cache found (each failed before
// its fix).

// publish puts a list and holds it in one step: a node publishing a list
// the cache already holds (so nothing is put) keeps it held even if the
// list's only other holder lets go before the node's snapshot is out.
// (put, then hold under a second lock, let another node's leave take the
// assignments in between: the node was published with clusters whose
// endpoints never came.)
func TestEDSPublishHoldsWhatItPuts(t *testing.T) {
	e := newEDSCache()
	vs := map[string]string{"x": "vx"}
	items := map[string]types.ResourceWithTTL{"x": {Resource: claOf("x", "198.18.0.1")}}
	if err := e.publish("web-1.demo", "L", vs, items); err != nil {
		t.Fatal(err)
	}
	e.settle("web-1.demo")
	if err := e.publish("app-1.demo", "L", vs, items); err != nil { // nothing to put
		t.Fatal(err)
	}
	e.leave("web-1.demo") // before app-1's snapshot is out
	e.settle("app-1.demo")
	if got := e.held(); !maps.Equal(got, vs) {
		t.Fatalf("app-1 holds %v; the cache holds %v", vs, got)
	}
	ch := make(chan cachev3.DeltaResponse, 1)
	if _, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.EndpointType},
		subOf(false, nil, "x"), ch); err != nil {
		t.Fatal(err)
	}
	if len(ch) == 0 {
		t.Fatal("app-1 subscribed to x, its snapshot's assignment, and was sent nothing")
	}
}

// A publication that failed (no settle) is undone by the next one, also
// when the next snapshot's list is the one the node already holds: the node
// is then served that list, and the failed one is let go.
func TestEDSFailedPublicationUndone(t *testing.T) {
	e := newEDSCache()
	l1 := map[string]string{"x": "vx"}
	l2 := map[string]string{"y": "vy"}
	items := map[string]types.ResourceWithTTL{"x": {Resource: claOf("x", "198.18.0.1")}, "y": {Resource: claOf("y", "198.18.0.2")}}
	if err := e.publish("app-1.demo", "L1", l1, items); err != nil {
		t.Fatal(err)
	}
	e.settle("app-1.demo")
	// A wildcard stream of the node, holding x.
	ch := make(chan cachev3.DeltaResponse, 2)
	if _, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.EndpointType, ResponseNonce: "1"},
		subOf(true, l1), ch); err != nil {
		t.Fatal(err)
	}
	if err := e.publish("app-1.demo", "L2", l2, items); err != nil { // its SetSnapshot fails: no settle
		t.Fatal(err)
	}
	if r := <-ch; len(r.GetNextVersionMap()) != 2 {
		t.Fatalf("the wildcard stream was sent %v when L2 was readied, want y added", r.GetNextVersionMap())
	}
	if _, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.EndpointType, ResponseNonce: "2"},
		subOf(true, map[string]string{"x": "vx", "y": "vy"}), ch); err != nil {
		t.Fatal(err)
	}
	if err := e.publish("app-1.demo", "L1", l1, items); err != nil { // the next snapshot has L1 again
		t.Fatal(err)
	}
	e.settle("app-1.demo")
	if n := e.nodes["app-1.demo"]; n == nil || *n != (edsNode{cur: "L1"}) {
		t.Fatalf("app-1 published L1 and is served %+v", n)
	}
	if got := e.held(); !maps.Equal(got, l1) {
		t.Fatalf("the cache holds %v, want L1's alone", got)
	}
	r := <-ch
	out, _ := r.GetDeltaDiscoveryResponse()
	if len(out.GetRemovedResources()) != 1 || out.GetRemovedResources()[0] != "y" {
		t.Fatalf("the wildcard stream was told of removed %v when the failed L2 was undone, want y", out.GetRemovedResources())
	}
}

// SotW: a NACK of the first EDS response has no version; the cache answers
// it with everything subscribed again, as go-control-plane's snapshot
// cache did, not with an empty response that a client could ACK while
// running none of the assignments (Status would say SYNCED); NACKed again,
// the endpoints stay NACKED.
func TestSotWNACKOfFirstEndpointsResent(t *testing.T) {
	gen := newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"})
	h := newHarness(t, harnessOpts{gen: gen})
	c := openSotW(h, saID("demo", "app"))
	names := []string{"outbound|80|web.demo"}
	c.send(&discovery.DiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.EndpointType, ResourceNames: names})
	r := c.next()
	if len(r.GetResources()) != 1 {
		t.Fatalf("first EDS response: %d resources", len(r.GetResources()))
	}
	nack := func(r *discovery.DiscoveryResponse) {
		c.send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names, ResponseNonce: r.GetNonce(),
			ErrorDetail: &statuspb.Status{Message: "rejected"}})
	}
	nack(r)
	again := c.next()
	if len(again.GetResources()) != 1 || again.GetVersionInfo() != r.GetVersionInfo() {
		t.Fatalf("the NACK was answered with %d resources at %q, want the NACKed content again at %q",
			len(again.GetResources()), again.GetVersionInfo(), r.GetVersionInfo())
	}
	nack(again)
	wefttest.Eventually(t, "NACKED", func() bool {
		ts := h.typeStatus("app-1.demo", resource.EndpointType)
		return ts.State == StateNacked && ts.NACKs == 2
	})
}

// -race: streams subscribe, unsubscribe and ACK while rounds change
// endpoints and a node reconnects (go-control-plane mutates the
// subscription maps the cache's watches read; the cache must only read
// them while the watch is open). From the review; bounded: 15 rounds, 200
// requests per stream.
func TestEDSRaceStress(t *testing.T) {
	names := []string{"outbound|80|a.demo", "outbound|80|b.demo", "outbound|80|c.demo"}
	gen := newMeshGen(map[string]string{names[0]: "198.18.0.1", names[1]: "198.18.0.2", names[2]: "198.18.0.3"})
	h := newHarness(t, harnessOpts{gen: gen})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	run := func(sa, nodeID string, rounds int) {
		for r := range rounds {
			c := openDelta(h, saID("demo", sa))
			_ = c.stream.Send(&discovery.DeltaDiscoveryRequest{Node: node(nodeID), TypeUrl: resource.ClusterType})
			_ = c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: names})
			for i := 0; ; i++ {
				select {
				case <-stop:
					c.cancel()
					return
				case resp, ok := <-c.resps:
					if !ok {
						return
					}
					_ = c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()})
				case <-time.After(time.Millisecond):
				}
				n := names[i%len(names)]
				if i%2 == 0 {
					_ = c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesUnsubscribe: []string{n}})
				} else {
					_ = c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{n, "*"}})
				}
				if i == 200 {
					c.cancel()
					if r < rounds-1 {
						break
					}
					return
				}
			}
		}
	}
	wg.Go(func() { run("app", "app-1.demo", 3) })
	wg.Go(func() { run("web", "web-1.demo", 1) })
	for i := range 15 {
		gen.set(func(g *meshGen) { g.addr[names[i%3]] = fmt.Sprintf("198.18.1.%d", i) })
		h.change()
		time.Sleep(30 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
}

// A stream asking for a type outside the contract is refused: each type
// holds a watch and room in the stream's response buffer, sized for the
// types go-control-plane knows.
func TestUnservedTypeRefused(t *testing.T) {
	for _, typ := range []string{resource.RuntimeType, resource.ScopedRouteType, "type.googleapis.com/weft.Invented"} {
		t.Run(typ, func(t *testing.T) {
			h := newHarness(t, harnessOpts{})
			c := openDelta(h, saID("demo", "app"))
			c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ClusterType})
			c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ})
			for {
				r, ok := <-c.resps
				if !ok {
					break
				}
				c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
			}
			if status.Code(c.err) != codes.InvalidArgument {
				t.Fatalf("stream asking for %s ended with %v, want InvalidArgument", typ, c.err)
			}
			if v := testutil.ToFloat64(h.srv.metrics.refused.WithLabelValues("InvalidArgument")); v != 1 {
				t.Fatalf("refused{InvalidArgument} = %v", v)
			}
		})
	}
}

// A watch scanned under the read lock is scanned again before it is kept
// when what its node is served changed in between (hold): the addition is
// not missed.
func TestEDSWatchSeesAHoldBetweenScanAndRegistration(t *testing.T) {
	e := newEDSCache()
	ab := map[string]string{"a": "va", "b": "vb"}
	items := map[string]types.ResourceWithTTL{"a": {Resource: claOf("a", "198.18.0.1")}, "b": {Resource: claOf("b", "198.18.0.2")}}
	if err := e.publish("n", "La", map[string]string{"a": "va"}, items); err != nil {
		t.Fatal(err)
	}
	e.settle("n")
	// m holds another list naming a, k one naming a and b: the cache
	// holds both, and m going frees nothing.
	for node, list := range map[string]struct {
		id string
		vs map[string]string
	}{"m": {"La2", map[string]string{"a": "va"}}, "k": {"Lab2", ab}} {
		if err := e.publish(node, list.id, list.vs, items); err != nil {
			t.Fatal(err)
		}
		e.settle(node)
	}
	w := &edsWatch{node: "n", sub: subOf(false, map[string]string{"a": "va"}, "a", "b"), dreq: &discovery.DeltaDiscoveryRequest{}, dch: make(chan cachev3.DeltaResponse, 1)}
	// What watch does, with the hold landing between its two locks.
	e.mu.RLock()
	seen := e.epoch
	if w.answer(e, nil, false) {
		t.Fatal("answered before n holds b")
	}
	e.mu.RUnlock()
	// Meanwhile m goes and n is given b (put has nothing to push: k's
	// list holds it): every change of what a node is served moves the
	// epoch the same way, so two cannot cancel.
	e.leave("m")
	if err := e.publish("n", "Lab", ab, items); err != nil {
		t.Fatal(err)
	}
	if e.epoch == seen {
		t.Fatal("the epoch did not move when m went and n was given b")
	}
	e.mu.Lock()
	sent := w.answer(e, nil, false)
	e.mu.Unlock()
	if !sent || len(w.dch) != 1 {
		t.Fatal("b not sent on the second scan")
	}
}

// Survivors of the mutation run at c0c08f7.

// A node with two streams keeps both watches indexed when one goes: an
// assignment it is given later reaches the other; and a node whose
// watches all went leaves nothing in the index.
func TestEDSWatchIndexPerNode(t *testing.T) {
	e := newEDSCache()
	items := map[string]types.ResourceWithTTL{"a": {Resource: claOf("a", "198.18.0.1")}, "b": {Resource: claOf("b", "198.18.0.2")}}
	if err := e.publish("n", "La", map[string]string{"a": "va"}, items); err != nil {
		t.Fatal(err)
	}
	e.settle("n")
	open := func() (chan cachev3.DeltaResponse, func()) {
		ch := make(chan cachev3.DeltaResponse, 1)
		cancel, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{Node: node("n"), TypeUrl: resource.EndpointType, ResponseNonce: "1"},
			subOf(false, map[string]string{"a": "va"}, "a", "b"), ch)
		if err != nil {
			t.Fatal(err)
		}
		return ch, cancel
	}
	first, cancelFirst := open()
	second, cancelSecond := open()
	cancelFirst() // that stream moved on
	if err := e.publish("n", "Lab", map[string]string{"a": "va", "b": "vb"}, items); err != nil {
		t.Fatal(err)
	}
	if len(first) != 0 || len(second) != 1 {
		t.Fatalf("answers: the cancelled watch %d, the open one %d; want 0 and 1", len(first), len(second))
	}
	cancelSecond()
	if len(e.byNode) != 0 || len(e.watches) != 0 {
		t.Fatalf("index %v, watches %d after every watch went", e.byNode, len(e.watches))
	}
}

// The endpoints' version moves only when an assignment changes or goes: a
// node letting go of a list whose assignments another list still names
// (n's and m's lists differ, as during a round, and name the same a) moves
// it not.
func TestEDSVersionMovesOnlyWithAChange(t *testing.T) {
	e := newEDSCache()
	vs := map[string]string{"a": "va"}
	items := map[string]types.ResourceWithTTL{"a": {Resource: claOf("a", "198.18.0.1")}}
	for n, list := range map[string]string{"n": "L1", "m": "L2"} {
		if err := e.publish(n, list, vs, items); err != nil {
			t.Fatal(err)
		}
		e.settle(n)
	}
	v := e.version()
	e.leave("n")
	if _, ok := e.lists["L1"]; ok || e.version() != v {
		t.Fatalf("version %s → %s (L1 let go: %v) with m's list still naming a", v, e.version(), !ok)
	}
	e.leave("m")
	if e.version() == v {
		t.Fatal("version did not move when the last holder let a go")
	}
}

// watch itself: a name given to the node between its scan and its
// registration is sent (the rescan), not left waiting for a change that
// already happened.
func TestEDSWatchRescansAfterAChangeBetweenLocks(t *testing.T) {
	e := newEDSCache()
	items := map[string]types.ResourceWithTTL{"a": {Resource: claOf("a", "198.18.0.1")}, "b": {Resource: claOf("b", "198.18.0.2")}}
	if err := e.publish("n", "La", map[string]string{"a": "va"}, items); err != nil {
		t.Fatal(err)
	}
	e.settle("n")
	betweenLocks = func() {
		if err := e.publish("n", "Lab", map[string]string{"a": "va", "b": "vb"}, items); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { betweenLocks = nil })
	ch := make(chan cachev3.DeltaResponse, 1)
	if _, err := e.CreateDeltaWatch(&discovery.DeltaDiscoveryRequest{Node: node("n"), TypeUrl: resource.EndpointType, ResponseNonce: "1"},
		subOf(false, map[string]string{"a": "va"}, "a", "b"), ch); err != nil {
		t.Fatal(err)
	}
	if len(ch) != 1 || len(e.watches) != 0 {
		t.Fatalf("b given between the locks: %d answers, %d watches kept; want it sent at once", len(ch), len(e.watches))
	}
}
