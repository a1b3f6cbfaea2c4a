package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// serveH1 serves h with weft's server on a loopback listener.
func serveH1(t testing.TB, h http.Handler, conf func(*Server)) (string, *Server) {
	t.Helper()
	s := &Server{Handler: h, HeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	if conf != nil {
		conf(s)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		s.Close()
		ended := make(chan struct{})
		go func() {
			wg.Wait()
			close(ended)
		}()
		select {
		case <-ended:
		case <-time.After(10 * time.Second): // a handler that never returns: fail, do not hang
			t.Error("a connection was still served 10 s after Close")
		}
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { _ = s.ServeConn(context.Background(), c) })
		}
	})
	return l.Addr().String(), s
}

// serveStd serves h with net/http's server, as weft's is configured.
func serveStd(t testing.TB, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
		ErrorLog: nil}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return l.Addr().String()
}

// exchange sends raw on a new connection and reads n responses to req
// (method for HEAD), then whether the server closed the connection.
func exchange(t *testing.T, addr, raw string, n int, method string) ([]*http.Response, []string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // before the test ends: the server sees it go
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var resps []*http.Response
	var bodies []string
	for range n {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%.200q: reading a response: %v", raw, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			b = append(b, " (then "+err.Error()+")"...)
		}
		resps = append(resps, resp)
		bodies = append(bodies, string(b))
		if err != nil {
			break
		}
	}
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err = br.ReadByte()
	closed := err != nil && !errors.Is(err, errTimeout(err))
	return resps, bodies, closed
}

func errTimeout(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errors.New("not a timeout")
}

// describe is what a client learns of a response: its status, fields
// (Date's presence only), body and trailers.
func describe(resp *http.Response, body string) string {
	var keys []string
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s;", resp.Proto, resp.Status)
	for _, k := range keys {
		if k == "Date" {
			b.WriteString(" Date: (set);")
			continue
		}
		fmt.Fprintf(&b, " %s: %q;", k, resp.Header[k])
	}
	fmt.Fprintf(&b, " body %q; length %d; te %v; trailer %v", body, resp.ContentLength, resp.TransferEncoding, resp.Trailer)
	return b.String()
}

// TestServerAsNetHTTP runs each handler on net/http's server and weft's
// and compares what a client receives, response after response on one
// connection; the differences weft's doc states are left out of the
// cases (Content-Type sniffing: every handler sets one or writes no
// body; bodies of 2–16 KiB: Content-Length, not chunked).
func TestServerAsNetHTTP(t *testing.T) {
	get := "GET /p HTTP/1.1\r\nHost: app\r\n\r\n"
	cases := []struct {
		name   string
		req    string
		n      int
		method string
		h      http.HandlerFunc
	}{
		{"small body", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "hello")
		}},
		{"no body", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {}},
		{"large body, chunked", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(strings.Repeat("x", 40<<10)))
		}},
		{"declared length", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", "3")
			if _, err := io.WriteString(w, "abc"); err != nil {
				panic(fmt.Sprint("a Write of the declared length: ", err))
			}
		}},
		{"declared length 0, flushed", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "0")
			w.(http.Flusher).Flush()
		}},
		{"304 with its length", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(304)
		}},
		{"a status without a text", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(599)
			io.WriteString(w, "x")
		}},
		{"199 then 200", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(199)
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(200)
			io.WriteString(w, "ok")
		}},
		{"999", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(999)
		}},
		{"flushed", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			io.WriteString(w, "b")
		}},
		{"trailers", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Trailer", "X-Sum, X-Late")
			io.WriteString(w, "body")
			w.Header().Set("X-Sum", "4")
			w.Header().Set(http.TrailerPrefix+"X-Undeclared", "u")
		}},
		{"fields after WriteHeader", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("X-Before", "1")
			w.WriteHeader(201)
			w.Header().Set("X-After", "2")
			io.WriteString(w, "x")
		}},
		{"no Date", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Date"] = nil
		}},
		{"HEAD", "HEAD /p HTTP/1.1\r\nHost: app\r\n\r\n", 1, "HEAD", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "not sent")
		}},
		{"204", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(204)
			if _, err := io.WriteString(w, "x"); err != http.ErrBodyNotAllowed {
				panic(fmt.Sprint("204 Write: ", err))
			}
		}},
		{"304", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Etag", `"a"`)
			w.WriteHeader(304)
		}},
		{"103 then 200", get, 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</s.css>; rel=preload")
			w.WriteHeader(103)
			w.Header().Del("Link")
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "ok")
		}},
		{"pipelined", get + "GET /q HTTP/1.1\r\nHost: app\r\n\r\n", 2, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, r.URL.Path)
		}},
		{"Connection: close", "GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n", 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "bye")
		}},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "old")
		}},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 2, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "old")
		}},
		{"HTTP/1.0 streamed", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.(http.Flusher).Flush()
			io.WriteString(w, "until the end")
		}},
		{"body read", "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello" + get, 2, "GET", func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s %q %v", r.URL.Path, b, err)
		}},
		{"body unread", "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello" + get, 2, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, r.URL.Path)
		}},
		{"chunked body with trailers", "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: v\r\n\r\n" + get, 2, "GET", func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s %q %v %v", r.URL.Path, b, err, r.Trailer)
		}},
		{"both lengths: chunked wins", "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n" + get, 2, "GET", func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s %q %v %d", r.URL.Path, b, err, r.ContentLength)
		}},
		{"HEAD, nothing written", "HEAD /p HTTP/1.1\r\nHost: app\r\n\r\n", 1, "HEAD", func(w http.ResponseWriter, r *http.Request) {}},
		{"large body read", "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 40960\r\n\r\n" + strings.Repeat("x", 40<<10) + get, 2, "GET", func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s %d %d %v", r.URL.Path, len(b), strings.Count(string(b), "x"), err)
		}},
		{"chunked body with undeclared trailers", "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: v\r\nX-U: w\r\n\r\n" + get, 2, "GET", func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s %q %v %v", r.URL.Path, b, err, r.Trailer)
		}},
		// What a proxy passing the request on sees: no body is http.NoBody,
		// a Content-Length of 0 as much as none.
		{"no body is NoBody", "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n" + get, 2, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s %v %d", r.Method, r.Body == http.NoBody, r.ContentLength)
		}},
		{"flushed, then hijacked", get, 2, "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "early")
			w.(http.Flusher).Flush()
			c, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				panic(err)
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nlate")
			c.Close()
		}},
		{"Expect refused", "POST / HTTP/1.1\r\nHost: app\r\nExpect: something\r\nContent-Length: 1\r\n\r\nx", 1, "GET", func(w http.ResponseWriter, r *http.Request) {
			panic("an unmet expectation reached the handler")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			std := serveStd(t, tc.h)
			weft, _ := serveH1(t, tc.h, nil)
			sr, sb, sclosed := exchange(t, std, tc.req, tc.n, tc.method)
			wr, wb, wclosed := exchange(t, weft, tc.req, tc.n, tc.method)
			if len(sr) != len(wr) {
				t.Fatalf("net/http answered %d responses, weft %d", len(sr), len(wr))
			}
			for i := range sr {
				if s, w := describe(sr[i], sb[i]), describe(wr[i], wb[i]); s != w {
					t.Errorf("response %d:\nnet/http %s\nweft     %s", i+1, s, w)
				}
			}
			if sclosed != wclosed {
				t.Errorf("connection closed after: net/http %v, weft %v", sclosed, wclosed)
			}
		})
	}
}

// TestServerRefusesAsNetHTTP: requests net/http's server refuses are
// refused with the same status, the connection closed, the handler never
// called.
func TestServerRefusesAsNetHTTP(t *testing.T) {
	for _, raw := range []string{
		"GET / HTTP/1.1\r\n\r\n",                       // no Host
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", // two
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",          // malformed
		"GET / HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n",  // a field name with a space
		"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", // a control byte
		"G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n",         // a method that is not a token
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("y", 40<<10) + "\r\n\r\n", // past MaxHeaderBytes
		"GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: y\r\n", 5000) + "\r\n",   // so, in many fields
		"GET /\r\n\r\n",
	} {
		var called bool
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true })
		std := serveStd(t, h)
		weft, _ := serveH1(t, h, nil)
		s, w := firstLine(t, std, raw), firstLine(t, weft, raw)
		if s != w || called {
			t.Errorf("%.50q: net/http %q, weft %q (handler called %v)", raw, s, w, called)
		}
	}
}

// firstLine sends raw and returns the first line answered (code and
// reason), or what ended the connection.
func firstLine(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "no response: " + err.Error()
	}
	return strings.TrimSpace(line)
}

// TestServerBodyBuffered: a request body of a declared length that
// arrived with its head says so (Buffered: all of it, and the end), as
// h2's bodies do, for the HTTP/2 client to send it with its HEADERS; one
// that expects 100 Continue says nothing (its first read sends it).
func TestServerBodyBuffered(t *testing.T) {
	got := make(chan string, 2)
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, end := r.Body.(interface{ Buffered() (int, bool) }).Buffered()
		b, _ := io.ReadAll(r.Body)
		got <- fmt.Sprintf("%d %v %s", n, end, b)
	}), nil)
	exchange(t, addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", 1, "POST")
	if g := <-got; g != "5 true hello" {
		t.Errorf("a body sent with its head: Buffered and read %q, want 5 true hello", g)
	}
	exchange(t, addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello", 2, "POST")
	if g := <-got; g != "0 false hello" {
		t.Errorf("a body expecting 100 Continue: Buffered and read %q, want 0 false hello", g)
	}
}

// TestServerHijack: a handler that hijacks the connection gets what the
// server read past the request (the app's bytes after an Upgrade
// request), owns the connection (ServeConn does not close it) and
// ServeConn returns when the handler does.
func TestServerHijack(t *testing.T) {
	done := make(chan struct{})
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		rest := make([]byte, brw.Reader.Buffered())
		brw.Reader.Read(rest)
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nafter the head: %q", rest)
		c.Close()
		close(done)
	}), nil)
	c := dialApp(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nearly bytes")
	b, _ := io.ReadAll(c)
	<-done
	if !strings.HasSuffix(string(b), `after the head: "early bytes"`) {
		t.Errorf("the hijacked connection carried %q", b)
	}
}

// TestServerAbortCutsTheResponse: a handler that panics with
// http.ErrAbortHandler mid-response has its response cut — the chunked
// body never ends, the connection closes — as net/http's server does: a
// proxy that lost its upstream must not have the client take a short body
// for a whole one.
func TestServerAbortCutsTheResponse(t *testing.T) {
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}), nil)
	c := dialApp(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != "part" {
		t.Errorf("an aborted response read as %q, %v; want part, unexpected EOF", b, err)
	}
}

// TestServerWatchesASlowRequest: the client closing its connection while
// the handler waits (a long poll, an upstream that is slow) ends the
// request's context — the proxy then gives up its upstream request.
func TestServerWatchesASlowRequest(t *testing.T) {
	ended := make(chan error, 1)
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // as a proxy sends it on
		select {
		case <-r.Context().Done():
			ended <- context.Cause(r.Context())
		case <-time.After(10 * time.Second):
			ended <- nil
		}
	}), nil)
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, req)
		time.Sleep(2 * watchAfter)
		c.Close()
		if err := <-ended; err == nil || !strings.Contains(err.Error(), "client went away") {
			t.Errorf("%q: the client closed its connection: the request's context ended with %v", req, err)
		}
	}
}

// TestServerWatchKeepsPipelinedRequests: bytes that arrive while a slow
// request is watched — the next request — are served after it.
func TestServerWatchKeepsPipelinedRequests(t *testing.T) {
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(3 * watchAfter)
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, r.URL.Path)
	}), nil)
	c := dialApp(t, addr)
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(2 * watchAfter) // the watch reads now
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"/slow", "/next"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != want {
			t.Errorf("got %q, want %q", b, want)
		}
	}
}

// TestServerShutdown: Shutdown closes an idle connection at once, lets a
// request in progress finish (its response says Connection: close) and
// returns once both are gone; new connections are refused.
func TestServerShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	addr, s := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "done")
	}), nil)
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // the slow handler returns even when the test fails early
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	ibr := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(ibr, nil); err != nil {
		t.Fatal(err)
	} else {
		io.ReadAll(resp.Body)
	}
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busy.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if _, err := ibr.ReadByte(); err == nil {
		t.Error("the idle connection got bytes, want it closed")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request in progress", err)
	case <-time.After(50 * time.Millisecond):
	}
	free()
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	if !resp.Close {
		t.Error("the response of a request finished during Shutdown does not say Connection: close")
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return once the connections were gone")
	}
	c, err := net.Dial("tcp", addr)
	if err == nil {
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			t.Errorf("a connection after Shutdown was answered %q", line)
		}
	}
}

// TestServerH2CHandOff: a connection whose first bytes are HTTP/2's
// preface goes to H2C with them; one whose first bytes only start like it
// (a POST) is HTTP/1.1's.
func TestServerH2CHandOff(t *testing.T) {
	got := make(chan string, 1)
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "h1 "+r.Method)
	}), func(s *Server) {
		s.H2C = func(ctx context.Context, c net.Conn) error {
			b := make([]byte, len(h2Preface)+4)
			_, err := io.ReadFull(c, b)
			got <- fmt.Sprintf("%q %v", b, err)
			return nil
		}
	})
	exchange(t, addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 1, "POST")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, h2Preface+"abcd")
	select {
	case g := <-got:
		if want := fmt.Sprintf("%q <nil>", h2Preface+"abcd"); g != want {
			t.Errorf("H2C read %s, want %s", g, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the preface was not handed to H2C")
	}
}

// TestServerWriteBeyondContentLength: a Write that would pass the declared
// Content-Length fails (http.ErrContentLength) and sends nothing; what
// the handler writes within it is the response, and the connection stays
// usable — a declared length of 0 as well. (net/http's server instead
// sends the head alone and closes the connection: the client sees the body
// cut.)
func TestServerWriteBeyondContentLength(t *testing.T) {
	for _, body := range []string{"ab", ""} {
		addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			if _, err := io.WriteString(w, body+"c"); err != http.ErrContentLength {
				panic(fmt.Sprint("Write past Content-Length: ", err))
			}
			io.WriteString(w, body)
		}), nil)
		_, bodies, closed := exchange(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 2, "GET")
		if len(bodies) != 2 || bodies[0] != body || bodies[1] != body || closed {
			t.Errorf("Content-Length %d: bodies %q, connection closed %v; want %q twice, kept", len(body), bodies, closed, body)
		}
	}
}

// TestServerTimeouts: a head sent in pieces and never finished ends at
// HeaderTimeout — the first request's and a later one's, on a kept-alive
// connection — and a connection with no request at IdleTimeout.
func TestServerTimeouts(t *testing.T) {
	const ht, it = 200 * time.Millisecond, 400 * time.Millisecond
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), func(s *Server) {
		s.HeaderTimeout, s.IdleTimeout = ht, it
	})
	for _, tc := range []struct {
		name, first, then string
		within            time.Duration
	}{
		{"first head unfinished", "", "GET / HTTP/1.1\r\nHost: a\r\n", ht},
		{"second head unfinished", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET / HTTP/1.1\r\nHo", ht},
		{"idle", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "", it},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			if tc.first != "" {
				io.WriteString(c, tc.first)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				io.ReadAll(resp.Body)
			}
			start := time.Now()
			io.WriteString(c, tc.then)
			// The connection ends: with nothing, or (a line cut by the
			// deadline reads as a malformed one, in net/http's server
			// too) with a 400.
			rest, err := io.ReadAll(br)
			if err != nil || (len(rest) > 0 && !strings.HasPrefix(string(rest), "HTTP/1.1 400 ")) {
				t.Fatalf("an unfinished head was answered %q, %v", rest, err)
			}
			if d := time.Since(start); d < tc.within/2 || d > tc.within+3*time.Second {
				t.Errorf("closed after %v, want about %v", d, tc.within)
			}
		})
	}
}

// TestServerSilentConnectionEndsAtHeaderTimeout: a connection that never
// sends its first request is closed at HeaderTimeout from ServeConn, as
// net/http's server closes it at ReadHeaderTimeout — not kept for
// IdleTimeout, or for ever without one (the server sidecar's peers may
// be hostile).
func TestServerSilentConnectionEndsAtHeaderTimeout(t *testing.T) {
	for _, idle := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprint("idle ", idle), func(t *testing.T) {
			addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), func(s *Server) {
				s.HeaderTimeout, s.IdleTimeout = 200*time.Millisecond, idle
			})
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			if b, err := io.ReadAll(c); len(b) > 0 || err != nil {
				t.Fatalf("a connection that sent nothing: read %q, %v; want it closed", b, err)
			}
		})
	}
}

// TestServerHandlerGoexitClosesConnection: a handler that ends its
// goroutine (runtime.Goexit: a test's FailNow in a handler) never
// finished its response: the connection is closed without it (net/http's
// server closes it too), not left open and served by no one, which
// Shutdown would wait for until its context ends.
func TestServerHandlerGoexitClosesConnection(t *testing.T) {
	addr, s := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		runtime.Goexit()
	}), nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if b, err := io.ReadAll(c); err != nil || strings.HasSuffix(string(b), "partial") {
		t.Fatalf("after the handler's Goexit: read %q, %v; want the connection closed, the response not finished", b, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after a handler's Goexit: %v", err)
	}
}

// TestServerIdleConnectionShrinks: a connection that served a large
// response keeps at most keepBuf of its buffers while it waits for the
// next request.
func TestServerIdleConnectionShrinks(t *testing.T) {
	addr, s := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Big", strings.Repeat("h", 8<<10))
		io.WriteString(w, strings.Repeat("x", 12<<10)) // held for its length
		io.WriteString(w, strings.Repeat("y", 12<<10)) // then chunked
	}), nil)
	c := dialApp(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); len(b) != 24<<10 {
		t.Fatalf("body of %d bytes", len(b))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		var idle, big []string
		for cn := range s.conns {
			if cn.state == stateIdle {
				idle = append(idle, "")
				if cap(cn.hb) > keepBuf || cn.out.Cap() > keepBuf || cn.fields.Cap() > keepBuf {
					big = append(big, fmt.Sprint(cap(cn.hb), cn.out.Cap(), cn.fields.Cap()))
				}
			}
		}
		s.mu.Unlock()
		if len(idle) > 0 {
			if len(big) > 0 {
				t.Errorf("idle connections hold buffers of %v bytes (held, out, fields), want at most %d each", big, keepBuf)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection never went idle")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServerShutdownLeavesTunnels: Shutdown does not wait for a hijacked
// connection (an upgraded one: a tunnel its handler owns), as net/http's
// does not: a sidecar's drain would otherwise run its whole timeout
// whenever a WebSocket is open.
func TestServerShutdownLeavesTunnels(t *testing.T) {
	hijacked := make(chan struct{})
	release := make(chan struct{})
	addr, s := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		defer c.Close()
		close(hijacked)
		<-release
	}), nil)
	defer close(release)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
	<-hijacked
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown with a tunnel open: %v", err)
	}
}

// dialApp connects to addr as an app would, the connection closed with
// the test and every read and write bounded by 5 s.
func dialApp(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// A client that half-closes its connection after its request (as some
// HTTP/1.0 clients and `nc` do) is not taken for gone while the handler is
// quick: the connection is watched for the client's end only once the
// handler ran for watchAfter, so a handler's first moments never see its
// context cancelled by the half-close (net/http's server watches at once
// and cancels it; weft's answers the quick request). Cancellation before
// watchAfter cannot happen with the code as it is (a timer never fires
// early): the handler looks for it during the first 30 ms.
func TestServerHalfClosedClientQuickRequestIsServed(t *testing.T) {
	addr, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			io.WriteString(w, "cancelled")
		case <-time.After(30 * time.Millisecond): // < watchAfter
			io.WriteString(w, "ok")
		}
	}), nil)
	for range 5 {
		c := dialApp(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("a half-closed client's quick request: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "ok" {
			t.Fatalf("a half-closed client's quick request: %q, %v; want it served, its context not cancelled before %v", b, err, watchAfter)
		}
	}
}
