package proxy

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

// Timeouts of a connection (Config.HandshakeTimeout, IdleTimeout,
// WriteTimeout), the kind label of weft_sidecar_timeouts_total.
const (
	timeoutHandshake = "handshake" // not established within HandshakeTimeout of accept
	timeoutIdle      = "idle"      // no byte either way for IdleTimeout
	timeoutWrite     = "write"     // a write to a peer that stopped reading took WriteTimeout
)

// monoBase anchors activity stamps on the monotonic clock of a watch
// that has no sweeper (one that is never armed).
var monoBase = time.Now()

func monoNow() int64 { return int64(time.Since(monoBase)) }

// Sweeper ticks: a tick is an eighth of the idle timeout, at least
// minSweepTick and at most maxSweepTick (1m at the default 1h).
const (
	minSweepTick = 10 * time.Millisecond
	maxSweepTick = time.Minute
)

// sweepTick is the tick of a sweeper for idle timeout idle.
func sweepTick(idle time.Duration) time.Duration {
	return min(max(idle/8, minSweepTick), maxSweepTick)
}

// idleSweeper closes the established connections of one proxy that have
// been idle for its idle timeout. Each connection's watch is on its list
// from the moment the connection is established until it ends; one
// goroutine (run) wakes every tick and fires every watch idle for at least
// the timeout, so a connection closes after between idle and idle + tick
// of silence. One coarse timer for all connections, not one each: an idle
// connection arms nothing of its own, and registering it allocates
// nothing (the list is intrusive).
type idleSweeper struct {
	clock clock.Clock
	base  time.Time
	idle  time.Duration
	tick  time.Duration
	fire  func(*conn) // closes an idle connection

	mu    sync.Mutex
	head  *idleWatch // the watches armed, most recent first
	fired []*conn    // sweep's scratch, under mu
}

func newIdleSweeper(clk clock.Clock, idle time.Duration, fire func(*conn)) *idleSweeper {
	return &idleSweeper{clock: clk, base: clk.Now(), idle: idle, tick: sweepTick(idle), fire: fire}
}

// now is the sweeper's clock as an activity stamp.
func (s *idleSweeper) now() int64 { return int64(s.clock.Since(s.base)) }

// watch returns a new watch of cn on s's clock, not yet armed.
func (s *idleSweeper) watch(cn *conn) *idleWatch { return &idleWatch{s: s, cn: cn} }

// run sweeps every tick until done is closed.
func (s *idleSweeper) run(done <-chan struct{}) {
	t := s.clock.NewTimer(s.tick)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C():
			s.sweep()
			t.Reset(s.tick)
		}
	}
}

// sweep fires (and takes off the list) every watch idle for s.idle or
// longer: s.fire closes its connection, after the list is released
// (closing a connection ends its flows, which stop its watch). One
// goroutine sweeps.
func (s *idleSweeper) sweep() {
	s.mu.Lock()
	now := s.now()
	for w := s.head; w != nil; {
		next := w.next
		if time.Duration(now-w.last.Load()) >= s.idle {
			s.unlink(w)
			s.fired = append(s.fired, w.cn)
		}
		w = next
	}
	fired := s.fired
	s.fired = s.fired[:0]
	s.mu.Unlock()
	for i, cn := range fired {
		s.fire(cn)
		fired[i] = nil
	}
}

// unlink takes w off the list; s.mu is held.
func (s *idleSweeper) unlink(w *idleWatch) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		s.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	}
	w.prev, w.next, w.armed = nil, nil, false
}

// idleWatch closes an established connection that has been idle for its
// sweeper's period: no byte read and no write completed in either
// direction. Its flows touch it as bytes move (a stamp, nothing armed);
// the sweeper checks the last touch every tick. A parked flow costs it
// nothing. A watch without a sweeper records touches and never fires.
type idleWatch struct {
	last atomic.Int64 // the time of the last progress (sweeper.now, or monoNow without one)
	s    *idleSweeper

	cn *conn // what s.fire closes

	// Under s.mu.
	prev, next     *idleWatch
	armed, stopped bool
}

// touch records progress; a nil watch ignores it.
func (w *idleWatch) touch() {
	if w == nil {
		return
	}
	if w.s != nil {
		w.last.Store(w.s.now())
	} else {
		w.last.Store(monoNow())
	}
}

// start arms the watch: the sweeper fires it once the connection has been
// idle for its period (within a tick more). A watch already stopped, or
// one without a sweeper, is not armed.
func (w *idleWatch) start() {
	if w == nil || w.s == nil {
		return
	}
	w.touch()
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.stopped || w.armed {
		return
	}
	w.armed = true
	w.next = s.head
	if s.head != nil {
		s.head.prev = w
	}
	s.head = w
}

// stop disarms the watch for good; a nil watch ignores it.
func (w *idleWatch) stop() {
	if w == nil || w.s == nil {
		return
	}
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	w.stopped = true
	if w.armed {
		s.unlink(w)
	}
}

// writeBounded writes b to c, the write bounded by d (0: unbounded): a
// peer that does not read for d, once the kernel's buffers are full, fails
// it (timedOut is called). Progress is recorded on w.
func writeBounded(c net.Conn, b []byte, d time.Duration, w *idleWatch, timedOut func()) (int, error) {
	if d > 0 {
		// Armed for this write only: an idle socket keeps no poller
		// timer.
		_ = c.SetWriteDeadline(time.Now().Add(d))
	}
	n, err := c.Write(b)
	if d > 0 {
		_ = c.SetWriteDeadline(time.Time{})
	}
	if n > 0 {
		w.touch()
	}
	if err != nil && timedOut != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		timedOut()
	}
	return n, err
}

// boundedConn is c with each Write under writeBounded: an HTTP egress
// connection's writing sides, and the server sidecar's connections to an
// h2c app.
type boundedConn struct {
	net.Conn
	d        time.Duration
	w        *idleWatch
	timedOut func()
}

func (c boundedConn) Write(b []byte) (int, error) {
	return writeBounded(c.Conn, b, c.d, c.w, c.timedOut)
}
