package proxy

import (
	"crypto/tls"
	"net"
	"os"
	"time"
)

// An HTTP/2 connection between sidecars was written in small pieces by
// short-lived goroutines: net/http's HTTP/2 transport writes a request's
// HEADERS and its DATA with a flush each, from a goroutine of its own per
// request, and its server flushes a response's HEADERS and DATA apart,
// each from a goroutine it starts for the write. Each flush is a TLS
// record, a system call, a wake-up and a read on the other side — and
// sealing and writing a record from a fresh goroutine grows its stack
// (copied twice or three times) on every request. Since sessions 28–29
// both ends are weft's own (sidecar/l7/h2), which write a whole small
// request or response in one Write; write-behind still joins the records
// of concurrent streams and of streamed bodies, and was measured against
// none (sidecar/proxy/bench/README.md, session 29) before it was kept.
//
// Write-behind (writeBehind, switched on once the handshake of such a
// connection negotiated h2) turns crypto/tls's writes into appends: a
// record is added to pending and the Write returns; one writer goroutine
// of the connection, its stack grown once, writes everything pending in
// one system call. Records sealed while the writer waits to run (the
// HEADERS and DATA of one request, the responses of several streams)
// leave together.
//
// What a Write promised holds as a socket's buffer holds it: the order of
// the records on the wire is the order of the Writes (one writer, one
// queue), a write error is returned by every later Write, and the bytes
// pending are bounded (maxBehind): past it a Write waits for the writer,
// the back-pressure of a blocked write. A write deadline bounds the Writes
// (one past it fails, a wait for room ends at it) and not the bytes they
// handed over: crypto/tls queues its close_notify, then sets a deadline of
// now so that nothing follows it — the close_notify must still leave.
// The writer's own system calls are bounded as before write-behind (the
// sidecar's write timeout, under the coalescer on the inbound side; on
// the app's h2c connections the meter under it on the client side,
// boundedConn on the server side) and by
// Close, which lets the writer send what is pending for at most
// behindCloseWait, then closes the socket, which ends a stuck write. A
// failed write closes the socket at once (a record may be cut): the
// connection's reader and its HTTP/2 server learn it then, as they did
// from a failed Write. Small records (alerts, KeyUpdates, ≤ 64 bytes) have
// maxLate of room past maxBehind, so crypto/tls's close_notify is queued
// at once behind a full queue instead of waiting out its 5 s deadline;
// a peer that fills that room too (PING acks) makes tls.Conn.Close take at
// most those 5 s plus behindCloseWait.

// maxBehind bounds the bytes pending for the writer: a Write that would
// pass it waits (unless nothing is pending: one record always goes). Two
// full records: what a flow's coalesced Write gathers (bufSize). While the
// writer writes one batch the next one fills, so a connection whose peer
// stopped reading holds at most two batches (~64 KiB), and a bulk
// transfer leaves up to 32 KiB per system call.
const maxBehind = 32 << 10

// keepBehind is the largest buffer the writer keeps for its next round: a
// request's records fit; a bulk transfer's larger buffers go back to the
// collector, so an idle connection holds at most this much.
const keepBehind = 4 << 10

// behindCloseWait bounds how long Close lets the writer send what is
// pending before it closes the socket.
const behindCloseWait = time.Second

// behind is a coalescer's write-behind state, guarded by its mu.
type behind struct {
	pending []byte    // appended by Write, taken by the writer
	spare   []byte    // the writer's previous buffer, reused
	closing bool      // Close was called: Writes fail, the writer drains and exits
	err     error     // the writer's failure: sticky
	dl      time.Time // the Writes' deadline (SetWriteDeadline)
	done    chan struct{}
}

// behindIfH2 switches the coalescer under tc to write-behind when tc
// negotiated HTTP/2: a connection between sidecars of the L7 path.
func behindIfH2(tc *tls.Conn) {
	if tc.ConnectionState().NegotiatedProtocol != "h2" {
		return
	}
	if co, ok := tc.NetConn().(*coalescer); ok {
		co.writeBehind()
	}
}

// behindH2C is c written behind: a plaintext HTTP/2 (h2c) connection
// between a sidecar and its app (gRPC), which net/http's HTTP/2 server and
// transport write in the same small pieces as the connections between
// sidecars — a response's HEADERS, DATA and trailers, each flushed from a
// goroutine of its own — and which the app then reads one by one.
func behindH2C(c net.Conn) *coalescer {
	co := newCoalescer(c)
	co.writeBehind()
	return co
}

// writeBehind switches c to write-behind and starts its writer.
func (c *coalescer) writeBehind() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wb != nil || c.closed {
		return
	}
	c.wb = &behind{done: make(chan struct{})}
	go c.writer()
}

// writeBehindLocked appends b for the writer; called with c.mu held, it
// returns with it released.
func (c *coalescer) writeBehindLocked(b []byte) (int, error) {
	wb := c.wb
	var err error
	var wake *time.Timer
	for {
		switch {
		case wb.err != nil:
			err = wb.err
		case wb.closing:
			err = net.ErrClosed
		case !wb.dl.IsZero() && !time.Now().Before(wb.dl):
			err = os.ErrDeadlineExceeded
		case len(wb.pending) > 0 && len(wb.pending)+len(b) > maxBehind+smallSlack(b):
			// Wait for room, or the deadline (which may move meanwhile).
			if wake != nil {
				wake.Stop()
				wake = nil
			}
			if !wb.dl.IsZero() {
				wake = time.AfterFunc(time.Until(wb.dl), func() {
					c.mu.Lock()
					c.flushed.Broadcast()
					c.mu.Unlock()
				})
			}
			c.flushed.Wait()
			continue
		default:
			wb.pending = append(wb.pending, b...)
			c.flushed.Broadcast() // the writer waits on the same condition
		}
		break
	}
	c.mu.Unlock()
	if wake != nil {
		wake.Stop()
	}
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

// smallSlack is how far past maxBehind a small record (an alert, a
// KeyUpdate: tens of bytes) may go: crypto/tls's close_notify is not kept
// waiting for room (its 5 s deadline) behind a peer that stopped reading.
func smallSlack(b []byte) int {
	if len(b) <= 64 {
		return maxLate
	}
	return 0
}

// SetWriteDeadline bounds the Writes; with write-behind, only they: the
// socket's deadline is left to the writer's own bounds (see above).
func (c *coalescer) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	if wb := c.wb; wb != nil {
		wb.dl = t
		c.flushed.Broadcast() // a Write waiting for room sees it
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline is SetReadDeadline and SetWriteDeadline.
func (c *coalescer) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// writer writes what is pending, all of it in one call, until Close and
// nothing is left, or a write fails.
func (c *coalescer) writer() {
	wb := c.wb
	defer close(wb.done)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(wb.pending) == 0 && !wb.closing {
			c.flushed.Wait()
		}
		if len(wb.pending) == 0 {
			return
		}
		b := wb.pending
		wb.pending, wb.spare = wb.spare[:0], nil
		c.flushed.Broadcast() // room for Writes waiting on a full queue
		c.mu.Unlock()
		_, err := c.Conn.Write(b)
		c.mu.Lock()
		if cap(b) <= keepBehind {
			wb.spare = b[:0]
		}
		c.flushed.Broadcast() // a waiting Close; or the Writes fail
		if err != nil {
			// The stream is broken (a record may be cut): end the
			// connection, so its reader and server learn it now, as a
			// failed synchronous Write made them (h2: conn.Close).
			wb.err, wb.pending = err, nil
			_ = c.Conn.Close()
			return
		}
	}
}

// Close closes the socket; a write-behind connection first lets its
// writer send what is pending, for at most behindCloseWait (a writer stuck
// on a peer that stopped reading is then ended by the socket's closing).
func (c *coalescer) Close() error {
	c.mu.Lock()
	c.closed = true
	wb := c.wb
	if wb == nil {
		c.mu.Unlock()
		return c.Conn.Close()
	}
	wb.closing = true
	c.flushed.Broadcast()
	c.mu.Unlock()
	t := time.NewTimer(behindCloseWait)
	select {
	case <-wb.done:
	case <-t.C:
	}
	t.Stop()
	return c.Conn.Close()
}
