package h1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
)

// BenchmarkServer: a 1 KiB POST answered with 1 KiB, one request at a
// time on one kept-alive connection from a raw client (the same bytes
// each time), served by this package's server and by net/http's, the
// same handler. The client's cost is in both; the difference is the
// servers'.
func BenchmarkServer(b *testing.B) {
	body := strings.Repeat("x", 1024)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		io.WriteString(w, body)
	})
	req := fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: app\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	for _, srv := range []struct {
		name  string
		serve func(net.Conn)
	}{
		{"weft", func(c net.Conn) { (&Server{Handler: h}).ServeConn(context.Background(), c) }},
		{"net-http", nil},
	} {
		b.Run(srv.name, func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			if srv.serve == nil {
				s := &http.Server{Handler: h}
				go s.Serve(l)
				defer s.Close()
			} else {
				go func() {
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						go srv.serve(c)
					}
				}()
			}
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			hreq := &http.Request{Method: "POST"}
			b.ReportAllocs()
			cpu0 := cpuTime()
			n := 0
			for b.Loop() {
				n++
				if _, err := io.WriteString(c, req); err != nil {
					b.Fatal(err)
				}
				res, err := http.ReadResponse(br, hreq)
				if err != nil {
					b.Fatal(err)
				}
				if m, _ := io.Copy(io.Discard, res.Body); m != 1024 {
					b.Fatalf("%d bytes back", m)
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
