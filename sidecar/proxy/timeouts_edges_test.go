package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/internal/testutil"
)

// TestWriteBoundedWithoutBound: a write timeout of 0 leaves the write
// unbounded (no deadline, not a deadline already past), and a write that
// succeeds counts no timeout.
func TestWriteBoundedWithoutBound(t *testing.T) {
	c, s := sniffPair(t)
	timedOut := false
	w := &idleWatch{}
	if n, err := writeBounded(c, []byte("hello"), 0, w, func() { timedOut = true }); n != 5 || err != nil || timedOut {
		t.Fatalf("writeBounded, no bound: %d, %v, timed out %v", n, err, timedOut)
	}
	if n, err := writeBounded(c, []byte("world"), time.Minute, nil, func() { timedOut = true }); n != 5 || err != nil || timedOut {
		t.Fatalf("writeBounded, a minute: %d, %v, timed out %v", n, err, timedOut)
	}
	if w.last.Load() == 0 {
		t.Fatal("a write that moved bytes did not count as progress")
	}
	b := make([]byte, 10)
	if _, err := io.ReadFull(s, b); err != nil || string(b) != "helloworld" {
		t.Fatalf("peer read %q, %v", b, err)
	}
}

// firedSweeper is a sweeper on a fake clock whose fire counts, per
// connection, how many times it fired.
func firedSweeper(t *testing.T, idle time.Duration) (*clocktesting.FakeClock, *idleSweeper, map[*conn]int) {
	fc := testutil.FakeClock(t)
	fired := map[*conn]int{}
	return fc, newIdleSweeper(fc, idle, func(cn *conn) { fired[cn]++ }), fired
}

// TestIdleWatchStop: a watch stopped before it started is never armed,
// and stopping an armed one disarms it: neither fires, however long both
// stay idle.
func TestIdleWatchStop(t *testing.T) {
	fc, s, fired := firedSweeper(t, 100*time.Millisecond)
	early := s.watch(&conn{})
	early.stop() // the connection finished before its watch started
	early.start()
	armed := s.watch(&conn{})
	armed.start()
	armed.stop()
	fc.Step(time.Second) // ten periods: either watch would have fired
	s.sweep()
	if len(fired) != 0 {
		t.Fatalf("fired after stop: %v", fired)
	}
	if s.head != nil {
		t.Fatal("a stopped watch is still on the sweeper's list")
	}
}

// TestIdleSweeper: a watch fires once it has been idle for the period,
// not before, and only once; progress puts its firing off; stopping one
// watch leaves the others on the list (it is unlinked from any place).
func TestIdleSweeper(t *testing.T) {
	const idle = time.Minute
	fc, s, fired := firedSweeper(t, idle)
	var cns [4]*conn
	ws := make([]*idleWatch, len(cns))
	for i := range ws {
		cns[i] = &conn{}
		ws[i] = s.watch(cns[i])
		ws[i].start()
	}
	count := func() (n [4]int) {
		for i, cn := range cns {
			n[i] = fired[cn]
		}
		return n
	}
	ws[2].stop() // from the middle of the list
	fc.Step(idle - time.Second)
	s.sweep()
	if n := count(); n != [4]int{} {
		t.Fatalf("fired before the idle timeout: %v", n)
	}
	ws[1].touch()
	fc.Step(time.Second)
	s.sweep()
	if n := count(); n != [4]int{1, 0, 0, 1} {
		t.Fatalf("after %v idle (watch 1 touched, 2 stopped): fired %v, want [1 0 0 1]", idle, n)
	}
	fc.Step(idle)
	s.sweep()
	if n := count(); n != [4]int{1, 1, 0, 1} {
		t.Fatalf("a period after watch 1's touch: fired %v, want [1 1 0 1]", n)
	}
	if s.head != nil {
		t.Fatal("fired watches are still on the sweeper's list")
	}
	for _, w := range ws {
		w.stop() // what the fired connections' flows do as they end
	}
}

// TestIdleSweeperRun: the sweeper's goroutine sweeps every tick of the
// proxy's clock, fires a watch between the period and the period and a
// tick after its last progress, and ends when told to.
func TestIdleSweeperRun(t *testing.T) {
	const idle = 8 * time.Second
	fc := testutil.FakeClock(t)
	fired := make(chan struct{})
	s := newIdleSweeper(fc, idle, func(*conn) { close(fired) })
	s.watch(&conn{}).start()
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		s.run(done)
		close(ended)
	}()
	for {
		select {
		case <-fired:
			close(done)
			<-ended
			if d := fc.Since(s.base); d < idle || d > idle+s.tick {
				t.Fatalf("fired %v after the watch started, want between %v and %v", d, idle, idle+s.tick)
			}
			return
		default:
		}
		if fc.HasWaiters() {
			fc.Step(s.tick)
		}
		runtime.Gosched()
	}
}

// TestSweepTick: an eighth of the idle timeout, at least 10ms and at most
// a minute.
func TestSweepTick(t *testing.T) {
	for idle, want := range map[time.Duration]time.Duration{
		time.Hour:              time.Minute,
		8 * time.Minute:        time.Minute,
		4 * time.Minute:        30 * time.Second,
		500 * time.Millisecond: 62500 * time.Microsecond,
		time.Millisecond:       10 * time.Millisecond,
	} {
		if got := sweepTick(idle); got != want {
			t.Errorf("sweepTick(%v) = %v, want %v", idle, got, want)
		}
	}
}

// deadlineConn records the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	deadlines []time.Time
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.deadlines = append(c.deadlines, t)
	return c.Conn.SetWriteDeadline(t)
}

// TestWriteBoundedClearsDeadline: the write deadline is armed for the
// write only and cleared once it returns, so an idle socket keeps no
// timer armed; without a bound none is set.
func TestWriteBoundedClearsDeadline(t *testing.T) {
	c, s := sniffPair(t)
	go io.Copy(io.Discard, s)
	dc := &deadlineConn{Conn: c}
	if _, err := writeBounded(dc, []byte("x"), time.Minute, nil, nil); err != nil {
		t.Fatal(err)
	}
	if len(dc.deadlines) != 2 || dc.deadlines[0].IsZero() || !dc.deadlines[1].IsZero() {
		t.Fatalf("write deadlines set %v, want one then the zero time", dc.deadlines)
	}
	dc.deadlines = nil
	if _, err := writeBounded(dc, []byte("x"), 0, nil, nil); err != nil || len(dc.deadlines) != 0 {
		t.Fatalf("unbounded write: %v, deadlines set %v", err, dc.deadlines)
	}
}

// stuckConn is a connection each write to which fails having written
// nothing, as a write to a peer that stopped reading does once its
// deadline passes.
type stuckConn struct{ net.Conn }

func (stuckConn) Write([]byte) (int, error)        { return 0, os.ErrDeadlineExceeded }
func (stuckConn) SetWriteDeadline(time.Time) error { return nil }

// TestFailedWriteIsNoProgress: a write that moved no byte (here one that
// timed out, the peer not reading) is no progress: it does not put off
// the idle timeout, which closes the connection once it has been idle for
// the period, as if the write had not been tried.
func TestFailedWriteIsNoProgress(t *testing.T) {
	fc, s, fired := firedSweeper(t, time.Minute)
	cn := &conn{}
	w := s.watch(cn)
	w.start()
	fc.Step(time.Minute)
	timedOut := false
	if n, err := writeBounded(stuckConn{}, []byte("x"), time.Second, w, func() { timedOut = true }); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) || !timedOut {
		t.Fatalf("writeBounded: %d, %v, timed out %v; want 0, a deadline error, timed out", n, err, timedOut)
	}
	s.sweep()
	if fired[cn] != 1 {
		t.Fatalf("idle for the period but for a failed write: fired %d times, want once", fired[cn])
	}
}
