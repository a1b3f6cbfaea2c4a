package proxy

import (
	"math"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

func TestConnectionsFor(t *testing.T) {
	for _, tc := range []struct {
		limit int64
		want  int
	}{
		{0, MaxConnectionsCeiling},
		{-1, MaxConnectionsCeiling},
		{math.MaxInt64, MaxConnectionsCeiling},
		{1 << 20, MinConnections},
		{MemoryReserve + 100*ConnMemory, 100},
		{MemoryReserve + 100*ConnMemory + ConnMemory - 1, 100},
		// The injector's default weft.dev/proxy-memory, 128Mi, through
		// memtune's 90%.
		{128 << 20 * 9 / 10, int((128<<20*9/10 - MemoryReserve) / ConnMemory)},
	} {
		if got := ConnectionsFor(tc.limit); got != tc.want {
			t.Errorf("ConnectionsFor(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("shop", "web"), func(c *Config) { c.MemoryLimit = MemoryReserve + 100*ConnMemory })
	if got := pd.p.cfg.MaxConnections; got != 100 {
		t.Errorf("MaxConnections = %d under MemoryLimit %d, want 100", got, pd.p.cfg.MemoryLimit)
	}
}

// TestStuckWritersFitMemoryLimit fills a sidecar pair, both run under a
// small MemoryLimit and no MaxConnections of their own, with connections
// in their costliest state — the app and the client both write and
// neither reads, so both directions of every connection block in a write
// holding their buffers — three times as many as the derived cap. Those
// past the cap are refused at accept (overload), and the Go memory the
// whole process gained (HeapInuse+StackInuse: both sidecars, and the
// client and app besides) stays within what the two sidecars' limits
// leave for connections.
func TestStuckWritersFitMemoryLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("fills two sidecars with stuck connections")
	}
	const capacity = 80
	limit := int64(MemoryReserve + capacity*ConnMemory)
	withLimit := func(c *Config) {
		c.MemoryLimit, c.IdleTimeout = limit, -1
		c.MaxPendingPerSource = 4 * capacity // every client shares 127.0.0.1
		// 240 connections set up at once on a loaded machine (make test
		// runs packages side by side): a handshake past the default 10 s
		// closed the connection, which then never got stuck, and the wait
		// below timed out (CI: 284 of 320 flows, 71 connections). The
		// test is about memory, not handshake deadlines.
		c.HandshakeTimeout = stateTimeout
		c.SniffTimeout = c.HandshakeTimeout // a slow ClientHello is still one (-race)
	}

	chunk := make([]byte, 64<<10)
	stop := make(chan struct{})
	defer close(stop)
	// The app writes until its peer's buffers are full and never reads.
	app := startApp(t, func(c *net.TCPConn, _ *app) {
		_ = c.SetReadBuffer(16 << 10)
		_ = c.SetWriteBuffer(16 << 10)
		go func() { <-stop; c.Close() }()
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	ca := testutil.NewCA(t, td, nil)
	a := startPod(t, ca, workloadID("shop", "frontend"), withLimit)
	b := startPod(t, ca, workloadID("demo", "echo"), withLimit)
	b.nat.setDefault(netip.AddrPortFrom(podBIP, app.port()))
	b.cfg.Store(meshConfig(nil, nil, inboundChains(app.port(), false, nil), false))
	acfg := meshConfig([]spiffeid.ID{b.id}, []model.Endpoint{{Addr: b.inboundAddr()}}, nil, false)
	for _, cl := range acfg.Clusters {
		// The clusters' 1 s connect timeout too: 80 upstream dials at once
		// beside 240 handshakes, under -race on a loaded machine.
		cl.ConnectTimeout = stateTimeout
	}
	a.cfg.Store(acfg)
	if a.p.cfg.MaxConnections != capacity || b.p.cfg.MaxConnections != capacity {
		t.Errorf("MaxConnections %d and %d under MemoryLimit %d, want %d", a.p.cfg.MaxConnections, b.p.cfg.MaxConnections, limit, capacity)
	}

	in0 := goMemory()
	const tries = 3 * capacity
	conns := make([]*net.TCPConn, tries)
	for i := range conns {
		conns[i] = a.dialOutbound(netip.AddrPortFrom(serviceIP, 80))
	}
	// The client, like the app, writes until every buffer on the way is
	// full and never reads: one writer per connection, blocked in a write
	// until the connection is closed (at once for those refused at
	// accept).
	var writers sync.WaitGroup
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		writers.Wait()
	}()
	for _, c := range conns {
		writers.Go(func() {
			_ = c.SetWriteBuffer(16 << 10)
			_ = c.SetReadBuffer(16 << 10)
			for {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		})
	}

	// Every admitted connection is stuck both ways: its sidecars' flows,
	// two on each, hold their buffers in blocked writes.
	// Under the race detector a few flows sometimes take longer than a
	// minute to block (seen in CI: 268, 284 and 308 of 320); the figure
	// is then projected from the flows that are stuck, so that it is
	// never taken with idle connections counted as full ones.
	stuck := waitMostWaitingIn(t, 4*capacity, "writeBounded", "every admitted connection stuck both ways on both sidecars")
	grown := (goMemory() - in0) * int64(4*capacity) / int64(stuck)
	// The wait above may end with a connection still being set up (seen
	// under -race on a loaded machine: 79 of 80 open, 316 of 320 flows
	// stuck); the cap is checked once every admitted one is open, or
	// after the same bound.
	for deadline := time.Now().Add(stateTimeout); time.Now().Before(deadline) &&
		(a.counter("connections", outbound) < capacity || b.counter("connections", inbound) < capacity); {
		time.Sleep(10 * time.Millisecond)
	}
	open := int64(a.counter("connections", outbound))
	budget := 2 * (limit - MemoryReserve)
	t.Logf("%d connections open, %d of %d flows stuck: Go memory grew %d KiB projected to every flow stuck (%d bytes per connection per sidecar, client and app included); the sidecars' budget for connections %d KiB",
		open, stuck, 4*capacity, grown>>10, grown/max(open, 1)/2, budget>>10)
	if grown > budget {
		t.Errorf("Go memory grew %d KiB with the sidecars full of stuck connections, past the %d KiB their memory limits leave for connections", grown>>10, budget>>10)
	}
	// Never past the cap. Fewer is an admitted connection whose set-up
	// failed on a loaded machine (seen in make test with a mutation run
	// beside it: 79 and 75 of 80 after the minute above, with exactly the
	// 160 past the cap refused; the clusters' 1 s connect timeout was then
	// the one bound left at its default), whose slot nothing takes again:
	// every connection was dialed at the start. That exactly the cap is
	// admitted is the refusal count's below (and TestAdmitCapsAndForgets').
	if open < capacity {
		for _, r := range []string{"upstream_connect", reasonTimeout, reasonPeerClosed, reasonOther, "no_endpoint"} {
			if n := a.counter("connection_failures", outbound, r); n > 0 {
				t.Logf("outbound connections failed (%s): %v", r, n)
			}
		}
	}
	if open > capacity || open < capacity*3/4 {
		t.Errorf("%v outbound connections open, want the cap, %d", open, capacity)
	}
	if got := b.counter("connections", inbound); got > capacity || got < capacity*3/4 {
		t.Errorf("%v inbound connections open in the server's sidecar, want %d", got, capacity)
	}
	refused := func() float64 { return a.counter("connection_failures", outbound, reasonOverload) }
	for deadline := time.Now().Add(5 * time.Second); refused() != tries-capacity && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := refused(); got != tries-capacity {
		t.Errorf("%v outbound connections refused (overload), want the %d past the cap", got, tries-capacity)
	}
}

// waitMostWaitingIn waits until n goroutines wait in fn, or, past
// stateTimeout, settles for what it has if that is at least three in four of
// n (failing the test otherwise), and returns the count.
func waitMostWaitingIn(t testing.TB, n int, fn, what string) int {
	t.Helper()
	deadline := time.Now().Add(stateTimeout)
	got := waitingIn(fn)
	for ; got < n && time.Now().Before(deadline); got = waitingIn(fn) {
		time.Sleep(10 * time.Millisecond) // a stack dump stops the world
	}
	if got < n*3/4 {
		t.Fatalf("timed out waiting for %s: %d goroutines waiting in %s, want %d (at least %d)", what, got, fn, n, n*3/4)
	}
	return got
}

// goMemory is the Go memory in use, heap spans and goroutine stacks, after
// two collections.
func goMemory() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}

// TestPendingConnStack: a connection that has sent nothing yet waits for
// its first byte on a goroutine whose stack stays at 4 KiB: the wait is
// shallow enough (handle, inbound, sniffUntil, the read) to fit under
// 4 KiB less the runtime's guard. A frame more on that path (the sniff
// wrapper inbound called before) made every such goroutine grow to
// 8 KiB, and the runtime does not shrink a waiting goroutine's stack
// that uses more than a quarter of it: 9.4 KB per silent connection
// instead of 5.3.
func TestPendingConnStack(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector doubles the stack guard")
	}
	const n = 256
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("demo", "echo"), func(c *Config) {
		c.SniffTimeout, c.HandshakeTimeout, c.MaxPendingPerSource = time.Minute, time.Minute, n
	})
	pd.nat.setDefault(netip.AddrPortFrom(podBIP, 8080))
	pd.cfg.Store(meshConfig(nil, nil, inboundChains(8080, false, nil), false))
	base := stackInuse()
	for range n {
		c, err := net.Dial("tcp", pd.inboundAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	for deadline := time.Now().Add(10 * time.Second); pd.p.reg.len() < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections accepted", pd.p.reg.len(), n)
		}
	}
	waitWaitingIn(t, n, "sniffUntil", "every connection waiting for its first byte")
	per := (stackInuse() - base) / n
	t.Logf("%d bytes of stack per connection waiting for its first byte", per)
	if per > 6<<10 {
		t.Errorf("%d bytes of stack per connection waiting for its first byte, want 4 KiB", per)
	}
}

// stackInuse is the goroutine stack memory in use, after two collections
// (which shrink what they can).
func stackInuse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.StackInuse)
}
