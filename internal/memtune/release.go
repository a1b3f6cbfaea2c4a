package memtune

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"syscall"
	"time"
)

// Quiet says when ReleaseWhenQuiet returns memory to the operating system.
//
// Between collections the Go heap holds up to GOGC percent more than its
// live data, and the runtime's scavenger gives back only what lies above
// that goal. A proxy that took a burst of connections and then sits on
// them idle — the common state of a sidecar — therefore keeps the burst's
// headroom resident for good: measured on the bench pair holding 1,000
// idle mTLS connections, ~33 KiB of RSS per connection for ~17 KiB of live
// heap. Once allocation has stopped the headroom serves nothing, so the
// releaser collects and returns it (debug.FreeOSMemory), as Envoy's
// shrink-heap action returns tcmalloc's free pages: the same bench pair
// then holds ~26 KiB per connection on the server side, ~19 on the client
// side (from ~32 and ~24).
type Quiet struct {
	// Every is how often allocation is sampled; a period in which the
	// process allocated less than MaxAlloc is quiet. Zero means 5 s.
	Every time.Duration
	// MaxAlloc is the most a period may allocate and still be quiet. Zero
	// means 1 MiB.
	MaxAlloc uint64
	// MaxCPU is the most CPU time a period may use, as a fraction of one
	// CPU, and still be quiet. A proxy carrying steady traffic through
	// pooled buffers allocates little, but it is busy: its heap headroom is
	// in use. Zero means 0.01 (1 %; an idle sidecar uses ~0.1 %, one
	// carrying 1,000 req/s ~6 %).
	MaxCPU float64
	// MinGain is how much the process must have allocated since the last
	// release (or its start) for another to be worth its collection:
	// nothing new can have become free otherwise. The bar is at least a
	// sixteenth of the heap, since a release marks the whole heap: a
	// sidecar holding 10,000 connections (~200 MB) is not collected for
	// every megabyte of health checks. Zero means 1 MiB.
	MinGain uint64
}

func (q Quiet) withDefaults() Quiet {
	if q.Every <= 0 {
		q.Every = 5 * time.Second
	}
	if q.MaxAlloc == 0 {
		q.MaxAlloc = 1 << 20
	}
	if q.MinGain == 0 {
		q.MinGain = 1 << 20
	}
	if q.MaxCPU <= 0 {
		q.MaxCPU = 0.01
	}
	return q
}

// heapSample is what the releaser reads from runtime/metrics.
type heapSample struct {
	allocs   uint64        // cumulative bytes allocated
	retained uint64        // heap memory held from the OS (objects, free and unused spans)
	cpu      time.Duration // cumulative user+system CPU time of the process
	at       time.Time     // when sampled
}

var heapMetrics = []string{
	"/gc/heap/allocs:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
}

func readHeap(s []metrics.Sample) heapSample {
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	return heapSample{allocs: v(0), retained: v(1) + v(2) + v(3), cpu: cpuTime(), at: time.Now()}
}

// cpuTime is the process's user and system CPU time so far (zero if
// getrusage fails, which then never makes a period look busy).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// releaser decides, period by period, whether to release.
type releaser struct {
	q           Quiet
	prev        heapSample // the previous sample
	lastRelease uint64     // allocs at the last release
}

// due reports whether the period ending with h calls for a release.
func (r *releaser) due(h heapSample) bool {
	prev := r.prev
	r.prev = h
	wall, cpu := h.at.Sub(prev.at), h.cpu-prev.cpu
	switch {
	case h.allocs-prev.allocs >= r.q.MaxAlloc: // busy: the headroom is being used
		return false
	case wall <= 0 || float64(cpu) >= r.q.MaxCPU*float64(wall): // busy all the same
		return false
	case h.allocs-r.lastRelease < max(r.q.MinGain, h.retained/16): // too little can have been freed since the last one
		return false
	}
	r.lastRelease = h.allocs
	return true
}

// ReleaseWhenQuiet collects and returns the heap's free memory to the
// operating system whenever a period of q.Every passes with less than
// q.MaxAlloc allocated, less than q.MaxCPU of a CPU used, and at least
// max(q.MinGain, a sixteenth of the heap) allocated since the last release,
// until ctx ends. A process that keeps allocating is left to the runtime;
// one that sits still is released once, and again only after it allocated
// that much more (a trickle of health checks and scrapes costs one
// collection per MinGain). released, if not nil, is called after each release
// with the heap's retained bytes before and after it.
func ReleaseWhenQuiet(ctx context.Context, q Quiet, released func(before, after uint64)) {
	r := &releaser{q: q.withDefaults()}
	s := make([]metrics.Sample, len(heapMetrics))
	for i, name := range heapMetrics {
		s[i].Name = name
	}
	r.prev = readHeap(s)
	t := time.NewTicker(r.q.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h := readHeap(s)
		if !r.due(h) {
			continue
		}
		debug.FreeOSMemory()
		after := readHeap(s)
		// The collection allocates and computes a little itself: do not
		// count it as the next period's work.
		r.prev, r.lastRelease = after, after.allocs
		if released != nil {
			released(h.retained, after.retained)
		}
	}
}
