package proxy

import (
	"io"
	"sync/atomic"
	"testing"
	"time"
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

// TestIdleWatchStop: a watch stopped before it started is never armed,
// and stopping an armed one disarms it: fire never runs.
func TestIdleWatchStop(t *testing.T) {
	var fired atomic.Int32
	early := &idleWatch{}
	early.stop() // the connection finished before its watch started
	early.start(100*time.Millisecond, func() { fired.Add(1) })
	armed := &idleWatch{}
	armed.start(500*time.Millisecond, func() { fired.Add(1) })
	armed.stop()
	time.Sleep(time.Second) // two periods and more: either watch would have fired
	if n := fired.Load(); n != 0 {
		t.Fatalf("fire ran %d times after stop", n)
	}
}
