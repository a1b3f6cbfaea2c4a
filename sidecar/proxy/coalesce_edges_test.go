package proxy

import (
	"bytes"
	"runtime/debug"
	"sync/atomic"
	"testing"

	"github.com/weftmesh/weft/internal/testutil"
)

// TestCoalescerLateWritesUpToTheBound: while a flush is stuck, late
// records are gathered up to maxLate bytes inclusive: answers that fill
// the bound exactly are all gathered without waiting for the flush
// (TestCoalescerBoundsLateWrites checks that the next one waits).
func TestCoalescerLateWritesUpToTheBound(t *testing.T) {
	g := &gateConn{entered: make(chan struct{}), release: make(chan struct{})}
	co := newCoalescer(g)
	co.hold(nil)
	_, _ = co.Write([]byte("records,"))
	flushed := make(chan error, 1)
	go func() { flushed <- co.flush() }()
	<-g.entered
	const answer = maxLate / 4
	var done atomic.Int64
	go func() {
		for i := range 4 {
			_, _ = co.Write(bytes.Repeat([]byte{byte('a' + i)}, answer))
			done.Add(1)
		}
	}()
	testutil.Eventually(t, "the four answers that fill maxLate gathered while the flush is stuck", func() bool { return done.Load() == 4 })
	close(g.release)
	if err := testutil.Receive(t, flushed, "the flush"); err != nil {
		t.Fatal(err)
	}
	want := "records,"
	for i := range 4 {
		want += string(bytes.Repeat([]byte{byte('a' + i)}, answer))
	}
	if got := g.String(); got != want {
		t.Fatalf("the socket got %d bytes, want %d in order", len(got), len(want))
	}
}

// TestCoalescedWriteFitsItsBuffer: the pooled gathering buffer holds a
// bufSize Write's records (headers and tags included), so a flow's
// Write does not grow it: no allocation per Write once warm.
func TestCoalescedWriteFitsItsBuffer(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	client, _, server := coalescedTLSPair(t)
	w := coalesced(client)
	// The peer reads the socket itself, its ciphertext into one buffer:
	// AllocsPerRun counts every goroutine's allocations, and crypto/tls's
	// reads allocate as the records fall (a loaded run: the mutation
	// runner's coverage pass failed this test on them).
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := server.NetConn().Read(buf); err != nil {
				return
			}
		}
	}()
	// No collection meanwhile: it would empty the pool the buffer is
	// taken from.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	b := make([]byte, bufSize)
	for range 3 { // warm: crypto/tls's own buffers, the pool
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs >= 1 {
		t.Fatalf("a Write of %d bytes allocates %v times, want 0: its records outgrew the pooled buffer", bufSize, allocs)
	}
}
