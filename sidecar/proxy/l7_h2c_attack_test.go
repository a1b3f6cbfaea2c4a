package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Attacks on write-behind for the app's h2c connections (behindH2C): the
// app is the attacker.

// h2cFrame is an HTTP/2 frame: type t, flags, stream 0, payload p.
func h2cFrame(t, flags byte, p []byte) []byte {
	n := len(p)
	return append([]byte{byte(n >> 16), byte(n >> 8), byte(n), t, flags, 0, 0, 0, 0}, p...)
}

// stalledSidecarWrites counts the goroutines of the process blocked
// writing to a socket for an app connection of the l7 engine: the
// write-behind writer, or (without write-behind) the HTTP/2 server's
// write through meteredConn.
func stalledSidecarWrites() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "[IO wait") &&
			(strings.Contains(g, ".(*coalescer).writer(") || strings.Contains(g, ".(*meteredConn).Write(")) {
			n++
		}
	}
	return n
}

// writerGoroutines counts the write-behind writers alive.
func writerGoroutines() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), ".(*coalescer).writer(")
}

// stallH2CApp connects an h2c app (a small receive buffer) to a's outbound
// listener that sends the preface and PINGs and never reads: it returns
// once the sidecar's writes to it are stuck on the full socket, and again
// 100 ms later. It then sends extra PINGs more, whose acks the sidecar
// has to write.
//
// The sidecar's socket for the connection gets a small send buffer too
// (the test shares the sidecar's process): left to the kernel's
// autotuning it grows to megabytes, so the writes stalled only after
// ~250,000 acks, and whether that came before net/http's HTTP/2 flood
// guard (which resets a connection with 10,000 control frames queued)
// depended on the run's speed; a race-detector run could lose. With it,
// they stall after a few thousand (maxStallPINGs bounds them), far below
// the guard's bound, on any run.
func stallH2CApp(t *testing.T, a *pod, extra int) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	nc, err := d.Dial("tcp", a.outboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*net.TCPConn)
	t.Cleanup(func() { c.Close() })
	setPeerSendBuffer(t, c.LocalAddr().(*net.TCPAddr).AddrPort(), 4096)
	if _, err := c.Write(append([]byte(h2Preface), h2cFrame(0x4, 0, nil)...)); err != nil { // SETTINGS
		t.Fatal(err)
	}
	ping := h2cFrame(0x6, 0, make([]byte, 8))
	sent := 0
	batch := func(n int) {
		b := make([]byte, 0, n*len(ping))
		for range n {
			b = append(b, ping...)
		}
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(b); err != nil {
			t.Fatalf("the app's PINGs (%d sent): %v", sent, err)
		}
	}
	base := stalledSidecarWrites()
	t0 := time.Now()
	defer func() {
		t.Logf("the sidecar's writes stalled after %v, %d PINGs", time.Since(t0).Round(time.Millisecond), sent)
	}()
	for deadline := time.Now().Add(20 * time.Second); ; {
		if time.Now().After(deadline) || sent >= maxStallPINGs {
			t.Fatalf("the sidecar's writes to the app never stalled (%d PINGs in %v)", sent, time.Since(t0).Round(time.Millisecond))
		}
		batch(512) // 8.5 KiB of acks: less than maxBehind
		sent += 512
		time.Sleep(time.Millisecond)
		if stalledSidecarWrites() > base {
			time.Sleep(100 * time.Millisecond)
			if stalledSidecarWrites() > base {
				break
			}
		}
	}
	if extra > 0 {
		batch(extra)
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

// maxStallPINGs bounds the PINGs stallH2CApp sends: with the small
// buffers the writes stall after ~2,000 (32 KiB behind, 8 KiB of send
// buffer, the app's 8 KiB of receive buffer: 17 bytes an ack), and
// net/http's HTTP/2 server resets a connection with 10,000 control frames
// queued, which the PINGs sent bound.
const maxStallPINGs = 8192

// setPeerSendBuffer sets SO_SNDBUF to n on this process's TCP socket whose
// peer is peer — the sidecar's accepted socket for a connection the test
// dialled — waiting up to 5 s for the sidecar to accept it.
func setPeerSendBuffer(t *testing.T, peer netip.AddrPort, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		for _, e := range ents {
			fd, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			sa, err := syscall.Getpeername(fd)
			if err != nil {
				continue
			}
			if a, ok := sa.(*syscall.SockaddrInet4); ok && netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)) == peer {
				if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, n); err != nil {
					t.Fatalf("SO_SNDBUF on the sidecar's socket: %v", err)
				}
				return
			}
		}
	}
	t.Fatalf("no socket of this process has %v as its peer", peer)
}

// TestAttackH2CWriteTimeoutBoundsAStalledApp: an h2c app that stops
// reading. The sidecar's write to it cannot complete; WriteTimeout must
// end the connection (as it does for every other app connection, and did
// for this one before write-behind: meteredConn's bounded write timed out
// and net/http's HTTP/2 server closed the connection). The HTTP/2
// server's Writes return at once (appended) and the deadline it sets
// bounds only them: the writer writes through meteredConn, whose bounded
// write times out. With the coalescer under the meter instead (the
// review's finding) the writer's system call had no deadline at all and
// the connection stayed open (its goroutines, its pending bytes, the
// HTTP/2 server's state) until the idle timeout.
func TestAttackH2CWriteTimeoutBoundsAStalledApp(t *testing.T) {
	const wt = 300 * time.Millisecond
	ca := testutil.NewCA(t, td, nil)
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, nil), func(c *Config) {
		c.WriteTimeout = wt
		c.IdleTimeout = time.Minute
	})
	stallH2CApp(t, a, 0)
	start := time.Now()
	limit := wt + behindCloseWait + 2*time.Second
	for a.counter("connections", outbound) != 0 && time.Since(start) < limit {
		time.Sleep(20 * time.Millisecond)
	}
	if n := a.counter("connections", outbound); n != 0 {
		t.Errorf("%v after the sidecar's writes to the h2c app stalled (WriteTimeout %v): %v app connection(s) still open, "+
			"timeouts{write} = %v, %d sidecar write(s) still blocked",
			time.Since(start).Round(time.Millisecond), wt, n, a.counter("timeouts", outbound, timeoutWrite), stalledSidecarWrites())
	}
}

// TestAttackH2CBytesCountedAreBytesSent: bytes to the app are counted as
// they leave (on every other connection: what the socket took): the meter
// is under the coalescer. Above it, it counted what was appended, and what
// was pending when the connection ended (here the app, which had stopped
// reading, half-closes: the HTTP/2 server closes the connection, the
// coalescer drops what it could not send within behindCloseWait) was
// counted and never sent.
func TestAttackH2CBytesCountedAreBytesSent(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, nil), func(c *Config) {
		c.IdleTimeout = time.Minute
	})
	c := stallH2CApp(t, a, 256)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for a.counter("connections", outbound) != 0 && time.Since(start) < 10*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	if n := a.counter("connections", outbound); n != 0 {
		t.Fatalf("the app half-closed: %v connection(s) still open after %v", n, time.Since(start))
	}
	// The app reads what reached it: everything the sidecar's socket took.
	var got int64
	buf := make([]byte, 64<<10)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, err := c.Read(buf)
		got += int64(n)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the connection was not closed: %v", err)
			}
			if errors.Is(err, syscall.ECONNRESET) {
				// A reset discards what had reached the app's socket: the
				// sidecar closed with the app's PINGs unread, which the
				// small buffers (stallH2CApp) keep far from net/http's
				// flood guard.
				t.Fatalf("the connection was reset after %d bytes: nothing to compare", got)
			}
			if !errors.Is(err, io.EOF) {
				t.Logf("the app's read ended: %v", err)
			}
			break
		}
	}
	counted := int64(a.counter("bytes", outbound, "to_downstream"))
	if counted != got {
		t.Errorf("weft_sidecar_bytes_total{outbound,to_downstream} = %d, the app received %d: %d bytes counted that never left",
			counted, got, counted-got)
	}
}

// TestAttackH2CWriterEndsWhenTheServerRefusesTheConnection: the drain
// shuts the l7 server down (l7Engine.shutdown) while connections accepted
// before the listeners closed are still being sniffed: such a connection
// reaches outboundL7, its ServeConnWith returns at once (the server's
// listener is closed) and finish closes the socket (cn.closeAll), which
// must close the coalescer too (it is tracked): else its writer goroutine
// waits forever.
func TestAttackH2CWriterEndsWhenTheServerRefusesTheConnection(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, nil))
	fc := a.cfg.Load().Outbound.Chains[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = a.p.l7.server.Shutdown(ctx) // the drain has begun
	before := writerGoroutines()
	_, s := loopbackPair(t)
	cn := &conn{direction: outbound}
	cn.track(s) // as handle does
	fw, err := a.p.outboundL7(fc, netip.AddrPortFrom(serviceIP, 80), newPrefixConn(s.(*net.TCPConn), []byte(h2Preface)), true, cn)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { fw.serve(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConnWith did not return on a shut down server")
	}
	cn.closeAll() // finish
	deadline := time.Now().Add(2 * behindCloseWait)
	for writerGoroutines() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := writerGoroutines(); n > before {
		t.Errorf("%d write-behind writer goroutine(s) left after the connection ended (%d before it)", n, before)
	}
}
