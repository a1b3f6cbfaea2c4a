package l7

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/testutil"
)

// The golden signals on both sides of the mesh path: requests by class
// and gRPC status with the destination and the peer's SPIFFE ID, latency,
// nothing left in flight, retries.
func TestGoldenMetrics(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	appSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			w.WriteHeader(503)
		case "/grpc":
			w.Header().Set("Trailer", "Grpc-Status")
			w.WriteHeader(200)
			w.Header().Set("Grpc-Status", "5")
		default:
			io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(appSrv.Close)
	appAddr := netip.MustParseAddrPort(appSrv.Listener.Addr().String())
	server := newServerSidecar(t, ca, appAddr, false, func(r *http.Request) bool { return r.URL.Path == "/admin" })
	serverReg := metrics.NewRegistry()
	sm, err := NewMetrics(serverReg)
	if err != nil {
		t.Fatal(err)
	}
	server.in.Metrics = sm

	clientReg := metrics.NewRegistry()
	cm, err := NewMetrics(clientReg)
	if err != nil {
		t.Fatal(err)
	}
	cl := meshCluster(t, ca, server)
	route := &Route{Name: "server-route", Retry: RetryPolicy{Retries: 1, On: GatewayError}, Backends: []Backend{{Cluster: cl, Weight: 1}}}
	s := NewConnServer(&Handler{Route: func(r *http.Request) *Route {
		if r.URL.Path == "/unrouted" {
			return nil
		}
		return route
	}, Forwarder: &Forwarder{}, Metrics: cm}, ServerLimits{}, nil)
	t.Cleanup(func() { s.Close() })
	addr := serveOn(t, s)
	client := oneConn(t, false)
	for _, path := range []string{"/", "/", "/admin", "/fail", "/grpc", "/unrouted"} {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	srvID, cliID := serverID.String(), clientID.String()
	dst := cl.Name
	for _, tc := range []struct {
		reg    *metrics.Registry
		labels []string
		want   float64
	}{
		{clientReg, []string{"outbound", "server-route", dst, srvID, "2xx", ""}, 2},
		{clientReg, []string{"outbound", "server-route", dst, srvID, "4xx", ""}, 1},
		{clientReg, []string{"outbound", "server-route", dst, srvID, "5xx", ""}, 1},
		{clientReg, []string{"outbound", "server-route", dst, srvID, "2xx", "5"}, 1},
		{clientReg, []string{"outbound", "none", "", "", "4xx", ""}, 1},
		{serverReg, []string{"inbound", fmt.Sprintf("inbound|%d", appAddr.Port()), "", cliID, "2xx", ""}, 2},
		{serverReg, []string{"inbound", fmt.Sprintf("inbound|%d", appAddr.Port()), "", cliID, "4xx", ""}, 1},
		{serverReg, []string{"inbound", fmt.Sprintf("inbound|%d", appAddr.Port()), "", cliID, "5xx", ""}, 2}, // the 503 and its retry
		{serverReg, []string{"inbound", fmt.Sprintf("inbound|%d", appAddr.Port()), "", cliID, "2xx", "5"}, 1},
	} {
		if got, _ := tc.reg.Value("weft_sidecar_http_requests_total", tc.labels...); got != tc.want {
			t.Errorf("requests_total%v = %v, want %v", tc.labels, got, tc.want)
		}
	}
	if got, _ := clientReg.Value("weft_sidecar_http_retries_total", "server-route", dst); got != 1 {
		t.Errorf("retries_total = %v, want 1 (the 503 of a GET)", got)
	}
	if got, _ := clientReg.Value("weft_sidecar_http_requests_in_flight", "outbound", "server-route"); got != 0 {
		t.Errorf("in flight after every response: %v", got)
	}
	var buf bytes.Buffer
	clientReg.WriteTo(&buf)
	if want := fmt.Sprintf(`weft_sidecar_http_request_duration_seconds_count{direction="outbound",route="server-route",dst=%q,peer=%q,class="2xx"} 3`, dst, srvID); !strings.Contains(buf.String(), want) {
		t.Errorf("exposition lacks %s:\n%s", want, buf.String())
	}
	// Inbound latency by the client's verified ID: the per-edge p99 of
	// weftctl dashboard.
	buf.Reset()
	serverReg.WriteTo(&buf)
	if want := fmt.Sprintf(`weft_sidecar_http_request_duration_seconds_count{direction="inbound",route="inbound|%d",dst="",peer=%q,class="2xx"} 3`, appAddr.Port(), cliID); !strings.Contains(buf.String(), want) {
		t.Errorf("exposition lacks %s:\n%s", want, buf.String())
	}
}

// The status class label keeps to its documented values: a status past
// 5xx from a broken app (600) is counted 5xx, not a class of its own. A
// route that retried nothing has no retries series (absent, not 0), and
// an unrouted request none either.
func TestMetricsLabelsStayBounded(t *testing.T) {
	reg := metrics.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	c := scriptedCluster("c", 1, func(r *http.Request) (*http.Response, error) {
		if r.URL.Path == "/broken" {
			return reply(600), nil
		}
		return reply(200), nil
	})
	route := &Route{Name: "r", Retry: RetryPolicy{Retries: 1, On: GatewayError}, Backends: []Backend{{Cluster: c, Weight: 1}}}
	h := &Handler{Route: func(r *http.Request) *Route {
		if r.URL.Path == "/unrouted" {
			return nil
		}
		return route
	}, Forwarder: &Forwarder{}, Metrics: m}
	for _, path := range []string{"/broken", "/ok", "/unrouted"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "http://svc.demo"+path, nil))
	}
	for _, tc := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"outbound", "r", "c", "", "5xx", ""}, 1},
		{[]string{"outbound", "r", "c", "", "2xx", ""}, 1},
		{[]string{"outbound", "none", "", "", "4xx", ""}, 1},
	} {
		if got, _ := reg.Value("weft_sidecar_http_requests_total", tc.labels...); got != tc.want {
			t.Errorf("requests_total%v = %v, want %v", tc.labels, got, tc.want)
		}
	}
	var buf bytes.Buffer
	reg.WriteTo(&buf)
	if strings.Contains(buf.String(), `class="6xx"`) {
		t.Errorf("a 6xx class in the exposition:\n%s", buf.String())
	}
	for _, labels := range [][]string{{"r", "c"}, {"none", ""}} {
		if v, found := reg.Value("weft_sidecar_http_retries_total", labels...); found {
			t.Errorf("retries_total%v = %v for requests that were not retried: want no series", labels, v)
		}
	}
}

// Ejections are counted per cluster; a sidecar without metrics (nil)
// counts nothing and does not fail.
func TestEjectionsCounted(t *testing.T) {
	reg := metrics.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.Ejected("outbound|8080|server.demo")
	m.Ejected("outbound|8080|server.demo")
	if got, _ := reg.Value("weft_sidecar_http_ejections_total", "outbound|8080|server.demo"); got != 2 {
		t.Fatalf("ejections_total = %v, want 2", got)
	}
	(*Metrics)(nil).Ejected("outbound|8080|server.demo")
}

// Every status is counted in its own class: each hundred from 1xx to 5xx
// at both of its ends, and what is outside them (no status, 99, 600) as
// 5xx.
func TestMetricsStatusClasses(t *testing.T) {
	reg := metrics.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{}
	for _, tc := range []struct {
		status int
		class  string
	}{
		{100, "1xx"}, {199, "1xx"}, {200, "2xx"}, {299, "2xx"}, {300, "3xx"}, {399, "3xx"},
		{400, "4xx"}, {499, "4xx"}, {500, "5xx"}, {599, "5xx"}, {0, "5xx"}, {99, "5xx"}, {600, "5xx"},
	} {
		m.recordStatus("outbound", "r", &requestInfo{dst: "c"}, tc.status, http.Header{}, time.Millisecond)
		want[tc.class]++
	}
	for class, n := range want {
		if got, _ := reg.Value("weft_sidecar_http_requests_total", "outbound", "r", "c", "", class, ""); got != n {
			t.Errorf("requests_total class %s = %v, want %v", class, got, n)
		}
	}
}
