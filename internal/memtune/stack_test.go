package memtune

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// startingStackAfterGC collects until the runtime's starting stack size
// satisfies ok (the floor's goroutines may not have reached their depth
// at the first collection), at most 100 times, and returns the last size.
func startingStackAfterGC(ok func(uint64) bool) uint64 {
	var size uint64
	for range 100 {
		runtime.GC()
		if size = StartingStack(); ok(size) {
			break
		}
		runtime.Gosched()
	}
	return size
}

// floorStart is the starting stack the floor gives a process with few
// goroutines of its own.
func floorStart() uint64 {
	if raceEnabled {
		return 16 << 10
	}
	return 8 << 10
}

func TestStackFloor(t *testing.T) {
	// A test binary's own goroutines are few and shallow, as a sidecar's
	// idle ones are: the runtime's average start is small.
	before := startingStackAfterGC(func(s uint64) bool { return s < 8<<10 })
	if before >= 8<<10 {
		t.Fatalf("starting stack %d bytes before the floor: the test's premise (a small average) does not hold", before)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raiseFloor(ctx.Done())
	// Exactly the floor's start: not less (the floor failed), not more
	// (goroutines that need 2 KiB would each be given 16 or 32).
	if got := startingStackAfterGC(func(s uint64) bool { return s >= floorStart() }); got != floorStart() {
		t.Fatalf("starting stack %d bytes with the floor, want %d (was %d)", got, floorStart(), before)
	}
	// The floor ends with its context, and the runtime's average falls back.
	cancel()
	if got := startingStackAfterGC(func(s uint64) bool { return s <= before }); got > before {
		t.Fatalf("starting stack %d bytes after the floor ended, want %d as before it", got, before)
	}
}

// idle starts n goroutines that wait with a shallow stack, as a
// sidecar's connection readers do, until the test ends.
func idle(t *testing.T, n int) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { <-done })
	}
	t.Cleanup(func() { close(done); wg.Wait() })
}

func TestStackFloorBesideIdleGoroutines(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raiseFloor(ctx.Done())
	// A sidecar with a few dozen connections: the floor holds.
	idle(t, 100)
	if got := startingStackAfterGC(func(s uint64) bool { return s >= 8<<10 }); got != 8<<10 {
		t.Fatalf("starting stack %d bytes with the floor beside 100 idle goroutines, want 8 KiB", got)
	}
	// Thousands of connections: the average is theirs, and the floor does
	// not make each new one start big.
	idle(t, 2000)
	if got := startingStackAfterGC(func(s uint64) bool { return s < 8<<10 }); got >= 8<<10 {
		t.Fatalf("starting stack %d bytes with 2,100 idle goroutines beside the floor, want the runtime's own average (< 8 KiB)", got)
	}
}

func TestFloorWhileBusyRespectsGODEBUG(t *testing.T) {
	t.Setenv("GODEBUG", "madvdontneed=1,adaptivestackstart=0")
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never ends by itself but for GODEBUG: the context is never done.
		floorWhileBusy(context.Background(), floorPolicy{busy: 0, quiet: 0, quietFor: time.Millisecond}, time.Millisecond, func(bool) { t.Error("the floor changed with adaptivestackstart=0") })
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("floorWhileBusy ran with adaptivestackstart=0")
	}
}

func TestFloorPolicy(t *testing.T) {
	p := floorPolicy{busy: 0.05, quiet: 0.01, quietFor: 5 * time.Second}
	at := testutil.Epoch(t)
	var cpu time.Duration
	p.prevAt = at
	// step advances the clock by a second in which the process used load
	// of a CPU.
	step := func(load float64) floorAction {
		at = at.Add(time.Second)
		cpu += time.Duration(load * float64(time.Second))
		return p.step(cpu, at)
	}
	for i, c := range []struct {
		load float64
		want floorAction
	}{
		{0.001, keep},                              // idle: the floor stays down
		{0.03, keep},                               // active, not busy: a release's collection, health checks
		{0.0499, keep},                             // just under the bar
		{0.05, raise},                              // at the bar: busy
		{0.5, keep},                                // busy, already up
		{0.02, keep},                               // active: not yet quiet
		{0, keep},                                  // quiet for 1 s
		{0, keep},                                  // 2 s
		{0, keep},                                  // 3 s
		{0.0099, keep},                             // 4 s: under the quiet bar
		{0, lower},                                 // 5 s = quietFor: lowered
		{0.02, keep},                               // down, active but not busy: stays down
		{0.2, raise},                               // busy again
		{0, keep},                                  // quiet 1 s
		{0.01, keep},                               // at the quiet bar: active, the quiet count starts again
		{0, keep}, {0, keep}, {0, keep}, {0, keep}, // 4 s quiet
		{0, lower}, // 5 s
	} {
		if got := step(c.load); got != c.want {
			t.Fatalf("sample %d (%.4f of a CPU): %v, want %v", i, c.load, got, c.want)
		}
	}
	// A clock that did not move (or went back) says nothing.
	if got := p.step(cpu+time.Second, at); got != keep {
		t.Fatalf("a sample with no wall time since the last: %v, want keep", got)
	}
	if got := p.step(cpu+2*time.Second, at.Add(-time.Second)); got != keep {
		t.Fatalf("a sample from before the last: %v, want keep", got)
	}
}

// residentBytes is the memory the runtime holds from the operating system
// and has not returned.
func residentBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}

// busy spins a goroutine until the returned channel is closed.
func busy() chan struct{} {
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	return stop
}

func TestFloorWhileBusy(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := make(chan bool, 16)
	resident := make(chan uint64, 16) // the runtime's resident memory when the floor was lowered
	ended := make(chan struct{})
	debug.FreeOSMemory()
	before := residentBytes()
	go func() {
		defer close(ended)
		floorWhileBusy(ctx, floorPolicy{busy: 0.25, quiet: 0.1, quietFor: 200 * time.Millisecond}, 20*time.Millisecond, func(up bool) {
			if !up {
				resident <- residentBytes()
			}
			changes <- up
		})
	}()
	await := func(want bool, what string) {
		t.Helper()
		select {
		case up := <-changes:
			if up != want {
				t.Fatalf("%s: the floor changed to raised=%v, want %v", what, up, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: the floor never changed to raised=%v", what, want)
		}
	}
	// Busy: a goroutine spins until the floor is up.
	spin := busy()
	await(true, "spinning")
	close(spin)
	if got := startingStackAfterGC(func(s uint64) bool { return s >= 8<<10 }); got < 8<<10 {
		t.Fatalf("starting stack %d bytes with the floor raised, want at least 8 KiB", got)
	}
	await(false, "quiet again")
	// Lowered, the floor's 768 KiB of stacks (and the 8 KiB ones of
	// goroutines started meanwhile) are returned to the OS, not kept.
	if got := <-resident; got > before+384<<10 {
		t.Fatalf("the runtime held %d bytes from the OS when the floor was lowered, %d before it was raised: the floor's stacks were kept", got, before)
	}
	if got := startingStackAfterGC(func(s uint64) bool { return s < 8<<10 }); got >= 8<<10 {
		t.Fatalf("starting stack %d bytes with the floor lowered, want the runtime's own (< 8 KiB)", got)
	}
	// The floor is lowered when the context ends, too.
	spin = busy()
	await(true, "spinning again")
	close(spin)
	cancel()
	<-ended
	if got := startingStackAfterGC(func(s uint64) bool { return s < 8<<10 }); got >= 8<<10 {
		t.Fatalf("starting stack %d bytes after the context ended, want the runtime's own (< 8 KiB)", got)
	}
}

func TestAdaptiveStackOff(t *testing.T) {
	for godebug, want := range map[string]bool{
		"":                                false,
		"adaptivestackstart=0":            true,
		"adaptivestackstart=1":            false,
		"gctrace=1, adaptivestackstart=0": true,
		"adaptivestackstart=0,adaptivestackstart=1": false, // the last wins
		"adaptivestackstart=1,adaptivestackstart=0": true,
		"xadaptivestackstart=0":                     false,
		"adaptivestackstart=00":                     false, // the runtime reads it as a number; 00 is 0 but no one writes it
	} {
		if got := adaptiveStackOff(godebug); got != want {
			t.Errorf("adaptiveStackOff(%q) = %v, want %v", godebug, got, want)
		}
	}
}

// stackUser needs about 6 KiB of stack: a goroutine started at 2 KiB grows
// its stack twice to run it, one started at 8 KiB not at all.
//
//go:noinline
func stackUser(n int) byte {
	var frame [1 << 10]byte
	frame[n%len(frame)] = byte(n)
	if n <= 1 {
		return frame[0]
	}
	return stackUser(n-1) ^ frame[n%len(frame)]
}

// BenchmarkGoroutineStart is a goroutine that needs ~6 KiB of stack,
// started and awaited, with the runtime's own start (floor=off) and with
// the floor; compare the two in the same run.
func BenchmarkGoroutineStart(b *testing.B) {
	for _, floor := range []bool{false, true} {
		name := "floor=off"
		if floor {
			name = "floor=on"
		}
		b.Run(name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if floor {
				raiseFloor(ctx.Done())
			}
			startingStackAfterGC(func(s uint64) bool { return floor == (s >= floorStart()) })
			b.Logf("starting stack %d bytes", StartingStack())
			gc := debug.SetGCPercent(-1) // no collection in the loop: the start stays as measured
			defer debug.SetGCPercent(gc)
			done := make(chan byte)
			b.ResetTimer()
			for b.Loop() {
				go func() { done <- stackUser(6) }()
				<-done
			}
		})
	}
}

func TestFloorLoweredStaysDown(t *testing.T) {
	// A live heap whose collection takes several of the loop's ticks, as a
	// sidecar holding thousands of connections: lowering the floor
	// collects it, and that CPU must not read as the process being busy.
	heap := make([]*[2]uintptr, 1<<22)
	for i := range heap {
		heap[i] = new([2]uintptr)
	}
	debug.FreeOSMemory()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := make(chan bool, 64)
	go floorWhileBusy(ctx, floorPolicy{busy: 0.25, quiet: 0.1, quietFor: 100 * time.Millisecond}, 10*time.Millisecond, func(up bool) { changes <- up })
	spin := busy()
	if up := <-changes; !up {
		t.Fatal("the floor was lowered before it was raised")
	}
	close(spin)
	if up := <-changes; up {
		t.Fatal("the floor was raised twice")
	}
	select {
	case up := <-changes:
		t.Fatalf("the floor changed again (raised=%v) after it was lowered, with the process idle: the collection that lowering makes was counted as busy", up)
	case <-time.After(500 * time.Millisecond):
	}
	runtime.KeepAlive(heap)
}
