package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/sidecar/xds"
)

// TestSidecarNeverDialsItself: a connection whose original destination is
// one of the sidecar's own listeners — inbound to podIP:15006 (the port
// capture does not redirect), outbound to 127.0.0.1:15001 from inside the
// pod under ALLOW_ANY, the admin port — is refused at once, counted as a
// loop, instead of being forwarded to the sidecar again and again.
func TestSidecarNeverDialsItself(t *testing.T) {
	pd := startPod(t, newCA(t, nil), workloadID("shop", "web"))
	cfg := meshConfig(nil, nil, nil, false)
	// PERMISSIVE's plaintext catch-all: to the original port on loopback.
	cfg.Inbound.Chains = append(cfg.Inbound.Chains, &xds.FilterChain{Name: "inbound-passthrough-plain",
		Match: xds.ChainMatch{TransportProtocol: "raw_buffer"}, Target: xds.Target{Cluster: "InboundPassthroughCluster"}})
	pd.cfg.Store(cfg)
	admin := pd.p.AdminAddr().(*net.TCPAddr).AddrPort()
	for i, tc := range []struct {
		direction string
		listener  func() *net.TCPConn
	}{
		{outbound, func() *net.TCPConn { return pd.dialOutbound(pd.outboundAddr()) }},
		{outbound, func() *net.TCPConn { return pd.dialOutbound(pd.inboundAddr()) }},
		{outbound, func() *net.TCPConn { return pd.dialOutbound(admin) }},
		{inbound, func() *net.TCPConn {
			c, err := net.Dial("tcp", pd.inboundAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			pd.nat.set(c.LocalAddr(), pd.inboundAddr())
			return c.(*net.TCPConn)
		}},
	} {
		before := pd.counter("connections_total", tc.direction)
		c := tc.listener()
		_, _ = c.Write([]byte("x"))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := io.ReadAll(c); len(n) != 0 || err != nil && !isReset(err) {
			t.Fatalf("case %d: got %q, %v; want the connection closed", i, n, err)
		}
		c.Close()
		want := float64(i + 1)
		if tc.direction == inbound {
			want = 1
		}
		pd.waitCounter(want, "connection_failures", tc.direction, reasonLoop)
		// One accepted connection, not a chain of them.
		if got := pd.counter("connections_total", tc.direction) - before; got != 1 {
			t.Fatalf("case %d: %v %s connections accepted, want 1 (the sidecar dialled itself)", i, got, tc.direction)
		}
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// TestAcceptSurvivesFDExhaustion: when the process runs out of file
// descriptors, Accept fails with EMFILE; the sidecar backs off and keeps
// accepting once descriptors are free again, instead of exiting.
func TestAcceptSurvivesFDExhaustion(t *testing.T) {
	pd := startPod(t, newCA(t, nil), workloadID("shop", "web"))
	echoApp := startApp(t, echo)
	pd.cfg.Store(meshConfig(nil, nil, nil, false))
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	low := old
	low.Cur = uint64(len(fds) + 8)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
		}
	}
	defer restore()
	// Connections from another process's view would not count against
	// ours: dial from this process until the listener's accepts fail.
	var hogs []net.Conn
	defer func() {
		for _, c := range hogs {
			c.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for pd.counter("accept_errors", outbound) == 0 && time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", pd.outboundAddr().String(), time.Second)
		if err == nil {
			hogs = append(hogs, c)
		}
		time.Sleep(5 * time.Millisecond)
	}
	restore()
	if pd.counter("accept_errors", outbound) == 0 {
		t.Fatal("accept never failed: the test did not exhaust descriptors")
	}
	for _, c := range hogs {
		c.Close()
	}
	hogs = nil
	select {
	case err := <-pd.done:
		t.Fatalf("the sidecar exited: %v", err)
	default:
	}
	// Descriptors free again: a connection is served.
	c := pd.dialOutbound(echoApp.addr())
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
		t.Fatalf("after recovery: %q %v", buf, err)
	}
}
