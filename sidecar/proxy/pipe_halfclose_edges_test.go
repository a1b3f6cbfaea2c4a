package proxy

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// TestIdleCountsFromTheLastByteAfterAHalfClose: a byte-copied connection
// is idle from its last byte either way; the app's half-close moves none.
// So a connection whose server stays silent and open after the app
// half-closes is closed IdleTimeout after the last byte, not after the
// half-close. A's clock is a fake one, stepped: 6 s after the last byte
// the app half-closes, and 6 s later (at least 10 s after the sidecar's
// last stamp of progress, 6 s after the half-close) IdleTimeout 10 s has
// run out.
func TestIdleCountsFromTheLastByteAfterAHalfClose(t *testing.T) {
	const msg = "\x00\x01 neither TLS nor HTTP\n" // passed through as bytes at once
	sawEOF, done := make(chan struct{}, 1), make(chan struct{})
	ext := startApp(t, func(c *net.TCPConn, a *app) {
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		c.Write(buf) // the last byte either way
		if _, err := io.Copy(io.Discard, c); err != nil {
			return
		}
		sawEOF <- struct{}{}
		<-done // silent, and open, after the half-close
	})
	clk := testutil.FakeClock(t)
	a := startPod(t, testutil.NewCA(t, td, nil), workloadID("shop", "frontend"), func(c *Config) { c.Clock, c.IdleTimeout = clk, 10*time.Second })
	a.cfg.Store(meshConfig(nil, nil, nil, false))
	t.Cleanup(func() { close(done) }) // before the pod stops
	// step moves A's clock once its idle sweeper waits on it (its timer is
	// the only one A arms here).
	step := func(d time.Duration) {
		testutil.Eventually(t, "A's idle sweeper to wait on its clock", clk.HasWaiters)
		clk.Step(d)
	}

	c := a.dialOutbound(ext.addr())
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("through A: %q %v", got, err)
	}
	// The sidecar stamps a write's progress right after the write: the
	// first steps, each taken once the sweeper has run, leave that stamp
	// at most 2 s after the last byte whatever the scheduling.
	step(time.Second)
	step(time.Second)
	step(4 * time.Second)
	c.CloseWrite()
	testutil.Receive(t, sawEOF, "the server to see the half-close")
	step(6 * time.Second)
	if rest, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) || len(rest) != 0 {
		t.Fatalf("after IdleTimeout from the last byte: read %q, %v; want the connection closed", rest, err)
	}
	a.waitCounter(1, "timeouts", outbound, timeoutIdle)
}
