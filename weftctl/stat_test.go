package weftctl

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/internal/testutil/golden"
)

func TestQuantileMs(t *testing.T) {
	inf := math.Inf(1)
	cum := map[float64]float64{0.01: 50, 0.02: 90, 0.05: 99, inf: 100}
	for _, tc := range []struct {
		q    float64
		want float64
	}{
		{0.5, 10},             // rank 50, the top of the first bucket
		{0.25, 5},             // interpolated from 0
		{0.95, 20 + 30*5.0/9}, // rank 95 in (0.02, 0.05]: 5 of its 9
		{0.99, 50},
		{0.999, 50}, // in +Inf: the highest finite bound
	} {
		got := quantileMs(tc.q, cum)
		if got == nil || math.Abs(*got-tc.want) > 1e-9 {
			t.Errorf("q%v = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := quantileMs(0.5, map[float64]float64{0.01: 0, inf: 0}); got != nil {
		t.Errorf("empty histogram: %v, want nil", *got)
	}
	if got := quantileMs(0.5, map[float64]float64{0.01: 3}); got != nil {
		t.Errorf("a histogram without +Inf: %v, want nil", *got)
	}
}

// sidecarHTTPMetrics is a sidecar's exposition of inbound HTTP traffic:
// ok 2xx and fail 5xx requests on route, grpcUnavailable gRPC calls ended
// UNAVAILABLE, latencies spread over the buckets as given (cumulative).
func sidecarHTTPMetrics(route string, ok, fail, grpcUnavailable, grpcNotFound int, cum [4]int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# TYPE weft_sidecar_http_requests_total counter\n")
	line := func(class, gs string, n int) {
		fmt.Fprintf(&b, "weft_sidecar_http_requests_total{direction=\"inbound\",route=%q,dst=\"\",peer=\"spiffe://cluster.local/ns/weft-demo/sa/client\",class=%q,grpc_status=%q} %d\n", route, class, gs, n)
	}
	line("2xx", "", ok)
	line("5xx", "", fail)
	line("2xx", "14", grpcUnavailable)
	line("2xx", "5", grpcNotFound)
	// Outbound requests of the same pod are not what it served.
	fmt.Fprintf(&b, "weft_sidecar_http_requests_total{direction=\"outbound\",route=\"x\",dst=\"outbound|80|db.demo\",peer=\"\",class=\"5xx\",grpc_status=\"\"} 1000\n")
	fmt.Fprintf(&b, "# TYPE weft_sidecar_http_request_duration_seconds histogram\n")
	for i, le := range []string{"0.01", "0.02", "0.05", "+Inf"} {
		fmt.Fprintf(&b, "weft_sidecar_http_request_duration_seconds_bucket{direction=\"inbound\",route=%q,dst=\"\",class=\"2xx\",le=%q} %d\n", route, le, cum[i])
	}
	fmt.Fprintf(&b, "weft_sidecar_http_request_duration_seconds_sum{direction=\"inbound\",route=%q,dst=\"\",class=\"2xx\"} 1\n", route)
	fmt.Fprintf(&b, "weft_sidecar_http_request_duration_seconds_count{direction=\"inbound\",route=%q,dst=\"\",class=\"2xx\"} %d\n", route, cum[3])
	return b.String()
}

// sequence serves bodies one after the other at path (the last one
// from then on).
func (f *fixture) sequence(path string, bodies ...string) {
	var mu sync.Mutex
	n := 0
	f.mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		b := bodies[min(n, len(bodies)-1)]
		n++
		mu.Unlock()
		io.WriteString(w, b)
	})
}

// statFixture is the demo namespace plus deploy/web, two meshed pods
// whose sidecars served HTTP between stat's two readings.
func statFixture(t *testing.T) *fixture {
	f := newFixture(t)
	web := func(name, ip string) {
		p := pod("weft-demo", name, ip, -time.Hour, true, 8080)
		p.Labels["pod-template-hash"] = "7d9f"
		p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-7d9f", Controller: ptr.To(true)}}
		if _, err := f.kube.CoreV1().Pods("weft-demo").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	web("web-7d9f-aaaaa", "198.18.0.20")
	web("web-7d9f-bbbbb", "198.18.0.21")
	// Over the window: pod a served 96 ok, 2 failed, 2 gRPC UNAVAILABLE,
	// 10 gRPC NOT_FOUND (a client's error: a success); pod b restarted
	// (its counters went down) and served 10 ok since.
	f.sequence("/pod/weft-demo/web-7d9f-aaaaa/15020/metrics",
		sidecarHTTPMetrics("inbound|8080", 1000, 10, 5, 0, [4]int{900, 990, 1000, 1000}),
		sidecarHTTPMetrics("inbound|8080", 1096, 12, 7, 10, [4]int{950, 1080, 1099, 1100}))
	f.sequence("/pod/weft-demo/web-7d9f-bbbbb/15020/metrics",
		sidecarHTTPMetrics("inbound|8080", 5000, 0, 0, 0, [4]int{5000, 5000, 5000, 5000}),
		sidecarHTTPMetrics("inbound|8080", 10, 0, 0, 0, [4]int{0, 10, 10, 10}))
	return f
}

// 120 requests in the window: 4 failed (2 5xx, 2 UNAVAILABLE), p50 in
// the second bucket, p99 near the top of the third.
func TestStat(t *testing.T) {
	out, err := statFixture(t).run(t, "stat", "-n", "weft-demo", "--window", "1ms")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	golden.Check(t, "testdata/stat.golden", out)

	out, err = statFixture(t).run(t, "stat", "-n", "weft-demo", "--window", "1ms", "--route", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	golden.Check(t, "testdata/stat-route.json.golden", out)
}
