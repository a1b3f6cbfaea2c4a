package h1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestAttackContinueAfterFinalHead: the app sends a request with
// "Expect: 100-continue" and waits; the handler answers first (its final
// head flushed, as a proxy does when its upstream answers early) and only
// then reads the body. The automatic 100 Continue of the body's first read
// must not be sent then: written after the final head it would be read as
// the response's body (with a Content-Length, the client takes "HTTP" for
// it and the rest for the next response). net/http's server sends no 100
// Continue once the response has been written. The body read on a
// goroutine of the handler's while it writes (a proxy's transport) must
// not race with its writes either (go test -race).
func TestAttackContinueAfterFinalHead(t *testing.T) {
	for _, tc := range []struct {
		length, goroutine bool
	}{{true, false}, {false, false}, {false, true}} {
		t.Run(fmt.Sprintf("Content-Length %v, read on a goroutine %v", tc.length, tc.goroutine), func(t *testing.T) {
			addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.length {
					w.Header().Set("Content-Length", "4")
				}
				got := make(chan []byte, 1)
				read := func() {
					b, _ := io.ReadAll(r.Body)
					got <- b
				}
				if tc.goroutine {
					go read()
				}
				w.WriteHeader(200)
				w.(http.Flusher).Flush()
				if !tc.goroutine {
					read()
				}
				b := <-got
				io.WriteString(w, string(b[:min(len(b), 4)]))
			}), nil)
			c := dialApp(t, addr)
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err == nil && tc.goroutine && resp.StatusCode == 100 {
				// The goroutine's read came before the handler's Flush: the
				// 100 Continue goes before the response, rightly.
				resp, err = http.ReadResponse(br, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 {
				t.Fatalf("first response %d, want the final 200 (no 100 Continue was asked for yet)", resp.StatusCode)
			}
			io.WriteString(c, "hello") // the client sends its body anyway
			b, err := io.ReadAll(resp.Body)
			if string(b) != "hell" || err != nil {
				t.Errorf("the response's body read as %q, %v; want hell", b, err)
			}
		})
	}
}

// TestAttackExpectContinueWithoutBody: a request that expects 100
// Continue but has no body (Content-Length: 0, as some clients send every
// POST), or comes as HTTP/1.0, is served by net/http's server (nothing to
// continue); weft's must not refuse it with 417 and close.
func TestAttackExpectContinueWithoutBody(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%q %v", b, err)
	})
	std := serveStd(t, h)
	weft, _ := serveH1(t, h, nil)
	for _, raw := range []string{
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
		"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
	} {
		sr, sb, sclosed := exchange(t, std, raw, 1, "POST")
		wr, wb, wclosed := exchange(t, weft, raw, 1, "POST")
		if s, w := describe(sr[0], sb[0]), describe(wr[0], wb[0]); s != w || sclosed != wclosed {
			t.Errorf("%q:\nnet/http %s (closed %v)\nweft     %s (closed %v)", raw, s, sclosed, w, wclosed)
		}
	}
}

// TestAttackStaleWatch: the watch of a request is started by a timer, on
// a goroutine of its own that may run late — after the handler returned
// and the next request (pipelined, already in the read buffer) is being
// served. Run then, it must not watch the connection for the next
// request: that request's handler reads its body from the same read
// buffer (and its own watch may read too). The test runs the first
// request's watch from the second's handler, as its late goroutine would:
// it must return at once, not read the connection (which, the app sending
// nothing more, would block the second response).
func TestAttackStaleWatch(t *testing.T) {
	var stale func()
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := w.(*response)
		if r.URL.Path == "/first" {
			stale = rw.cn.lateWatch(rw)
			return
		}
		stale() // the first request's watch, run late
		rw.cn.mu.Lock()
		watching := rw.cn.watching
		rw.cn.mu.Unlock()
		fmt.Fprintf(w, "the connection read by the first request's watch: %v", watching)
	}), nil)
	c := dialApp(t, addr)
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	for i := range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i+1, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if i == 1 && string(b) != "the connection read by the first request's watch: false" {
			t.Error(string(b))
		}
	}
}

// lateWatch is the watch serveRequest's timer starts for w's request
// (the one being served).
func (cn *conn) lateWatch(w *response) func() {
	cn.mu.Lock()
	n := cn.reqNum
	cn.mu.Unlock()
	return func() { cn.watch(n, w, func(error) {}) }
}

// TestAttackShutdownFreshConnection: a connection accepted just before
// Shutdown, its first request not arrived yet (the app connected and
// writes it now), is not closed as an idle one: closed unanswered, its
// request would fail on a fresh connection, which a client does not try
// again. Its first request is served, the response saying Connection:
// close, as net/http's server serves a new connection (a new one that
// sends nothing for 5 s is closed as idle).
func TestAttackShutdownFreshConnection(t *testing.T) {
	addr, s := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served")
	}), nil)
	c := dialApp(t, addr)
	until(t, func() bool { return len(s.conns) == 1 }, s)
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	until(t, func() bool { return s.shutdown }, s)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a connection accepted before Shutdown, its request sent after: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "served" || !resp.Close {
		t.Errorf("its response: %q, Connection: close %v; want served, true", b, resp.Close)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return once the connection was gone")
	}
}

// until waits for cond, checked under s.mu, to hold.
func until(t *testing.T, cond func() bool, s *Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never got there")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAttackTransferEncodingRefusals: Transfer-Encoding fields the server
// cannot take — two of them, or a coding other than chunked — are refused
// as net/http's server refuses them (501), and a malformed head that only
// says such words is a bad request (400), not an unsupported coding.
func TestAttackTransferEncodingRefusals(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	std := serveStd(t, h)
	weft, _ := serveH1(t, h, nil)
	for _, raw := range []string{
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nunsupported transfer encoding\r\n\r\n", // a malformed line, quoted in the error
	} {
		if s, w := firstLine(t, std, raw), firstLine(t, weft, raw); s != w {
			t.Errorf("%q: net/http %q, weft %q", raw, s, w)
		}
	}
}
