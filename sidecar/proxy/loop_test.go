package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestSidecarNeverDialsItself: a connection whose original destination is
// one of the sidecar's own listeners — inbound to podIP:15006 (the port
// capture does not redirect), outbound to 127.0.0.1:15001 from inside the
// pod under ALLOW_ANY, the admin port — is refused at once, counted as a
// loop, instead of being forwarded to the sidecar again and again.
func TestSidecarNeverDialsItself(t *testing.T) {
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("shop", "web"))
	cfg := meshConfig(nil, nil, nil, false)
	// PERMISSIVE's plaintext catch-all: to the original port on loopback.
	cfg.Inbound.Chains = append(cfg.Inbound.Chains, &model.FilterChain{Name: "inbound-passthrough-plain",
		Match: model.ChainMatch{TransportProtocol: "raw_buffer"}, Target: model.Target{Cluster: "InboundPassthroughCluster"}})
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

// lowerFDLimit lowers this process's descriptor limit to 8 above what it
// holds, so a few more connections exhaust it; restore (idempotent) puts
// the old limit back.
func lowerFDLimit(t *testing.T) (restore func()) {
	t.Helper()
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
	var once sync.Once
	return func() { once.Do(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) }) }
}

// TestAcceptSurvivesFDExhaustion: when the process runs out of file
// descriptors, Accept fails with EMFILE; the sidecar backs off and keeps
// accepting once descriptors are free again, instead of exiting.
func TestAcceptSurvivesFDExhaustion(t *testing.T) {
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("shop", "web"))
	echoApp := startApp(t, echo)
	pd.cfg.Store(meshConfig(nil, nil, nil, false))
	restore := lowerFDLimit(t)
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

// TestAcceptBackoffDoubles: while Accept keeps failing (the process out of
// file descriptors), the sidecar waits 5ms before its first retry and
// twice as long before each next one, up to 1s: it neither spins on the
// failing listener nor waits more than a second to accept again. The
// waits are on Config.Clock (here a fake one the test steps), and each
// retry logs the wait it starts.
func TestAcceptBackoffDoubles(t *testing.T) {
	fc := testutil.FakeClock(t)
	var logs testutil.SyncBuffer
	release := make(chan struct{})
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("shop", "web"), func(c *Config) {
		c.Clock = fc
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		// The connections accepted before descriptors ran out keep theirs
		// until the test ends: none is freed for a retry to take.
		c.OriginalDst = func(*net.TCPConn) (netip.AddrPort, error) {
			<-release
			return netip.AddrPort{}, errors.New("test: released")
		}
	})
	t.Cleanup(func() { close(release) }) // before the pod's cleanup stops it
	pd.cfg.Store(meshConfig(nil, nil, nil, false))
	retryIn := regexp.MustCompile(`msg="accept failed; retrying" direction=outbound .* retry_in=(\S+)`)
	retries := func() []string {
		var r []string
		for _, m := range retryIn.FindAllStringSubmatch(logs.String(), -1) {
			r = append(r, m[1])
		}
		return r
	}

	defer lowerFDLimit(t)()
	var hogs []net.Conn
	defer func() {
		for _, c := range hogs {
			c.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for pd.counter("accept_errors", outbound) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("accept never failed: the test did not exhaust descriptors")
		}
		c, err := net.DialTimeout("tcp", pd.outboundAddr().String(), time.Second)
		switch {
		case err == nil:
			hogs = append(hogs, c)
		case len(hogs) > 0:
			// Out of descriptors on the dialling side first: give one
			// back, for the next connection to be the listener's to fail
			// to accept.
			hogs[0].Close()
			hogs = hogs[1:]
		}
		time.Sleep(5 * time.Millisecond)
	}
	want := []string{"5ms", "10ms", "20ms", "40ms", "80ms", "160ms", "320ms", "640ms", "1s", "1s", "1s"}
	// A descriptor freed meanwhile (a finalizer of an earlier test's
	// socket, on a loaded machine) lets an accept succeed, which starts
	// the backoff again at 5ms: the waits are checked on the first run of
	// retries, from a 5ms, that is long enough. Each poll also dials, so a
	// freed descriptor is taken again and accepts keep failing.
	run := func() []string {
		r := retries()
		for i, start := 0, -1; i <= len(r); i++ {
			if i == len(r) || r[i] == "5ms" {
				if start >= 0 && i-start >= len(want) {
					return r[start : start+len(want)]
				}
				start = i
			}
		}
		return nil
	}
	// The waits logged do not depend on the clock: step it by a second, more
	// than any wait, until that many retries have failed.
	testutil.Eventually(t, fmt.Sprintf("%d failed accepts in a row", len(want)), func() bool {
		if run() != nil {
			return true
		}
		if c, err := net.DialTimeout("tcp", pd.outboundAddr().String(), 100*time.Millisecond); err == nil {
			hogs = append(hogs, c)
		}
		fc.Step(time.Second)
		return false
	})
	if got := run(); !slices.Equal(got, want) {
		t.Fatalf("waits before the retries of a failing accept: %v, want %v", got, want)
	}
}

// stalledHello connects to addr from local (nil: any) and sends the first
// bytes of a ClientHello, then nothing: the proxy waits for the rest (its
// HandshakeTimeout), the connection pending all that while.
func stalledHello(t *testing.T, addr netip.AddrPort, local string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(smallHello(t, "api.example.com")[:10]); err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// closedSoon reports whether the proxy closed c within a second.
func closedSoon(c *net.TCPConn) bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestPendingConnectionsCapped: a source that opens handshakes and stalls
// holds at most MaxPendingPerSource of them; the next is closed at accept
// (overload) while another source still gets in; MaxConnections caps all.
func TestPendingConnectionsCapped(t *testing.T) {
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("shop", "web"), func(c *Config) {
		c.MaxPendingPerSource, c.MaxConnections = 3, 5
	})
	pd.cfg.Store(meshConfig(nil, nil, nil, false))
	in := pd.inboundAddr()
	var held []*net.TCPConn
	for range 3 {
		held = append(held, stalledHello(t, in, "127.0.0.1"))
	}
	testutil.Eventually(t, "the three accepted and pending", func() bool { return pd.p.open.Load() == 3 })
	if c := stalledHello(t, in, "127.0.0.1"); !closedSoon(c) {
		t.Fatal("a fourth stalled handshake from one source was kept")
	}
	pd.waitCounter(1, "connection_failures", inbound, reasonOverload)
	other := stalledHello(t, in, "127.0.0.2")
	if closedSoon(other) {
		t.Fatal("another source was refused")
	}
	// 3 + 1 open: one more fits under MaxConnections 5, then none.
	held = append(held, other, stalledHello(t, in, "127.0.0.3"))
	testutil.Eventually(t, "five connections open", func() bool { return pd.p.open.Load() == 5 })
	if c := stalledHello(t, in, "127.0.0.4"); !closedSoon(c) {
		t.Fatal("a sixth connection past MaxConnections 5 was kept")
	}
	pd.waitCounter(2, "connection_failures", inbound, reasonOverload)
	for _, c := range held {
		c.Close()
	}
	// Once they are gone, the source is admitted again.
	testutil.Eventually(t, "the held connections closed", func() bool { return pd.p.open.Load() <= 1 })
	if c := stalledHello(t, in, "127.0.0.1"); closedSoon(c) {
		t.Fatalf("the source was refused after its connections closed (overload %v, open %d)",
			pd.counter("connection_failures", inbound, reasonOverload), pd.p.open.Load())
	}
}

// TestEndpointsThatAreTheSidecarAreSkipped: an EDS cluster whose endpoints
// are the sidecar's own listeners (a hostile or broken EndpointSlice) is
// refused as a loop when no other endpoint is left, and otherwise served by
// the endpoints that are not the sidecar.
func TestEndpointsThatAreTheSidecarAreSkipped(t *testing.T) {
	mp := newMeshPair(t, echo, nil)
	self := []model.Endpoint{{Addr: mp.a.inboundAddr()}, {Addr: mp.a.outboundAddr()}}
	mp.a.cfg.Store(meshConfig([]spiffeid.ID{mp.b.id}, self, nil, false))
	c := mp.dial()
	_, _ = c.Write([]byte("x"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.ReadAll(c); len(n) != 0 || err != nil && !isReset(err) {
		t.Fatalf("got %q, %v; want the connection closed", n, err)
	}
	mp.a.waitCounter(1, "connection_failures", outbound, reasonLoop)

	mp.a.cfg.Store(meshConfig([]spiffeid.ID{mp.b.id}, append(self, model.Endpoint{Addr: mp.b.inboundAddr()}), nil, false))
	for range 4 { // round robin would reach every endpoint
		c := mp.dial()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
			t.Fatalf("through the one endpoint that is not the sidecar: %q, %v", b, err)
		}
		c.Close()
	}
	if got := mp.a.counter("connection_failures", outbound, reasonLoop); got != 1 {
		t.Fatalf("%v loops, want only the first connection's", got)
	}
}
