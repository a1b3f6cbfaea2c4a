package proxy

import (
	"bytes"
	"runtime"
	"testing"
	"time"
)

// Some tests must act only once the sidecar's connections are in a given
// state: stuck in a write to a peer that does not read, waiting for their
// first byte. The proxy exposes no counter of these, but each state is a
// goroutine waiting for the network inside one proxy function, which the
// goroutine stacks show: the tests wait for that rather than sleep.

// allStacks is every goroutine's stack trace.
func allStacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// waitingIn counts the goroutines of this process that wait for the
// network (IO wait) inside the proxy function fn: "writeBounded", a
// direction stuck writing to a peer that does not read; "sniffUntil", a
// connection waiting for its first bytes.
func waitingIn(fn string) int {
	buf := allStacks()
	frame := []byte("/sidecar/proxy." + fn + "(")
	count := 0
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		head, _, _ := bytes.Cut(g, []byte("\n"))
		if bytes.Contains(head, []byte("[IO wait")) && bytes.Contains(g, frame) {
			count++
		}
	}
	return count
}

// stateTimeout bounds the waits for a state (only a failing test waits
// that long). Filling the buffers of 80 connections through two sidecars
// until every flow is stuck takes seconds (8 on a quiet machine), more
// under -race on a loaded one.
const stateTimeout = time.Minute

// waitWaitingIn waits until at least n goroutines wait in fn (see
// waitingIn), and fails t, saying what it waited for, if they do not
// within stateTimeout.
func waitWaitingIn(t testing.TB, n int, fn, what string) {
	t.Helper()
	deadline := time.Now().Add(stateTimeout)
	for got := waitingIn(fn); got < n; got = waitingIn(fn) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %d goroutines waiting in %s, want %d", what, got, fn, n)
		}
		time.Sleep(10 * time.Millisecond) // a stack dump stops the world: not every 2ms
	}
}
