package memtune

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// restore puts the runtime's knobs back after a test.
func restore(t *testing.T) {
	gc := debug.SetGCPercent(-1)
	debug.SetGCPercent(gc)
	limit := debug.SetMemoryLimit(-1)
	old := cgroupMemoryMax
	t.Cleanup(func() {
		debug.SetGCPercent(gc)
		debug.SetMemoryLimit(limit)
		cgroupMemoryMax = old
	})
}

func writeMax(t *testing.T, content string) {
	p := filepath.Join(t.TempDir(), "memory.max")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	cgroupMemoryMax = p
}

func TestDefaultsAndCgroupLimit(t *testing.T) {
	restore(t)
	os.Unsetenv("GOGC")
	os.Unsetenv("GOMEMLIMIT")
	writeMax(t, "268435456\n") // 256 MiB
	s := Apply()
	if s.GCPercent != GCPercent || s.GCSource != "weft default" {
		t.Errorf("GC: %+v", s)
	}
	if got := debug.SetGCPercent(GCPercent); got != GCPercent {
		t.Errorf("runtime GOGC = %d, want %d", got, GCPercent)
	}
	limit := float64(256 << 20)
	want := int64(limit * LimitFraction)
	if s.MemoryLimit != want || s.LimitSource != "cgroup memory.max" || debug.SetMemoryLimit(-1) != want {
		t.Errorf("limit: %+v, runtime %d, want %d", s, debug.SetMemoryLimit(-1), want)
	}
	if got := s.String(); got != "GOGC=50 (weft default), memory limit 230 MiB (cgroup memory.max)" {
		t.Errorf("String() = %q", got)
	}
}

func TestNoLimit(t *testing.T) {
	for _, content := range []string{"max\n", "garbage", ""} {
		restore(t)
		os.Unsetenv("GOMEMLIMIT")
		writeMax(t, content)
		if s := Apply(); s.MemoryLimit != math.MaxInt64 || s.LimitSource != "none" {
			t.Errorf("memory.max %q: %+v", content, s)
		}
	}
	restore(t)
	cgroupMemoryMax = filepath.Join(t.TempDir(), "absent")
	if s := Apply(); s.LimitSource != "none" {
		t.Errorf("no memory.max: %+v", s)
	}
}

func TestEnvironmentWins(t *testing.T) {
	restore(t)
	t.Setenv("GOGC", "200")
	t.Setenv("GOMEMLIMIT", "100MiB")
	writeMax(t, "268435456")
	debug.SetGCPercent(200) // what the runtime read from GOGC at start
	debug.SetMemoryLimit(100 << 20)
	s := Apply()
	if s.GCPercent != 200 || s.GCSource != "GOGC" || s.MemoryLimit != 100<<20 || s.LimitSource != "GOMEMLIMIT" {
		t.Errorf("%+v", s)
	}
	if debug.SetGCPercent(200) != 200 {
		t.Error("Apply changed GOGC set by the environment")
	}
}
