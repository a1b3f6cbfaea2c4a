package metrics

import (
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// start approximates the process's start time (package initialisation).
var start = time.Now()

// RegisterRuntime registers the Go runtime's and the process's standard
// series, under client_golang's names so that existing dashboards read
// them: go_goroutines, go_info, go_memstats_{alloc,heap_inuse,heap_idle,
// heap_released,stack_inuse,sys,next_gc}_bytes, go_gc_cycles_total,
// go_gc_gogc_percent, go_gc_gomemlimit_bytes, process_cpu_seconds_total,
// process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds and process_start_time_seconds.
func RegisterRuntime(r *Registry) error {
	rt := []struct {
		name, help, metric string
		typ                Type
	}{
		{"go_memstats_alloc_bytes", "Bytes of allocated heap objects (live and not yet collected).", "/memory/classes/heap/objects:bytes", GaugeType},
		{"go_memstats_heap_released_bytes", "Heap bytes returned to the OS.", "/memory/classes/heap/released:bytes", GaugeType},
		{"go_memstats_stack_inuse_bytes", "Bytes of goroutine stacks.", "/memory/classes/heap/stacks:bytes", GaugeType},
		{"go_memstats_sys_bytes", "Bytes of memory the Go runtime obtained from the OS.", "/memory/classes/total:bytes", GaugeType},
		{"go_memstats_next_gc_bytes", "Heap size at which the next collection starts.", "/gc/heap/goal:bytes", GaugeType},
		{"go_gc_cycles_total", "Completed GC cycles.", "/gc/cycles/total:gc-cycles", CounterType},
		{"go_gc_gogc_percent", "The GOGC in effect.", "/gc/gogc:percent", GaugeType},
		{"go_gc_gomemlimit_bytes", "The soft memory limit in effect (GOMEMLIMIT).", "/gc/gomemlimit:bytes", GaugeType},
	}
	read := func(names ...string) []rtmetrics.Sample {
		s := make([]rtmetrics.Sample, len(names))
		for i, n := range names {
			s[i].Name = n
		}
		rtmetrics.Read(s)
		return s
	}
	value := func(s rtmetrics.Sample) float64 {
		switch s.Value.Kind() {
		case rtmetrics.KindUint64:
			return float64(s.Value.Uint64())
		case rtmetrics.KindFloat64:
			return s.Value.Float64()
		}
		return 0
	}
	for _, m := range rt {
		if err := r.NewFunc(m.name, m.help, m.typ, nil, func(emit Emit) { emit(value(read(m.metric)[0])) }); err != nil {
			return err
		}
	}
	// Heap spans in use and idle, as runtime.MemStats defines them.
	err := r.NewFunc("go_memstats_heap_inuse_bytes", "Bytes in in-use heap spans.", GaugeType, nil, func(emit Emit) {
		s := read("/memory/classes/heap/objects:bytes", "/memory/classes/heap/unused:bytes")
		emit(value(s[0]) + value(s[1]))
	})
	if err != nil {
		return err
	}
	err = r.NewFunc("go_memstats_heap_idle_bytes", "Bytes in idle heap spans (free or returned to the OS).", GaugeType, nil, func(emit Emit) {
		s := read("/memory/classes/heap/free:bytes", "/memory/classes/heap/released:bytes")
		emit(value(s[0]) + value(s[1]))
	})
	if err != nil {
		return err
	}
	if err := r.NewGaugeFunc("go_goroutines", "Goroutines that currently exist.", func() float64 { return float64(runtime.NumGoroutine()) }); err != nil {
		return err
	}
	if err := r.NewFunc("go_info", "Information about the Go environment.", GaugeType, []string{"version"},
		func(emit Emit) { emit(1, runtime.Version()) }); err != nil {
		return err
	}

	err = r.NewFunc("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", CounterType, nil, func(emit Emit) {
		var ru syscall.Rusage
		if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
			emit(float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9)
		}
	})
	if err != nil {
		return err
	}
	page := float64(os.Getpagesize())
	statm := func(field int) func(Emit) {
		return func(emit Emit) {
			b, err := os.ReadFile("/proc/self/statm")
			if err != nil {
				return
			}
			f := strings.Fields(string(b))
			if len(f) <= field {
				return
			}
			if n, err := strconv.ParseUint(f[field], 10, 64); err == nil {
				emit(float64(n) * page)
			}
		}
	}
	if err := r.NewFunc("process_resident_memory_bytes", "Resident memory size in bytes.", GaugeType, nil, statm(1)); err != nil {
		return err
	}
	if err := r.NewFunc("process_virtual_memory_bytes", "Virtual memory size in bytes.", GaugeType, nil, statm(0)); err != nil {
		return err
	}
	err = r.NewFunc("process_open_fds", "Number of open file descriptors.", GaugeType, nil, func(emit Emit) {
		if d, err := os.ReadDir("/proc/self/fd"); err == nil {
			emit(float64(len(d) - 1)) // the directory being read is one of them
		}
	})
	if err != nil {
		return err
	}
	err = r.NewFunc("process_max_fds", "Maximum number of open file descriptors.", GaugeType, nil, func(emit Emit) {
		var rl syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
			emit(float64(rl.Cur))
		}
	})
	if err != nil {
		return err
	}
	return r.NewGaugeFunc("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.",
		func() float64 { return float64(start.UnixNano()) / 1e9 })
}
