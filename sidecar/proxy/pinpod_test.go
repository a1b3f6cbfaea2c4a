package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// A connection addressed to one endpoint of a cluster (a pod IP, which the
// control plane gives the Service's chain alongside its ClusterIPs) goes to
// that endpoint, never to another pod of the Service; one to the
// ClusterIP (serviceIP, never an endpoint) is balanced as before.

// podChains are outbound chains for the endpoints' own addresses (the
// control plane's pod-IP prefixes, here one per port, as every endpoint
// is on 127.0.0.1), each to target.
func podChains(name string, target model.Target, eps []model.Endpoint) []*model.FilterChain {
	var out []*model.FilterChain
	for _, ep := range eps {
		out = append(out, &model.FilterChain{Name: fmt.Sprintf("%s|pod|%d", name, ep.Addr.Port()),
			Match:  model.ChainMatch{DestPort: ep.Addr.Port(), Prefixes: []netip.Prefix{netip.PrefixFrom(ep.Addr.Addr(), 32)}},
			Target: target})
	}
	return out
}

func TestPinnedPodL4(t *testing.T) {
	mp := newMeshPair(t, nil, nil)
	pods := []*pod{mp.b}
	for range 2 {
		b := startPod(t, mp.ca, mp.b.id)
		b.nat.setDefault(netip.AddrPortFrom(podBIP, mp.app.port()))
		b.cfg.Store(mp.b.cfg.Load())
		pods = append(pods, b)
	}
	var eps []model.Endpoint
	for _, b := range pods {
		eps = append(eps, model.Endpoint{Addr: b.inboundAddr()})
	}
	cfg := meshConfig([]spiffeid.ID{mp.b.id}, eps, nil, false)
	cfg.Outbound.Chains = append(cfg.Outbound.Chains, podChains(svcCluster, model.Target{Cluster: svcCluster}, eps)...)
	mp.a.cfg.Store(cfg)

	// To pod 1's address, five times: pod 1 every time.
	for i := range 5 {
		roundTrip(t, mp.a.dialOutbound(pods[1].inboundAddr()), []byte(fmt.Sprintf("to pod 1, %d", i)))
	}
	pods[1].waitCounter(5, "handshakes", inbound)
	for _, i := range []int{0, 2} {
		if n := pods[i].counter("handshakes", inbound); n != 0 {
			t.Errorf("pod %d took %v of the connections addressed to pod 1", i, n)
		}
	}
	// To the ClusterIP: round robin over the three.
	for i := range 3 {
		roundTrip(t, mp.dial(), []byte(fmt.Sprintf("to the service, %d", i)))
	}
	pods[0].waitCounter(1, "handshakes", inbound)
	pods[1].waitCounter(6, "handshakes", inbound)
	pods[2].waitCounter(1, "handshakes", inbound)
}

// pinnedClient is A's app on one connection to dst (HTTP/1.1 kept alive,
// or h2c with prior knowledge), through A's outbound listener.
func pinnedClient(t *testing.T, a *pod, dst netip.AddrPort, h2c bool) (*http.Client, func() int) {
	t.Helper()
	var dials atomic.Int64
	tr := &http.Transport{
		MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", a.outboundAddr().String())
			if err == nil {
				dials.Add(1)
				a.nat.set(c.LocalAddr(), dst)
			}
			return c, err
		},
	}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}, func() int { return int(dials.Load()) }
}

func TestPinnedPodL7(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "h2c"}[h2c], func(t *testing.T) {
			ca := testutil.NewCA(t, td, nil)
			var bs []*l7Backend
			var eps []model.Endpoint
			for i := range 3 {
				b := startHTTPBackend(t, ca, fmt.Sprintf("b%d", i))
				bs = append(bs, b)
				eps = append(eps, b.endpoint())
			}
			// web holds the three; a request with x-split goes to other,
			// which holds b0 and b2 only (a route splitting to another
			// Service).
			routes := []*model.Route{
				{Name: "split", Match: model.RouteMatch{Prefix: "/", Headers: []model.HeaderMatch{{Name: "x-split", Exact: "1"}}},
					Clusters: []model.WeightedCluster{{Name: "other", Weight: 1}}},
				toCluster("web"),
			}
			cfg := l7ClientConfig(routes, map[string][]model.Endpoint{"web": eps, "other": {eps[0], eps[2]}})
			cfg.Outbound.Chains = append(cfg.Outbound.Chains, podChains(l7Route, model.Target{RouteConfig: l7Route}, eps)...)
			a := startL7Client(t, ca, cfg)
			a.nat.setDefault(netip.AddrPort{}) // each connection's is its own

			who := func(c *http.Client, hdr ...string) string {
				t.Helper()
				status, body := doReq(t, c, "GET", "/", hdr...)
				if status != http.StatusOK {
					t.Fatalf("status %d: %s", status, body)
				}
				name, _, _ := strings.Cut(body, " ")
				return name
			}

			// Every request of a connection to b1's address goes to b1.
			c, dials := pinnedClient(t, a, eps[1].Addr, h2c)
			for i := range 8 {
				if got := who(c); got != "b1" {
					t.Fatalf("request %d on the connection to b1's address went to %s", i, got)
				}
			}
			// Routed to a cluster without b1: balanced over it.
			seen := map[string]int{}
			for range 12 {
				seen[who(c, "x-split", "1")]++
			}
			if seen["b1"] != 0 || len(seen) != 2 {
				t.Errorf("requests routed to other went to %v, want b0 and b2", seen)
			}
			if n := dials(); n != 1 {
				t.Errorf("the app made %d connections, want 1", n)
			}

			// The ClusterIP: spread over the three.
			c, _ = pinnedClient(t, a, netip.AddrPortFrom(serviceIP, 80), h2c)
			seen = map[string]int{}
			for range 12 {
				seen[who(c)]++
			}
			if len(seen) != 3 {
				t.Errorf("requests to the ClusterIP went to %v, want all three backends", seen)
			}
		})
	}
}
