package l7

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/weftmesh/weft/internal/testutil"
)

// BenchmarkAppHop: one request to an HTTP/1.1 app on loopback and its 1 KiB
// response, read whole, as Inbound hands it over (a 1 KiB body read whole
// for POST) — through AppH1 and through net/http's transport
// (AppTransport), in the same run. The app is a minimal loop, so the
// figures are mostly the two clients' own.
func BenchmarkAppHop(b *testing.B) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n")
	resp = append(resp, make([]byte, 1024)...)
	addr := testutil.ServeTCP(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, r.Body)
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	}).String()
	body := make([]byte, 1024)
	dial := (&net.Dialer{}).DialContext
	for _, rt := range []struct {
		name string
		rt   interface {
			http.RoundTripper
			CloseIdleConnections()
		}
	}{{"AppH1", NewAppH1(dial)}, {"net-http", AppTransport(dial)}} {
		for _, method := range []string{"GET", "POST"} {
			b.Run(rt.name+"/"+method, func(b *testing.B) {
				defer rt.rt.CloseIdleConnections()
				buf := make([]byte, 2048)
				b.ReportAllocs()
				for b.Loop() {
					r, _ := http.NewRequest(method, "http://"+addr+"/x", nil)
					r.Header["User-Agent"] = []string{""}
					r.Header["Accept"] = []string{"*/*"}
					if method == "POST" { // as Inbound hands it to each (before AppH1, a bytes.Reader)
						r.Body, r.ContentLength = &wholeBody{b: body}, int64(len(body))
						if rt.name != "AppH1" {
							r.Body = io.NopCloser(bytes.NewReader(body))
						}
					}
					resp, err := rt.rt.RoundTrip(r)
					if err != nil {
						b.Fatal(err)
					}
					for {
						if _, err := resp.Body.Read(buf); err != nil {
							break
						}
					}
					resp.Body.Close()
				}
			})
		}
	}
}
