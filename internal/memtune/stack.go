package memtune

import (
	"context"
	"os"
	"runtime/debug"
	"strconv"
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
// up to ~100 idle goroutines of its own (a sidecar with ~40 connections
// busy at once; idle ones hold no goroutine); with more, their stacks weigh
// more in the average: the start is 4 KiB with a few hundred of them, and
// the runtime's own choice with more. The
// cost, paid only while the process is busy (FloorWhileBusy), is the
// floor's 96 × 8 KiB of stack (768 KiB; its scanned stacks also raise the
// heap goal by GOGC percent of ~640 KiB) and, for a goroutine started
// while the floor is up that needs less, up to 6 KiB of stack it does not
// use (see FloorWhileBusy). GODEBUG=adaptivestackstart=0 (every goroutine
// starts at 2 KiB) turns both the runtime's average and the floor off.
const (
	// StackFloorGoroutines is how many goroutines hold the floor.
	StackFloorGoroutines = 96
	// StackFloorBytes is the stack each of them holds, in frames of
	// stackFrame bytes; with each call's own words and the goroutine's
	// start ~6.7 KiB are in use. That is well above 4 KiB less the
	// runtime's guard, so the average rounds up to 8 KiB with many idle
	// goroutines beside them, and with the guard (928 bytes) and the
	// runtime's reserve for a growth (800) it fits in an 8 KiB stack: they
	// never grow to 16 KiB, and the average never rounds up to 16
	// (TestStackFloorFitsEightKiB and TestStackFloor check both on the
	// runtime's own figures).
	StackFloorBytes = 6 << 10
)

// stackFrame is the stack one call of holdStack takes, beyond its own
// bookkeeping.
const stackFrame = 1 << 10

// When FloorWhileBusy raises and lowers the floor.
const (
	// FloorBusyCPU: two seconds in a row in which the process used at
	// least this much of a CPU raise the floor. An L7 sidecar uses it at
	// ~250 req/s (sidecar/proxy/bench), where the stack growth it saves is
	// 20–30 µs of CPU per request; below, the floor is not worth its
	// memory. Two seconds, because one collection of a large heap (the
	// releaser's, or the runtime's forced one every two minutes) can fill
	// one: 135 ms for 8 million objects.
	FloorBusyCPU = 0.05
	// FloorQuietCPU and FloorQuietFor: the floor is lowered once the
	// process has used less than FloorQuietCPU of a CPU in every second of
	// FloorQuietFor. An idle sidecar uses ~0.1 %.
	FloorQuietCPU = 0.01
	FloorQuietFor = 5 * time.Second
	// A floor raised again within FloorFlapWithin of its lowering waits
	// twice as long before the next lowering, up to FloorQuietMax: load
	// that comes and goes (an app's bursts every few seconds) keeps the
	// floor up instead of making the sidecar pay a collection per burst.
	FloorFlapWithin = time.Minute
	FloorQuietMax   = 5 * time.Minute
)

// FloorWhileBusy holds the stack floor while the process is busy, until
// ctx ends: it samples the process's CPU time every second, raises the
// floor after two seconds in a row at FloorBusyCPU or more, and lowers it
// after FloorQuietFor (longer if it was lowered less than FloorFlapWithin
// before: FloorQuietMax) of seconds under FloorQuietCPU, returning the
// freed stacks to the operating system (debug.FreeOSMemory; the CPU that
// collection takes is not counted as the process's). An idle sidecar so
// never raises the floor; a busy one pays for it while the goroutines it
// saves stack growth for are being started. Goroutines started while it
// was up keep up to 8 KiB of stack after it is lowered, for as long as
// they live: the collector halves a stack only when less than a quarter
// of it, less the 800 bytes the runtime reserves, is in use. changed, if
// not nil, is called with true when the floor is raised and false when it
// is lowered, by a lowering or by ctx ending. It returns at once, doing
// nothing, when GODEBUG turns the runtime's adaptive start off.
func FloorWhileBusy(ctx context.Context, changed func(raised bool)) {
	floorWhileBusy(ctx, newFloorPolicy(FloorBusyCPU, FloorQuietCPU, FloorQuietFor, time.Second/2), time.Second, changed)
}

func floorWhileBusy(ctx context.Context, p *floorPolicy, tick time.Duration, changed func(raised bool)) {
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
			changed(false)
		}
	}()
	t := time.NewTicker(tick)
	defer t.Stop()
	p.start(cpuTime(), time.Now())
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
			// 8 KiB while it was up that have ended, are free now; the
			// collector returns their spans to the heap and FreeOSMemory
			// the heap's free pages to the OS: without it they stay
			// resident, as the releaser (ReleaseWhenQuiet) may have run
			// already and waits for new allocation before it runs again.
			ended()
			debug.FreeOSMemory()
			// That collection is this loop's work, not the process's:
			// counted, it would read as load. A tick that came due while
			// it ran is dropped for the same reason.
			p.start(cpuTime(), time.Now())
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
	minWall     time.Duration // a shorter period is not judged: it is added to the next
	wait        time.Duration // the quiet that lowers the floor now: quietFor, more after a flap
	prevCPU     time.Duration // the previous sample's CPU time
	prevAt      time.Time     // and when it was taken
	up          bool          // the floor is raised
	wasBusy     bool          // the last period judged was busy
	lastActive  time.Time     // the end of the last period at quiet or more
	lowered     time.Time     // when the floor was last lowered (zero: never)
}

func newFloorPolicy(busy, quiet float64, quietFor, minWall time.Duration) *floorPolicy {
	return &floorPolicy{busy: busy, quiet: quiet, quietFor: quietFor, minWall: minWall, wait: quietFor}
}

// start takes the sample the next period is measured from.
func (p *floorPolicy) start(cpu time.Duration, at time.Time) {
	p.prevCPU, p.prevAt, p.wasBusy = cpu, at, false
}

// step takes a sample of the process's CPU time at a time and says what to
// do with the floor. A sample of zero CPU time (getrusage failed), or one
// less than minWall after the last, is not judged: the period runs on to
// the next sample.
func (p *floorPolicy) step(cpu time.Duration, at time.Time) floorAction {
	wall, used := at.Sub(p.prevAt), cpu-p.prevCPU
	if cpu == 0 || wall < p.minWall || wall <= 0 || used < 0 {
		return keep
	}
	p.prevCPU, p.prevAt = cpu, at
	load := float64(used) / float64(wall)
	busy := load >= p.busy
	twice := busy && p.wasBusy
	p.wasBusy = busy
	switch {
	case twice && !p.up:
		p.up, p.lastActive, p.wasBusy = true, at, false
		if !p.lowered.IsZero() && at.Sub(p.lowered) < FloorFlapWithin {
			p.wait = min(2*p.wait, FloorQuietMax)
		} else {
			p.wait = p.quietFor
		}
		return raise
	case load >= p.quiet:
		p.lastActive = at
	case p.up && at.Sub(p.lastActive) >= p.wait:
		p.up, p.lowered = false, at
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
// starting stack off, read as the runtime reads it at start-up
// (runtime/runtime1.go, parsegodebug): fields split at commas, not
// trimmed, the last valid setting winning, a value that is not a 32-bit
// integer ignored.
func adaptiveStackOff(godebug string) bool {
	off := false
	for _, field := range strings.Split(godebug, ",") {
		key, value, ok := strings.Cut(field, "=")
		if !ok || key != "adaptivestackstart" {
			continue
		}
		if n, err := strconv.ParseInt(value, 10, 32); err == nil {
			off = n == 0
		}
	}
	return off
}
