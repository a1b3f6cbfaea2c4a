package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// writerSpy is a server pod's connection to its app, counting its Writes
// and those made by a coalescer's writer goroutine (write-behind).
type writerSpy struct {
	net.Conn
	writes, behind *atomic.Int64
}

func (s writerSpy) Write(b []byte) (int, error) {
	s.writes.Add(1)
	buf := make([]byte, 16<<10)
	if strings.Contains(string(buf[:runtime.Stack(buf, false)]), ".(*coalescer).writer(") {
		s.behind.Add(1)
	}
	return s.Conn.Write(b)
}

// spyOnApp makes a pod's connections to its app writerSpies.
func spyOnApp(writes, behind *atomic.Int64) func(*Config) {
	return func(c *Config) {
		c.DialFrom = func(ctx context.Context, network string, src netip.Addr, addr string) (net.Conn, error) {
			conn, err := dialFromAddr(ctx, network, src, addr)
			if err != nil {
				return nil, err
			}
			return writerSpy{Conn: conn, writes: writes, behind: behind}, nil
		}
	}
}

// TestL7H2CAppConnectionsWrittenBehind: the server sidecar writes to an h2c
// app (gRPC) behind, every Write of net/http's HTTP/2 transport gathered
// for the connection's writer goroutine (writebehind.go); to an HTTP/1.1
// app it writes from the request's goroutine (AppH1: one Write a request).
func TestL7H2CAppConnectionsWrittenBehind(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	var writes, behind atomic.Int64

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	port := l.Addr().(*net.TCPAddr).AddrPort().Port()
	g := &grpcBackend{pod: startPod(t, ca, webID, spyOnApp(&writes, &behind))}
	g.pod.nat.setDefault(netip.AddrPortFrom(podBIP, port))
	g.pod.cfg.Store(l7ServerConfig(port, model.HTTP2))
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)},
		map[string][]model.Endpoint{l7Route: {{Addr: g.pod.inboundAddr()}}}))
	grpcCalls(t, a, 20, []*grpcBackend{g})
	if w, b := writes.Load(), behind.Load(); w == 0 || b != w {
		t.Errorf("h2c app: %d of %d Writes to it by the write-behind writer, want all (and some)", b, w)
	}

	writes.Store(0)
	behind.Store(0)
	h1 := startHTTPBackendWith(t, ca, "h1", spyOnApp(&writes, &behind))
	a.cfg.Store(l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: {h1.endpoint()}}))
	c := httpClient(t, a)
	for range 5 {
		if code, body := doReq(t, c, http.MethodGet, "/"); code != http.StatusOK {
			t.Fatalf("HTTP/1.1 app: %d %s", code, body)
		}
	}
	if w, b := writes.Load(), behind.Load(); w == 0 || b != 0 {
		t.Errorf("HTTP/1.1 app: %d of %d Writes to it by a write-behind writer, want none (of some)", b, w)
	}
}

// TestOutboundL7H2CWrittenBehind: the client sidecar serves an app
// connection whose first bytes were HTTP/2's preface over a write-behind
// coalescer (net/http's HTTP/2 server writes a response's HEADERS, DATA
// and trailers apart) above the connection's meter, closed with the
// connection; an HTTP/1.1 one over the meter directly.
func TestOutboundL7H2CWrittenBehind(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, nil))
	fc := a.cfg.Load().Outbound.Chains[0]
	for _, h2c := range []bool{true, false} {
		_, s := loopbackPair(t)
		cn := &conn{direction: outbound}
		fw, err := a.p.outboundL7(fc, netip.AddrPortFrom(serviceIP, 80), newPrefixConn(s.(*net.TCPConn), nil), h2c, cn)
		if err != nil {
			t.Fatal(err)
		}
		var behind []*coalescer
		for _, c := range cn.closers {
			if co, ok := c.(*coalescer); ok {
				behind = append(behind, co)
			}
		}
		if h2c != (len(behind) == 1) || len(behind) > 1 {
			t.Fatalf("h2c %v: %d coalescers closed with the connection (closers %v)", h2c, len(behind), cn.closers)
		}
		if h2c {
			co := behind[0]
			co.mu.Lock()
			on := co.wb != nil
			co.mu.Unlock()
			if !on || co.Conn != net.Conn(fw.meter) {
				t.Errorf("h2c: write-behind %v over %T, want on over the meter", on, co.Conn)
			}
		}
		cn.closeAll()
		fw.meter.Close()
	}
}

// TestBoundedConnTimesOutAStalledPeer: the server sidecar's connections to
// an h2c app are written through boundedConn: a Write to a peer that
// stopped reading ends at the write timeout, counted once.
func TestBoundedConnTimesOutAStalledPeer(t *testing.T) {
	c, _ := loopbackPair(t) // the peer never reads
	var timedOut atomic.Int64
	bc := boundedConn{Conn: c, d: 100 * time.Millisecond, timedOut: func() { timedOut.Add(1) }}
	done := make(chan error, 1)
	go func() {
		_, err := bc.Write(make([]byte, 64<<20))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) || timedOut.Load() != 1 {
			t.Fatalf("Write to a stalled peer: %v, timed out counted %d; want a deadline error, counted once", err, timedOut.Load())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Write to a stalled peer was not bounded by the write timeout")
	}
}
