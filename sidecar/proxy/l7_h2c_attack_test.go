package proxy

import (
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

// Attacks on the app's h2c connection to the client sidecar (served by
// weft's HTTP/2 server over the connection's meter): the app is the
// attacker.

// h2cFrame is an HTTP/2 frame: type t, flags, stream 0, payload p.
func h2cFrame(t, flags byte, p []byte) []byte {
	n := len(p)
	return append([]byte{byte(n >> 16), byte(n >> 8), byte(n), t, flags, 0, 0, 0, 0}, p...)
}

// stalledSidecarWrites counts the goroutines of the process blocked
// writing to a socket for an app connection of the l7 engine: the HTTP/2
// server's write through meteredConn.
func stalledSidecarWrites() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "[IO wait") &&
			strings.Contains(g, ".(*meteredConn).Write(") {
			n++
		}
	}
	return n
}

// stallH2CApp connects an h2c app to a's outbound listener that sends the
// preface, a SETTINGS and stallPINGs PINGs in one Write, and never reads:
// it returns once the sidecar's writes of their acks are stuck on the full
// socket. The app's receive buffer and the sidecar's send buffer are the
// kernel's smallest (a few KiB: the acks are 15 KiB), and the PINGs fit in
// the sidecar's HTTP/2 read buffer (16 KiB), read whole before the first
// ack is written: when the sidecar ends the connection nothing it received
// is unread, so it closes with a FIN, not a reset (which would discard
// what had reached the app).
func stallH2CApp(t *testing.T, a *pod) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1) })
	}}
	nc, err := d.Dial("tcp", a.outboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*net.TCPConn)
	t.Cleanup(func() { c.Close() })
	setPeerSendBuffer(t, c.LocalAddr().(*net.TCPAddr).AddrPort(), 1)
	if _, err := c.Write(append([]byte(h2Preface), h2cFrame(0x4, 0, nil)...)); err != nil { // SETTINGS
		t.Fatal(err)
	}
	base := stalledSidecarWrites()
	ping := h2cFrame(0x6, 0, make([]byte, 8))
	b := make([]byte, 0, stallPINGs*len(ping))
	for range stallPINGs {
		b = append(b, ping...)
	}
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("the app's PINGs: %v", err)
	}
	t0 := time.Now()
	for deadline := t0.Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if stalledSidecarWrites() > base {
			t.Logf("the sidecar's writes stalled after %v", time.Since(t0).Round(time.Millisecond))
			return c
		}
	}
	t.Fatalf("the sidecar's writes to the app never stalled (%d PINGs, %v)", stallPINGs, time.Since(t0).Round(time.Millisecond))
	return nil
}

// stallPINGs is how many PINGs stallH2CApp sends: 15,300 bytes, within
// the HTTP/2 server's 16 KiB read buffer; their acks as many, more than the
// smallest socket buffers hold.
const stallPINGs = 900

// setPeerSendBuffer sets SO_SNDBUF to n (the kernel's least if n is
// smaller) on this process's TCP socket whose
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
// end the connection, as it does for every other app connection: the
// HTTP/2 server writes through meteredConn, whose bounded write times
// out, and the server closes the connection. (A review of session 27
// found the write-behind writer then in between writing with no deadline
// at all: the connection stayed open until the idle timeout.)
func TestAttackH2CWriteTimeoutBoundsAStalledApp(t *testing.T) {
	const wt = 300 * time.Millisecond
	ca := testutil.NewCA(t, td, nil)
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, nil), func(c *Config) {
		c.WriteTimeout = wt
		c.IdleTimeout = time.Minute
	})
	stallH2CApp(t, a)
	start := time.Now()
	limit := wt + 3*time.Second
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
// they leave, what the socket took, as on every other connection: here
// the app stopped reading, the write timeout ends the sidecar's write
// part-way and the HTTP/2 server closes the connection with bytes it could
// not send. (With the write-behind queue of session 27 above the meter,
// what was queued was counted and never sent: a review's finding.)
func TestAttackH2CBytesCountedAreBytesSent(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	a := startL7Client(t, ca, l7ClientConfig([]*model.Route{toCluster(l7Route)}, nil), func(c *Config) {
		c.WriteTimeout = 300 * time.Millisecond
		c.IdleTimeout = time.Minute
	})
	c := stallH2CApp(t, a)
	start := time.Now()
	for a.counter("connections", outbound) != 0 && time.Since(start) < 10*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	if n := a.counter("connections", outbound); n != 0 {
		t.Fatalf("the sidecar's writes stalled: %v connection(s) still open after %v", n, time.Since(start))
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
				// sidecar closed with some of the app's PINGs unread
				// (stallH2CApp sends them so that it reads them all).
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
