package proxy

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// pendingConns is how many connections BenchmarkConnMemory holds per state.
const pendingConns = 1000

// BenchmarkConnMemory reports what one connection costs a sidecar, in
// bytes of Go memory (HeapInuse+StackInuse after two collections), in the
// states a client can hold it in (BenchmarkIdleConnMemory has the idle,
// established one):
//
//	silent        accepted on the inbound listener, nothing sent yet
//	              (SniffTimeout long): the wait for the first byte
//	stalled_hello 40 bytes of a ClientHello sent, then nothing: sniffing
//	stuck_writer  established through a mesh pair whose app stopped
//	              reading while the client still sends: both sidecars'
//	              flows block in a write (bytes/conn is per sidecar)
//
// bytes/conn takes out the cost of the client's own sockets (the same
// number of loopback connections to a server that holds them, measured
// first). Run with -benchtime=1x.
func BenchmarkConnMemory(b *testing.B) {
	hello := smallHello(b, "echo.demo.svc.cluster.local")
	// direct is the growth of opening n connections to a server that holds
	// them: two sockets each, as a client's connection to the sidecar is
	// (the client's and the accepted one).
	direct := func(b *testing.B, send []byte) int64 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		var held []net.Conn
		var accepted atomic.Int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range pendingConns {
				c, err := l.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
				accepted.Add(1)
			}
		}()
		in, _, closeAll := holdConns(b, pendingConns, func(i int) net.Conn { return dialFrom(b, i, l.Addr().String(), send) },
			func() bool { return accepted.Load() == pendingConns })
		<-done
		for _, c := range held {
			c.Close()
		}
		closeAll()
		return in
	}
	for _, state := range []string{"silent", "stalled_hello"} {
		b.Run(state, func(b *testing.B) {
			var send []byte
			if state == "stalled_hello" {
				send = hello[:40]
			}
			pd := startPod(b, testutil.NewCA(b, td, nil), workloadID("demo", "echo"), func(c *Config) {
				c.SniffTimeout, c.HandshakeTimeout = time.Minute, time.Minute
			})
			pd.nat.setDefault(netip.AddrPortFrom(podBIP, 8080))
			pd.cfg.Store(meshConfig(nil, nil, inboundChains(8080, false, nil), false))
			for range b.N {
				base := direct(b, send)
				in, rss, closeAll := holdConns(b, pendingConns, func(i int) net.Conn { return dialFrom(b, i, pd.inboundAddr().String(), send) },
					func() bool { return pd.p.reg.len() == pendingConns && waitingIn("sniffUntil") >= pendingConns })
				b.ReportMetric(float64(in-base)/pendingConns, "bytes/conn")
				b.ReportMetric(float64(rss)/pendingConns, "rss-bytes/conn")
				b.ReportMetric(float64(stackInuse())/float64(pd.p.open.Load()), "stack-bytes/conn")
				closeAll()
				for deadline := time.Now().Add(10 * time.Second); pd.p.reg.len() > 0 && time.Now().Before(deadline); {
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
	b.Run("stuck_writer", func(b *testing.B) {
		const n = 200
		stop := make(chan struct{})
		mp := newMeshPair(b, func(*net.TCPConn, *app) { <-stop }, nil) // never reads
		b.Cleanup(func() { close(stop) })
		chunk := make([]byte, 64<<10)
		for range b.N {
			var conns []net.Conn
			in, rss, closeAll := holdConns(b, n, func(int) net.Conn {
				c := mp.dial()
				// Write until the buffers on the way are full.
				for {
					_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
					if _, err := c.Write(chunk); err != nil {
						break
					}
				}
				conns = append(conns, c)
				return c
			}, func() bool {
				// Settled once both sidecars' flows toward the app block in
				// a write; until then the client sends more where there is
				// room (a write also times out on a sidecar that is only
				// slow to read).
				if waitingIn("writeBounded") >= 2*n {
					return true
				}
				for _, c := range conns {
					_ = c.SetWriteDeadline(time.Now().Add(time.Millisecond))
					_, _ = c.Write(chunk)
				}
				return false
			})
			b.ReportMetric(float64(in)/n/2, "bytes/conn")
			b.ReportMetric(float64(rss)/n/2, "rss-bytes/conn")
			closeAll()
		}
	})
}

// dialFrom opens the i-th connection to addr from one of 16 loopback
// sources and sends send.
func dialFrom(b *testing.B, i int, addr string, send []byte) net.Conn {
	d := net.Dialer{LocalAddr: loopbackSource(i)}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	if len(send) > 0 {
		if _, err := c.Write(send); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

// holdConns opens n connections with dial and returns the growth of Go
// memory in use and of RSS once settled returns true, and a function
// closing them.
func holdConns(b *testing.B, n int, dial func(int) net.Conn, settled func() bool) (inuse, rss int64, closeAll func()) {
	b.Helper()
	in0, rss0 := memNow(b)
	conns := make([]net.Conn, 0, n)
	closeAll = func() {
		for _, c := range conns {
			c.Close()
		}
	}
	held := false
	defer func() {
		if !held { // dial or the wait failed the benchmark
			closeAll()
		}
	}()
	for i := range n {
		conns = append(conns, dial(i))
	}
	for deadline := time.Now().Add(20 * time.Second); !settled(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the connections did not settle")
		}
	}
	in1, rss1 := memNow(b)
	held = true
	return in1 - in0, rss1 - rss0, closeAll
}
