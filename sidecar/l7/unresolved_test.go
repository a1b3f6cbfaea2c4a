package l7

import (
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// A backend whose cluster the configuration does not have (a Gateway API
// backendRef that did not resolve) takes its share of the route's
// requests and answers them with the route's ClusterNotFound status, as
// Envoy's cluster_not_found_response_code; the other backends get theirs.
// A backend the engine cannot use (neither a cluster nor Missing) still
// takes no share.
func TestMissingClusterTakesItsShare(t *testing.T) {
	app := rtBackend(t, nil)
	var next atomic.Int64
	fwd := &Forwarder{Rand: func(n int) int { return int(next.Add(1)-1) % n }} // each slot in turn
	var route *Route
	s := NewConnServer(&Handler{Route: func(*http.Request) *Route { return route }, Forwarder: fwd},
		ServerLimits{HeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}, nil)
	t.Cleanup(func() { s.Close() })
	addr := testutil.ServeTCP(t, func(c net.Conn) { s.ServeConn(c) }).String()
	client := rtClient(t, false)

	statuses := func(n int) map[int]int {
		t.Helper()
		out := map[int]int{}
		for range n {
			req, _ := http.NewRequest("GET", "http://"+addr+"/x", nil)
			resp, body := testutil.Do(t, client, req)
			out[resp.StatusCode]++
			if resp.StatusCode == 500 && !strings.Contains(body, "cluster not found") {
				t.Errorf("500 body %q", body)
			}
		}
		return out
	}

	// 3 to the app, 1 missing, 5 to a cluster the engine cannot use.
	route = &Route{Name: "split", ClusterNotFound: 500, Backends: []Backend{{Cluster: app, Weight: 3}, {Missing: true, Weight: 1}, {Weight: 5}}}
	if got := statuses(8); got[200] != 6 || got[500] != 2 || len(got) != 2 {
		t.Errorf("3:1 split over 8 requests: %v, want 6 × 200 and 2 × 500", got)
	}
	// Every backend missing: every request; the default status is 503.
	route = &Route{Name: "none", Backends: []Backend{{Missing: true, Weight: 1}}}
	if got := statuses(3); got[503] != 3 {
		t.Errorf("no ClusterNotFound: %v, want 3 × 503", got)
	}
	route = &Route{Name: "none", ClusterNotFound: 404, Backends: []Backend{{Missing: true, Weight: 1}}}
	if got := statuses(2); got[404] != 2 {
		t.Errorf("ClusterNotFound 404: %v", got)
	}
	// A missing backend of weight 0 takes nothing.
	route = &Route{Name: "zero", ClusterNotFound: 500, Backends: []Backend{{Cluster: app, Weight: 1}, {Missing: true, Weight: 0}}}
	if got := statuses(4); got[200] != 4 {
		t.Errorf("missing of weight 0: %v, want 4 × 200", got)
	}

	// gRPC: a 500 is status UNKNOWN (gRPC's mapping), in a 200 response.
	route = &Route{Name: "grpc", ClusterNotFound: 500, Backends: []Backend{{Missing: true, Weight: 1}}}
	req, _ := http.NewRequest("POST", "http://"+addr+"/pkg.Svc/Call", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/grpc")
	resp, _ := testutil.Do(t, rtClient(t, true), req) // gRPC is HTTP/2
	if gs := resp.Header.Get("Grpc-Status"); resp.StatusCode != 200 || gs != "2" {
		t.Errorf("gRPC: HTTP %d, grpc-status %q, want 200 and 2 (UNKNOWN)", resp.StatusCode, gs)
	}

	// An upgrade request takes the same share.
	route = &Route{Name: "upgrade", ClusterNotFound: 500, Backends: []Backend{{Missing: true, Weight: 1}}}
	req, _ = http.NewRequest("GET", "http://"+addr+"/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	if resp, _ := testutil.Do(t, client, req); resp.StatusCode != 500 {
		t.Errorf("upgrade: %d, want 500", resp.StatusCode)
	}
}
