package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestAttackResponseLineUnbounded: a colluding (or compromised) upstream
// answers an allowed request with a status line that never ends. The
// sidecar's response side reads it with http.ReadResponse, whose
// textproto line reader has no limit, while the app drains what is
// passed on. The sidecar must not hold the line in memory: it gives up on
// a response head past 64 KiB and ends the connection.
func TestAttackResponseLineUnbounded(t *testing.T) {
	const total = 48 << 20
	var written atomic.Int64
	release := make(chan struct{})
	srv := startApp(t, func(c *net.TCPConn, a *app) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK")
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		for written.Load() < total {
			n, err := c.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
		<-release
	})
	t.Cleanup(func() { close(release) })
	pd, _ := reqPod(t, "Enforce", false, &reqServer{app: srv})

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	c := pd.dialOutbound(srv.addr())
	var drained atomic.Int64
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			drained.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	if _, err := io.WriteString(c, get("api.example.com")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatalf("the connection is still open: server wrote %d, app drained %d", written.Load(), drained.Load())
	}
	if d := drained.Load(); d > 1<<20 {
		t.Fatalf("the app was passed %d bytes of one response head before the sidecar gave up", d)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("server wrote %d MiB of one status line; app drained %d MiB; heap in use grew by %d MiB",
		written.Load()>>20, drained.Load()>>20, grown>>20)
	if grown > 16<<20 {
		t.Errorf("UNBOUNDED MEMORY: the sidecar holds %d MiB for one response line (it grows with what the server sends)", grown>>20)
	}
}
