package xds

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

const (
	testNode = "client-7d9f.demo"
	timeout  = 10 * time.Second
)

// peer is go-control-plane's own ADS server on loopback, recording every
// request the client sends.
type peer struct {
	addr    string
	cache   cachev3.SnapshotCache
	srv     *grpc.Server
	done    chan struct{}
	mu      sync.Mutex
	sotw    []*discoveryv3.DiscoveryRequest
	delta   []*discoveryv3.DeltaDiscoveryRequest
	changed chan struct{}
	stopFn  func()
}

func startPeer(t *testing.T, addr string, cache cachev3.SnapshotCache) *peer {
	t.Helper()
	p := &peer{cache: cache, changed: make(chan struct{}, 1), done: make(chan struct{})}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			record(p, &p.sotw, r)
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			record(p, &p.delta, r)
			return nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.srv = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(p.srv, serverv3.NewServer(ctx, cache, cb))
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	p.addr = lis.Addr().String()
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(lis)
	}()
	var once sync.Once
	stop := func() { once.Do(func() { p.srv.Stop(); cancel(); <-p.done }) }
	t.Cleanup(stop)
	p.stopFn = stop
	return p
}

func (p *peer) stop() { p.stopFn() }

// record appends r to reqs, one of the peer's logs, and wakes a waiter.
func record[R any](p *peer, reqs *[]R, r R) {
	p.mu.Lock()
	*reqs = append(*reqs, r)
	p.mu.Unlock()
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// waitRequest waits for a request in reqs, the peer's log of one kind
// ("SotW" or "delta"), that satisfies ok.
func waitRequest[R any](t *testing.T, p *peer, kind, what string, reqs *[]R, ok func(R) bool) R {
	t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		for _, r := range *reqs {
			if ok(r) {
				p.mu.Unlock()
				return r
			}
		}
		p.mu.Unlock()
		select {
		case <-p.changed:
		case <-deadline:
			t.Fatalf("no %s request: %s", kind, what)
		}
	}
}

// waitSotw waits for a SotW request satisfying ok.
func (p *peer) waitSotw(t *testing.T, what string, ok func(*discoveryv3.DiscoveryRequest) bool) *discoveryv3.DiscoveryRequest {
	t.Helper()
	return waitRequest(t, p, "SotW", what, &p.sotw, ok)
}

// waitDelta waits for a delta request satisfying ok.
func (p *peer) waitDelta(t *testing.T, what string, ok func(*discoveryv3.DeltaDiscoveryRequest) bool) *discoveryv3.DeltaDiscoveryRequest {
	t.Helper()
	return waitRequest(t, p, "delta", what, &p.delta, ok)
}

func setSnapshot(t *testing.T, cache cachev3.SnapshotCache, m mesh, version string) {
	t.Helper()
	if err := cache.SetSnapshot(context.Background(), testNode, m.snapshot(t, version)); err != nil {
		t.Fatal(err)
	}
}

// serveV1 starts a control plane serving m as version v1 on loopback and
// a client of it (delta or state of the world), both until the test ends.
func serveV1(t *testing.T, m mesh, delta bool) (cachev3.SnapshotCache, *peer, *Client) {
	t.Helper()
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	setSnapshot(t, cache, m, "v1")
	p := startPeer(t, "127.0.0.1:0", cache)
	return cache, p, startClient(t, p.addr, delta)
}

// startClient runs a client against addr until the test ends.
func startClient(t *testing.T, addr string, delta bool) *Client {
	t.Helper()
	c, err := New(ClientConfig{
		NodeID: testNode, Delta: delta, Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		Dial: func(context.Context) (grpc.ClientConnInterface, error) {
			return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c.Run)
	return c
}

// waitConfig waits until the current configuration satisfies ok; every
// configuration made current on the way must be complete.
func waitConfig(t *testing.T, c *Client, what string, ok func(*model.Config) bool) *model.Config {
	t.Helper()
	ch, unsubscribe := c.Subscribe()
	defer unsubscribe()
	deadline := time.After(timeout)
	for {
		select {
		case cfg := <-ch:
			if m := cfg.Missing(); len(m) > 0 {
				t.Fatalf("an incomplete configuration became current: missing %v", m)
			}
			if ok(cfg) {
				return cfg
			}
		case <-deadline:
			t.Fatalf("no configuration with %s; status %+v", what, c.Status())
		}
	}
}

func TestClientSotW(t *testing.T)  { testClient(t, false) }
func TestClientDelta(t *testing.T) { testClient(t, true) }

func testClient(t *testing.T, delta bool) {
	v1 := mesh{services: []string{"server.demo", "other.demo"}, httpEgress: true}
	cache, p, c := serveV1(t, v1, delta)

	// Received whole, then ready.
	select {
	case <-c.Ready():
	case <-time.After(timeout):
		t.Fatalf("not ready; status %+v", c.Status())
	}
	cur := c.Current()
	for _, typ := range []string{model.ClusterType, model.EndpointType, model.ListenerType, model.RouteType, model.SecretType} {
		if cur.Version[typ] != "v1" {
			t.Errorf("version of %s = %q, want v1", typ, cur.Version[typ])
		}
	}
	if len(cur.Endpoints) != 2 || cur.Routes["egress|80"] == nil || cur.TrustBundle == nil || cur.Outbound == nil || cur.Inbound == nil {
		t.Fatalf("current configuration incomplete: %+v", cur)
	}

	// ACKed: every type's next request carries the version and nonce, no error.
	for _, typ := range []string{model.ClusterType, model.EndpointType, model.ListenerType, model.RouteType, model.SecretType} {
		if delta {
			p.waitDelta(t, "ACK of "+typ, func(r *discoveryv3.DeltaDiscoveryRequest) bool {
				return r.GetTypeUrl() == typ && r.GetResponseNonce() != "" && r.GetErrorDetail() == nil
			})
		} else {
			p.waitSotw(t, "ACK of "+typ, func(r *discoveryv3.DiscoveryRequest) bool {
				return r.GetTypeUrl() == typ && r.GetVersionInfo() == "v1" && r.GetResponseNonce() != "" && r.GetErrorDetail() == nil
			})
		}
	}

	// An unsupported filter: NACKed with the reason, the last good config stays.
	bad := v1
	bad.extraFilter = "envoy.filters.network.redis_proxy"
	setSnapshot(t, cache, bad, "v2")
	const reason = `filter "envoy.filters.network.redis_proxy" is not supported`
	if delta {
		p.waitDelta(t, "NACK of v2", func(r *discoveryv3.DeltaDiscoveryRequest) bool {
			return r.GetTypeUrl() == model.ListenerType && r.GetResponseNonce() != "" && strings.Contains(r.GetErrorDetail().GetMessage(), reason)
		})
	} else {
		p.waitSotw(t, "NACK of v2", func(r *discoveryv3.DiscoveryRequest) bool {
			return r.GetTypeUrl() == model.ListenerType && r.GetVersionInfo() == "v1" && r.GetResponseNonce() != "" &&
				strings.Contains(r.GetErrorDetail().GetMessage(), reason)
		})
	}
	// Other types of v2 are the same resources and are accepted; the
	// listeners stay v1's.
	if now := c.Current(); now.Version[model.ListenerType] != "v1" || len(now.Outbound.Chains) != len(cur.Outbound.Chains) {
		t.Errorf("a NACKed response changed the current listeners: versions %v", now.Version)
	}
	st := c.Status()
	if st.Nacks["listener"] == 0 || st.LastNack == nil || !strings.Contains(st.LastNack.Error, reason) {
		t.Errorf("status after NACK = %+v", st)
	}

	// Removal of a cluster (and its endpoints and chain).
	v3 := mesh{services: []string{"server.demo"}, httpEgress: true}
	setSnapshot(t, cache, v3, "v3")
	cfg := waitConfig(t, c, "other.demo removed", func(cfg *model.Config) bool {
		return cfg.Clusters["outbound|80|other.demo"] == nil && cfg.Clusters["outbound|80|server.demo"] != nil
	})
	if _, ok := cfg.Endpoints["outbound|80|other.demo"]; ok {
		t.Error("endpoints of a removed cluster kept")
	}
	if delta {
		p.waitDelta(t, "unsubscribe other.demo endpoints", func(r *discoveryv3.DeltaDiscoveryRequest) bool {
			return r.GetTypeUrl() == model.EndpointType && strings.Join(r.GetResourceNamesUnsubscribe(), ",") == "outbound|80|other.demo"
		})
	} else {
		p.waitSotw(t, "endpoints request without other.demo", func(r *discoveryv3.DiscoveryRequest) bool {
			return r.GetTypeUrl() == model.EndpointType && strings.Join(r.GetResourceNames(), ",") == "outbound|80|server.demo"
		})
	}
	if st := c.Status(); st.Acks == 0 || !st.Connected || !st.Ready {
		t.Errorf("status = %+v", st)
	}
}

func TestReconnectSotW(t *testing.T)  { testReconnect(t, false) }
func TestReconnectDelta(t *testing.T) { testReconnect(t, true) }

// testReconnect: with the control plane gone the last good configuration
// stays; when it is back the client reconnects and takes the newer one.
func testReconnect(t *testing.T, delta bool) {
	_, p, c := serveV1(t, mesh{services: []string{"server.demo"}}, delta)
	cur := waitConfig(t, c, "v1", func(*model.Config) bool { return true })

	p.stop()
	deadline := time.After(timeout)
	for c.Status().Connected || c.Status().LastError == "" {
		select {
		case <-deadline:
			t.Fatalf("the client did not notice the control plane went away: %+v", c.Status())
		case <-time.After(5 * time.Millisecond): // polling a status, not pacing the protocol
		}
	}
	if c.Current() != cur {
		t.Fatal("the configuration changed while the control plane was away")
	}

	cache2 := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	setSnapshot(t, cache2, mesh{services: []string{"server.demo", "third.demo"}}, "v2")
	startPeer(t, p.addr, cache2)
	waitConfig(t, c, "third.demo from the restarted control plane", func(cfg *model.Config) bool {
		_, ok := cfg.Endpoints["outbound|80|third.demo"]
		return ok
	})
	if st := c.Status(); st.Reconnects == 0 || !st.Connected {
		t.Errorf("status = %+v", st)
	}
}

// TestLateRoutesAndEndpoints: listeners and clusters accepted before their
// routes, endpoints and trust bundle become current only when those arrive.
func TestLateRoutesAndEndpoints(t *testing.T) {
	c, err := New(ClientConfig{NodeID: testNode, Dial: func(context.Context) (grpc.ClientConnInterface, error) {
		return nil, errors.New("unused")
	}})
	if err != nil {
		t.Fatal(err)
	}
	res := mesh{services: []string{"server.demo"}, httpEgress: true}.resources(t)
	apply := func(typ string) {
		t.Helper()
		u := update{typeURL: typ, version: "v1", upsert: map[string]entry{}, full: typ == model.ClusterType || typ == model.ListenerType}
		for _, r := range res[typ] {
			m, err := toSubset(r)
			if err != nil {
				t.Fatal(err)
			}
			u.upsert[resourceName(r)] = entry{msg: m}
		}
		cfg, err := c.apply(u)
		if err != nil {
			t.Fatalf("apply %s: %v", typ, err)
		}
		c.accepted(cfg)
	}
	for _, typ := range []string{model.ClusterType, model.ListenerType, model.SecretType, model.EndpointType} {
		apply(typ)
		if c.Current() != nil {
			t.Fatalf("current after %s without routes", kindName(typ))
		}
	}
	if got := strings.Join(c.wanted(model.RouteType), ","); got != "egress|80" {
		t.Errorf("routes wanted = %s", got)
	}
	if w := c.Status().Waiting; len(w) != 1 || w[0] != "routes egress|80" {
		t.Errorf("waiting = %v", w)
	}
	apply(model.RouteType)
	select {
	case <-c.Ready():
	default:
		t.Fatal("not ready with everything received")
	}
	if c.Current().Routes["egress|80"] == nil {
		t.Error("routes missing")
	}
	// Endpoints arriving for a cluster that does not exist are refused.
	ghost, err := toSubset(res[model.EndpointType][0])
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.apply(update{typeURL: model.EndpointType, upsert: map[string]entry{"outbound|80|ghost.demo": {msg: ghost}}})
	if err == nil || !strings.Contains(err.Error(), `endpoints "outbound|80|ghost.demo": resource is named "outbound|80|server.demo"`) {
		t.Errorf("apply ghost endpoints: %v", err)
	}
}
