package xds

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

const idle = time.Minute

// startOnDemand runs an on-demand client against addr until the test ends.
func startOnDemand(t *testing.T, addr string, clk *clocktesting.FakeClock) *Client {
	t.Helper()
	cfg := ClientConfig{
		NodeID: testNode, Delta: true, OnDemand: true, OnDemandIdle: idle,
		Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		Dial: func(context.Context) (grpc.ClientConnInterface, error) {
			return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		},
	}
	if clk != nil {
		cfg.Clock = clk
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c.Run)
	return c
}

func waitReady(t *testing.T, c *Client) *model.Config {
	t.Helper()
	select {
	case <-c.Ready():
	case <-time.After(timeout):
		t.Fatalf("not ready; status %+v", c.Status())
	}
	return c.Current()
}

// outboundClusters returns the "outbound|" clusters cfg holds and those it
// holds endpoints of.
func outboundClusters(cfg *model.Config) (clusters, endpoints []string) {
	for n := range cfg.Clusters {
		if strings.HasPrefix(n, model.OnDemandPrefix) {
			clusters = append(clusters, n)
		}
	}
	for n := range cfg.Endpoints {
		endpoints = append(endpoints, n)
	}
	slices.Sort(clusters)
	slices.Sort(endpoints)
	return clusters, endpoints
}

func mustDemand(t *testing.T, c *Client, name string) (*model.Config, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cfg, release, err := c.Demand(ctx, name)
	if err != nil {
		t.Fatalf("Demand(%s): %v; status %+v", name, err, c.Status())
	}
	return cfg, release
}

// TestOnDemand, against go-control-plane's own delta server: an on-demand
// client is ready holding no Service's cluster or endpoints; a demanded one
// is asked for by name and returned with its endpoints, one the control
// plane does not have is waited for until it comes or the caller gives up,
// concurrent demands share one subscription, and a cluster whose
// connections all ended is dropped after OnDemandIdle, one still held is not.
func TestOnDemand(t *testing.T) {
	clk := testutil.FakeClock(t)
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	setSnapshot(t, cache, mesh{services: []string{"server.demo", "other.demo", "third.demo"}, httpEgress: true}, "v1")
	p := startPeer(t, "127.0.0.1:0", cache)
	c := startOnDemand(t, p.addr, clk)

	cur := waitReady(t, c)
	if cl, eps := outboundClusters(cur); len(cl)+len(eps) != 0 {
		t.Fatalf("ready holding Services' clusters %q and endpoints %q before any was demanded", cl, eps)
	}
	if got, want := cur.OnDemandClusters(), []string{"outbound|80|other.demo", "outbound|80|server.demo", "outbound|80|third.demo"}; !slices.Equal(got, want) {
		t.Fatalf("OnDemandClusters = %q, want %q", got, want)
	}
	first := p.waitDelta(t, "the first clusters request", func(r *discoveryv3.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == model.ClusterType
	})
	if got, want := first.GetResourceNamesSubscribe(), cur.SubscribedClusters(); !slices.Equal(got, want) || len(want) == 0 {
		t.Errorf("first clusters request subscribes %q, want the clusters the configuration names, less those on demand, %q (never a wildcard)", got, want)
	}

	// Demanded: asked for by name, returned with its endpoints.
	cfg, releaseServer := mustDemand(t, c, "outbound|80|server.demo")
	if cl, eps := outboundClusters(cfg); !slices.Equal(cl, []string{"outbound|80|server.demo"}) || !slices.Equal(eps, cl) {
		t.Errorf("after one demand: clusters %q, endpoints %q", cl, eps)
	}
	if len(cfg.Endpoints["outbound|80|server.demo"]) == 0 {
		t.Error("the demanded cluster came without its endpoints")
	}
	p.waitDelta(t, "subscribe server.demo's cluster", func(r *discoveryv3.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == model.ClusterType && slices.Equal(r.GetResourceNamesSubscribe(), []string{"outbound|80|server.demo"})
	})
	// Held already: the same configuration, no wait.
	again, releaseAgain := mustDemand(t, c, "outbound|80|server.demo")
	if again != c.Current() {
		t.Error("a held cluster's demand did not return the current configuration")
	}
	releaseAgain()
	releaseAgain() // idempotent: server.demo stays held by releaseServer

	// Concurrent demands of one cluster.
	var wg sync.WaitGroup
	releases := make([]func(), 4)
	for i := range releases {
		wg.Go(func() { _, releases[i] = mustDemand(t, c, "outbound|80|other.demo") })
	}
	wg.Wait()

	// Not in the control plane: waited for, bounded by the caller.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, rel, err := c.Demand(ctx, "outbound|80|late.demo")
	cancel()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || rel != nil {
		t.Fatalf("Demand of a cluster the control plane lacks = %v (release %v), want the caller's deadline", err, rel != nil)
	}
	if st := c.Status(); !slices.Equal(st.Demanded, []string{"outbound|80|late.demo", "outbound|80|other.demo", "outbound|80|server.demo"}) {
		t.Errorf("Status.Demanded = %q", st.Demanded)
	}
	// ... and returned once it comes.
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cfg, release, err := c.Demand(ctx, "outbound|80|late.demo")
		if err == nil {
			defer release()
			if _, ok := cfg.Endpoints["outbound|80|late.demo"]; !ok {
				err = errors.New("no endpoints")
			}
		}
		got <- err
	}()
	setSnapshot(t, cache, mesh{services: []string{"server.demo", "other.demo", "third.demo", "late.demo"}, httpEgress: true}, "v2")
	if err := <-got; err != nil {
		t.Fatalf("a cluster created while demanded: %v", err)
	}
	if cl, _ := outboundClusters(c.Current()); slices.Contains(cl, "outbound|80|third.demo") {
		t.Error("a new snapshot brought a cluster never demanded")
	}

	// Idle: the released clusters go once OnDemandIdle has passed since
	// the last release, with their endpoints; the held one stays. The
	// fake clock has not moved since the stream began, so the sweep (every
	// OnDemandIdle/4, re-armed when it fires) falls on each quarter step.
	for _, r := range releases {
		r()
	}
	stepQuarters(t, clk, idle/4, 3)
	time.Sleep(50 * time.Millisecond) // a sweep that would drop them has had time to
	if cl, _ := outboundClusters(c.Current()); len(cl) != 3 {
		t.Errorf("clusters dropped before OnDemandIdle: %q", cl)
	}
	stepQuarters(t, clk, idle/4, 1)
	waitConfig(t, c, "the idle clusters dropped at OnDemandIdle", func(cfg *model.Config) bool {
		cl, eps := outboundClusters(cfg)
		return slices.Equal(cl, []string{"outbound|80|server.demo"}) && slices.Equal(eps, cl)
	})
	p.waitDelta(t, "unsubscribe the idle clusters", func(r *discoveryv3.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == model.ClusterType &&
			slices.Equal(r.GetResourceNamesUnsubscribe(), []string{"outbound|80|late.demo", "outbound|80|other.demo"})
	})
	if st := c.Status(); !slices.Equal(st.Demanded, []string{"outbound|80|server.demo"}) {
		t.Errorf("Status.Demanded after idle = %q", st.Demanded)
	}
	// A dropped cluster is asked for again.
	cfg, r := mustDemand(t, c, "outbound|80|other.demo")
	defer r()
	if _, ok := cfg.Endpoints["outbound|80|other.demo"]; !ok {
		t.Error("a dropped cluster demanded again came without endpoints")
	}
	releaseServer()
}

// TestOnDemandReconnect: a new stream asks again for what was demanded,
// and the control plane's removal of a demanded Service drops it.
func TestOnDemandReconnect(t *testing.T) {
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	setSnapshot(t, cache, mesh{services: []string{"server.demo", "other.demo"}}, "v1")
	p := startPeer(t, "127.0.0.1:0", cache)
	c := startOnDemand(t, p.addr, nil)
	waitReady(t, c)
	_, release := mustDemand(t, c, "outbound|80|server.demo")
	defer release()

	p.stop()
	cache2 := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	setSnapshot(t, cache2, mesh{services: []string{"other.demo"}}, "v2")
	p2 := startPeer(t, p.addr, cache2)
	first := p2.waitDelta(t, "the new stream's clusters request", func(r *discoveryv3.DeltaDiscoveryRequest) bool {
		return r.GetTypeUrl() == model.ClusterType
	})
	if !slices.Contains(first.GetResourceNamesSubscribe(), "outbound|80|server.demo") ||
		first.GetInitialResourceVersions()["outbound|80|server.demo"] == "" {
		t.Errorf("the new stream's first clusters request %v does not ask again for the demanded cluster it holds", first)
	}
	if slices.Contains(first.GetResourceNamesSubscribe(), "outbound|80|other.demo") {
		t.Error("the new stream asks for a cluster never demanded")
	}
	waitConfig(t, c, "server.demo removed by the control plane", func(cfg *model.Config) bool {
		_, ok := cfg.Endpoints["outbound|80|server.demo"]
		return cfg.Clusters["outbound|80|server.demo"] == nil && !ok && cfg.Version[model.ListenerType] == "v2"
	})
	if st := c.Status(); !slices.Equal(st.Demanded, []string{"outbound|80|server.demo"}) {
		t.Errorf("a demand still held was forgotten: %q", st.Demanded)
	}
}
