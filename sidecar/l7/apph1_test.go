package l7

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/rawio"
	"github.com/weftmesh/weft/internal/testutil"
)

// scriptedApp is an HTTP/1.1 app on loopback whose answers the test
// writes byte by byte: serve gets each request with its index on its
// connection and the connection's writer; it returns false to close the
// connection without a word more.
type scriptedApp struct {
	addr  string
	conns atomic.Int32
	mu    sync.Mutex
	reqs  []string // "<conn> <method> <path>" of every request read
	eofs  chan int // the connections whose peer closed them, by number
}

func newScriptedApp(t *testing.T, serve func(conn, i int, r *http.Request, w *bufio.Writer) bool) *scriptedApp {
	t.Helper()
	a := &scriptedApp{eofs: make(chan int, 100)}
	a.addr = testutil.ServeTCP(t, func(c net.Conn) {
		n := int(a.conns.Add(1))
		br, bw := bufio.NewReader(c), bufio.NewWriter(c)
		for i := 0; ; i++ {
			r, err := http.ReadRequest(br)
			if err != nil {
				if errors.Is(err, io.EOF) {
					a.eofs <- n
				}
				return
			}
			io.Copy(io.Discard, r.Body)
			a.mu.Lock()
			a.reqs = append(a.reqs, fmt.Sprintf("%d %s %s", n, r.Method, r.URL.Path))
			a.mu.Unlock()
			if !serve(n, i, r, bw) {
				bw.Flush()
				return
			}
			bw.Flush()
		}
	}).String()
	return a
}

func (a *scriptedApp) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.reqs...)
}

// countingFallback counts what AppH1 left to its Fallback.
type countingFallback struct {
	n  atomic.Int32
	rt http.RoundTripper
}

func (f *countingFallback) RoundTrip(r *http.Request) (*http.Response, error) {
	f.n.Add(1)
	return f.rt.RoundTrip(r)
}

func newTestAppH1(t *testing.T) (*AppH1, *countingFallback) {
	dial := (&net.Dialer{}).DialContext
	fb := &countingFallback{rt: AppTransport(dial)}
	h := &AppH1{Dial: dial, Fallback: fb}
	t.Cleanup(h.CloseIdleConnections)
	return h, fb
}

// appRequest is a request as Inbound's ReverseProxy hands it to the
// transport: URL host the app's address, User-Agent present, a small body
// read whole.
func appRequest(t *testing.T, method, addr, path, body string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("User-Agent", "")
	if body != "" {
		r.Body, r.ContentLength = &wholeBody{b: []byte(body)}, int64(len(body))
	}
	return r
}

func roundTrip(t *testing.T, rt http.RoundTripper, r *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := rt.RoundTrip(r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.URL.Path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", r.Method, r.URL.Path, err)
	}
	return resp, string(b)
}

// rawRecorder is an app that records the bytes of each request — its head
// and its declared body — and answers 200 with an empty body.
func rawRecorder(t *testing.T) (addr string, got chan []byte) {
	got = make(chan []byte, 1)
	addr = testutil.ServeTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			var head bytes.Buffer
			n := -1
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				head.WriteString(line)
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
					n, _ = strconv.Atoi(strings.TrimSpace(v))
				}
				if line == "\r\n" {
					break
				}
			}
			if n > 0 {
				b := make([]byte, n)
				if _, err := io.ReadFull(br, b); err != nil {
					return
				}
				head.Write(b)
			}
			got <- head.Bytes()
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	}).String()
	return addr, got
}

// TestAppH1WritesAsNetHTTP: every request AppH1 serves itself reaches the
// app byte for byte as net/http's transport writes it: the request line,
// Host, User-Agent, Content-Length, the other fields sorted and trimmed,
// the body in the same write.
func TestAppH1WritesAsNetHTTP(t *testing.T) {
	addr, got := rawRecorder(t)
	h, fb := newTestAppH1(t)
	std := AppTransport((&net.Dialer{}).DialContext)
	defer std.CloseIdleConnections()
	type req struct {
		name, method, path, body string
		host                     string
		header                   http.Header
	}
	for _, tc := range []req{
		{name: "GET", method: "GET", path: "/"},
		{name: "query and escapes", method: "GET", path: "/a%20b/c%2Fd?x=1&y=%41&z"},
		{name: "fields", method: "GET", path: "/f", header: http.Header{
			"Accept": {"*/*"}, "X-B": {"2", "1"}, "X-A": {"  padded\t", "a\tb"}, "Cookie": {"a=b; c=d"},
			"Te": {"trailers"}, "X-Empty": {""}, "X-None": {},
			"Content-Length": {"99"}, // the body's true length is written
		}},
		{name: "User-Agent", method: "GET", path: "/ua", header: http.Header{"User-Agent": {" curl/8 ", "second"}}},
		{name: "User-Agent without a value", method: "GET", path: "/ua", header: http.Header{"User-Agent": {}}},
		{name: "NoBody", method: "POST", path: "/nobody", body: "-"}, // body "-": http.NoBody below
		{name: "Host given", method: "GET", path: "/h", host: "server.demo:8080"},
		{name: "POST with a body", method: "POST", path: "/p", body: "hello", header: http.Header{"Content-Type": {"text/plain"}}},
		{name: "POST without", method: "POST", path: "/p"},
		{name: "PUT", method: "PUT", path: "/p", body: strings.Repeat("b", MaxWholeBody)},
		{name: "PATCH without", method: "PATCH", path: "/p"},
		{name: "DELETE without", method: "DELETE", path: "/d"},
		{name: "DELETE with", method: "DELETE", path: "/d", body: "x"},
		{name: "HEAD", method: "HEAD", path: "/h"},
		{name: "OPTIONS *", method: "OPTIONS", path: "*"},
		{name: "extension method", method: "PROPFIND", path: "/dav"},
	} {
		make := func() *http.Request {
			r := appRequest(t, tc.method, addr, "/", tc.body)
			if tc.path == "*" {
				r.URL = &url.URL{Scheme: "http", Host: addr, Path: "*"}
			} else if u, err := url.Parse("http://" + addr + tc.path); err == nil {
				r.URL = u
			} else {
				t.Fatal(err)
			}
			r.Host = tc.host
			for k, v := range tc.header {
				r.Header[k] = v
			}
			if tc.body == "-" {
				r.Body, r.ContentLength = http.NoBody, 0
			}
			return r
		}
		before := fb.n.Load()
		if resp, err := h.RoundTrip(make()); err != nil {
			t.Fatalf("%s: AppH1: %v", tc.name, err)
		} else {
			resp.Body.Close()
		}
		mine := <-got
		if fb.n.Load() != before {
			t.Fatalf("%s: AppH1 left the request to its fallback", tc.name)
		}
		r := make()
		if _, ok := r.Body.(*wholeBody); ok { // net/http reads it as a body in memory
			r.Body = io.NopCloser(strings.NewReader(tc.body))
		}
		if resp, err := std.RoundTrip(r); err != nil {
			t.Fatalf("%s: net/http: %v", tc.name, err)
		} else {
			resp.Body.Close()
		}
		if want := <-got; !bytes.Equal(mine, want) {
			t.Errorf("%s: AppH1 wrote\n%q\nnet/http writes\n%q", tc.name, mine, want)
		}
	}
}

// TestAppH1LeavesTheRestToNetHTTP: what AppH1 does not serve itself goes
// to its fallback — and the fallback's answer, an error included, is the
// caller's.
func TestAppH1LeavesTheRestToNetHTTP(t *testing.T) {
	app := newScriptedApp(t, func(_, _ int, r *http.Request, w *bufio.Writer) bool {
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	h, fb := newTestAppH1(t)
	for _, tc := range []struct {
		name    string
		change  func(*http.Request)
		refused bool // net/http refuses it
	}{
		{"Expect", func(r *http.Request) { r.Header.Set("Expect", "100-continue") }, false},
		{"Upgrade", func(r *http.Request) { r.Header.Set("Upgrade", "websocket"); r.Header.Set("Connection", "Upgrade") }, false},
		{"Connection", func(r *http.Request) { r.Header.Set("Connection", "keep-alive") }, false},
		{"Close", func(r *http.Request) { r.Close = true }, false},
		{"Transfer-Encoding field", func(r *http.Request) { r.Header.Set("Transfer-Encoding", "chunked") }, false},
		{"Trailer field", func(r *http.Request) { r.Header.Set("Trailer", "X-Sum") }, false},
		{"trailers", func(r *http.Request) { r.Trailer = http.Header{"X-Sum": nil} }, false},
		{"streamed body", func(r *http.Request) { r.Body, r.ContentLength = io.NopCloser(strings.NewReader("abc")), 3 }, false},
		{"unknown length", func(r *http.Request) { r.Body, r.ContentLength = io.NopCloser(strings.NewReader("abc")), -1 }, false},
		{"streamed body of length 0", func(r *http.Request) { r.Body, r.ContentLength = io.NopCloser(strings.NewReader("")), 0 }, false},
		{"length not the body's", func(r *http.Request) { r.Body, r.ContentLength = &wholeBody{b: []byte("abc")}, 2 }, true},
		{"body read in part", func(r *http.Request) {
			b := &wholeBody{b: []byte("abc")}
			b.Read(make([]byte, 1))
			r.Body, r.ContentLength = b, 2
		}, false},
		{"no User-Agent", func(r *http.Request) { delete(r.Header, "User-Agent") }, false},
		{"bad field value", func(r *http.Request) { r.Header["X-Bad"] = []string{"a\r\nX-Smuggled: 1"} }, true},
		{"bad field name", func(r *http.Request) { r.Header["X Bad"] = []string{"1"} }, true},
		{"bad User-Agent", func(r *http.Request) { r.Header["User-Agent"] = []string{"a\nb"} }, true},
		{"bad Host", func(r *http.Request) { r.Host = "a b" }, false}, // net/http cuts it at the space
		{"zone in Host", func(r *http.Request) { r.Host = "[fe80::1%25eth0]:80" }, false},
		{"space in the query", func(r *http.Request) { r.URL.RawQuery = "a b" }, true}, // net/http writes it; the app refuses
		{"DEL in the query", func(r *http.Request) { r.URL.RawQuery = "a\x7f" }, true}, // net/http refuses it
		{"bad method", func(r *http.Request) { r.Method = "G T" }, true},
	} {
		r := appRequest(t, "GET", app.addr, "/"+tc.name, "")
		tc.change(r)
		before := fb.n.Load()
		resp, err := h.RoundTrip(r)
		if err == nil {
			resp.Body.Close()
		}
		if fb.n.Load() != before+1 {
			t.Errorf("%s: not left to the fallback", tc.name)
		}
		if (err != nil) != tc.refused {
			t.Errorf("%s: error %v, want one: %v", tc.name, err, tc.refused)
		}
	}
	for _, r := range app.requests() {
		if strings.Contains(r, "Smuggled") {
			t.Errorf("the app read %q", r)
		}
	}
}

// TestAppH1Responses: each way an HTTP/1.1 response may be framed is read
// to its end and its trailers; the connection is used again only when the
// response was read to its end with nothing after it and did not ask to
// close.
func TestAppH1Responses(t *testing.T) {
	for _, tc := range []struct {
		name, method, raw, body string
		trailer                 string // X-Sum's value after the body
		reused                  bool
	}{
		{"Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", "", true},
		{"chunked with trailers", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\nX-Sum: 7\r\n\r\n", "hello", "7", true},
		{"to the close", "GET", "HTTP/1.1 200 OK\r\n\r\nhello", "hello", "", false},
		{"Connection: close", "GET", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello", "hello", "", false},
		{"HTTP/1.0", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", "", false},
		{"HTTP/1.0 keep-alive", "GET", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello", "hello", "", true},
		{"HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", "", "", true},
		{"204", "GET", "HTTP/1.1 204 No Content\r\n\r\n", "", "", true},
		{"304", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "", "", true},
		{"bytes after the body", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged", "hello", "", false},
		{"interim responses first", "GET", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := newScriptedApp(t, func(_, i int, r *http.Request, w *bufio.Writer) bool {
				if r.URL.Path == "/next" {
					fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
					return true
				}
				w.WriteString(tc.raw)
				return !strings.HasPrefix(tc.name, "to the close")
			})
			h, fb := newTestAppH1(t)
			resp, body := roundTrip(t, h, appRequest(t, tc.method, app.addr, "/", ""))
			if body != tc.body || resp.Trailer.Get("X-Sum") != tc.trailer {
				t.Errorf("body %q trailer %q, want %q %q", body, resp.Trailer.Get("X-Sum"), tc.body, tc.trailer)
			}
			if _, next := roundTrip(t, h, appRequest(t, "GET", app.addr, "/next", "")); next != "next" {
				t.Errorf("the next response: %q", next)
			}
			if conns := app.conns.Load(); (conns == 1) != tc.reused {
				t.Errorf("%d connections for two requests, want the first reused: %v", conns, tc.reused)
			}
			if fb.n.Load() != 0 {
				t.Errorf("%d requests left to the fallback", fb.n.Load())
			}
		})
	}
}

// TestAppH1InterimResponses: 1xx responses before the final one reach
// the caller's trace (ReverseProxy forwards them so), and a 101 nobody
// asked for is an error that closes the connection.
func TestAppH1InterimResponses(t *testing.T) {
	app := newScriptedApp(t, func(_, _ int, r *http.Request, w *bufio.Writer) bool {
		if r.URL.Path == "/101" {
			w.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
			return true
		}
		w.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	h, _ := newTestAppH1(t)
	var got []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		got = append(got, fmt.Sprint(code, " ", h.Get("Link")))
		return nil
	}}
	r := appRequest(t, "GET", app.addr, "/", "")
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
	if _, body := roundTrip(t, h, r); body != "ok" || len(got) != 1 || got[0] != "103 </style.css>" {
		t.Errorf("body %q, interim %q; want ok, [103 </style.css>]", body, got)
	}
	if _, err := h.RoundTrip(appRequest(t, "GET", app.addr, "/101", "")); err == nil {
		t.Error("a 101 without an upgrade asked was accepted")
	}
	if _, body := roundTrip(t, h, appRequest(t, "GET", app.addr, "/", "")); body != "ok" {
		t.Errorf("after the 101: %q", body)
	}
	if n := app.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the one that switched protocols closed)", n)
	}
}

// TestAppH1IdleClosedByTheApp: an app that closes an idle connection (its
// keep-alive timeout) costs nothing — even a POST, which is never sent
// twice, goes out on a new connection: the kernel said the old one was
// closed before AppH1 wrote on it. Bytes the app sent unasked on an idle
// connection likewise retire it.
func TestAppH1IdleClosedByTheApp(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after string // written after the response, then the connection closes or stays
		close bool
	}{
		{"closed", "", true},
		{"unsolicited bytes", "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := make(chan struct{}, 1)
			app := newScriptedApp(t, func(_, i int, r *http.Request, w *bufio.Writer) bool {
				w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if i == 0 && r.URL.Path == "/first" {
					w.Flush()
					w.WriteString(tc.after)
					defer func() { sent <- struct{}{} }()
					return !tc.close
				}
				return true
			})
			for _, dial := range []struct {
				name string
				wrap func(net.Conn) net.Conn
			}{
				{"net.TCPConn", func(c net.Conn) net.Conn { return c }},
				// The sidecar's own sockets, which answer Quiet themselves.
				{"rawio.Conn", func(c net.Conn) net.Conn { return rawio.Wrap(c.(*net.TCPConn)) }},
			} {
				h, _ := newTestAppH1(t)
				h.Dial = func(ctx context.Context, n, a string) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, n, a)
					if err != nil {
						return nil, err
					}
					return dial.wrap(c), nil
				}
				before := len(app.requests())
				roundTrip(t, h, appRequest(t, "GET", app.addr, "/first", ""))
				<-sent
				time.Sleep(50 * time.Millisecond) // for loopback to deliver the FIN or the bytes
				resp, body := roundTrip(t, h, appRequest(t, "POST", app.addr, "/second", "data"))
				if resp.StatusCode != 200 || body != "ok" {
					t.Errorf("%s: POST after the app closed: %d %q", dial.name, resp.StatusCode, body)
				}
				if reqs := app.requests()[before:]; len(reqs) != 2 || !strings.HasSuffix(reqs[1], " POST /second") ||
					strings.Fields(reqs[0])[0] == strings.Fields(reqs[1])[0] {
					t.Errorf("%s: the app read %q, want the POST once on a second connection", dial.name, reqs)
				}
			}
		})
	}
}

// TestAppH1RetriesOnlyReplayable: a connection the app closes after
// reading a request, before answering, fails that request. Reused, it is
// tried again on another connection when net/http's transport would: a
// GET, not a POST (it may have reached the app: the app read it here), and
// never a request on a connection that was new.
func TestAppH1RetriesOnlyReplayable(t *testing.T) {
	app := newScriptedApp(t, func(_, i int, r *http.Request, w *bufio.Writer) bool {
		if i == 1 || r.URL.Path == "/drop" { // the second request on each connection
			return false
		}
		w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	h, _ := newTestAppH1(t)
	roundTrip(t, h, appRequest(t, "GET", app.addr, "/warm", ""))
	if _, body := roundTrip(t, h, appRequest(t, "GET", app.addr, "/get", "")); body != "ok" {
		t.Errorf("GET: %q", body)
	}
	roundTrip(t, h, appRequest(t, "GET", app.addr, "/warm", "")) // dropped on the second connection, tried again on a third
	if _, err := h.RoundTrip(appRequest(t, "POST", app.addr, "/post", "x")); err == nil {
		t.Error("POST: no error, although the app dropped it")
	}
	if _, err := h.RoundTrip(appRequest(t, "GET", app.addr, "/drop", "")); err == nil {
		t.Error("GET on a new connection dropped: tried again")
	}
	want := []string{"1 GET /warm", "1 GET /get", "2 GET /get", "2 GET /warm", "3 GET /warm", "3 POST /post", "4 GET /drop"}
	if got := app.requests(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the app read %q, want %q", got, want)
	}
}

// TestAppH1BoundsTheHead: an app's response head — interim responses
// counted — is bounded, however the app sends it.
func TestAppH1BoundsTheHead(t *testing.T) {
	app := newScriptedApp(t, func(_, _ int, r *http.Request, w *bufio.Writer) bool {
		switch r.URL.Path {
		case "/fields":
			w.WriteString("HTTP/1.1 200 OK\r\n")
			for i := 0; i < 2000; i++ {
				fmt.Fprintf(w, "X-%d: %s\r\n", i, strings.Repeat("v", 100))
			}
		case "/line":
			w.WriteString("HTTP/1.1 200 OK\r\nX: " + strings.Repeat("v", 1<<20))
		case "/interim":
			for i := 0; i < 2000; i++ {
				w.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			}
		case "/body": // the bound is the head's, not the body's
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", 64<<10, strings.Repeat("b", 64<<10))
			return true
		}
		w.WriteString("\r\nok")
		return true
	})
	h, _ := newTestAppH1(t)
	h.MaxResponseHeaderBytes = 16 << 10
	for _, p := range []string{"/fields", "/line", "/interim"} {
		if _, err := h.RoundTrip(appRequest(t, "GET", app.addr, p, "")); !errors.Is(err, errHeadTooLong) {
			t.Errorf("%s: %v, want %v", p, err, errHeadTooLong)
		}
	}
	if _, body := roundTrip(t, h, appRequest(t, "GET", app.addr, "/body", "")); len(body) != 64<<10 {
		t.Errorf("a body four times the head's bound: %d bytes read", len(body))
	}
}

// TestAppH1Cancel: a request whose context ends while it waits for its
// response, or while its body is read, ends at once with the context's
// error (Inbound answers DeadlineExceeded 504), and its connection is
// closed, never used again.
func TestAppH1Cancel(t *testing.T) {
	release := make(chan struct{})
	app := newScriptedApp(t, func(_, _ int, r *http.Request, w *bufio.Writer) bool {
		switch r.URL.Path {
		case "/head":
		case "/body":
			w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
			w.Flush()
		default:
			w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			return true
		}
		<-release
		return false
	})
	defer close(release)
	h, _ := newTestAppH1(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := h.RoundTrip(appRequest(t, "GET", app.addr, "/head", "").WithContext(ctx)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting for the head: %v, want %v", err, context.DeadlineExceeded)
	}
	ctx, cancel = context.WithCancel(context.Background())
	resp, err := h.RoundTrip(appRequest(t, "GET", app.addr, "/body", "").WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 10)
	if n, err := io.ReadAtLeast(resp.Body, b, 2); n != 2 || err != nil {
		t.Fatalf("the body's first bytes: %d %v", n, err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
		t.Errorf("reading the rest: %v, want %v", err, context.Canceled)
	}
	resp.Body.Close()
	if _, body := roundTrip(t, h, appRequest(t, "GET", app.addr, "/", "")); body != "ok" {
		t.Errorf("after: %q", body)
	}
	if n := app.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3: neither interrupted one used again", n)
	}
	// A request's context ends after its response was read (the server
	// cancels it when the handler returns): the connection, idle or
	// serving the next request by then, is not touched.
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		roundTrip(t, h, appRequest(t, "GET", app.addr, "/", "").WithContext(ctx))
		cancel()
	}
	if n := app.conns.Load(); n != 3 {
		t.Errorf("%d connections, want the third one used again after its requests' contexts ended", n)
	}
}

// TestAppH1Idle: a body closed before its end retires its connection; an
// idle connection is closed after IdleTimeout, and by
// CloseIdleConnections; at most MaxIdlePerHost are kept.
func TestAppH1Idle(t *testing.T) {
	app := newScriptedApp(t, func(_, _ int, r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
		return true
	})
	h, _ := newTestAppH1(t)
	resp, err := h.RoundTrip(appRequest(t, "GET", app.addr, "/", ""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // unread
	if got := <-app.eofs; got != 1 {
		t.Errorf("connection %d closed, want 1", got)
	}
	roundTrip(t, h, appRequest(t, "GET", app.addr, "/", ""))
	time.Sleep(100 * time.Millisecond) // well within the default idle timeout (90 s)
	roundTrip(t, h, appRequest(t, "GET", app.addr, "/", ""))
	if n := app.conns.Load(); n != 2 {
		t.Errorf("%d connections, want the second kept idle and used again", n)
	}
	h.CloseIdleConnections()
	if got := <-app.eofs; got != 2 {
		t.Errorf("connection %d closed, want 2", got)
	}
	h.IdleTimeout = 20 * time.Millisecond
	roundTrip(t, h, appRequest(t, "GET", app.addr, "/", ""))
	if got := <-app.eofs; got != 3 {
		t.Errorf("connection %d closed, want 3 (idle)", got)
	}
	h.mu.Lock()
	if n := len(h.idle[app.addr]); n != 0 {
		t.Errorf("the expired connection is still among the idle (%d)", n)
	}
	h.mu.Unlock()
	h.IdleTimeout, h.MaxIdlePerHost = time.Minute, 2
	var resps []*http.Response
	for range 3 {
		resp, err := h.RoundTrip(appRequest(t, "GET", app.addr, "/", ""))
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, resp)
	}
	for _, resp := range resps {
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if got := <-app.eofs; got != 6 {
		t.Errorf("connection %d closed, want 6 (the third idle)", got)
	}
	if n := len(h.idle[app.addr]); n != 2 {
		t.Errorf("%d idle, want 2", n)
	}
}

// TestAppH1Concurrent: requests at once on a pool of connections each get
// their own response (-race checks the pool).
func TestAppH1Concurrent(t *testing.T) {
	app := newScriptedApp(t, func(_, _ int, r *http.Request, w *bufio.Writer) bool {
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(r.URL.Path), r.URL.Path)
		return true
	})
	h, _ := newTestAppH1(t)
	h.MaxIdlePerHost = 3
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				p := fmt.Sprintf("/%d/%d", g, i)
				resp, err := h.RoundTrip(appRequest(t, "GET", app.addr, p, ""))
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != p {
					t.Errorf("%s answered %q", p, b)
				}
			}
		})
	}
	wg.Wait()
}

// FuzzAppH1Head: whatever a client sends through the sidecar, the bytes
// AppH1 writes for a request it serves are exactly net/http's
// (Request.Write, the transport's own writer) — so no field, method, URI
// or Host can put into them what net/http would not — and they read back
// as the same request.
func FuzzAppH1Head(f *testing.F) {
	f.Add("GET", "/", "", "X-A", " v ", "", "")
	f.Add("POST", "/a%20b", "q=1", "Content-Type", "text/plain", "server.demo:8080", "body")
	f.Add("DELETE", "/x", "", "X-B", "a\r\nX-C: 1", "", "")
	f.Add("G\x00T", "/\n", "a b", "X D", "\x7f", "a b", "")
	f.Add("OPTIONS", "*", "", "Te", "trailers", "[::1]:80", "")
	f.Fuzz(func(t *testing.T, method, path, query, key, value, host, body string) {
		if len(body) > MaxWholeBody {
			return
		}
		r := &http.Request{Method: method, URL: &url.URL{Scheme: "http", Host: "127.0.0.1:8080", Path: path, RawQuery: query},
			Host: host, Header: http.Header{"User-Agent": {""}, key: {value}}}
		if body != "" {
			r.ContentLength = int64(len(body))
		}
		head, ok := appendHead(nil, r, len(body))
		if !ok {
			return
		}
		head = append(head, body...)
		want := *r
		want.Header = r.Header.Clone()
		if body != "" {
			want.Body = io.NopCloser(strings.NewReader(body))
		}
		var std bytes.Buffer
		if err := want.Write(&std); err != nil {
			t.Fatalf("net/http refuses what AppH1 writes as\n%q: %v", head, err)
		}
		if !bytes.Equal(head, std.Bytes()) {
			t.Fatalf("AppH1 writes\n%q\nnet/http\n%q", head, std.Bytes())
		}
		got, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			if !strings.HasPrefix(path, "/") {
				return // "*", or a path no server gives (written by both alike; a server may refuse it)
			}
			t.Fatalf("%q does not read back: %v", head, err)
		}
		b, _ := io.ReadAll(got.Body)
		if got.Method != method || got.RequestURI != r.URL.RequestURI() || string(b) != body {
			t.Fatalf("%q reads back as %s %s %q", head, got.Method, got.RequestURI, b)
		}
	})
}

// closeRecorder is a request body that records its Close.
type closeRecorder struct {
	io.Reader
	closed atomic.Bool
}

func (c *closeRecorder) Close() error { c.closed.Store(true); return nil }

// TestAppH1RefusesWithoutSending: a request whose context has ended, with a
// body or without, and a request AppH1 cannot serve when it has no
// Fallback, each get an error — no panic, nothing dialled — and their
// bodies are closed, as a RoundTripper must.
func TestAppH1RefusesWithoutSending(t *testing.T) {
	var dials atomic.Int32
	h := &AppH1{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return nil, errors.New("dialled")
	}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.RoundTrip(appRequest(t, "GET", "127.0.0.1:1", "/", "").WithContext(ctx)); !errors.Is(err, context.Canceled) {
		t.Errorf("GET, context ended: %v, want %v", err, context.Canceled)
	}
	body := &closeRecorder{Reader: strings.NewReader("x")}
	r := appRequest(t, "POST", "127.0.0.1:1", "/", "").WithContext(ctx)
	r.Body, r.ContentLength = body, 1
	if _, err := h.RoundTrip(r); !errors.Is(err, context.Canceled) || !body.closed.Load() {
		t.Errorf("POST, context ended: %v, body closed %v; want %v, true", err, body.closed.Load(), context.Canceled)
	}
	body = &closeRecorder{Reader: strings.NewReader("x")}
	r = appRequest(t, "POST", "127.0.0.1:1", "/", "")
	r.Body, r.ContentLength = body, 1 // streamed: Fallback's
	if _, err := h.RoundTrip(r); err == nil || !body.closed.Load() {
		t.Errorf("no Fallback: %v, body closed %v; want an error, true", err, body.closed.Load())
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("%d dials", n)
	}
}

// TestWholeBodyReads: a body read whole reads as any body — its bytes,
// then io.EOF at once — for a transport other than AppH1 that is given it.
func TestWholeBodyReads(t *testing.T) {
	w := &wholeBody{b: []byte("abcdefg")}
	var got []byte
	buf := make([]byte, 3)
	for i := 0; ; i++ {
		if i > 10 {
			t.Fatalf("no io.EOF after %d reads (%q)", i, got)
		}
		n, err := w.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			if n != 0 {
				t.Errorf("io.EOF with %d bytes", n)
			}
			break
		}
		if err != nil || n == 0 {
			t.Fatalf("read %d: %d, %v", i, n, err)
		}
	}
	if string(got) != "abcdefg" || !w.read {
		t.Errorf("read %q (marked read: %v), want abcdefg, true", got, w.read)
	}
	if n, err := w.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("after the end: %d, %v", n, err)
	}
}
