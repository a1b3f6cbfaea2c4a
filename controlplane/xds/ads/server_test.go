package ads

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"
	utilclock "k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/streamauth"
	"github.com/weftmesh/weft/controlplane/streamauth/streamauthtest"
	"github.com/weftmesh/weft/controlplane/xds"
	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// ---- fakes ----

// fakeGen serves two listeners, two clusters (one EDS with its endpoints)
// and the trust bundle; a node's revision goes into its listeners'
// stat_prefix, so bumping it changes exactly that node's listener version.
type fakeGen struct {
	mu      sync.Mutex
	rev     map[string]int
	calls   map[string]int
	err     error
	invalid bool
	panics  bool
}

func newFakeGen() *fakeGen { return &fakeGen{rev: map[string]int{}, calls: map[string]int{}} }

func (g *fakeGen) Generate(n xds.Node) (xds.Resources, error) {
	id := xds.NodeID(n.Name, n.Namespace)
	g.mu.Lock()
	g.calls[id]++
	rev, err, invalid, panics := g.rev[id], g.err, g.invalid, g.panics
	g.mu.Unlock()
	if panics {
		panic("translator bug")
	}
	if err != nil {
		return nil, err
	}
	return testResources(rev, invalid), nil
}

func (g *fakeGen) set(f func(g *fakeGen)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

func (g *fakeGen) callCount(node string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[node]
}

func socket(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func testResources(rev int, invalid bool) xds.Resources {
	prefix := fmt.Sprintf("rev-%d", rev)
	inbound := &listenerv3.Listener{Name: "inbound", Address: socket("0.0.0.0", 15006), StatPrefix: prefix}
	if invalid {
		inbound.Address = socket("", 15006) // SocketAddress.address must not be empty
	}
	ads := &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
	return xds.Resources{
		resource.ListenerType: {
			inbound,
			&listenerv3.Listener{Name: "outbound", Address: socket("0.0.0.0", 15001), StatPrefix: prefix},
		},
		resource.ClusterType: {
			&clusterv3.Cluster{
				Name: "inbound|8080", ConnectTimeout: durationpb.New(time.Second),
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
				LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "inbound|8080", Endpoints: []*endpointv3.LocalityLbEndpoints{{
					LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
						Endpoint: &endpointv3.Endpoint{Address: socket("127.0.0.1", 8080)}}}},
				}}},
			},
			&clusterv3.Cluster{
				Name: "outbound|80|web.demo", ConnectTimeout: durationpb.New(time.Second),
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
			},
		},
		resource.EndpointType: {
			&endpointv3.ClusterLoadAssignment{ClusterName: "outbound|80|web.demo", Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
					Endpoint: &endpointv3.Endpoint{Address: socket("198.18.200.7", 15006)}}}},
			}}},
		},
		resource.SecretType: {
			&tlsv3.Secret{Name: "trust_bundle", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "-----BEGIN CERTIFICATE-----"}},
			}}},
		},
	}
}

// ---- harness: a Server behind real gRPC over TLS on loopback ----

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func saID(ns, sa string) spiffeid.ID { return spiffeid.RequireFromSegments(td, "ns", ns, "sa", sa) }

const serverName = "weft-controlplane.weft-system.svc"

type harness struct {
	t      testing.TB
	ca     *certs.CA
	srv    *Server
	gen    *fakeGen
	pods   *streamauthtest.Pods
	auth   *streamauth.Authorizer
	clock  *clocktesting.FakeClock
	now    func() time.Time // the CA's and TLS's clock: clock.Now, or time.Now with realClock
	rounds chan struct{}
	addr   string
	certs  sync.Map // spiffeid.ID -> tls.Certificate
}

type harnessOpts struct {
	realClock bool
	debounce  time.Duration
	maxDelay  time.Duration
	gen       xds.Generator
	maxMsg    int // Config.MaxMessageSize
	// lookupBudget, lookupBurst: Config.LookupBudget, LookupBurst.
	lookupBudget float64
	lookupBurst  time.Duration
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	// One clock for the CA, the server and both ends' TLS: the server
	// verifies client SVIDs on its clock.
	clock := wefttest.FakeClock(t)
	var caClock certs.Clock = clock
	now := clock.Now
	if o.realClock {
		caClock, now = nil, time.Now
	}
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td, Clock: caClock})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t: t, ca: ca, gen: newFakeGen(), pods: streamauthtest.New(),
		clock: clock, rounds: make(chan struct{}, 1000),
	}
	h.pods.Add("demo", "app-1", saID("demo", "app"))
	h.pods.Add("demo", "web-1", saID("demo", "web"))
	var authClock utilclock.Clock = h.clock
	if o.realClock {
		authClock = nil
	}
	h.auth, err = streamauth.New(streamauth.Config{Authenticator: h.pods, Pods: h.pods, Bundle: ca.Bundle(), Clock: authClock})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Generator: h.gen, Authorizer: h.auth, Bundle: ca.Bundle(), Clock: h.clock, Registerer: prometheus.NewRegistry(),
		Debounce: o.debounce, MaxDelay: o.maxDelay, MaxMessageSize: o.maxMsg,
		LookupBudget: o.lookupBudget, LookupBurst: o.lookupBurst,
	}
	if o.gen != nil {
		cfg.Generator = o.gen
	}
	if o.realClock {
		cfg.Clock = nil
	}
	if tt, ok := t.(*testing.T); ok {
		cfg.Logger = slog.New(slog.NewTextHandler(tt.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	h.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.srv.roundDone = func() {
		select {
		case h.rounds <- struct{}{}:
		default: // nobody counts rounds (benchmarks)
		}
	}

	serving := h.cert(spiffeid.RequireFromSegments(td, "ns", "weft-system", "sa", "weft-controlplane"), serverName)
	tlsCfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{serving},
		ClientAuth:   tls.RequestClientCert,
		NextProtos:   []string{"h2"},
		Time:         now,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			_, _, err := x509svid.ParseAndVerify(raw, ca.Bundle(), x509svid.WithTime(now()))
			return err
		},
	}
	h.now = now
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)), grpc.ChainStreamInterceptor(h.srv.StreamInterceptor()),
		grpc.WaitForHandlers(true))
	h.srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = lis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	wg.Go(func() { _ = h.srv.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		gs.Stop()
		wg.Wait()
	})
	return h
}

// cert returns a certificate for id (cached: signing is the slow part).
func (h *harness) cert(id spiffeid.ID, dns ...string) tls.Certificate {
	h.t.Helper()
	if c, ok := h.certs.Load(id); ok {
		return c.(tls.Certificate)
	}
	c := wefttest.Certificate(h.t, h.ca, id, dns...)
	h.certs.Store(id, c)
	return c
}

// dial connects as id with the token of the first pod added for id, as
// that pod's sidecar does; a zero id presents no client certificate.
func (h *harness) dial(id spiffeid.ID) discovery.AggregatedDiscoveryServiceClient {
	h.t.Helper()
	return h.dialAs(id, peerOpts{token: h.pods.DefaultToken(id)})
}

// peerOpts is what a client presents besides its certificate.
type peerOpts struct {
	token string           // "": none
	from  string           // source IP ("": 127.0.0.1)
	cert  *tls.Certificate // nil: h.cert(id)
}

// dialAs connects as id presenting o.
func (h *harness) dialAs(id spiffeid.ID, o peerOpts) discovery.AggregatedDiscoveryServiceClient {
	h.t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: wefttest.Roots(h.ca), ServerName: serverName, Time: h.now}
	switch {
	case o.cert != nil:
		cfg.Certificates = []tls.Certificate{*o.cert}
	case !id.IsZero():
		cfg.Certificates = []tls.Certificate{h.cert(id)}
	}
	opts := append(streamauthtest.DialOptions(o.token, o.from), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	conn, err := grpc.NewClient(h.addr, opts...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	return discovery.NewAggregatedDiscoveryServiceClient(conn)
}

// change reports a model change and moves the fake clock past the
// debounce; it returns once the server finished the round.
func (h *harness) change() {
	h.t.Helper()
	h.srv.Changed()
	h.clock.Step(100 * time.Millisecond)
	h.waitRound()
}

func (h *harness) waitRound() {
	h.t.Helper()
	select {
	case <-h.rounds:
	case <-time.After(10 * time.Second):
		h.t.Fatal("no regeneration round")
	}
}

func (h *harness) status(node string) (NodeStatus, bool) {
	for _, n := range h.srv.Status() {
		if n.Node == node {
			return n, true
		}
	}
	return NodeStatus{}, false
}

func (h *harness) typeStatus(node, typeURL string) TypeStatus {
	n, _ := h.status(node)
	for _, t := range n.Types {
		if t.TypeURL == typeURL {
			return t
		}
	}
	return TypeStatus{}
}

// ---- a raw ADS client, SotW or delta ----

type adsClient[Req, Resp any] struct {
	t      testing.TB
	stream grpc.BidiStreamingClient[Req, Resp]
	cancel context.CancelFunc
	resps  chan *Resp // closed when the stream ends; err says why
	err    error
}

func openSotW(h *harness, id spiffeid.ID) *adsClient[discovery.DiscoveryRequest, discovery.DiscoveryResponse] {
	return openSotWAs(h, id, peerOpts{token: h.pods.DefaultToken(id)})
}

func openDelta(h *harness, id spiffeid.ID) *adsClient[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse] {
	return openDeltaAs(h, id, peerOpts{token: h.pods.DefaultToken(id)})
}

// subscribeDelta subscribes delta stream c to types (wildcard), the first
// request naming node nodeID.
func subscribeDelta(c *adsClient[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse], nodeID string, types ...string) {
	for i, typ := range types {
		r := &discovery.DeltaDiscoveryRequest{TypeUrl: typ}
		if i == 0 {
			r.Node = node(nodeID)
		}
		c.send(r)
	}
}

func openSotWAs(h *harness, id spiffeid.ID, o peerOpts) *adsClient[discovery.DiscoveryRequest, discovery.DiscoveryResponse] {
	return openAs(h, id, o, discovery.AggregatedDiscoveryServiceClient.StreamAggregatedResources)
}

func openDeltaAs(h *harness, id spiffeid.ID, o peerOpts) *adsClient[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse] {
	return openAs(h, id, o, discovery.AggregatedDiscoveryServiceClient.DeltaAggregatedResources)
}

// openAs opens an ADS stream, SotW or delta (open), as id presenting o.
func openAs[Req, Resp any](h *harness, id spiffeid.ID, o peerOpts,
	open func(discovery.AggregatedDiscoveryServiceClient, context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[Req, Resp], error),
) *adsClient[Req, Resp] {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := open(h.dialAs(id, o), ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return startClient(h.t, s, cancel)
}

func startClient[Req, Resp any](t testing.TB, s grpc.BidiStreamingClient[Req, Resp], cancel context.CancelFunc) *adsClient[Req, Resp] {
	c := &adsClient[Req, Resp]{t: t, stream: s, cancel: cancel, resps: make(chan *Resp, 100)}
	go func() {
		defer close(c.resps)
		for {
			r, err := s.Recv()
			if err != nil {
				c.err = err
				return
			}
			c.resps <- r
		}
	}()
	t.Cleanup(func() {
		cancel()
		for range c.resps { // until the reader is done
		}
	})
	return c
}

func (c *adsClient[Req, Resp]) send(r *Req) {
	c.t.Helper()
	// io.EOF: the server ended the stream; Recv has its status.
	if err := c.stream.Send(r); err != nil && !errors.Is(err, io.EOF) {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *adsClient[Req, Resp]) next() *Resp {
	c.t.Helper()
	select {
	case r, ok := <-c.resps:
		if !ok {
			c.t.Fatalf("stream ended: %v", c.err)
		}
		return r
	case <-time.After(10 * time.Second):
		c.t.Fatal("no response")
	}
	return nil
}

// refused waits for the stream to end with an error.
func (c *adsClient[Req, Resp]) refused() error {
	c.t.Helper()
	select {
	case r, ok := <-c.resps:
		if ok {
			c.t.Fatalf("got a response, want a refusal: %v", r)
		}
		return c.err
	case <-time.After(10 * time.Second):
		c.t.Fatal("stream not refused")
	}
	return nil
}

func node(id string) *corev3.Node { return &corev3.Node{Id: id} }

// ---- tests ----

var sotwTypes = []string{resource.ClusterType, resource.ListenerType, resource.SecretType}

func TestSotWRoundTrip(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := openSotW(h, saID("demo", "app"))
	for i, typ := range sotwTypes {
		r := &discovery.DiscoveryRequest{TypeUrl: typ}
		if i == 0 {
			r.Node = node("app-1.demo") // only the first request names the node, as Envoy does
		}
		c.send(r)
	}
	got := map[string]*discovery.DiscoveryResponse{}
	for range sotwTypes {
		r := c.next()
		got[r.GetTypeUrl()] = r
	}
	if n := len(got[resource.ListenerType].GetResources()); n != 2 {
		t.Fatalf("listeners: got %d, want 2", n)
	}
	l := &listenerv3.Listener{}
	if err := got[resource.ListenerType].GetResources()[0].UnmarshalTo(l); err != nil || l.GetStatPrefix() != "rev-0" {
		t.Fatalf("listener: %v, %v", l, err)
	}

	// ACK clusters and secrets; NACK listeners.
	for _, typ := range []string{resource.ClusterType, resource.SecretType} {
		c.send(&discovery.DiscoveryRequest{TypeUrl: typ, VersionInfo: got[typ].GetVersionInfo(), ResponseNonce: got[typ].GetNonce()})
	}
	lds := got[resource.ListenerType]
	c.send(&discovery.DiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: lds.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "listener inbound: unsupported filter"}})

	wefttest.Eventually(t, "clusters SYNCED", func() bool {
		return h.typeStatus("app-1.demo", resource.ClusterType).State == StateSynced &&
			h.typeStatus("app-1.demo", resource.SecretType).State == StateSynced
	})
	wefttest.Eventually(t, "listeners NACKED", func() bool { return h.typeStatus("app-1.demo", resource.ListenerType).State == StateNacked })
	ls := h.typeStatus("app-1.demo", resource.ListenerType)
	if ls.LastNACK == nil || ls.LastNACK.Message != "listener inbound: unsupported filter" || ls.LastNACK.Version != lds.GetVersionInfo() || ls.NACKs != 1 {
		t.Fatalf("listener status: %+v, nack %+v", ls, ls.LastNACK)
	}
	if v := testutil.ToFloat64(h.srv.metrics.nacks.WithLabelValues("listener")); v != 1 {
		t.Fatalf("weft_xds_nacks_total{type=listener} = %v, want 1", v)
	}

	// The server answers a NACK with the current version again; ACKing it syncs.
	again := c.next()
	if again.GetTypeUrl() != resource.ListenerType || again.GetVersionInfo() != lds.GetVersionInfo() {
		t.Fatalf("after NACK: got %s %s", again.GetTypeUrl(), again.GetVersionInfo())
	}
	c.send(&discovery.DiscoveryRequest{TypeUrl: resource.ListenerType, VersionInfo: again.GetVersionInfo(), ResponseNonce: again.GetNonce()})
	wefttest.Eventually(t, "listeners SYNCED", func() bool { return h.typeStatus("app-1.demo", resource.ListenerType).State == StateSynced })
	if ls := h.typeStatus("app-1.demo", resource.ListenerType); ls.LastNACK == nil || ls.NACKs != 1 {
		t.Fatalf("the NACK history is gone: %+v", ls)
	}
	n, _ := h.status("app-1.demo")
	if n.Pod != "app-1" || n.Namespace != "demo" || n.SPIFFEID != saID("demo", "app").String() || n.Streams != 1 {
		t.Fatalf("node status: %+v", n)
	}
	if v := testutil.ToFloat64(h.srv.metrics.connected); v != 1 {
		t.Fatalf("connected sidecars = %v", v)
	}
}

func TestDeltaRoundTrip(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := openDelta(h, saID("demo", "app"))
	types := []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.SecretType}
	subscribeDelta(c, "app-1.demo", types...)
	got := map[string]*discovery.DeltaDiscoveryResponse{}
	for range types {
		r := c.next()
		got[r.GetTypeUrl()] = r
	}
	want := map[string][]string{
		resource.ClusterType:  {"inbound|8080", "outbound|80|web.demo"},
		resource.EndpointType: {"outbound|80|web.demo"},
		resource.ListenerType: {"inbound", "outbound"},
		resource.SecretType:   {"trust_bundle"},
	}
	for typ, names := range want {
		var gotNames []string
		for _, r := range got[typ].GetResources() {
			gotNames = append(gotNames, r.GetName())
		}
		if strings.Join(slices.Sorted(slices.Values(gotNames)), ",") != strings.Join(names, ",") {
			t.Errorf("%s: got %v, want %v", typeName(typ), gotNames, names)
		}
	}
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.SecretType} {
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: got[typ].GetNonce()})
	}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: got[resource.ListenerType].GetNonce(),
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "no such filter"}})
	wefttest.Eventually(t, "SYNCED and NACKED", func() bool {
		return h.typeStatus("app-1.demo", resource.ClusterType).State == StateSynced &&
			h.typeStatus("app-1.demo", resource.EndpointType).State == StateSynced &&
			h.typeStatus("app-1.demo", resource.ListenerType).State == StateNacked
	})
	ls := h.typeStatus("app-1.demo", resource.ListenerType)
	if ls.LastNACK.Message != "no such filter" || ls.LastNACK.Version != got[resource.ListenerType].GetSystemVersionInfo() {
		t.Fatalf("NACK: %+v", ls.LastNACK)
	}
	if v := testutil.ToFloat64(h.srv.metrics.nacks.WithLabelValues("listener")); v != 1 {
		t.Fatalf("weft_xds_nacks_total{type=listener} = %v, want 1", v)
	}

	// A new listener version fixes it: pushed, ACKed, SYNCED.
	h.gen.set(func(g *fakeGen) { g.rev["app-1.demo"] = 1 })
	h.change()
	r := c.next()
	if r.GetTypeUrl() != resource.ListenerType || len(r.GetResources()) != 2 {
		t.Fatalf("update: %s with %d resources", r.GetTypeUrl(), len(r.GetResources()))
	}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: r.GetNonce()})
	wefttest.Eventually(t, "listeners SYNCED", func() bool {
		s := h.typeStatus("app-1.demo", resource.ListenerType)
		return s.State == StateSynced && s.Acked == r.GetSystemVersionInfo()
	})
}

// connectSotW opens a SotW stream for node, takes the first listener
// response and ACKs it.
func connectSotW(h *harness, id spiffeid.ID, nodeID string) (*adsClient[discovery.DiscoveryRequest, discovery.DiscoveryResponse], *discovery.DiscoveryResponse) {
	h.t.Helper()
	c := openSotW(h, id)
	c.send(&discovery.DiscoveryRequest{Node: node(nodeID), TypeUrl: resource.ListenerType})
	r := c.next()
	c.send(&discovery.DiscoveryRequest{TypeUrl: resource.ListenerType, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
	return c, r
}

func TestGeneratorErrorKeepsLastGoodSnapshot(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c, first := connectSotW(h, saID("demo", "app"), "app-1.demo")
	published := func() string {
		s, err := h.srv.cache.GetSnapshot("app-1.demo")
		if err != nil {
			t.Fatal(err)
		}
		return s.GetVersion(resource.ListenerType)
	}

	cases := []struct {
		name string
		set  func(g *fakeGen)
		want string
	}{
		{"generator error", func(g *fakeGen) { g.err = errors.New("model broken") }, "model broken"},
		{"invalid resource", func(g *fakeGen) { g.err, g.invalid, g.rev["app-1.demo"] = nil, true, 7 }, `listener "inbound" is invalid`},
		{"panic", func(g *fakeGen) { g.invalid, g.panics = false, true }, "panicked: translator bug"},
	}
	for i, tc := range cases {
		h.gen.set(tc.set)
		h.change()
		if v := testutil.ToFloat64(h.srv.metrics.generateErrors); v != float64(i+1) {
			t.Fatalf("%s: weft_xds_generate_errors_total = %v, want %d", tc.name, v, i+1)
		}
		if n, _ := h.status("app-1.demo"); !strings.Contains(n.GenerateError, tc.want) {
			t.Fatalf("%s: status error %q does not mention %q", tc.name, n.GenerateError, tc.want)
		}
		if got := published(); got != first.GetVersionInfo() {
			t.Fatalf("%s: published listener version %s, want the last good %s", tc.name, got, first.GetVersionInfo())
		}
	}

	// Fixed: the next response is the new good version; nothing bad came before it.
	h.gen.set(func(g *fakeGen) { g.panics, g.rev["app-1.demo"] = false, 8 })
	h.change()
	r := c.next()
	l := &listenerv3.Listener{}
	if err := r.GetResources()[0].UnmarshalTo(l); err != nil {
		t.Fatal(err)
	}
	if r.GetVersionInfo() == first.GetVersionInfo() || l.GetStatPrefix() != "rev-8" || l.GetAddress().GetSocketAddress().GetAddress() == "" {
		t.Fatalf("after the fix got version %s listener %v", r.GetVersionInfo(), l)
	}
	if n, _ := h.status("app-1.demo"); n.GenerateError != "" {
		t.Fatalf("error not cleared: %q", n.GenerateError)
	}
}

// An unrelated change pushes nothing: node B's config changes, node A's
// does not. The proof is a sentinel: A's next response after the unrelated
// round must be the later change meant for A (responses of one type on one
// stream are ordered).
func TestUnrelatedChangePushesNothing(t *testing.T) {
	t.Run("sotw", func(t *testing.T) {
		h := newHarness(t, harnessOpts{})
		a, _ := connectSotW(h, saID("demo", "app"), "app-1.demo")
		b, bFirst := connectSotW(h, saID("demo", "web"), "web-1.demo")

		h.gen.set(func(g *fakeGen) { g.rev["web-1.demo"] = 1 })
		h.change()
		if r := b.next(); r.GetVersionInfo() == bFirst.GetVersionInfo() {
			t.Fatal("B got no new version")
		}
		if got := h.gen.callCount("app-1.demo"); got != 2 {
			t.Fatalf("A generated %d times, want 2 (connect + round)", got)
		}
		pushesBefore := h.typeStatus("app-1.demo", resource.ListenerType).Sent

		h.gen.set(func(g *fakeGen) { g.rev["app-1.demo"] = 5 })
		h.change()
		r := a.next()
		l := &listenerv3.Listener{}
		if err := r.GetResources()[0].UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		if l.GetStatPrefix() != "rev-5" {
			t.Fatalf("A's first response after the unrelated change is %s (stat prefix %q), want the sentinel rev-5",
				r.GetVersionInfo(), l.GetStatPrefix())
		}
		if pushesBefore == r.GetVersionInfo() {
			t.Fatal("sentinel version equals the old one")
		}
	})
	t.Run("delta", func(t *testing.T) {
		h := newHarness(t, harnessOpts{})
		open := func(id spiffeid.ID, nodeID string) *adsClient[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse] {
			c := openDelta(h, id)
			c.send(&discovery.DeltaDiscoveryRequest{Node: node(nodeID), TypeUrl: resource.ListenerType})
			c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType})
			for range 2 {
				r := c.next()
				c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
			}
			return c
		}
		a := open(saID("demo", "app"), "app-1.demo")
		b := open(saID("demo", "web"), "web-1.demo")

		h.gen.set(func(g *fakeGen) { g.rev["web-1.demo"] = 1 })
		h.change()
		if r := b.next(); r.GetTypeUrl() != resource.ListenerType {
			t.Fatalf("B got %s", r.GetTypeUrl())
		}
		h.gen.set(func(g *fakeGen) { g.rev["app-1.demo"] = 5 })
		h.change()
		r := a.next()
		l := &listenerv3.Listener{}
		if r.GetTypeUrl() != resource.ListenerType || len(r.GetResources()) == 0 {
			t.Fatalf("A's first response: %s with %d resources", r.GetTypeUrl(), len(r.GetResources()))
		}
		if err := r.GetResources()[0].GetResource().UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		if l.GetStatPrefix() != "rev-5" {
			t.Fatalf("A's first response after the unrelated change has stat prefix %q, want the sentinel rev-5", l.GetStatPrefix())
		}
	})
}

// Five changes within 100ms make one regeneration.
func TestChangesAreDebounced(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	connectSotW(h, saID("demo", "app"), "app-1.demo")
	start := h.gen.callCount("app-1.demo")
	for range 5 {
		h.srv.Changed()
		h.clock.Step(20 * time.Millisecond)
	}
	h.clock.Step(80 * time.Millisecond) // 100ms after the last change
	h.waitRound()
	// A sentinel round: had the burst caused two rounds, the second would come first.
	h.change()
	if got := h.gen.callCount("app-1.demo") - start; got != 2 {
		t.Fatalf("%d generations for a burst and a sentinel, want 2", got)
	}
}

func TestLastStreamClearsSnapshot(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c1, _ := connectSotW(h, saID("demo", "app"), "app-1.demo")
	c2, _ := connectSotW(h, saID("demo", "app"), "app-1.demo")
	wefttest.Eventually(t, "two streams", func() bool { n, _ := h.status("app-1.demo"); return n.Streams == 2 })

	c1.cancel()
	wefttest.Eventually(t, "one stream", func() bool { n, _ := h.status("app-1.demo"); return n.Streams == 1 })
	if _, err := h.srv.cache.GetSnapshot("app-1.demo"); err != nil {
		t.Fatalf("snapshot dropped while a stream is open: %v", err)
	}
	c2.cancel()
	wefttest.Eventually(t, "node gone", func() bool { _, ok := h.status("app-1.demo"); return !ok })
	if _, err := h.srv.cache.GetSnapshot("app-1.demo"); err == nil {
		t.Fatal("snapshot kept after the last stream closed")
	}
	if v := testutil.ToFloat64(h.srv.metrics.connected); v != 0 {
		t.Fatalf("connected sidecars = %v", v)
	}
	// And a round after that generates nothing for it.
	before := h.gen.callCount("app-1.demo")
	h.change()
	if got := h.gen.callCount("app-1.demo"); got != before {
		t.Fatalf("generated for a disconnected node")
	}
}

func TestBuildSnapshotRefuses(t *testing.T) {
	good := testResources(0, false)
	cases := []struct {
		name string
		res  xds.Resources
		want string
	}{
		{"unknown type", xds.Resources{"type.googleapis.com/foo.Bar": nil}, `unknown resource type "type.googleapis.com/foo.Bar"`},
		{"wrong message", xds.Resources{resource.ListenerType: {good[resource.ClusterType][0]}}, "listener #0 is a type.googleapis.com/envoy.config.cluster.v3.Cluster"},
		{"no name", xds.Resources{resource.ListenerType: {&listenerv3.Listener{}}}, "listener #0 has no name"},
		{"duplicate", xds.Resources{resource.ListenerType: {good[resource.ListenerType][0], good[resource.ListenerType][0]}}, `listener "inbound" appears twice`},
		{"nil", xds.Resources{resource.ListenerType: {nil}}, "listener #0 is nil"},
		{"invalid", testResources(0, true), `listener "inbound" is invalid`},
		{"inconsistent", xds.Resources{resource.ClusterType: good[resource.ClusterType]}, "inconsistent snapshot"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := buildSnapshot(tc.res)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "xds: ") {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestVersionsAreContentHashes(t *testing.T) {
	_, v1, err := buildSnapshot(testResources(0, false))
	if err != nil {
		t.Fatal(err)
	}
	// Same content in another order: same versions.
	r := testResources(0, false)
	ls := r[resource.ListenerType]
	ls[0], ls[1] = ls[1], ls[0]
	_, v2, err := buildSnapshot(r)
	if err != nil {
		t.Fatal(err)
	}
	_, v3, err := buildSnapshot(testResources(1, false))
	if err != nil {
		t.Fatal(err)
	}
	for url := range v1 {
		if v1[url] != v2[url] {
			t.Errorf("%s: reordering changed the version", typeName(url))
		}
		if changed := v1[url] != v3[url]; changed != (url == resource.ListenerType) {
			t.Errorf("%s: version changed = %v after a listener-only change", typeName(url), changed)
		}
	}
	if len(v1) != int(types.UnknownType) {
		t.Errorf("versions for %d types, want every type (%d)", len(v1), types.UnknownType)
	}
}

// ---- benchmark ----

var benchClients = flag.Int("xds.clients", 100, "BenchmarkPush: connected delta clients")

// benchGen is a trivial generator: one listener whose content changes with
// every revision, and one cluster that never does.
type benchGen struct{ rev atomic.Int64 }

func (g *benchGen) Generate(n xds.Node) (xds.Resources, error) {
	return xds.Resources{
		resource.ListenerType: {&listenerv3.Listener{Name: "outbound", Address: socket("0.0.0.0", 15001),
			StatPrefix: fmt.Sprintf("%s-rev-%d", n.Name, g.rev.Load())}},
		resource.ClusterType: {&clusterv3.Cluster{Name: "PassthroughCluster", ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
			LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED}},
	}, nil
}

// BenchmarkPush measures the time from Changed() until connected delta
// clients hold the new listener: p50/p99 over every client and update, and
// the p50 of the time until the last client of an update has it. The
// debounce is 1ms, so the figures are the push path, not the wait.
func BenchmarkPush(b *testing.B) {
	gen := &benchGen{}
	h := newHarness(b, harnessOpts{realClock: true, debounce: time.Millisecond, maxDelay: 10 * time.Millisecond, gen: gen})
	n := *benchClients
	id := saID("bench", "bench")
	type got struct {
		at  time.Time
		rev string
	}
	results := make(chan got, n)
	for i := range n {
		pod := fmt.Sprintf("pod-%d", i)
		tok := h.pods.Add("bench", pod, id)
		c := openDeltaAs(h, id, peerOpts{token: tok})
		c.send(&discovery.DeltaDiscoveryRequest{Node: node(pod + ".bench"), TypeUrl: resource.ListenerType})
		r := c.next()
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: r.GetNonce()})
		go func() {
			for r := range c.resps {
				at := time.Now()
				l := &listenerv3.Listener{}
				_ = r.GetResources()[0].GetResource().UnmarshalTo(l)
				_ = c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: r.GetNonce()})
				results <- got{at: at, rev: l.GetStatPrefix()}
			}
		}()
	}
	var each, all []time.Duration
	var mu sync.Mutex
	for b.Loop() {
		rev := gen.rev.Add(1)
		start := time.Now()
		h.srv.Changed()
		var last time.Duration
		for range n {
			select {
			case g := <-results:
				if want := fmt.Sprintf("-rev-%d", rev); len(g.rev) < len(want) || g.rev[len(g.rev)-len(want):] != want {
					b.Fatalf("client got %q, want revision %d", g.rev, rev)
				}
				d := g.at.Sub(start)
				mu.Lock()
				each = append(each, d)
				mu.Unlock()
				last = max(last, d)
			case <-time.After(30 * time.Second):
				b.Fatal("clients did not get the update")
			}
		}
		all = append(all, last)
	}
	pct := func(ds []time.Duration, p float64) float64 {
		s := slices.Sorted(slices.Values(ds))
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(each, 0.50), "p50-ms")
	b.ReportMetric(pct(each, 0.99), "p99-ms")
	b.ReportMetric(pct(all, 0.50), "all-p50-ms")
	b.ReportMetric(float64(n), "clients")
}

// TestDeltaResumeIsSynced: a sidecar whose delta stream resumes (on a
// restarted control plane, or the same one) with exactly the resources it
// would be sent (initial_resource_versions) gets an empty response for
// them, and ACKs it: it runs the published version and is SYNCED, not
// STALE for ever (seen on the real cluster after a control plane rollout:
// go-control-plane's empty response carries no system_version_info). One
// that holds something else is sent the difference and SYNCED once it
// ACKs that.
func TestDeltaResumeIsSynced(t *testing.T) {
	types := []string{resource.EndpointType, resource.SecretType}
	h := newHarness(t, harnessOpts{})
	c := openDelta(h, saID("demo", "app"))
	held := map[string]map[string]string{}
	for i, typ := range types {
		r := &discovery.DeltaDiscoveryRequest{TypeUrl: typ}
		if i == 0 {
			r.Node = node("app-1.demo")
		}
		c.send(r)
	}
	for range types {
		r := c.next()
		held[r.GetTypeUrl()] = map[string]string{}
		for _, res := range r.GetResources() {
			held[r.GetTypeUrl()][res.GetName()] = res.GetVersion()
		}
	}
	// The stream ends (the node's last: its state goes) and the sidecar
	// resumes.
	c.cancel()
	wefttest.Eventually(t, "the node forgotten", func() bool { return len(h.srv.Status()) == 0 })
	c = openDelta(h, saID("demo", "app"))
	// As sidecar/xds subscribes: by name, with the versions it holds.
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.EndpointType,
		ResourceNamesSubscribe: slices.Sorted(maps.Keys(held[resource.EndpointType])), InitialResourceVersions: held[resource.EndpointType]})
	stale := map[string]string{}
	for name := range held[resource.SecretType] {
		stale[name] = "an older version"
	}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.SecretType,
		ResourceNamesSubscribe: slices.Sorted(maps.Keys(stale)), InitialResourceVersions: stale})
	r := c.next()
	if r.GetTypeUrl() != resource.SecretType {
		t.Fatalf("sent %s %v: want only the secrets that differ", typeName(r.GetTypeUrl()), r.GetResources())
	}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	wefttest.Eventually(t, "endpoints and secrets SYNCED", func() bool {
		return h.typeStatus("app-1.demo", resource.EndpointType).State == StateSynced &&
			h.typeStatus("app-1.demo", resource.SecretType).State == StateSynced
	})
}
