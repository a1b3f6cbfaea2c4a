package memtune

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"time"
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
// back to the runtime's own choice, as without the floor. The cost, paid
// only while the process is busy (FloorWhileBusy), is the floor's 96 × 8
// KiB of stack (768 KiB; 1.3 MiB of RSS measured) and, for a goroutine
// started while the floor is in effect that needs less, up to 6 KiB of
// stack it does not use until the collector shrinks it (it halves a stack
// less than a quarter used at every collection). GODEBUG=adaptivestackstart=0 (every goroutine
// starts at 2 KiB) turns both the runtime's average and the floor off.
const (
	// StackFloorGoroutines is how many goroutines hold the floor.
	StackFloorGoroutines = 96
	// StackFloorBytes is the stack each of them holds (in frames of
	// stackFrame bytes, beside which each call keeps a few words): well
	// above 4 KiB less the runtime's guard, so the average rounds up to 8
	// KiB with many idle goroutines beside them, and within 8 KiB with the
	// guard, so it never rounds up to 16 (TestStackFloor checks
	// both against the runtime's own figure).
	StackFloorBytes = 7 << 10
)

// stackFrame is the stack one call of holdStack takes, beyond its own
// bookkeeping.
const stackFrame = 1 << 10

// When FloorWhileBusy raises and lowers the floor.
const (
	// FloorBusyCPU: a second in which the process used at least this much
	// of a CPU raises the floor. An L7 sidecar uses it at ~250 req/s
	// (sidecar/proxy/bench), where the stack growth it saves is 20–30 µs
	// of CPU per request; below, the floor is not worth its memory. A
	// collection of the releaser's (ReleaseWhenQuiet) in a sidecar holding
	// 1,000 idle connections takes ~1–2 % of a CPU in its second.
	FloorBusyCPU = 0.05
	// FloorQuietCPU and FloorQuietFor: the floor is lowered once the
	// process has used less than FloorQuietCPU of a CPU in every second of
	// FloorQuietFor. An idle sidecar uses ~0.1 %.
	FloorQuietCPU = 0.01
	FloorQuietFor = 5 * time.Second
)

// FloorWhileBusy holds the stack floor while the process is busy, until
// ctx ends: it samples the process's CPU time every second, raises the
// floor after a second at FloorBusyCPU or more, and lowers it after
// FloorQuietFor of seconds under FloorQuietCPU, returning the freed stacks
// to the operating system (debug.FreeOSMemory; the CPU that collection
// takes is not counted as the process's). An idle sidecar so never pays
// the floor's memory, and a busy one pays it while the goroutines it saves
// stack growth for are being started. changed, if not nil, is called with
// true when the floor is raised and false when it is lowered. It returns at
// once, doing nothing, when GODEBUG turns the runtime's adaptive start off.
func FloorWhileBusy(ctx context.Context, changed func(raised bool)) {
	floorWhileBusy(ctx, floorPolicy{busy: FloorBusyCPU, quiet: FloorQuietCPU, quietFor: FloorQuietFor}, time.Second, changed)
}

func floorWhileBusy(ctx context.Context, p floorPolicy, tick time.Duration, changed func(raised bool)) {
	if adaptiveStackOff(os.Getenv("GODEBUG")) {
		return
	}
	if changed == nil {
		changed = func(bool) {}
	}
	var up chan struct{} // closed to lower the floor; nil while it is down
	var ended func()     // waits for the floor's goroutines to end
	defer func() {
		if up != nil {
			close(up)
		}
	}()
	t := time.NewTicker(tick)
	defer t.Stop()
	p.prevCPU, p.prevAt = cpuTime(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		switch p.step(cpuTime(), time.Now()) {
		case raise:
			up = make(chan struct{})
			ended = raiseFloor(up)
			changed(true)
		case lower:
			close(up)
			up = nil
			// The floor's stacks, and those of the goroutines started at
			// 8 KiB while it was up, are free now; the collector returns
			// their spans to the heap and FreeOSMemory the heap's free
			// pages to the OS: without it they stay resident, as the
			// releaser (ReleaseWhenQuiet) may have run already and waits
			// for new allocation before it runs again.
			ended()
			debug.FreeOSMemory()
			// That collection is this loop's work, not the process's:
			// counted, it would raise the floor again at once. A tick
			// that came due while it ran is dropped for the same reason
			// (a period of microseconds says nothing).
			p.prevCPU, p.prevAt = cpuTime(), time.Now()
			t.Reset(tick)
			changed(false)
		}
	}
}

// floorAction is what floorPolicy.step decides.
type floorAction int

const (
	keep floorAction = iota
	raise
	lower
)

// floorPolicy decides, sample by sample, when the floor goes up and down.
type floorPolicy struct {
	busy, quiet float64       // fractions of a CPU: FloorBusyCPU, FloorQuietCPU
	quietFor    time.Duration // FloorQuietFor
	prevCPU     time.Duration // the previous sample's CPU time
	prevAt      time.Time     // and when it was taken
	up          bool          // the floor is raised
	lastActive  time.Time     // the end of the last second at quiet or more
}

// step takes a sample of the process's CPU time at a time and says what to
// do with the floor.
func (p *floorPolicy) step(cpu time.Duration, at time.Time) floorAction {
	wall, used := at.Sub(p.prevAt), cpu-p.prevCPU
	p.prevCPU, p.prevAt = cpu, at
	if wall <= 0 {
		return keep
	}
	load := float64(used) / float64(wall)
	switch {
	case load >= p.busy && !p.up:
		p.up, p.lastActive = true, at
		return raise
	case load >= p.quiet:
		p.lastActive = at
	case p.up && at.Sub(p.lastActive) >= p.quietFor:
		p.up = false
		return lower
	}
	return keep
}

// raiseFloor starts the goroutines that hold the stack floor until done is
// closed, and returns a function that waits for them to end after that.
func raiseFloor(done <-chan struct{}) (ended func()) {
	var wg sync.WaitGroup
	for range StackFloorGoroutines {
		wg.Go(func() { holdStack(StackFloorBytes/stackFrame, done) })
	}
	return wg.Wait
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
