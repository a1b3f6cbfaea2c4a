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
		if size = runtimeMetric("/gc/stack/starting-size:bytes"); ok(size) {
			break
		}
		runtime.Gosched()
	}
	return size
}

// floorStartOK reports whether a starting stack is the one the floor
// gives a process with few goroutines of its own: 8 KiB (under the race
// detector, whose frames and guard are bigger, 8 or 16).
func floorStartOK(s uint64) bool {
	if raceEnabled {
		return s == 8<<10 || s == 16<<10
	}
	return s == 8<<10
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
	if got := startingStackAfterGC(func(s uint64) bool { return s >= 8<<10 }); !floorStartOK(got) {
		t.Fatalf("starting stack %d bytes with the floor, want 8 KiB (was %d)", got, before)
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

func TestStackFloorFitsEightKiB(t *testing.T) {
	// Each floor goroutine's stack stays 8 KiB: the cost the docs state.
	// A floor goroutine holding too much grows to 16 KiB and doubles it.
	runtime.GC()
	before := heapStacks()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raiseFloor(ctx.Done())
	startingStackAfterGC(func(s uint64) bool { return s >= 8<<10 })
	grown := heapStacks() - before
	per := uint64(8 << 10)
	if raceEnabled {
		per = 16 << 10 // the race detector's bigger frames and guard
	}
	if want := StackFloorGoroutines * per; grown > want+want/8 {
		t.Fatalf("raising the floor took %d bytes of stacks, want about %d (%d goroutines × %d)", grown, want, StackFloorGoroutines, per)
	}
}

// runtimeMetric reads one of runtime/metrics' uint64 figures.
func runtimeMetric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// heapStacks is the memory the runtime has given goroutine stacks.
func heapStacks() uint64 { return runtimeMetric("/memory/classes/heap/stacks:bytes") }

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
		floorWhileBusy(context.Background(), newFloorPolicy(0, 0, time.Millisecond, 0), time.Millisecond, func(bool) { t.Error("the floor changed with adaptivestackstart=0") })
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("floorWhileBusy ran with adaptivestackstart=0")
	}
}

func TestFloorPolicy(t *testing.T) {
	p := newFloorPolicy(0.05, 0.01, 5*time.Second, 500*time.Millisecond)
	at := testutil.Epoch(t)
	cpu := time.Second // a process's CPU time is never zero once it runs
	p.start(cpu, at)
	// step advances the clock by a second in which the process used load
	// of a CPU.
	step := func(load float64) floorAction {
		at = at.Add(time.Second)
		cpu += time.Duration(load * float64(time.Second))
		return p.step(cpu, at)
	}
	check := func(what string, cases []struct {
		load float64
		want floorAction
	}) {
		t.Helper()
		for i, c := range cases {
			if got := step(c.load); got != c.want {
				t.Fatalf("%s, sample %d (%.4f of a CPU): %v, want %v", what, i, c.load, got, c.want)
			}
		}
	}
	type cs = []struct {
		load float64
		want floorAction
	}
	check("from idle", cs{
		{0.001, keep},  // idle: the floor stays down
		{0.03, keep},   // active, not busy: a release's collection, health checks
		{0.0499, keep}, // just under the bar
		{0.05, keep},   // at the bar: busy, once
		{0.2, raise},   // busy twice in a row
		{0.5, keep},    // busy, already up
		{0.02, keep},   // active: not yet quiet
		{0, keep},      // quiet for 1 s
		{0, keep},      // 2 s
		{0, keep},      // 3 s
		{0.0099, keep}, // 4 s: under the quiet bar
		{0, lower},     // 5 s = quietFor: lowered
	})
	check("a collection", cs{
		{0.3, keep}, // one busy second (a large heap's collection) raises nothing
		{0, keep},
		{0.3, keep}, {0.02, keep}, {0.3, keep}, // busy seconds apart, not in a row
	})
	// Raised 6 s after it was lowered: a flap, so the next lowering waits
	// 10 s, and the one after 20.
	check("a flap", cs{
		{0.2, raise},
		{0, keep}, {0, keep}, {0, keep}, {0, keep}, {0, keep}, // 5 s: no longer enough
		{0, keep}, {0, keep}, {0, keep}, {0, keep},
		{0, lower}, // 10 s
		{0.1, keep}, {0.1, raise},
		{0, keep}, {0, keep}, {0, keep}, {0, keep}, {0, keep}, {0, keep}, {0, keep}, {0, keep}, {0, keep}, {0, keep},
		{0, keep}, {0, keep}, {0, keep}, {0, keep}, {0, keep}, {0, keep}, {0, keep}, {0, keep}, {0, keep},
		{0, lower}, // 20 s
	})
	// Quiet for longer than FloorFlapWithin: the next raise waits quietFor again.
	for range int(FloorFlapWithin / time.Second) {
		if got := step(0); got != keep {
			t.Fatalf("idle with the floor down: %v", got)
		}
	}
	check("after a long quiet", cs{
		{0.1, keep}, {0.1, raise},
		{0, keep}, {0, keep}, {0, keep}, {0, keep},
		{0, lower}, // 5 s
	})
	// The backoff stops at FloorQuietMax.
	for i := range 12 {
		if got := step(0.1); got != keep {
			t.Fatalf("flap %d: first busy second: %v", i, got)
		}
		if got := step(0.1); got != raise {
			t.Fatalf("flap %d: second busy second: %v, want raise", i, got)
		}
		waited := time.Duration(0)
		for {
			waited += time.Second
			if got := step(0); got == lower {
				break
			}
			if waited > FloorQuietMax {
				t.Fatalf("flap %d: not lowered after %v quiet", i, waited)
			}
		}
		if i == 11 && waited != FloorQuietMax {
			t.Fatalf("after %d flaps the floor was lowered after %v quiet, want FloorQuietMax (%v)", i+1, waited, FloorQuietMax)
		}
	}
	// Samples that say nothing are not judged, and the period runs on.
	p = newFloorPolicy(0.05, 0.01, 5*time.Second, 500*time.Millisecond)
	p.start(cpu, at)
	if got := p.step(cpu+time.Millisecond, at.Add(10*time.Microsecond)); got != keep {
		t.Fatalf("a sample 10 µs after the last, 100 %% busy: %v, want keep (too short to judge)", got)
	}
	if got := p.step(0, at.Add(time.Second)); got != keep {
		t.Fatalf("a sample of zero CPU time (getrusage failed): %v, want keep", got)
	}
	if got := p.step(cpu+time.Second, at.Add(-time.Second)); got != keep {
		t.Fatalf("a sample from before the last: %v, want keep", got)
	}
	// The period from the last judged sample: 2 s, 0.1 s of CPU = 5 %:
	// busy, and busy again raises.
	if got := p.step(cpu+100*time.Millisecond, at.Add(2*time.Second)); got != keep {
		t.Fatalf("first busy period: %v, want keep", got)
	}
	if got := p.step(cpu+200*time.Millisecond, at.Add(3*time.Second)); got != raise {
		t.Fatalf("second busy period: %v, want raise", got)
	}
}

// residentBytes is the memory the runtime holds from the operating system
// and has not returned.
func residentBytes() uint64 {
	return runtimeMetric("/memory/classes/total:bytes") - runtimeMetric("/memory/classes/heap/released:bytes")
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
		floorWhileBusy(ctx, newFloorPolicy(0.25, 0.1, 200*time.Millisecond, 5*time.Millisecond), 20*time.Millisecond, func(up bool) {
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
	// As runtime/runtime1.go's parsegodebug reads GODEBUG at start-up.
	for godebug, want := range map[string]bool{
		"":                                false,
		"adaptivestackstart=0":            true,
		"adaptivestackstart=1":            false,
		"gctrace=1,adaptivestackstart=0":  true,
		"gctrace=1, adaptivestackstart=0": false, // the runtime does not trim: " adaptivestackstart" is another key
		"adaptivestackstart=0,adaptivestackstart=1":   false, // the last wins
		"adaptivestackstart=1,adaptivestackstart=0":   true,
		"adaptivestackstart=0,adaptivestackstart=off": true, // not a number: ignored
		"adaptivestackstart=00":                       true, // a number, 0
		"adaptivestackstart=-0":                       true,
		"adaptivestackstart=2":                        false,
		"xadaptivestackstart=0":                       false,
		"adaptivestackstart":                          false,
	} {
		if got := adaptiveStackOff(godebug); got != want {
			t.Errorf("adaptiveStackOff(%q) = %v, want %v", godebug, got, want)
		}
	}
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
			startingStackAfterGC(func(s uint64) bool { return floor == (s >= 8<<10) })
			b.Logf("starting stack %d bytes", runtimeMetric("/gc/stack/starting-size:bytes"))
			gc := debug.SetGCPercent(-1) // no collection in the loop: the start stays as measured
			defer debug.SetGCPercent(gc)
			// holdStack 6 frames deep returns at once with done closed:
			// ~6 KiB of stack, which a goroutine started at 2 KiB grows
			// twice to reach, one started at 8 KiB not at all.
			closed := make(chan struct{})
			close(closed)
			done := make(chan byte)
			b.ResetTimer()
			for b.Loop() {
				go func() { done <- holdStack(6, closed) }()
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
	go floorWhileBusy(ctx, newFloorPolicy(0.25, 0.1, 100*time.Millisecond, 5*time.Millisecond), 10*time.Millisecond, func(up bool) { changes <- up })
	next := func(what string) bool {
		t.Helper()
		select {
		case up := <-changes:
			return up
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: the floor never changed", what)
			return false
		}
	}
	spin := busy()
	if !next("spinning") {
		t.Fatal("the floor was lowered before it was raised")
	}
	close(spin)
	if next("idle") {
		t.Fatal("the floor was raised again before it was lowered")
	}
	select {
	case up := <-changes:
		t.Fatalf("the floor changed again (raised=%v) after it was lowered, with the process idle: the collection that lowering makes was counted as busy", up)
	case <-time.After(500 * time.Millisecond):
	}
	runtime.KeepAlive(heap)
}
