package memtune

import (
	"context"
	"os"
	"runtime/metrics"
	"strings"
)

// The stack floor: the runtime starts every goroutine with a stack the size
// of the average stack in use at the last collection, rounded up to a power
// of two (Go 1.19's adaptive start, golang/go#18138), and a goroutine that
// needs more grows it by copying, doubling at a time. A sidecar's
// goroutines are bimodal: most sit idle in a Read with about 1 KiB of stack
// in use (one per connection and per pooled HTTP/2 connection), so the
// start is 2 KiB; the short ones net/http starts per request — the HTTP/2
// transport's doRequest, the HTTP/2 server's runHandler and
// writeFrameAsync — need up to 8 KiB and grow their stacks on every
// request. Profiled at 1,000 req/s through the L7 pair
// (sidecar/proxy/bench), runtime.newstack was 7 % of the client sidecar's
// CPU and 12 % of the server's; with an 8 KiB start it no longer shows.
// weft cannot hand net/http's goroutines a bigger stack (the runtime has no
// knob, golang/go#61052; gRPC-Go and CockroachDB meet the same cost with
// worker pools and an explicit grow, which only work for goroutines they
// start), so it raises the average the runtime computes:
// StackFloorGoroutines parked goroutines each holding StackFloorBytes of
// stack in an 8 KiB stack. The average can then not exceed what fits in 8
// KiB, so the start is 8 KiB at most, and it is 8 KiB while the process has
// up to ~120 idle goroutines of its own (a sidecar with ~50 connections);
// with more, their stacks weigh more in the average and the start falls
// back to the runtime's own choice, as without the floor. The cost is the
// floor's 96 × 8 KiB of stack (768 KiB) and, for a goroutine started while
// the floor is in effect that needs less, up to 6 KiB of stack it does not
// use until the collector shrinks it (it halves a stack less than a quarter
// used at every collection). GODEBUG=adaptivestackstart=0 (every goroutine
// starts at 2 KiB) turns both the runtime's average and the floor off.
const (
	// StackFloorGoroutines is how many goroutines hold the floor.
	StackFloorGoroutines = 96
	// StackFloorBytes is the stack each of them holds (in frames of
	// stackFrame bytes, beside which each call keeps a few words): well
	// above 4 KiB less the runtime's guard, so the average rounds up to 8
	// KiB with many idle goroutines beside them, and within 8 KiB with the
	// guard, so it never rounds up to 16 (TestRaiseStartingStack checks
	// both against the runtime's own figure).
	StackFloorBytes = 7 << 10
)

// stackFrame is the stack one call of holdStack takes, beyond its own
// bookkeeping.
const stackFrame = 1 << 10

// RaiseStartingStack starts the goroutines that hold the stack floor, which
// end with ctx, and reports whether it did: it does not when GODEBUG turns
// the runtime's adaptive start off, which would make them pointless.
func RaiseStartingStack(ctx context.Context) bool {
	if adaptiveStackOff(os.Getenv("GODEBUG")) {
		return false
	}
	for range StackFloorGoroutines {
		go holdStack(StackFloorBytes/stackFrame, ctx.Done())
	}
	return true
}

// holdStack recurses n frames deep, each with stackFrame bytes of its own,
// and waits there until done is closed.
//
//go:noinline
func holdStack(n int, done <-chan struct{}) byte {
	var frame [stackFrame]byte // indexed by n: the compiler keeps all of it
	frame[n%stackFrame] = byte(n)
	if n <= 1 {
		<-done
		return frame[n%stackFrame]
	}
	return holdStack(n-1, done) ^ frame[n%stackFrame]
}

// adaptiveStackOff reports whether a GODEBUG value turns the adaptive
// starting stack off (its last adaptivestackstart setting wins, as the
// runtime reads it).
func adaptiveStackOff(godebug string) bool {
	off := false
	for _, kv := range strings.Split(godebug, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(kv), "adaptivestackstart="); ok {
			off = v == "0"
		}
	}
	return off
}

// StartingStack is the stack size, in bytes, that the runtime gives a new
// goroutine now.
func StartingStack() uint64 {
	s := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
