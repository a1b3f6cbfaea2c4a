package proxy

import (
	"bytes"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// idleConns is how many idle connections BenchmarkIdleConnMemory holds.
const idleConns = 1000

// memNow is the Go memory in use (heap spans and goroutine stacks, after
// two collections so that stacks grown by handshakes have shrunk) and the
// process RSS in bytes.
func memNow(b *testing.B) (inuse, rss int64) {
	b.Helper()
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse), vmRSS(b)
}

// vmRSS reads VmRSS from /proc/self/status.
func vmRSS(b *testing.B) int64 {
	b.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range bytes.Lines(data) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, err := strconv.ParseInt(string(bytes.Fields(rest)[0]), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// holdIdle opens n connections with dial, sends one byte over each and
// reads it back (so every leg is established and has carried data), and
// returns the growth of memory in use and RSS while they sit idle (once
// settled returns true: every half waiting), and a function closing them.
func holdIdle(b *testing.B, n int, dial func() net.Conn, settled func() bool) (inuse, rss int64, closeAll func()) {
	b.Helper()
	one := []byte{'x'}
	return holdConns(b, n, func(int) net.Conn {
		c := dial()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(one); err != nil {
			c.Close()
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			c.Close()
			b.Fatal(err)
		}
		_ = c.SetDeadline(time.Time{})
		return c
	}, settled)
}

// BenchmarkIdleConnMemory holds 1,000 idle connections through a sidecar
// pair and reports what one idle connection costs each sidecar:
// bytes/conn is (HeapInuse+StackInuse) growth per connection with the
// direct client→app cost (measured first, the same way) taken out, halved
// for the two sidecars; pair-bytes/conn is the raw growth per connection
// (client, both sidecars, app); rss-bytes/conn the process RSS growth per
// connection; rss-MB the process RSS with the connections open. The
// sidecars' connections are measured once all their directions have parked.
// Run with -benchtime=1x: each iteration opens and closes 1,000 of each.
func BenchmarkIdleConnMemory(b *testing.B) {
	app := startApp(b, nil)
	mp := newMeshPair(b, nil, nil)
	for range b.N {
		direct, _, closeDirect := holdIdle(b, idleConns, func() net.Conn {
			c, err := net.Dial("tcp", app.addr().String())
			if err != nil {
				b.Fatal(err)
			}
			return c
		}, func() bool { return waitingIn("echo") >= idleConns }) // every app goroutine waiting to read
		closeDirect()
		// Idle connections settle once every direction has parked
		// (Config.IdleParkAfter, 1s) and the app waits to read.
		mesh, rss, closeMesh := holdIdle(b, idleConns, func() net.Conn { return mp.dial() }, func() bool {
			return mp.a.p.ParkedFlows() == 2*idleConns && mp.b.p.ParkedFlows() == 2*idleConns && waitingIn("echo") >= idleConns
		})
		b.ReportMetric(float64(mesh-direct)/idleConns/2, "bytes/conn")
		b.ReportMetric(float64(mesh)/idleConns, "pair-bytes/conn")
		b.ReportMetric(float64(rss)/idleConns, "rss-bytes/conn")
		b.ReportMetric(float64(vmRSS(b))/(1<<20), "rss-MB")
		closeMesh()
		// Wait for both sidecars to see the closes before the next round.
		deadline := time.Now().Add(10 * time.Second)
		for mp.a.p.reg.len()+mp.b.p.reg.len() > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}
