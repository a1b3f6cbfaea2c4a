package proxy

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Timeouts of a connection (Config.HandshakeTimeout, IdleTimeout,
// WriteTimeout), the kind label of weft_sidecar_timeouts_total.
const (
	timeoutHandshake = "handshake" // not established within HandshakeTimeout of accept
	timeoutIdle      = "idle"      // no byte either way for IdleTimeout
	timeoutWrite     = "write"     // a write to a peer that stopped reading took WriteTimeout
)

// monoBase anchors activity stamps on the monotonic clock.
var monoBase = time.Now()

func monoNow() int64 { return int64(time.Since(monoBase)) }

// idleWatch closes an established connection that has been idle for its
// period: no byte read and no write completed in either direction. Its
// flows touch it as bytes move; one timer per connection checks the last
// touch when it fires and, unless the connection has been idle for the
// whole period, is set again for the rest of it. A parked flow costs it
// nothing, and the check runs at most once per period while traffic flows.
type idleWatch struct {
	last atomic.Int64 // monoNow of the last progress

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
}

// touch records progress; a nil watch ignores it.
func (w *idleWatch) touch() {
	if w != nil {
		w.last.Store(monoNow())
	}
}

// start arms the watch: fire runs once the connection has been idle for
// idle. A watch already stopped is not armed.
func (w *idleWatch) start(idle time.Duration, fire func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.touch()
	var check func()
	check = func() {
		since := time.Duration(monoNow() - w.last.Load())
		if since < idle {
			w.mu.Lock()
			if !w.stopped {
				w.timer.Reset(idle - since)
			}
			w.mu.Unlock()
			return
		}
		fire()
	}
	w.timer = time.AfterFunc(idle, check)
}

// stop disarms the watch for good.
func (w *idleWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
	}
}

// writeBounded writes b to c, the write bounded by d (0: unbounded): a
// peer that does not read for d, once the kernel's buffers are full, fails
// it (timedOut is called). Progress is recorded on w.
func writeBounded(c net.Conn, b []byte, d time.Duration, w *idleWatch, timedOut func()) (int, error) {
	if d > 0 {
		_ = c.SetWriteDeadline(time.Now().Add(d))
	}
	n, err := c.Write(b)
	if n > 0 {
		w.touch()
	}
	if err != nil && timedOut != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		timedOut()
	}
	return n, err
}

// boundedWriter is a connection's writing side under writeBounded.
type boundedWriter struct {
	c        net.Conn
	d        time.Duration
	w        *idleWatch
	timedOut func()
}

func (bw *boundedWriter) Write(b []byte) (int, error) {
	return writeBounded(bw.c, b, bw.d, bw.w, bw.timedOut)
}
