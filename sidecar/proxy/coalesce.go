package proxy

import (
	"crypto/tls"
	"net"
	"sync"
)

// crypto/tls writes each record of a Write with a system call of its own: a
// flow that hands it bufSize bytes of plaintext would make four, each a
// trip through the kernel's TCP stack. A coalescer sits between a
// *tls.Conn and its TCP connection and, while a flow's Write is in
// progress, gathers the records in one pooled buffer that leaves in one
// write. Outside such a Write (handshakes, alerts, the HTTP/2 framing of the
// L7 path, whose client and server write a small request or response
// whole in one Write of their own) bytes go straight through.
//
// Order on the wire is the order crypto/tls wrote the records in: a record
// written by another goroutine while a Write's records are gathered or
// being flushed (a KeyUpdate answered by the reading side, the close_notify
// of a Close) is appended behind them and sent by the flush. The flush
// writes with the coalescer unlocked, so a Close is never stuck behind a
// peer that stopped reading: it appends its alert, and closing the socket
// ends the stuck write as it would end crypto/tls's own. Such late records
// are bounded (maxLate): a peer that stops reading and keeps asking for
// KeyUpdates would otherwise grow the buffer with every answer; past the
// bound the writer waits for the flush, the back-pressure crypto/tls's own
// blocked write gives.
type coalescer struct {
	net.Conn // *net.TCPConn or *prefixConn (tlsSocket looks through)

	mu       sync.Mutex
	flushed  sync.Cond // on mu: a flush has ended
	holding  bool      // between hold and the end of flush: writes are gathered
	flushing bool      // flush is writing: what is gathered now is late
	late     int       // bytes gathered while flushing
	buf      []byte    // gathered, not yet written
}

// maxLate bounds the bytes other goroutines may add while a flush writes:
// a close_notify and a few KeyUpdate answers (tens of bytes each).
const maxLate = 4 << 10

// newCoalescer is a coalescer over c.
func newCoalescer(c net.Conn) *coalescer {
	co := &coalescer{Conn: c}
	co.flushed.L = &co.mu
	return co
}

// coalescePool holds the gathering buffers: a bufSize Write's records, with
// room for their headers and tags (crypto/tls starts a connection with
// records of about one MSS, 22 bytes of overhead each).
var coalescePool = newBufPool(bufSize + 4<<10)

func (c *coalescer) Write(b []byte) (int, error) {
	c.mu.Lock()
	for c.flushing && c.late+len(b) > maxLate {
		c.flushed.Wait()
	}
	if c.holding {
		if c.flushing {
			c.late += len(b)
		}
		c.buf = append(c.buf, b...)
		c.mu.Unlock()
		return len(b), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// hold starts gathering into buf.
func (c *coalescer) hold(buf []byte) {
	c.mu.Lock()
	c.holding, c.buf = true, buf[:0]
	c.mu.Unlock()
}

// flush writes what was gathered, then anything appended meanwhile, until
// nothing is left; then writes go straight through again. On a write error
// the rest is dropped (the connection is broken: its records are numbered).
func (c *coalescer) flush() error {
	c.mu.Lock()
	c.flushing = true
	var err error
	for len(c.buf) > 0 && err == nil {
		b := c.buf
		c.buf = nil
		c.mu.Unlock()
		_, err = c.Conn.Write(b)
		c.mu.Lock()
	}
	c.holding, c.flushing, c.late, c.buf = false, false, 0, nil
	c.flushed.Broadcast()
	c.mu.Unlock()
	return err
}

// coalescedTLS is a *tls.Conn over a coalescer, written by a flow: each
// Write's records leave in one system call.
type coalescedTLS struct {
	*tls.Conn
	co *coalescer
	// sealed, when set, is the bufPool buffer that holds the plaintext of
	// the next Write: put back (and cleared) once the records are sealed.
	// Set and read by the one flow that writes.
	sealed *[]byte
}

func (w *coalescedTLS) Write(b []byte) (int, error) {
	bp := coalescePool.Get().(*[]byte)
	defer coalescePool.Put(bp)
	w.co.hold(*bp)
	n, err := w.Conn.Write(b)
	if w.sealed != nil {
		bufPool.Put(w.sealed)
		w.sealed = nil
	}
	if ferr := w.co.flush(); ferr != nil {
		return 0, ferr
	}
	return n, err
}

// coalesced is dst as a flow writes it: a *tls.Conn over a coalescer
// gathers each Write's records; anything else is written as it is.
func coalesced(dst net.Conn) net.Conn {
	if tc, ok := dst.(*tls.Conn); ok {
		if co, ok := tc.NetConn().(*coalescer); ok {
			return &coalescedTLS{Conn: tc, co: co}
		}
	}
	return dst
}
