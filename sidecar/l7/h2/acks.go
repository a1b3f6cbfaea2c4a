package h2

import (
	"time"

	"golang.org/x/net/http2"
)

// A PING's ACK goes with the connection's next write, or after
// pingAckDelay when none comes, not in a write of its own: gRPC's
// clients (and servers) send a PING for each burst of DATA they receive
// to estimate the bandwidth-delay product, so a gRPC unary call had its
// sidecar answer one PING per call — a system call, and a wake-up of the
// peer for it. RFC 9113 §6.7 asks that ACKs be sent with priority, not at
// once; the delay only lengthens the peer's round-trip sample by at most
// pingAckDelay (a BDP estimate grows, a keepalive's timeout is seconds).
// A peer that sends PINGs faster than writes go has its ACKs written
// maxPendingAcks at a time by the reader, which then waits for the write
// as it did for each before: the pending ACKs are bounded.
const maxPendingAcks = 16

// pingAckDelay bounds how long an ACK waits (a variable: the tests set it).
var pingAckDelay = time.Millisecond

// pingAcks are the ACKs a connection owes; its methods are called with
// the connection's write lock held, but for the timer's.
type pingAcks struct {
	data  [][8]byte
	timer *time.Timer
	armed bool
}

// add notes an ACK owed; true if maxPendingAcks are owed (the caller
// writes them now). Otherwise flush is called after pingAckDelay unless a
// write took them first.
func (a *pingAcks) add(d [8]byte, flush func()) (now bool) {
	a.data = append(a.data, d)
	if len(a.data) >= maxPendingAcks {
		return true
	}
	if !a.armed {
		if a.timer == nil {
			a.timer = time.AfterFunc(pingAckDelay, flush)
		} else {
			a.timer.Reset(pingAckDelay)
		}
		a.armed = true
	}
	return false
}

// appendLocked frames the ACKs owed (into the write being composed).
func (a *pingAcks) appendLocked(fr *http2.Framer) {
	if len(a.data) == 0 {
		return
	}
	for _, d := range a.data {
		_ = fr.WritePing(true, d)
	}
	a.data = a.data[:0]
	if a.armed {
		a.timer.Stop()
		a.armed = false
	}
}

// stop ends the timer (the connection ended); called under the lock or
// once no write can come.
func (a *pingAcks) stop() {
	if a.timer != nil {
		a.timer.Stop()
	}
}

// ackPing owes the peer an ACK of d.
func (sc *Conn) ackPing(d [8]byte) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	if sc.werr != nil {
		return sc.werr
	}
	if !sc.acks.add(d, sc.flushAcks) {
		return nil
	}
	sc.wbuf.Reset()
	return sc.flushLocked()
}

// flushAcks writes the ACKs owed, if a write has not taken them.
func (sc *Conn) flushAcks() {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	sc.acks.armed = false
	if sc.werr != nil || len(sc.acks.data) == 0 {
		return
	}
	sc.wbuf.Reset()
	_ = sc.flushLocked()
}

// ackPing owes the server an ACK of d.
func (cc *clientConn) ackPing(d [8]byte) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if cc.werr != nil {
		return cc.werr
	}
	if !cc.acks.add(d, cc.flushAcks) {
		return nil
	}
	return cc.writeLocked(func() error { return nil })
}

// flushAcks writes the ACKs owed, if a write has not taken them.
func (cc *clientConn) flushAcks() {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.acks.armed = false
	if cc.werr != nil || len(cc.acks.data) == 0 {
		return
	}
	_ = cc.writeLocked(func() error { return nil })
}
