package sidecar

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weftmesh/weft/internal/testutil"
)

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAppHealthRunsTheAppsProbes(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/ready" && r.Host == "app.local" && r.Header.Get("X-Probe") == "yes":
			fmt.Fprint(w, "ok")
		case r.URL.Path == "/ready":
			http.Error(w, "missing host or header", http.StatusTeapot)
		default:
			http.Error(w, "sick", http.StatusInternalServerError)
		}
	}))
	defer app.Close()
	tlsApp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }))
	defer tlsApp.Close()

	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	grpcAddr := testutil.ServeGRPC(t, gs, testutil.Listen(t))

	probes, err := parseAppProbes(`{
	  "/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": ` + portOf(t, app.Listener.Addr().String()) + `, "scheme": "HTTP",
	      "httpHeaders": [{"name": "Host", "value": "app.local"}, {"name": "X-Probe", "value": "yes"}]}, "timeoutSeconds": 2},
	  "/app-health/app/livez": {"httpGet": {"path": "/live", "port": ` + portOf(t, app.Listener.Addr().String()) + `}},
	  "/app-health/app/startupz": {"httpGet": {"path": "/", "port": ` + portOf(t, tlsApp.Listener.Addr().String()) + `, "scheme": "HTTPS"}},
	  "/app-health/grpc/readyz": {"grpc": {"port": ` + portOf(t, grpcAddr) + `, "service": "up"}},
	  "/app-health/grpc/livez": {"grpc": {"port": ` + portOf(t, grpcAddr) + `, "service": "down"}},
	  "/app-health/gone/readyz": {"httpGet": {"path": "/", "port": 1}}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(appHealth{probes: probes, host: "127.0.0.1"})
	defer srv.Close()
	for path, want := range map[string]int{
		"/app-health/app/readyz":   200,
		"/app-health/app/livez":    500,
		"/app-health/app/startupz": 200,
		"/app-health/grpc/readyz":  200,
		"/app-health/grpc/livez":   503,
		"/app-health/gone/readyz":  503,
		"/app-health/none/readyz":  404,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func TestParseAppProbesRefusesWhatItCannotRun(t *testing.T) {
	for in, want := range map[string]string{
		`not json`: "sidecar: app probes: ",
		`{"/elsewhere": {"httpGet": {"port": 80}}}`:                                `sidecar: app probe path "/elsewhere" is not under /app-health/`,
		`{"/app-health/a/readyz": {"httpGet": {"port": 0}}}`:                       "sidecar: app probe /app-health/a/readyz: port 0 out of range",
		`{"/app-health/a/readyz": {"httpGet": {"port": 80, "scheme": "FTP"}}}`:     `scheme "FTP" is not HTTP or HTTPS`,
		`{"/app-health/a/readyz": {}}`:                                             "want exactly one of httpGet and grpc",
		`{"/app-health/a/readyz": {"httpGet": {"port": 80}, "grpc": {"port": 9}}}`: "want exactly one of httpGet and grpc",
	} {
		if _, err := parseAppProbes(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", in, err, want)
		}
	}
	if p, err := parseAppProbes(""); err != nil || p != nil {
		t.Fatalf("empty: %v %v", p, err)
	}
}
