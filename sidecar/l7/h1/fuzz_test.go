package h1

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

var fuzzSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n3\r\nabc\r\n0\r\nX: 1\r\n\r\n",
	"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
	"GET /flush HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET /trailer HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}

// FuzzServer: whatever bytes a client sends, the server never panics, ends
// the connection within its timeouts, and what it sends back is a
// sequence of whole HTTP/1.1 responses — one for each request net/http's
// parser makes of the bytes, in order (or fewer, the last maybe a
// refusal) — each framed so that a client reads exactly it.
func FuzzServer(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		switch {
		case strings.HasPrefix(r.URL.Path, "/flush"):
			w.(http.Flusher).Flush()
		case strings.HasPrefix(r.URL.Path, "/trailer"):
			w.Header().Set("Trailer", "X-Len")
			defer w.Header().Set("X-Len", fmt.Sprint(len(b)))
		}
		fmt.Fprintf(w, "%s %s %d %v %v", r.Method, r.URL.Path, len(b), err, r.Trailer)
	})
	addr, _ := serveH1(f, h, func(s *Server) { s.HeaderTimeout, s.IdleTimeout = time.Second, time.Second })
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(in)
			c.(*net.TCPConn).CloseWrite()
		}()
		out, err := io.ReadAll(c)
		if err != nil && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("%q: reading the answers: %v (read %q)", in, err, out)
		}
		// The requests as net/http's parser reads them.
		var reqs []*http.Request
		rb := bufio.NewReader(bytes.NewReader(in))
		for {
			r, err := http.ReadRequest(rb)
			if err != nil {
				break
			}
			io.Copy(io.Discard, r.Body)
			reqs = append(reqs, r)
		}
		br := bufio.NewReader(bytes.NewReader(out))
		for i := 0; ; i++ {
			if _, err := br.Peek(1); err == io.EOF {
				return
			}
			var req *http.Request
			if i < len(reqs) {
				req = reqs[i]
			}
			if l, _ := br.Peek(12); len(l) == 12 && (l[9] == '4' || l[9] == '5') {
				req = nil // a refusal (the handler answers 200): its body runs to the end
			}
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				t.Fatalf("%q: answer %d does not parse: %v (all: %q)", in, i+1, err, out)
			}
			if i > len(reqs) {
				t.Fatalf("%q: %d answers for %d requests (all: %q)", in, i+1, len(reqs), out)
			}
			if resp.StatusCode == 100 {
				i--
				continue
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil && resp.StatusCode != 200 {
				t.Fatalf("%q: answer %d's body: %v (all: %q)", in, i+1, err, out)
			}
		}
	})
}
