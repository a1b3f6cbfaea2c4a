package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weftmesh/weft/internal/testutil"
)

// appListener is a loopback listener for an app the test serves itself.
func appListener(t *testing.T) (net.Listener, uint16) {
	t.Helper()
	l := testutil.Listen(t)
	return l, uint16(l.Addr().(*net.TCPAddr).Port)
}

// dialService returns a dialler that connects an app of pod A to the
// service through A's outbound listener, as if redirected.
func (mp *meshPair) dialService() func(context.Context, string) (net.Conn, error) {
	return func(context.Context, string) (net.Conn, error) {
		return mp.dial(), nil
	}
}

// TestGRPCThroughThePair: HTTP/2 (gRPC, prior knowledge, unary and a
// server stream held open across pauses long enough to park its flows)
// passes through the mesh pair unchanged.
func TestGRPCThroughThePair(t *testing.T) {
	l, port := appListener(t)
	hs := health.NewServer()
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	hs.SetServingStatus("shop", healthpb.HealthCheckResponse_SERVING)

	mp := newPairTo(t, port, func(c *Config) { c.IdleParkAfter = 20 * time.Millisecond })
	cc, err := grpc.NewClient("passthrough:///"+netip.AddrPortFrom(serviceIP, 80).String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(mp.dialService()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(cc)
	for i := range 3 {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "shop"})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("unary call %d: %v %v", i, r, err)
		}
	}
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	want := []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING,
		healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING}
	for i, st := range want {
		if i > 0 {
			waitParked(t, mp.a, 2) // the stream idles: its flows park
			waitParked(t, mp.b, 2)
			hs.SetServingStatus("shop", st)
		}
		r, err := w.Recv()
		if err != nil || r.GetStatus() != st {
			t.Fatalf("stream message %d: %v %v, want %v", i, r, err, st)
		}
	}
	if mp.b.counter("handshakes", inbound) == 0 {
		t.Fatal("the calls did not cross the pair over mTLS")
	}
}

// TestHTTP1KeepAliveThroughThePair: several HTTP/1.1 requests on one
// connection, a chunked response and a request body pass through the pair
// unchanged.
func TestHTTP1KeepAliveThroughThePair(t *testing.T) {
	l, port := appListener(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Path", r.URL.Path)
		fmt.Fprintf(w, "%s %s %d bytes", r.Method, r.Host, len(body))
		w.(http.Flusher).Flush() // chunked
		fmt.Fprint(w, " done")
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	mp := newPairTo(t, port, nil)
	c := mp.dial()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	for i, body := range []string{"", "hello", strings.Repeat("x", 100_000)} {
		method := "GET"
		if body != "" {
			method = "POST"
		}
		req, _ := http.NewRequest(method, fmt.Sprintf("http://shop.demo/r%d", i), strings.NewReader(body))
		if err := req.Write(c); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("%s shop.demo %d bytes done", method, len(body))
		if string(got) != want || resp.Header.Get("X-Path") != fmt.Sprintf("/r%d", i) ||
			resp.TransferEncoding == nil || resp.TransferEncoding[0] != "chunked" {
			t.Fatalf("response %d: %q %v %v, want %q chunked", i, got, resp.Header, resp.TransferEncoding, want)
		}
	}
	if n := len(mp.b.connections()); n != 1 {
		t.Fatalf("server sidecar has %d connections, want the one kept alive", n)
	}
}
