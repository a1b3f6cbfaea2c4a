package h2

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/net/http2"
)

// BenchmarkServer: a 1 KiB POST answered with 1 KiB, one request at a
// time on one connection from x/net/http2's client, served by this
// package's server and by x/net/http2's (net/http's HTTP/2 server), the
// same handler. The client's cost is in both; the difference is the
// servers'.
func BenchmarkServer(b *testing.B) {
	body := strings.Repeat("x", 1024)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "1024")
		io.WriteString(w, body)
	})
	for _, srv := range []struct {
		name  string
		serve func(net.Conn)
	}{
		{"weft", func(c net.Conn) { (&Server{Handler: h}).ServeConn(context.Background(), c) }},
		{"x-net-http2", func(c net.Conn) { (&http2.Server{}).ServeConn(c, &http2.ServeConnOpts{Handler: h}) }},
	} {
		b.Run(srv.name, func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go srv.serve(c)
				}
			}()
			c := h2cClient(b)
			url := "http://" + l.Addr().String() + "/echo"
			payload := []byte(body)
			b.ReportAllocs()
			cpu0 := cpuTime()
			n := 0
			for b.Loop() {
				n++
				res, err := c.Post(url, "application/octet-stream", bytes.NewReader(payload))
				if err != nil {
					b.Fatal(err)
				}
				if n, _ := io.Copy(io.Discard, res.Body); n != 1024 {
					b.Fatalf("%d bytes back", n)
				}
				res.Body.Close()
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/1e3/float64(n), "cpu-µs/op")
		})
	}
}

// cpuTime is the process's CPU time (user and system) in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
