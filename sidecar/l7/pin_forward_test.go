package l7

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/weftmesh/weft/sidecar/balance"
)

// A request addressed to an endpoint of its cluster (WithEndpoint) goes to
// it on every try: the route's retries happen, to that endpoint only. One
// addressed to an address the cluster does not hold is balanced.
func TestPinnedEndpointRetries(t *testing.T) {
	eps := []netip.AddrPort{
		netip.MustParseAddrPort("198.18.0.1:8080"),
		netip.MustParseAddrPort("198.18.0.2:8080"),
		netip.MustParseAddrPort("198.18.0.3:8080"),
	}
	var mu sync.Mutex
	var hosts []string
	b := balance.New(balance.Config{})
	b.Update(eps)
	c := &Cluster{Name: "web", Balancer: b, Scheme: "http", Budget: Budget{MinConcurrent: 10},
		Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			hosts = append(hosts, r.URL.Host)
			mu.Unlock()
			return &http.Response{StatusCode: http.StatusServiceUnavailable, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
		})}
	route := &Route{Name: "r", Retry: RetryPolicy{Retries: 3, On: GatewayError}, Backends: []Backend{{Cluster: c, Weight: 1}}}
	send := func(ctx context.Context) []string {
		t.Helper()
		mu.Lock()
		hosts = nil
		mu.Unlock()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://web/", nil)
		resp, err := (&Forwarder{}).Forward(route, req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d", resp.StatusCode)
		}
		mu.Lock()
		defer mu.Unlock()
		return hosts
	}

	got := send(WithEndpoint(context.Background(), eps[1]))
	if len(got) != 4 {
		t.Fatalf("tries %v, want 4 (the route's 3 retries)", got)
	}
	for _, h := range got {
		if h != eps[1].String() {
			t.Fatalf("tries %v, want every one to %s", got, eps[1])
		}
	}

	// Not an endpoint (a ClusterIP): balanced, each retry elsewhere.
	got = send(WithEndpoint(context.Background(), netip.MustParseAddrPort("198.19.0.10:80")))
	if len(got) != 4 || got[0] == got[1] || got[1] == got[2] || got[0] == got[2] {
		t.Errorf("tries %v, want the first three on distinct endpoints", got)
	}
}
