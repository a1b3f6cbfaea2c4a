// Package memtune sets the Go runtime's memory knobs for weft's long-running
// processes (the sidecar above all), unless the operator set them through
// the environment.
//
// A sidecar's memory is mostly per-connection state (crypto/tls keeps the
// peer's certificate chain, record buffers and AEAD state: ~15 KB of live
// heap per mTLS connection), and the collector lets the heap reach
// (1 + GOGC/100) times the live heap before collecting: with Go's default
// GOGC=100 a sidecar holding 1,000 idle connections is measured at ~33–40
// KiB of RSS per connection, at GOGC=50 at ~28–36 (sidecar/proxy/bench).
// The proxy allocates little per byte it moves (its copy buffers are
// pooled), so collecting earlier costs little CPU.
//
// The memory limit is the second knob: inside a container with a cgroup v2
// memory limit, the collector is told to work harder as the process nears
// LimitFraction of it, instead of letting the kernel OOM-kill the pod.
//
// ReleaseWhenQuiet is the third: when a quiet period follows a burst, it
// collects and returns the heap's headroom to the operating system, which
// Go's scavenger never does below the GC goal (see Quiet).
//
// (A fourth knob, a goroutine stack floor while busy — FloorWhileBusy,
// sessions 23–30 — made the runtime start goroutines with 8 KiB of stack,
// for the goroutines net/http started per request. The data path starts
// none since: its HTTP servers and clients are weft's own, its HTTP/2
// handlers run on reused workers, and the floor's parked goroutines cost
// the collector more than they saved: docs/decisions.md.)
package memtune

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

const (
	// GCPercent is weft's default GOGC.
	GCPercent = 50
	// LimitFraction of the cgroup's memory.max is the soft memory limit.
	LimitFraction = 0.9
)

// Settings says what Apply chose, for the startup log.
type Settings struct {
	GCPercent   int    // the GOGC in effect
	GCSource    string // "weft default" or "GOGC"
	MemoryLimit int64  // bytes; math.MaxInt64 = none
	LimitSource string // "cgroup memory.max", "GOMEMLIMIT" or "none"
}

func (s Settings) String() string {
	limit := "none"
	if s.MemoryLimit != math.MaxInt64 {
		limit = fmt.Sprintf("%d MiB", s.MemoryLimit>>20)
	}
	return fmt.Sprintf("GOGC=%d (%s), memory limit %s (%s)", s.GCPercent, s.GCSource, limit, s.LimitSource)
}

// cgroupMemoryMax is where cgroup v2 shows the container's limit.
var cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// Apply sets GOGC to GCPercent unless GOGC is set in the environment, and
// the soft memory limit to LimitFraction of the cgroup v2 memory limit
// unless GOMEMLIMIT is set or there is no limit.
func Apply() Settings {
	var s Settings
	if v, ok := os.LookupEnv("GOGC"); ok {
		s.GCSource = "GOGC"
		s.GCPercent = debug.SetGCPercent(-1)
		debug.SetGCPercent(s.GCPercent)
		if strings.EqualFold(v, "off") {
			s.GCPercent = -1
		}
	} else {
		s.GCSource = "weft default"
		s.GCPercent = GCPercent
		debug.SetGCPercent(GCPercent)
	}
	s.MemoryLimit, s.LimitSource = math.MaxInt64, "none"
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		s.MemoryLimit, s.LimitSource = debug.SetMemoryLimit(-1), "GOMEMLIMIT"
	} else if max, ok := readLimit(cgroupMemoryMax); ok {
		s.MemoryLimit, s.LimitSource = int64(float64(max)*LimitFraction), "cgroup memory.max"
		debug.SetMemoryLimit(s.MemoryLimit)
	}
	return s
}

// readLimit parses a cgroup v2 memory.max: a byte count, or "max" (none).
func readLimit(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}
