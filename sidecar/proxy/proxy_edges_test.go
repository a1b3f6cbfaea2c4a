package proxy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestAdmitCapsAndForgets: admit takes MaxConnections open connections
// and MaxPendingPerSource pending ones per source, no more; a refusal
// leaves the counts as they were, and a source whose connections have all
// settled leaves nothing behind.
func TestAdmitCapsAndForgets(t *testing.T) {
	p := &Proxy{cfg: Config{MaxConnections: 3, MaxPendingPerSource: 2}}
	a, b := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	for i, tc := range []struct {
		src  netip.Addr
		want string // "" admitted, else what the refusal names
	}{
		{a, ""}, {a, ""}, {a, "MaxPendingPerSource"}, {b, ""}, {b, "MaxConnections"},
	} {
		why := p.admit(tc.src)
		if tc.want == "" && why != "" || !strings.Contains(why, tc.want) {
			t.Fatalf("admit %d (%v): %q, want %q", i, tc.src, why, tc.want)
		}
	}
	p.settled(a)
	p.settled(a)
	p.settled(b)
	p.pendingMu.Lock()
	left := len(p.pending)
	p.pendingMu.Unlock()
	if left != 0 {
		t.Fatalf("%d sources still counted once every connection settled", left)
	}
	p.open.Add(-1) // one of the three closes (handle's finish)
	if why := p.admit(b); why != "" {
		t.Fatalf("after a close: %q, want admitted (the refusals must not have kept a count)", why)
	}
}

// TestCleanShutdownLogsNoWarning: a proxy that starts (parking idle flows)
// and stops without trouble logs no warning and no error, and counts no
// accept error: stopping its listeners and its parker is no failure.
func TestCleanShutdownLogsNoWarning(t *testing.T) {
	var logs bytes.Buffer // written under the handler's lock; read once Run has returned
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("demo", "quiet"), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	if pd.p.parker.Load() == nil {
		t.Fatal("no parker: the default IdleParkAfter parks idle flows")
	}
	pd.stop()
	var err error
	select {
	case err = <-pd.done:
		pd.done <- err // for the cleanup's wait
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if logs.Len() != 0 {
		t.Fatalf("a clean start and stop logged:\n%s", logs.String())
	}
	for _, dir := range []string{inbound, outbound} {
		if n := pd.counter("accept_errors", dir); n != 0 {
			t.Fatalf("%s: %v accept errors counted", dir, n)
		}
	}
}

// TestAuthorizeNamesThePeerItDenies: an RBAC denial says whom it denied:
// the peer's SPIFFE ID, or "plaintext peer" for a caller without one.
func TestAuthorizeNamesThePeerItDenies(t *testing.T) {
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("demo", "authz"))
	fc := &model.FilterChain{Name: "inbound|8080", RBAC: []model.RBACFilter{{Action: model.RBACAllow}}} // allows no one
	peer := workloadID("shop", "frontend").String()
	for _, tc := range []struct{ peer, want string }{
		{"", "denies plaintext peer to port 8080"},
		{peer, "denies " + peer + " to port 8080"},
	} {
		err := pd.p.authorize(inbound, fc, tc.peer, 8080)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("authorize(%q): %v, want %q", tc.peer, err, tc.want)
		}
	}
}

// TestConfigDefaults: a Config's zero durations get the defaults its
// comments give, and durations that are set (negative ones, which turn a
// bound off, included) are kept.
func TestConfigDefaults(t *testing.T) {
	durations := func(c *Config) []time.Duration {
		return []time.Duration{c.ConnectTimeout, c.DrainTimeout, c.SniffTimeout, c.HandshakeTimeout,
			c.IdleTimeout, c.WriteTimeout, c.IdleParkAfter, c.DemandTimeout}
	}
	var c Config
	c.defaults()
	want := []time.Duration{time.Second, 20 * time.Second, 200 * time.Millisecond, 10 * time.Second,
		time.Hour, 5 * time.Minute, time.Second, 5 * time.Second}
	if got := durations(&c); !slices.Equal(got, want) {
		t.Errorf("defaults of ConnectTimeout, DrainTimeout, SniffTimeout, HandshakeTimeout, IdleTimeout, WriteTimeout, IdleParkAfter, DemandTimeout: %v, want %v", got, want)
	}
	set := Config{ConnectTimeout: 3 * time.Millisecond, DrainTimeout: 7 * time.Second, SniffTimeout: time.Nanosecond,
		HandshakeTimeout: time.Minute, IdleTimeout: -1, WriteTimeout: -1, IdleParkAfter: -1, DemandTimeout: 2 * time.Millisecond}
	want = durations(&set)
	set.defaults()
	if got := durations(&set); !slices.Equal(got, want) {
		t.Errorf("defaults changed set durations: %v, want %v", got, want)
	}
}

// TestAdminClosesStalledRequestHeads: the admin endpoint closes a
// connection whose request head does not complete (its ReadHeaderTimeout,
// 10s), so a client that stops in the middle of a head cannot hold the
// connection open for ever. It waits out the 10s, in parallel with the
// package's other slow tests.
func TestAdminClosesStalledRequestHeads(t *testing.T) {
	t.Parallel()
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("demo", "admin"))
	c, err := net.Dial("tcp", pd.p.AdminAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /ready HTTP/1.1\r\nHost: sidecar\r\n")); err != nil { // no blank line: the head is not complete
		t.Fatal(err)
	}
	// Only a failing test waits this long: the server closes after 10s.
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v: want the admin server to close the connection, its head incomplete", n, err)
	}
}

// listeningFD is the descriptor of this process's listening socket bound
// to addr.
func listeningFD(t *testing.T, addr netip.AddrPort) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err != nil || v != 1 {
			continue
		}
		sa, err := syscall.Getsockname(fd)
		if err != nil {
			continue
		}
		if a, ok := sa.(*syscall.SockaddrInet4); ok && netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)) == addr {
			return fd
		}
	}
	t.Fatalf("no listening socket on %v", addr)
	return -1
}

// TestAdminServerFailureEndsRun: when the admin endpoint's listener fails
// other than by Run closing it (here it is shut down under the server, so
// that accept fails with EINVAL), Run stops and returns the error, instead
// of serving on without its health and metrics endpoint.
func TestAdminServerFailureEndsRun(t *testing.T) {
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("demo", "admin"))
	fd := listeningFD(t, pd.p.AdminAddr().(*net.TCPAddr).AddrPort())
	if err := syscall.Shutdown(fd, syscall.SHUT_RD); err != nil {
		t.Fatal(err)
	}
	err := testutil.Receive(t, pd.done, "Run to return once its admin listener failed")
	pd.done <- err // for the cleanup's wait
	if err == nil || !strings.HasPrefix(err.Error(), "proxy: admin server: ") {
		t.Fatalf("Run: %v, want the admin server's error", err)
	}
}

// TestConnectTimeoutDefaultsToConfig: an upstream connect is bounded by
// its cluster's connect timeout, and by Config.ConnectTimeout when the
// cluster sets none (0), not by an empty timeout that has expired before
// the connect starts.
func TestConnectTimeoutDefaultsToConfig(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	left := make(chan time.Duration, 1)
	p, err := New(Config{SVID: newSwap(testutil.SVID(t, ca, workloadID("demo", "dial"), time.Hour)), Bundle: ca.Bundle(),
		TrustDomain: td, Config: func() *model.Config { return nil }, ConnectTimeout: time.Hour,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d, ok := ctx.Deadline()
			if !ok {
				d = time.Now().Add(1000 * time.Hour) // more than any bound below
			}
			left <- time.Until(d)
			return nil, errors.New("test: not connecting")
		}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cluster, min, max time.Duration // min and max bound what is left when Dial starts
	}{
		{0, 30 * time.Minute, time.Hour}, // Config.ConnectTimeout
		{time.Minute, 0, time.Minute},    // the cluster's own
	} {
		cl := &model.Cluster{Name: "outbound|80||db.demo.svc.cluster.local", Kind: model.KindStatic, ConnectTimeout: tc.cluster}
		if _, _, err := p.dialUpstream(context.Background(), cl, []netip.AddrPort{netip.MustParseAddrPort("198.18.0.9:80")}); err == nil {
			t.Fatal("dialUpstream succeeded with a Dial that fails")
		}
		if d := <-left; d <= tc.min || d > tc.max {
			t.Errorf("cluster connect timeout %v: the connect had %v left, want more than %v and at most %v", tc.cluster, d, tc.min, tc.max)
		}
	}
}

// goroutinesIn counts this process's goroutines with fn (package-qualified
// as in a stack trace, e.g. "(*parker).run") on their stack.
func goroutinesIn(fn string) int {
	return bytes.Count(allStacks(), []byte("/sidecar/proxy."+fn+"("))
}

// TestRunStopsItsParker: a proxy that parks idle flows stops its parker
// before Run returns (the parker's goroutine ends, rather than being left
// in epoll_wait on a set Run closes), and one that parks nothing
// (IdleParkAfter < 0) has no parker to stop and returns cleanly.
func TestRunStopsItsParker(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	before := goroutinesIn("(*parker).run")
	for _, idle := range []time.Duration{-1, 0} { // 0: the default, 1s
		pd := startPod(t, ca, workloadID("demo", "parker"), func(c *Config) { c.IdleParkAfter = idle })
		if parks := pd.p.parker.Load() != nil; parks != (idle == 0) {
			t.Fatalf("IdleParkAfter %v: parker %v", idle, parks)
		}
		pd.stop()
		err := testutil.Receive(t, pd.done, "Run to return")
		pd.done <- err // for the cleanup's wait
		if err != nil {
			t.Fatalf("IdleParkAfter %v: Run: %v", idle, err)
		}
	}
	testutil.Eventually(t, "the parker's goroutine to end", func() bool { return goroutinesIn("(*parker).run") <= before })
}

// TestRefusalNamesReasonAndCause: the debug log of a refused connection
// gives the refusal as its reason (the metric's label), then its cause.
func TestRefusalNamesReasonAndCause(t *testing.T) {
	var logs testutil.SyncBuffer
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("demo", "refuse"), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	expectClosed(t, pd.dialOutbound(netip.MustParseAddrPort("198.18.9.9:443"))) // no configuration yet
	const want = `level=DEBUG msg="connection refused" direction=outbound`
	const cause = `err="no_config: proxy: no outbound listener configured yet"`
	testutil.Eventually(t, "the refusal's debug log", func() bool {
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, want) && strings.Contains(line, cause) {
				return true
			}
		}
		return false
	})
}
