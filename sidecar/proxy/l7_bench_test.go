package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// The costs of the HTTP-aware data plane ([l7] #19), each against its
// baselines taken in the same benchmark iteration, on loopback, all in
// this one process:
//
//	direct the app's client to the app, no sidecar (the floor)
//	l4     through the L4 pair: client sidecar on a tcp_proxy chain to the
//	       same cluster (no ALPN), mTLS, the server sidecar's L4 TLS chain
//	       to the app — today's path, bytes copied
//	l7     through the L7 pair: the client sidecar serves the app's
//	       connection request by request, HTTP/2 over mTLS (ALPN h2) to
//	       the server sidecar's inbound|<port>|h2 chain, which delivers to
//	       the app in its protocol
//
// b.N is the number of requests *per mode*: each iteration sends b.N
// requests in each of the three modes, in three rounds whose order of
// modes rotates (direct l4 l7, l4 l7 direct, l7 direct l4), so a
// disturbance of a shared machine lands on all three alike. ns/op is
// therefore the wall time of one request in each mode (pacing included);
// the figures are the custom metrics:
//
//	<mode>-p50-µs, <mode>-p99-µs   latency of one request (send to last
//	                               byte of the answer), nearest rank
//	<mode>-added-p50-µs, -p99-µs   that mode's percentile − direct's
//	l7/l4-p99, l7/direct-p99 (…p50) ratios of the percentiles
//	<mode>-cpu-ms/kreq             user+system CPU of the whole process
//	                               (getrusage) per 1,000 requests
//	<mode>-req/s                   requests over that mode's wall time
//	                               (with rate=max: its throughput)
//	<mode>-vcpu/sidecar/krps       (mode's − direct's CPU) / 2: the two
//	                               sidecars' share, halved — vCPU per
//	                               1,000 req/s per sidecar
//
// The CPU is the process's: the client, the app and both sidecars run
// here, so the direct mode's CPU (client and app alone) is the baseline
// taken out; the split between the two sidecars is not measured (halved).
// rate=max is a closed loop (each connection sends its next request when
// the answer arrived: the latencies include queueing at saturation);
// rate=1000 paces the requests at 1,000 req/s over all connections, evenly
// spread (as fortio -qps 1000 -uniform), the operating point.
// Run with a fixed count, e.g.
//
//	go test ./sidecar/proxy/ -run '^$' -bench 'BenchmarkL7' -benchtime 3000x -count 3
//
// and compare repetitions with benchstat (the ratios are per iteration).

// l7BenchRounds is how many rounds an iteration's requests are split into.
const l7BenchRounds = 3

// loadMode is one way of sending a request: worker w's request on its own
// connection (or its share of one ClientConn).
type loadMode struct {
	name string
	do   func(w int) error
}

type modeResult struct {
	lat  []time.Duration
	cpu  time.Duration
	wall time.Duration
}

// processCPU is the process's user+system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runModes sends b.N requests per mode from workers goroutines, the modes
// interleaved in rounds; every interval (if > 0) one request is due,
// round robin over the workers. It reports the metrics and returns the
// results by mode.
func runModes(b *testing.B, modes []*loadMode, workers int, interval time.Duration) map[string]*modeResult {
	b.Helper()
	res := make([]*modeResult, len(modes))
	for i := range res {
		res[i] = &modeResult{lat: make([]time.Duration, b.N)}
	}
	b.ResetTimer()
	off := 0
	for r := range l7BenchRounds {
		n := b.N / l7BenchRounds
		if r < b.N%l7BenchRounds {
			n++
		}
		if n == 0 {
			continue
		}
		for k := range modes {
			i := (k + r) % len(modes)
			m, out := modes[i], res[i]
			lat := out.lat[off : off+n]
			var wg sync.WaitGroup
			var failed atomic.Pointer[error]
			cpu0, t0 := processCPU(b), time.Now()
			for w := range min(workers, n) {
				wg.Go(func() {
					for j := w; j < n; j += workers {
						if interval > 0 {
							if d := time.Until(t0.Add(time.Duration(j) * interval)); d > 0 {
								time.Sleep(d)
							}
						}
						s := time.Now()
						if err := m.do(w); err != nil {
							err = fmt.Errorf("%s, worker %d: %w", m.name, w, err)
							failed.CompareAndSwap(nil, &err)
							return
						}
						lat[j] = time.Since(s)
					}
				})
			}
			wg.Wait()
			out.wall += time.Since(t0)
			out.cpu += processCPU(b) - cpu0
			if err := failed.Load(); err != nil {
				b.Fatal(*err)
			}
		}
		off += n
	}
	b.StopTimer()

	byName := map[string]*modeResult{}
	pct := map[string][2]float64{}
	for i, m := range modes {
		r := res[i]
		byName[m.name] = r
		slices.Sort(r.lat)
		p50, p99 := percentile(r.lat, 0.50), percentile(r.lat, 0.99)
		pct[m.name] = [2]float64{p50, p99}
		b.ReportMetric(p50, m.name+"-p50-µs")
		b.ReportMetric(p99, m.name+"-p99-µs")
		b.ReportMetric(r.cpu.Seconds()*1e3*1000/float64(b.N), m.name+"-cpu-ms/kreq")
		b.ReportMetric(float64(b.N)/r.wall.Seconds(), m.name+"-req/s")
	}
	direct, ok := byName["direct"]
	if !ok {
		return byName
	}
	for _, m := range modes {
		if m.name == "direct" {
			continue
		}
		p, d := pct[m.name], pct["direct"]
		b.ReportMetric(p[0]-d[0], m.name+"-added-p50-µs")
		b.ReportMetric(p[1]-d[1], m.name+"-added-p99-µs")
		b.ReportMetric(p[0]/d[0], m.name+"/direct-p50")
		b.ReportMetric(p[1]/d[1], m.name+"/direct-p99")
		// CPU seconds per 1,000 requests = vCPU at 1,000 req/s.
		b.ReportMetric((byName[m.name].cpu-direct.cpu).Seconds()/2*1000/float64(b.N), m.name+"-vcpu/sidecar/krps")
	}
	if l4, l7 := pct["l4"], pct["l7"]; l4[1] > 0 && l7[1] > 0 {
		b.ReportMetric(l7[0]/l4[0], "l7/l4-p50")
		b.ReportMetric(l7[1]/l4[1], "l7/l4-p99")
	}
	return byName
}

// percentile of sorted latencies, nearest rank, in µs.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return float64(sorted[max(0, min(i, len(sorted)-1))]) / 1e3
}

// l7BenchPair is a client sidecar on the L4 path, one on the L7 path, and
// the server sidecar (webID, STRICT) of an app on 127.0.0.1:port with
// both the h2 chain and the L4 TLS chain, as the control plane configures
// an HTTP port.
type l7BenchPair struct {
	l4, l7, server *pod
}

func newL7BenchPair(b *testing.B, ca *certs.CA, port uint16, proto model.HTTPProtocol) *l7BenchPair {
	b.Helper()
	srv := startPod(b, ca, webID)
	srv.nat.setDefault(netip.AddrPortFrom(podBIP, port))
	srv.cfg.Store(l7ServerConfig(port, proto))
	eps := map[string][]model.Endpoint{l7Route: {{Addr: srv.inboundAddr()}}}
	// The L4 client: the chain of TestL7GRPCOneChannelReachesEveryBackend's
	// baseline, a tcp_proxy to the same cluster, mTLS without ALPN.
	l4cfg := l7ClientConfig(nil, eps)
	l4cfg.Outbound.Chains[0].Target = model.Target{Cluster: l7Route}
	l4cfg.Clusters[l7Route].HTTP = model.HTTPNone
	l4cfg.Clusters[l7Route].UpstreamTLS.ALPN = nil
	return &l7BenchPair{
		l4:     startL7ClientTB(b, ca, l4cfg),
		l7:     startL7ClientTB(b, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, eps)),
		server: srv,
	}
}

// startL7ClientTB is startL7Client for a benchmark.
func startL7ClientTB(b *testing.B, ca *certs.CA, cfg *model.Config) *pod {
	b.Helper()
	a := startPod(b, ca, workloadID("shop", "frontend"))
	a.nat.setDefault(netip.AddrPortFrom(serviceIP, 80))
	a.cfg.Store(cfg)
	return a
}

// BenchmarkL7HTTP1: a 1 KiB POST and a 1 KiB answer over HTTP/1.1
// keep-alive connections (conns of them, one per worker), direct, through
// the L4 pair and through the L7 pair to the same net/http app.
func BenchmarkL7HTTP1(b *testing.B) {
	body := strings.Repeat("x", 1024)
	req := []byte("POST /echo HTTP/1.1\r\nHost: web.demo\r\nContent-Length: 1024\r\n\r\n" + body)
	for _, rate := range []int{0, 1000} {
		for _, conns := range []int{4, 64} {
			name := fmt.Sprintf("rate=%d/conns=%d", rate, conns)
			if rate == 0 {
				name = fmt.Sprintf("rate=max/conns=%d", conns)
			}
			b.Run(name, func(b *testing.B) {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if _, err := io.Copy(io.Discard, r.Body); err != nil {
						return
					}
					w.Header().Set("Content-Length", "1024")
					io.WriteString(w, body)
				})}
				go srv.Serve(l)
				b.Cleanup(func() { srv.Close() })
				port := l.Addr().(*net.TCPAddr).AddrPort().Port()
				pair := newL7BenchPair(b, testutil.NewCA(b, td, nil), port, model.HTTP1)

				mode := func(name, addr string) *loadMode {
					cs := make([]net.Conn, conns)
					brs := make([]*bufio.Reader, conns)
					for w := range conns {
						c, err := net.Dial("tcp", addr)
						if err != nil {
							b.Fatal(err)
						}
						b.Cleanup(func() { c.Close() })
						_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
						cs[w], brs[w] = c, bufio.NewReaderSize(c, 4096)
					}
					return &loadMode{name: name, do: func(w int) error {
						if _, err := cs[w].Write(req); err != nil {
							return err
						}
						resp, err := http.ReadResponse(brs[w], nil)
						if err != nil {
							return err
						}
						n, err := io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err != nil {
							return err
						}
						if resp.StatusCode != 200 || n != 1024 {
							return fmt.Errorf("answer %d with %d bytes", resp.StatusCode, n)
						}
						return nil
					}}
				}
				modes := []*loadMode{
					mode("direct", l.Addr().String()),
					mode("l4", pair.l4.outboundAddr().String()),
					mode("l7", pair.l7.outboundAddr().String()),
				}
				// Warm up: every connection established end to end (the L4
				// path's mTLS per connection, the L7 path's pooled HTTP/2).
				for _, m := range modes {
					for w := range conns {
						for range 2 {
							if err := m.do(w); err != nil {
								b.Fatalf("%s warm-up: %v", m.name, err)
							}
						}
					}
				}
				interval := time.Duration(0)
				if rate > 0 {
					interval = time.Second / time.Duration(rate)
				}
				runModes(b, modes, conns, interval)
			})
		}
	}
}

// grpcHealthBackend is a gRPC server (h2c) on 127.0.0.1 serving the health
// service, counting calls.
func grpcHealthBackend(b *testing.B) (addr netip.AddrPort, calls *atomic.Int64) {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	calls = &atomic.Int64{}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		calls.Add(1)
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(l)
	b.Cleanup(srv.Stop)
	return l.Addr().(*net.TCPAddr).AddrPort(), calls
}

// healthCheck is one ClientConn (one HTTP/2 connection) to addr and a
// function making one unary health Check on it.
func healthCheck(b *testing.B, addr string) func() error {
	b.Helper()
	cc := grpcClient(b, addr)
	b.Cleanup(func() { cc.Close() })
	hc := healthpb.NewHealthClient(cc)
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return errors.New(resp.GetStatus().String())
		}
		return nil
	}
}

// grpcWorkers is how many calls BenchmarkL7GRPCUnary keeps in flight on
// its one ClientConn (as the tests' grpcCalls).
const grpcWorkers = 4

// BenchmarkL7GRPCUnary: unary health Checks over one ClientConn, 4 calls in
// flight, direct (h2c to the app), through the L4 pair and through the L7
// pair.
func BenchmarkL7GRPCUnary(b *testing.B) {
	for _, rate := range []int{0, 1000} {
		name := fmt.Sprintf("rate=%d", rate)
		if rate == 0 {
			name = "rate=max"
		}
		b.Run(name, func(b *testing.B) {
			addr, _ := grpcHealthBackend(b)
			pair := newL7BenchPair(b, testutil.NewCA(b, td, nil), addr.Port(), model.HTTP2)
			var modes []*loadMode
			for _, m := range []struct{ name, addr string }{
				{"direct", addr.String()}, {"l4", pair.l4.outboundAddr().String()}, {"l7", pair.l7.outboundAddr().String()},
			} {
				call := healthCheck(b, m.addr)
				for range 10 {
					if err := call(); err != nil {
						b.Fatalf("%s warm-up: %v", m.name, err)
					}
				}
				modes = append(modes, &loadMode{name: m.name, do: func(int) error { return call() }})
			}
			interval := time.Duration(0)
			if rate > 0 {
				interval = time.Second / time.Duration(rate)
			}
			runModes(b, modes, grpcWorkers, interval)
		})
	}
}

// BenchmarkL7GRPCSpread: one ClientConn through the L7 client sidecar to a
// cluster of three server pods, each with its own gRPC app; b.N unary
// calls, 4 in flight, on the real clock (peak-EWMA sees loopback's noise:
// TestL7GRPCOneChannelReachesEveryBackend stops the clock to test the
// choice by requests in flight alone). Reports each backend's share of the
// calls as a percentage of an even share (100 = even): min-share-%,
// max-share-%; the target is every one within 90–110.
func BenchmarkL7GRPCSpread(b *testing.B) {
	ca := testutil.NewCA(b, td, nil)
	var eps []model.Endpoint
	var counts []*atomic.Int64
	for range 3 {
		addr, calls := grpcHealthBackend(b)
		srv := startPod(b, ca, webID)
		srv.nat.setDefault(netip.AddrPortFrom(podBIP, addr.Port()))
		srv.cfg.Store(l7ServerConfig(addr.Port(), model.HTTP2))
		eps = append(eps, model.Endpoint{Addr: srv.inboundAddr()})
		counts = append(counts, calls)
	}
	a := startL7ClientTB(b, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, map[string][]model.Endpoint{l7Route: eps}))
	call := healthCheck(b, a.outboundAddr().String())
	before := make([]int64, len(counts))
	for i, c := range counts {
		before[i] = c.Load()
	}
	b.ResetTimer()
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range grpcWorkers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := call(); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	lo, hi := 1e9, 0.0
	for i, c := range counts {
		share := float64(c.Load()-before[i]) / (float64(b.N) / 3) * 100
		lo, hi = min(lo, share), max(hi, share)
	}
	b.ReportMetric(lo, "min-share-%")
	b.ReportMetric(hi, "max-share-%")
}
