package ads

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/controlplane/xds"
	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// The message limit (names.MaxXDSMessageSize) in tests: small, so an
// oversized route configuration is a few hundred routes, not 16 MiB.
const testMaxMsg = 32 << 10

// routesGen serves withRoutes(0, "80", "80") with route configuration "80"
// holding n routes of about 60 bytes each; set swaps the set it serves
// (each a new one: generated resources are never modified).
type routesGen struct {
	mu  sync.Mutex
	res xds.Resources
}

func (g *routesGen) Generate(xds.Node) (xds.Resources, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.res, nil
}

func (g *routesGen) set(t *testing.T, n int) {
	t.Helper()
	res := withRoutes(t, 0, "80", "80")
	rc := res[resource.RouteType][0].(*routev3.RouteConfiguration)
	vh := &routev3.VirtualHost{Name: "web.demo", Domains: []string{"*"}}
	for i := range n {
		vh.Routes = append(vh.Routes, &routev3.Route{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: fmt.Sprintf("/tenant-%05d/api/v1/", i)}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "outbound|80|web.demo"}}},
		})
	}
	rc.VirtualHosts = []*routev3.VirtualHost{vh}
	g.mu.Lock()
	g.res = res
	g.mu.Unlock()
}

// routeCount is the number of routes in a route response's one resource.
func routeCount(t *testing.T, anys interface{ GetValue() []byte }) int {
	t.Helper()
	rc := &routev3.RouteConfiguration{}
	if err := proto.Unmarshal(anys.GetValue(), rc); err != nil {
		t.Fatal(err)
	}
	return len(rc.GetVirtualHosts()[0].GetRoutes())
}

// oversizeStart serves 10 routes with the test limit.
func oversizeStart(t *testing.T) (*harness, *routesGen) {
	gen := &routesGen{}
	gen.set(t, 10)
	return newHarness(t, harnessOpts{gen: gen, maxMsg: testMaxMsg}), gen
}

// checkWithheld: after a change to 1,000 routes (about 60 KiB), the route
// type is withheld in the status, counted once, and not published.
func checkWithheld(t *testing.T, h *harness, gen *routesGen, running string) {
	t.Helper()
	gen.set(t, 1000)
	h.change()
	n, _ := h.status("app-1.demo")
	if !strings.Contains(n.GenerateError, "route response would be") || !strings.Contains(n.GenerateError, fmt.Sprintf("over the xDS message limit of %d bytes", testMaxMsg)) {
		t.Fatalf("status error = %q, want the route response over the limit", n.GenerateError)
	}
	rs := h.typeStatus("app-1.demo", resource.RouteType)
	if w := rs.Withheld; w == nil || w.Size <= testMaxMsg || w.Limit != testMaxMsg || w.Version == running || w.Version == "" || w.Time.IsZero() {
		t.Fatalf("route status: withheld %+v, want a new version over %d bytes", w, testMaxMsg)
	}
	if rs.Version != running {
		t.Fatalf("route status: version %s, want the one the sidecar runs, %s", rs.Version, running)
	}
	if s, err := h.srv.cache.GetSnapshot("app-1.demo"); err != nil || s.GetVersion(resource.RouteType) != running {
		t.Fatalf("published route version %v (%v), want %s", s, err, running)
	}
	if v := testutil.ToFloat64(h.srv.metrics.oversized.WithLabelValues("route")); v != 1 {
		t.Fatalf("weft_xds_oversized_responses_total{type=route} = %v, want 1", v)
	}
	for _, typ := range []string{"cluster", "listener", "endpoint", "secret"} {
		if v := testutil.ToFloat64(h.srv.metrics.oversized.WithLabelValues(typ)); v != 0 {
			t.Fatalf("weft_xds_oversized_responses_total{type=%s} = %v, want 0", typ, v)
		}
	}
	if v := testutil.ToFloat64(h.srv.metrics.generateErrors); v != 0 {
		t.Fatalf("weft_xds_generate_errors_total = %v: an oversized snapshot is not a generation error", v)
	}

	// The same snapshot in the next round: still withheld, not counted
	// (nor logged) again.
	h.change()
	if v := testutil.ToFloat64(h.srv.metrics.oversized.WithLabelValues("route")); v != 1 {
		t.Fatalf("after a second round: weft_xds_oversized_responses_total{type=route} = %v, want 1", v)
	}
	if rs2 := h.typeStatus("app-1.demo", resource.RouteType); rs2.Withheld == nil || *rs2.Withheld != *rs.Withheld {
		t.Fatalf("after a second round: withheld %+v, want %+v", rs2.Withheld, rs.Withheld)
	}
}

// checkCleared: the snapshot published after a withheld one clears it.
func checkCleared(t *testing.T, h *harness) {
	t.Helper()
	n, _ := h.status("app-1.demo")
	if n.GenerateError != "" {
		t.Fatalf("status error %q after a good snapshot", n.GenerateError)
	}
	if w := h.typeStatus("app-1.demo", resource.RouteType).Withheld; w != nil {
		t.Fatalf("route still withheld after a good snapshot: %+v", w)
	}
}

// TestOversizedSnapshotWithheldSotW (security review F2): a route
// configuration whose response would exceed the message limit is not
// sent; the sidecar keeps the one it runs, the counter and status say so,
// and the next snapshot that fits is delivered on the same stream.
func TestOversizedSnapshotWithheldSotW(t *testing.T) {
	h, gen := oversizeStart(t)
	c := openSotW(h, saID("demo", "app"))
	reqs := []*discovery.DiscoveryRequest{
		{Node: node("app-1.demo"), TypeUrl: resource.ClusterType},
		{TypeUrl: resource.EndpointType, ResourceNames: []string{"outbound|80|web.demo"}},
		{TypeUrl: resource.ListenerType},
		{TypeUrl: resource.RouteType, ResourceNames: []string{"80"}},
		{TypeUrl: resource.SecretType},
	}
	for _, r := range reqs {
		c.send(r)
	}
	got := map[string]*discovery.DiscoveryResponse{}
	for range reqs {
		r := c.next()
		got[r.GetTypeUrl()] = r
		c.send(&discovery.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce(),
			ResourceNames: map[string][]string{resource.EndpointType: {"outbound|80|web.demo"}, resource.RouteType: {"80"}}[r.GetTypeUrl()]})
	}
	running := got[resource.RouteType].GetVersionInfo()
	wefttest.Eventually(t, "routes SYNCED", func() bool { return h.typeStatus("app-1.demo", resource.RouteType).State == StateSynced })

	checkWithheld(t, h, gen, running)

	// Routes that fit again: the next response on the stream is theirs
	// (had the oversized one been sent, it would come first).
	gen.set(t, 11)
	h.change()
	r := c.next()
	if r.GetTypeUrl() != resource.RouteType || r.GetVersionInfo() == running || len(r.GetResources()) != 1 || routeCount(t, r.GetResources()[0]) != 11 {
		t.Fatalf("after the fix: got %s %s, want the 11 routes", r.GetTypeUrl(), r.GetVersionInfo())
	}
	checkCleared(t, h)
	c.send(&discovery.DiscoveryRequest{TypeUrl: resource.RouteType, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce(), ResourceNames: []string{"80"}})
	wefttest.Eventually(t, "routes SYNCED on the new version", func() bool {
		s := h.typeStatus("app-1.demo", resource.RouteType)
		return s.State == StateSynced && s.Acked == r.GetVersionInfo()
	})
}

// TestOversizedSnapshotWithheldDelta is the SotW test over delta xDS.
func TestOversizedSnapshotWithheldDelta(t *testing.T) {
	h, gen := oversizeStart(t)
	c := openDelta(h, saID("demo", "app"))
	types := []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType}
	subscribeDelta(c, "app-1.demo", types...)
	got := map[string]*discovery.DeltaDiscoveryResponse{}
	for range types {
		r := c.next()
		got[r.GetTypeUrl()] = r
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}
	running := got[resource.RouteType].GetSystemVersionInfo()
	wefttest.Eventually(t, "routes SYNCED", func() bool { return h.typeStatus("app-1.demo", resource.RouteType).State == StateSynced })

	checkWithheld(t, h, gen, running)

	gen.set(t, 11)
	h.change()
	r := c.next()
	if r.GetTypeUrl() != resource.RouteType || r.GetSystemVersionInfo() == running || len(r.GetResources()) != 1 ||
		routeCount(t, r.GetResources()[0].GetResource()) != 11 {
		t.Fatalf("after the fix: got %s %s, want the 11 routes", r.GetTypeUrl(), r.GetSystemVersionInfo())
	}
	checkCleared(t, h)
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.RouteType, ResponseNonce: r.GetNonce()})
	wefttest.Eventually(t, "routes SYNCED on the new version", func() bool {
		s := h.typeStatus("app-1.demo", resource.RouteType)
		return s.State == StateSynced && s.Acked == r.GetSystemVersionInfo()
	})
}

// TestOversizedFirstSnapshot: a sidecar whose first snapshot is too large
// gets no response at all (no stream error, nothing to reconnect for), and
// its status says why.
func TestOversizedFirstSnapshot(t *testing.T) {
	gen := &routesGen{}
	gen.set(t, 1000)
	h := newHarness(t, harnessOpts{gen: gen, maxMsg: testMaxMsg})
	c := openSotW(h, saID("demo", "app"))
	c.send(&discovery.DiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	c.send(&discovery.DiscoveryRequest{TypeUrl: resource.RouteType, ResourceNames: []string{"80"}})
	wefttest.Eventually(t, "route withheld in the status", func() bool {
		return h.typeStatus("app-1.demo", resource.RouteType).Withheld != nil
	})
	if v := testutil.ToFloat64(h.srv.metrics.oversized.WithLabelValues("route")); v != 1 {
		t.Fatalf("weft_xds_oversized_responses_total{type=route} = %v, want 1", v)
	}
	gen.set(t, 10)
	h.change()
	r := c.next() // the listeners, or the routes: nothing was sent before
	if r.GetTypeUrl() == resource.RouteType && routeCount(t, r.GetResources()[0]) != 10 {
		t.Fatalf("first route response has %d routes, want 10", routeCount(t, r.GetResources()[0]))
	}
	checkCleared(t, h)
}

// TestResponseSizesBoundWhatIsSent: the sizes generate checks are those of
// the responses go-control-plane sends, to the nonce's length.
func TestResponseSizesBoundWhatIsSent(t *testing.T) {
	h, gen := oversizeStart(t)
	gen.set(t, 50)
	res, _ := gen.Generate(xds.Node{})
	_, _, sizes, err := buildSnapshotSized(res, nil, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	check := func(proto string, typ string, want, sent int) {
		t.Helper()
		if sent > want || want-sent > len(maxNonce) {
			t.Errorf("%s %s: sized %d bytes, sent %d", proto, typeName(typ), want, sent)
		}
	}

	s := openSotW(h, saID("demo", "app"))
	s.send(&discovery.DiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	s.send(&discovery.DiscoveryRequest{TypeUrl: resource.RouteType, ResourceNames: []string{"80"}})
	s.send(&discovery.DiscoveryRequest{TypeUrl: resource.ClusterType})
	for range 3 {
		r := s.next()
		check("SotW", r.GetTypeUrl(), sizes[r.GetTypeUrl()].sotw, proto.Size(r))
	}

	d := openDelta(h, saID("demo", "app"))
	d.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType})
	d.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.RouteType})
	d.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
	for range 3 {
		r := d.next()
		check("delta", r.GetTypeUrl(), sizes[r.GetTypeUrl()].delta, proto.Size(r))
	}
}

// TestOversizedResponseEndsStream: what generate cannot foresee (here a
// resumed delta stream claiming to hold a thousand listeners, all to be
// removed) is refused on the wire: the stream ends with ResourceExhausted,
// which the sidecar backs off from, and the refusal is counted.
func TestOversizedResponseEndsStream(t *testing.T) {
	h, _ := oversizeStart(t)
	held := map[string]string{}
	for i := range 1000 {
		held[fmt.Sprintf("outbound|%05d|gone.demo.svc.cluster.local", i)] = "v0"
	}
	c := openDelta(h, saID("demo", "app"))
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType, InitialResourceVersions: held})
	err := c.refused()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "over the xDS message limit") {
		t.Fatalf("stream ended with %v, want ResourceExhausted over the limit", err)
	}
	if v := testutil.ToFloat64(h.srv.metrics.oversized.WithLabelValues("listener")); v != 1 {
		t.Fatalf("weft_xds_oversized_responses_total{type=listener} = %v, want 1", v)
	}
}

// TestMaxMessageSize: the default is the contract's limit, and no server
// sends more than sidecars receive.
func TestMaxMessageSize(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if h.srv.maxMsg != names.MaxXDSMessageSize {
		t.Fatalf("default limit %d, want names.MaxXDSMessageSize (%d)", h.srv.maxMsg, names.MaxXDSMessageSize)
	}
	cfg := Config{Generator: h.gen, Authorizer: h.auth, Bundle: h.ca.Bundle()}
	for _, n := range []int{-1, names.MaxXDSMessageSize + 1} {
		cfg.MaxMessageSize = n
		if _, err := New(cfg); err == nil {
			t.Errorf("New accepted MaxMessageSize %d", n)
		}
	}
	for _, n := range []int{1, names.MaxXDSMessageSize} {
		cfg.MaxMessageSize = n
		if s, err := New(cfg); err != nil || s.maxMsg != n {
			t.Errorf("New with MaxMessageSize %d: %v", n, err)
		}
	}
}
