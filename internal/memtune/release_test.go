package memtune

import (
	"context"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

func TestReleaserDue(t *testing.T) {
	const mib = 1 << 20
	q := Quiet{}.withDefaults()
	t0 := testutil.Epoch(t)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * 5 * time.Second) }
	const idleCPU = time.Millisecond // per 5 s period: 0.02 %
	steps := []struct {
		name string
		h    heapSample
		want bool
	}{
		{"busy period", heapSample{allocs: 50 * mib, cpu: 2 * time.Second, at: at(1)}, false},
		{"quiet after allocating", heapSample{allocs: 50*mib + 1000, cpu: 2*time.Second + idleCPU, at: at(2)}, true},
		{"quiet again, nothing allocated since", heapSample{allocs: 50*mib + 2000, cpu: 2*time.Second + 2*idleCPU, at: at(3)}, false},
		{"a trickle below MinGain", heapSample{allocs: 50*mib + 1000 + mib/2, cpu: 2*time.Second + 3*idleCPU, at: at(4)}, false},
		{"the trickle reaches MinGain", heapSample{allocs: 50*mib + 1000 + mib, cpu: 2*time.Second + 4*idleCPU, at: at(5)}, true},
		{"busy burst", heapSample{allocs: 90 * mib, cpu: 3 * time.Second, at: at(6)}, false},
		{"steady traffic allocating little but using CPU", heapSample{allocs: 90*mib + 1000, cpu: 3*time.Second + 300*time.Millisecond, at: at(7)}, false},
		{"then quiet", heapSample{allocs: 90*mib + 2000, cpu: 3*time.Second + 300*time.Millisecond + idleCPU, at: at(8)}, true},
		{"a big heap, quiet", heapSample{allocs: 90*mib + 2000 + 6*mib/10, retained: 160 * mib, cpu: 3*time.Second + 300*time.Millisecond + 2*idleCPU, at: at(9)}, false},
		{"over MinGain but under a sixteenth of the heap", heapSample{allocs: 90*mib + 2000 + 12*mib/10, retained: 160 * mib, cpu: 3*time.Second + 300*time.Millisecond + 3*idleCPU, at: at(10)}, false},
		{"busy", heapSample{allocs: 100*mib + 2000, retained: 160 * mib, cpu: 5 * time.Second, at: at(11)}, false},
		{"quiet, a sixteenth allocated", heapSample{allocs: 100*mib + 3000, retained: 160 * mib, cpu: 5*time.Second + idleCPU, at: at(12)}, true},
		{"a clock that did not move", heapSample{allocs: 100*mib + 4000, cpu: 5*time.Second + idleCPU, at: at(12)}, false},
	}
	r := &releaser{q: q, prev: heapSample{at: t0}}
	for i, s := range steps {
		if got := r.due(s.h); got != s.want {
			t.Fatalf("step %d (%s): due = %v, want %v", i, s.name, got, s.want)
		}
	}
}

// sink keeps the test's garbage reachable until it chooses.
var sink [][]byte

// TestReleaseWhenQuietReturnsMemory allocates a heap's worth of garbage,
// goes quiet, and checks that the releaser hands the freed memory back to
// the OS.
func TestReleaseWhenQuietReturnsMemory(t *testing.T) {
	released := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	for range 256 {
		sink = append(sink, make([]byte, 128<<10)) // 32 MiB
	}
	runtime.GC() // the 32 MiB are live: the heap goal grows past them
	sink = nil
	before := released()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type release struct{ before, after uint64 }
	got := make(chan release, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ReleaseWhenQuiet(ctx, Quiet{Every: 20 * time.Millisecond}, func(b, a uint64) { got <- release{b, a} })
	}()
	select {
	case r := <-got:
		if r.before < r.after+16<<20 {
			t.Errorf("release kept %d of %d retained heap bytes; want at least 16 MiB of the 32 MiB of garbage back", r.after, r.before)
		}
		if gained := released() - before; gained < 16<<20 {
			t.Errorf("the runtime's released heap grew by %d bytes, want at least 16 MiB", gained)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no release within 30 s of going quiet")
	}
	cancel()
	<-done
}

// TestReleaseWhenQuietStaysOutOfTheWay: while the process keeps allocating
// there is no release.
func TestReleaseWhenQuietStaysOutOfTheWay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ReleaseWhenQuiet(ctx, Quiet{Every: 250 * time.Millisecond, MaxAlloc: 1 << 20}, func(uint64, uint64) { got <- struct{}{} })
	}()
	// Allocate without pause (at most 32 MiB reachable) for six periods.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		sink = append(sink, make([]byte, 128<<10))
		if len(sink) == 256 {
			sink = sink[:0]
		}
	}
	cancel()
	<-done
	sink = nil
	if n := len(got); n > 0 {
		t.Errorf("%d releases while allocating all the time, want none", n)
	}
}
