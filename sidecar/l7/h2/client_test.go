package h2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// listen serves each connection accepted on a loopback listener with
// serveConn; it returns the address and the count of connections.
func listen(t testing.TB, serveConn func(c net.Conn)) (string, *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serveConn(c)
			}()
		}
	}()
	return l.Addr().String(), &n
}

// servers are the two HTTP/2 servers the client must interoperate with:
// x/net/http2's (net/http's own) and weft's, both h2c.
var servers = []struct {
	name  string
	serve func(t testing.TB, h http.Handler, maxStreams uint32) (string, *atomic.Int32)
}{
	{"x/net", func(t testing.TB, h http.Handler, maxStreams uint32) (string, *atomic.Int32) {
		s := &http2.Server{MaxConcurrentStreams: maxStreams}
		return listen(t, func(c net.Conn) { s.ServeConn(c, &http2.ServeConnOpts{Handler: h}) })
	}},
	{"weft", func(t testing.TB, h http.Handler, maxStreams uint32) (string, *atomic.Int32) {
		s := &Server{Handler: h, MaxConcurrentStreams: maxStreams}
		return listen(t, func(c net.Conn) { _ = s.ServeConn(context.Background(), c) })
	}},
}

func newClient(t testing.TB) *Transport {
	tr := &Transport{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// bufferedBody is a request body that has arrived whole, as this
// package's server's: the client sends it with its HEADERS.
type bufferedBody struct{ *bytes.Reader }

func (b bufferedBody) Buffered() (int, bool) { return b.Len(), true }
func (bufferedBody) Close() error            { return nil }

func newRequest(t testing.TB, ctx context.Context, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	return string(b)
}

func TestClientRequests(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			addr, _ := srv.serve(t, http.HandlerFunc(echo), 0)
			tr := newClient(t)
			// Windows of the initial size: bodies beyond them wait for
			// WINDOW_UPDATEs both ways.
			tr.StreamWindow, tr.ConnWindow = 65535, 65535
			big := strings.Repeat("0123456789abcdef", 3<<16) // 3 MiB
			for _, tc := range []struct {
				name, method string
				body         io.Reader
				want         string
			}{
				{"GET", "GET", nil, ""},
				{"a body arrived whole", "POST", bufferedBody{bytes.NewReader([]byte("whole"))}, "whole"},
				{"a body read as it comes", "PUT", strings.NewReader("streamed"), "streamed"},
				{"a body of unknown length", "POST", io.MultiReader(strings.NewReader("multi")), "multi"},
				{"beyond every window", "POST", strings.NewReader(big), big},
				{"beyond every window, arrived whole", "POST", bufferedBody{bytes.NewReader([]byte(big))}, big},
			} {
				// The guard: a window never given back fails the request
				// instead of hanging the test.
				ctx, cancel := context.WithTimeout(context.Background(), acGuard)
				req := newRequest(t, ctx, tc.method, "http://"+addr+"/p?q=1", tc.body)
				req.Host = "app.example"
				resp, err := tr.RoundTrip(req)
				if err != nil {
					cancel()
					t.Fatalf("%s: %v", tc.name, err)
				}
				got := readAllGuarded(t, resp) // the context's AfterFunc ends with the response
				cancel()
				if resp.StatusCode != 200 || got != tc.want || resp.ProtoMajor != 2 || resp.Header.Get("X-Method") != tc.method ||
					resp.Header.Get("X-Path") != "/p?q=1" || resp.Header.Get("X-Host") != "app.example" {
					t.Errorf("%s: %s %s, method %q path %q host %q, body of %d bytes (want %d)", tc.name, resp.Proto, resp.Status,
						resp.Header.Get("X-Method"), resp.Header.Get("X-Path"), resp.Header.Get("X-Host"), len(got), len(tc.want))
				}
			}
		})
	}
}

func TestClientHeadAndLengths(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			addr, _ := srv.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "5")
				if r.Header.Get("Content-Length") != "" {
					w.Header().Set("X-Got-Length", r.Header.Get("Content-Length"))
				}
				io.WriteString(w, "hello")
			}), 0)
			tr := newClient(t)
			resp, err := tr.RoundTrip(newRequest(t, context.Background(), "HEAD", "http://"+addr+"/", nil))
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, resp); got != "" || resp.ContentLength != 5 {
				t.Errorf("HEAD: body %q, ContentLength %d; want none, 5", got, resp.ContentLength)
			}
			resp, err = tr.RoundTrip(newRequest(t, context.Background(), "POST", "http://"+addr+"/", strings.NewReader("abc")))
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, resp); got != "hello" || resp.ContentLength != 5 || resp.Header.Get("X-Got-Length") != "3" {
				t.Errorf("POST: body %q, ContentLength %d, the server saw content-length %q; want hello, 5, 3", got, resp.ContentLength, resp.Header.Get("X-Got-Length"))
			}
			// A POST, PUT or PATCH without a body says content-length: 0,
			// as net/http's and x/net's transports do; other methods say
			// nothing.
			for _, m := range []struct{ method, want string }{{"POST", "0"}, {"PUT", "0"}, {"PATCH", "0"}, {"GET", ""}, {"DELETE", ""}, {"OPTIONS", ""}} {
				resp, err = tr.RoundTrip(newRequest(t, context.Background(), m.method, "http://"+addr+"/", nil))
				if err != nil {
					t.Fatal(err)
				}
				readAll(t, resp)
				if got := resp.Header.Get("X-Got-Length"); got != m.want {
					t.Errorf("%s without a body: the server saw content-length %q, want %q", m.method, got, m.want)
				}
			}
		})
	}
}

func TestClientTrailers(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			addr, _ := srv.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", "X-Echo")
				b, _ := io.ReadAll(r.Body)
				w.Write(b)
				w.Header().Set("X-Echo", r.Trailer.Get("X-Sum"))
			}), 0)
			tr := newClient(t)
			for _, whole := range []string{"whole", "declared length", "read, its end with the last bytes"} {
				var body io.Reader
				switch whole {
				case "whole":
					body = bufferedBody{bytes.NewReader([]byte("payload"))}
				case "declared length":
					body = strings.NewReader("payload")
				default: // sent by the body's writer, the trailers after its last DATA
					body = iotest.DataErrReader(strings.NewReader("payload"))
				}
				// The guard: trailers never sent fail the request instead
				// of hanging the test.
				ctx, cancel := context.WithTimeout(context.Background(), acGuard)
				req := newRequest(t, ctx, "POST", "http://"+addr+"/", body)
				req.Trailer = http.Header{"X-Sum": {"42"}}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					cancel()
					t.Fatal(err)
				}
				if _, ok := resp.Trailer["X-Echo"]; !ok {
					t.Errorf("%s: the declared trailer is not in resp.Trailer before the body's end: %v", whole, resp.Trailer)
				}
				if got := readAllGuarded(t, resp); got != "payload" || resp.Trailer.Get("X-Echo") != "42" {
					t.Errorf("%s: body %q, trailer X-Echo %q; want payload, 42", whole, got, resp.Trailer.Get("X-Echo"))
				}
				cancel()
			}
		})
	}
}

func TestClientConcurrentStreams(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			addr, conns := srv.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(20 * time.Millisecond)
				echo(w, r)
			}), 10)
			tr := newClient(t)
			// One connection first: its SETTINGS (10 streams) known.
			resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			var wg sync.WaitGroup
			errs := make(chan error, 100)
			for i := range 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					want := fmt.Sprint("body ", i)
					resp, err := tr.RoundTrip(newRequest(t, context.Background(), "POST", "http://"+addr+"/", strings.NewReader(want)))
					if err != nil {
						errs <- err
						return
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || string(b) != want {
						errs <- fmt.Errorf("got %q (%v), want %q", b, err, want)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			// 100 at once, 10 a connection: more connections were dialled,
			// not one a request (x/net's server refuses a stream or two
			// past its limit while it has not yet counted the streams it
			// ended: the client leaves such a connection until one of its
			// streams closes).
			if n := conns.Load(); n < 2 || n > 20 {
				t.Errorf("%d connections for 100 concurrent requests at 10 streams each", n)
			}
		})
	}
}

func TestClientFullDuplex(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			addr, _ := srv.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(200)
				w.(http.Flusher).Flush()
				buf := make([]byte, 64)
				for {
					n, err := r.Body.Read(buf)
					if n > 0 {
						w.Write(buf[:n])
						w.(http.Flusher).Flush()
					}
					if err != nil {
						return
					}
				}
			}), 0)
			tr := newClient(t)
			pr, pw := io.Pipe()
			// The response comes before the body's first byte: a client
			// that waited for it would wait until the guard.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := tr.RoundTrip(newRequest(t, ctx, "POST", "http://"+addr+"/", pr))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				msg := fmt.Sprint("ping ", i)
				if _, err := io.WriteString(pw, msg); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, len(msg))
				if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != msg {
					t.Fatalf("round %d: %q, %v", i, buf, err)
				}
			}
			pw.Close()
			if rest := readAll(t, resp); rest != "" {
				t.Errorf("after the request's end: %q", rest)
			}
		})
	}
}

func TestClientCancel(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			handlerDone := make(chan error, 2)
			addr, _ := srv.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/stream" {
					for r.Context().Err() == nil {
						if _, err := w.Write(make([]byte, 1024)); err != nil {
							break
						}
						w.(http.Flusher).Flush()
					}
				}
				select {
				case <-r.Context().Done():
					handlerDone <- r.Context().Err()
				case <-time.After(acGuard): // the hang guard: the stream was never reset
					handlerDone <- errors.New("no reset")
				}
			}), 0)
			tr := newClient(t)
			// Cancelled while waiting for the response head.
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			if _, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/wait", nil)); !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled before the response: %v, want context.Canceled", err)
			}
			select {
			case <-handlerDone:
			case <-time.After(10 * time.Second):
				t.Fatal("the server's handler never saw the stream reset")
			}
			// The body closed before its end resets the stream.
			resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/stream", nil))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
				t.Error("a read after Close succeeded")
			}
			select {
			case <-handlerDone:
			case <-time.After(10 * time.Second):
				t.Fatal("the server's handler never saw the closed body's reset")
			}
			// The connection serves on.
			resp, err = tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/stream", nil))
			if err != nil {
				t.Fatalf("after the resets: %v", err)
			}
			resp.Body.Close()
		})
	}
}

func TestClientInterim(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			addr, _ := srv.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusContinue) // the lowest :status there is
				w.Header().Set("Link", "</style.css>; rel=preload")
				w.WriteHeader(http.StatusEarlyHints)
				w.Header().Del("Link")
				io.WriteString(w, "final")
			}), 0)
			tr := newClient(t)
			var got []string
			guard, cancel := context.WithTimeout(context.Background(), acGuard)
			defer cancel()
			ctx := httptrace.WithClientTrace(guard, &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				got = append(got, fmt.Sprint(code, " ", h.Get("Link")))
				return nil
			}})
			resp, err := roundTripGuarded(t, tr, newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
			if err != nil {
				t.Fatal(err)
			}
			if body := readAll(t, resp); body != "final" || len(got) != 2 || got[0] != "100 " || got[1] != "103 </style.css>; rel=preload" {
				t.Errorf("interim %q, final %q; want 100, 103 with its Link, then final", got, body)
			}
			// Got1xxResponse's error ends the request with it, as
			// net/http's transport does.
			refused := errors.New("no interim responses, thanks")
			ctx = httptrace.WithClientTrace(guard, &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error { return refused }})
			if resp, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil)); !errors.Is(err, refused) {
				if err == nil {
					resp.Body.Close()
				}
				t.Errorf("Got1xxResponse refusing the interim response: the request %v, want its error", err)
			}
		})
	}
}

func TestClientIdleTimeout(t *testing.T) {
	goneAway := make(chan http2.ErrCode, 1)
	addr, _ := listen(t, func(c net.Conn) {
		rs := acceptRaw(t, c)
		id := rs.readHeaders()
		rs.headers(id, true, ":status", "204")
		f := rs.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
		goneAway <- f.(*http2.GoAwayFrame).ErrCode
	})
	tr := newClient(t)
	tr.IdleTimeout = 50 * time.Millisecond
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case code := <-goneAway:
		if code != http2.ErrCodeNo {
			t.Errorf("idle GOAWAY %v, want NO_ERROR", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("an idle connection was never closed")
	}
}

// acceptRaw reads a client's preface from c and answers with an empty
// SETTINGS: a scripted server.
func acceptRaw(t testing.TB, c net.Conn) *rawConn {
	var pre [len(ClientPreface)]byte
	if _, err := io.ReadFull(c, pre[:]); err != nil || string(pre[:]) != ClientPreface {
		t.Errorf("preface %q, %v", pre, err)
	}
	rc := &rawConn{t: t.(*testing.T), c: c, fr: http2.NewFramer(c, c)}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.he = hpack.NewEncoder(&rc.hb)
	rc.fr.WriteSettings()
	return rc
}

// readHeaders reads frames until a request's HEADERS: its stream.
func (rc *rawConn) readHeaders() uint32 {
	rc.t.Helper()
	return rc.until("request HEADERS", func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok }).Header().StreamID
}

// nextHeaders is readHeaders for a server that serves until the client
// goes: false when the connection ended.
func (rc *rawConn) nextHeaders() (uint32, bool) {
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			return 0, false
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			return h.StreamID, true
		}
	}
}

// hostile runs script as the server of every connection (n counts them)
// and sends one request; it returns RoundTrip's error, or the body's
// read error, and the connections made.
func hostile(t *testing.T, tr *Transport, req func(addr string) *http.Request, script func(rs *rawConn, n int32)) (error, int32) {
	t.Helper()
	var conns atomic.Int32
	addr, _ := listen(t, func(c net.Conn) {
		n := conns.Add(1)
		script(acceptRaw(t, c), n)
	})
	resp, err := roundTripGuarded(t, tr, req(addr))
	if err != nil {
		return err, conns.Load()
	}
	_, err = readGuarded(t, resp)
	return err, conns.Load()
}

func getReq(t *testing.T) func(addr string) *http.Request {
	return func(addr string) *http.Request {
		return newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil)
	}
}

// The rules RFC 9113 sets a server, each broken by a hostile one: the
// client refuses the response (a stream error) or the connection (GOAWAY
// with the code), never takes it.
func TestClientRefusesProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(rs *rawConn, id uint32)
		stream http2.ErrCode // the RST_STREAM expected, or
		conn   http2.ErrCode // the GOAWAY expected
	}{
		{"PUSH_PROMISE", func(rs *rawConn, id uint32) {
			rs.hb.Reset()
			rs.he.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
			rs.fr.WritePushPromise(http2.PushPromiseParam{StreamID: id, PromiseID: 2, BlockFragment: rs.hb.Bytes(), EndHeaders: true})
		}, 0, http2.ErrCodeProtocol},
		{"HEADERS on an idle stream", func(rs *rawConn, id uint32) { rs.headers(id+2, true, ":status", "200") }, 0, http2.ErrCodeProtocol},
		{"DATA on an idle stream", func(rs *rawConn, id uint32) { rs.fr.WriteData(id+2, true, []byte("x")) }, 0, http2.ErrCodeProtocol},
		{"RST_STREAM on an idle stream", func(rs *rawConn, id uint32) { rs.fr.WriteRSTStream(id+2, http2.ErrCodeCancel) }, 0, http2.ErrCodeProtocol},
		{"WINDOW_UPDATE on an idle stream", func(rs *rawConn, id uint32) { rs.fr.WriteWindowUpdate(id+2, 1) }, 0, http2.ErrCodeProtocol},
		{"the connection's window past 2^31-1", func(rs *rawConn, id uint32) { rs.fr.WriteWindowUpdate(0, 1<<31-1) }, 0, http2.ErrCodeFlowControl},
		{"a stream's window past 2^31-1", func(rs *rawConn, id uint32) { rs.fr.WriteWindowUpdate(id, 1<<31-1) }, http2.ErrCodeFlowControl, 0},
		{"SETTINGS_ENABLE_PUSH 1", func(rs *rawConn, id uint32) {
			rs.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 1})
		}, 0, http2.ErrCodeProtocol},
		{"SETTINGS_INITIAL_WINDOW_SIZE overflowing a stream's window", func(rs *rawConn, id uint32) {
			rs.fr.WriteWindowUpdate(id, 1<<31-1-65535)
			rs.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536})
		}, 0, http2.ErrCodeFlowControl},
		{"DATA before the response's HEADERS", func(rs *rawConn, id uint32) { rs.fr.WriteData(id, true, []byte("x")) }, http2.ErrCodeProtocol, 0},
		{"a request pseudo-header in the response", func(rs *rawConn, id uint32) { rs.headers(id, true, ":status", "200", ":path", "/") }, http2.ErrCodeProtocol, 0},
		{"no :status", func(rs *rawConn, id uint32) { rs.headers(id, true, "x-a", "b") }, http2.ErrCodeProtocol, 0},
		{":status of four digits", func(rs *rawConn, id uint32) { rs.headers(id, true, ":status", "2000") }, http2.ErrCodeProtocol, 0},
		{"a connection-specific field", func(rs *rawConn, id uint32) { rs.headers(id, true, ":status", "200", "connection", "close") }, http2.ErrCodeProtocol, 0},
		{"an interim response ending the stream", func(rs *rawConn, id uint32) { rs.headers(id, true, ":status", "103") }, http2.ErrCodeProtocol, 0},
		{"too many interim responses", func(rs *rawConn, id uint32) {
			for range maxInterim + 1 {
				rs.headers(id, false, ":status", "103")
			}
		}, http2.ErrCodeProtocol, 0},
		{"DATA past the content-length", func(rs *rawConn, id uint32) {
			rs.headers(id, false, ":status", "200", "content-length", "5")
			rs.fr.WriteData(id, true, []byte("0123456789"))
		}, http2.ErrCodeProtocol, 0},
		{"a body shorter than the content-length", func(rs *rawConn, id uint32) {
			rs.headers(id, false, ":status", "200", "content-length", "10")
			rs.fr.WriteData(id, true, []byte("01234"))
		}, http2.ErrCodeProtocol, 0},
		{"trailers after a short body", func(rs *rawConn, id uint32) {
			rs.headers(id, false, ":status", "200", "content-length", "10")
			rs.fr.WriteData(id, false, []byte("01234"))
			rs.headers(id, true, "x-t", "1")
		}, http2.ErrCodeProtocol, 0},
		{"trailers that do not end the stream", func(rs *rawConn, id uint32) {
			rs.headers(id, false, ":status", "200")
			rs.headers(id, false, "x-t", "1")
		}, http2.ErrCodeProtocol, 0},
		{"DATA beyond the stream's window", func(rs *rawConn, id uint32) {
			// One frame (the client allows 1 MiB ones) one byte past the
			// window: no WINDOW_UPDATE can come between.
			rs.headers(id, false, ":status", "200")
			rs.fr.WriteData(id, true, make([]byte, 65536))
		}, http2.ErrCodeFlowControl, 0},
		{"DATA past a content-length of 0", func(rs *rawConn, id uint32) {
			rs.headers(id, false, ":status", "200", "content-length", "0")
			rs.fr.WriteData(id, true, []byte("x"))
		}, http2.ErrCodeProtocol, 0},
		{"content-length fields that differ", func(rs *rawConn, id uint32) {
			rs.headers(id, false, ":status", "200", "content-length", "5", "content-length", "6")
			rs.fr.WriteData(id, true, []byte("hello"))
		}, http2.ErrCodeProtocol, 0},
		{"content-length with END_STREAM on the HEADERS", func(rs *rawConn, id uint32) {
			rs.headers(id, true, ":status", "200", "content-length", "3")
		}, http2.ErrCodeProtocol, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newClient(t)
			tr.StreamWindow = 65535
			got := make(chan http2.Frame, 1)
			err, _ := hostile(t, tr, getReq(t), func(rs *rawConn, _ int32) {
				id := rs.readHeaders()
				tc.script(rs, id)
				match := goAway(tc.conn)
				if tc.stream != 0 {
					match = rst(id, tc.stream)
				}
				got <- rs.until(fmt.Sprintf("RST_STREAM %v / GOAWAY %v", tc.stream, tc.conn), match)
			})
			if err == nil {
				t.Error("the response was taken")
			}
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("no answer")
			}
		})
	}
}

// A stream error leaves the connection serving: a response whose header
// list is too large fails alone.
func TestClientHeaderListTooLarge(t *testing.T) {
	tr := newClient(t)
	tr.MaxHeaderListSize = 1024
	var requests atomic.Int32
	reset := make(chan http2.ErrCode, 1)
	addr, conns := listen(t, func(c net.Conn) {
		rs := acceptRaw(t, c)
		for {
			f, err := rs.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.RSTStreamFrame:
				reset <- f.ErrCode
			case *http2.MetaHeadersFrame:
				if requests.Add(1) == 1 {
					var big []string
					for i := range 40 {
						big = append(big, fmt.Sprint("x-f", i), strings.Repeat("b", 100))
					}
					rs.headers(f.StreamID, true, append([]string{":status", "200"}, big...)...)
					continue
				}
				rs.headers(f.StreamID, true, ":status", "204")
			}
		}
	})
	if _, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil)); err == nil {
		t.Fatal("a response past MaxHeaderListSize was taken")
	}
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
	if err != nil || resp.StatusCode != 204 || conns.Load() != 1 {
		t.Fatalf("the next request: %v, %d connections; want 204 on the same one", err, conns.Load())
	}
	select {
	case code := <-reset:
		if code != http2.ErrCodeCancel {
			t.Errorf("the refused response's stream reset with %v, want CANCEL", code)
		}
	case <-time.After(10 * time.Second):
		t.Error("the refused response's stream was never reset")
	}
}

// A request the server did not process is sent again — on the same
// connection after REFUSED_STREAM, on a new one after a GOAWAY that
// excludes it — with its body when the client holds it or never read it;
// a body partly sent makes it fail as ErrUnprocessed.
func TestClientResendsUnprocessed(t *testing.T) {
	serveSecond := func(refuse func(rs *rawConn, id uint32)) func(rs *rawConn) {
		var tries atomic.Int32
		return func(rs *rawConn) {
			for {
				id, ok := rs.nextHeaders()
				if !ok {
					return
				}
				if tries.Add(1) == 1 {
					refuse(rs, id)
					continue
				}
				var body []byte
				for {
					f := rs.until("DATA", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok })
					body = append(body, f.(*http2.DataFrame).Data()...)
					if f.(*http2.DataFrame).StreamEnded() {
						break
					}
				}
				rs.headers(id, false, ":status", "200")
				rs.fr.WriteData(id, true, body)
			}
		}
	}
	refused := func(rs *rawConn, id uint32) { rs.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) }
	goneAway := func(rs *rawConn, id uint32) { rs.fr.WriteGoAway(0, http2.ErrCodeNo, nil) }
	post := func(body func() io.Reader) func(addr string) *http.Request {
		return func(addr string) *http.Request {
			return newRequest(t, context.Background(), "POST", "http://"+addr+"/", body())
		}
	}
	whole := func() io.Reader { return bufferedBody{bytes.NewReader([]byte("payload"))} }
	for _, tc := range []struct {
		name  string
		body  func() io.Reader
		first func(rs *rawConn, id uint32)
		conns int32
	}{
		{"REFUSED_STREAM, a body held", whole, refused, 1},
		{"GOAWAY, a body held", whole, goneAway, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newClient(t)
			var got string
			serve := serveSecond(tc.first)
			addr, conns := listen(t, func(c net.Conn) { serve(acceptRaw(t, c)) })
			resp, err := roundTripGuarded(t, tr, post(tc.body)(addr))
			if err == nil {
				got = readAll(t, resp)
			}
			if err != nil || got != "payload" || conns.Load() != tc.conns {
				t.Errorf("%v, %q over %d connections; want the body echoed over %d", err, got, conns.Load(), tc.conns)
			}
		})
	}
	t.Run("a body partly sent", func(t *testing.T) {
		tr := newClient(t)
		pr, pw := io.Pipe()
		go func() {
			io.WriteString(pw, "part")
			time.Sleep(100 * time.Millisecond)
			pw.Close()
		}()
		addr, _ := listen(t, func(c net.Conn) {
			rs := acceptRaw(t, c)
			id := rs.readHeaders()
			rs.until("DATA", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok })
			rs.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
			io.Copy(io.Discard, c)
		})
		_, err := tr.RoundTrip(newRequest(t, context.Background(), "POST", "http://"+addr+"/", pr))
		if !errors.Is(err, ErrUnprocessed) {
			t.Errorf("%v, want ErrUnprocessed", err)
		}
	})
	t.Run("refused every time", func(t *testing.T) {
		tr := newClient(t)
		var tries atomic.Int32
		addr, _ := listen(t, func(c net.Conn) {
			rs := acceptRaw(t, c)
			for {
				id, ok := rs.nextHeaders()
				if !ok {
					return
				}
				tries.Add(1)
				rs.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
			}
		})
		// The guard ends a client that would try for ever.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
		if !errors.Is(err, ErrUnprocessed) || tries.Load() != maxUnprocessedTries {
			t.Errorf("%v after %d tries, want ErrUnprocessed after %d", err, tries.Load(), maxUnprocessedTries)
		}
	})
}

// A GOAWAY lets the streams it covers finish; new requests go to a new
// connection.
func TestClientGoAwayDrains(t *testing.T) {
	tr := newClient(t)
	release := make(chan struct{})
	var first atomic.Bool
	addr, conns := listen(t, func(c net.Conn) {
		rs := acceptRaw(t, c)
		id := rs.readHeaders()
		if first.CompareAndSwap(false, true) {
			rs.fr.WriteGoAway(id, http2.ErrCodeNo, nil)
			rs.headers(id, false, ":status", "200")
			<-release
			rs.fr.WriteData(id, true, []byte("drained"))
			io.Copy(io.Discard, c)
			return
		}
		rs.headers(id, true, ":status", "204")
		io.Copy(io.Discard, c)
	})
	// The first connection's server is let go when the test fails too
	// (listen's cleanup waits for it).
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	t.Cleanup(let)
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	// The connection is going away: the next request dials.
	resp2, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
	if err != nil || resp2.StatusCode != 204 || conns.Load() != 2 {
		t.Fatalf("after GOAWAY: %v, %d connections", err, conns.Load())
	}
	let()
	if got := readAll(t, resp); got != "drained" {
		t.Errorf("the stream the GOAWAY covered: %q, want drained", got)
	}
}

// Control frames are answered: PING with its ACK, SETTINGS with its ACK.
func TestClientAnswersControlFrames(t *testing.T) {
	tr := newClient(t)
	err, _ := hostile(t, tr, getReq(t), func(rs *rawConn, _ int32) {
		id := rs.readHeaders()
		rs.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
		rs.until("PING ACK", func(f http2.Frame) bool {
			p, ok := f.(*http2.PingFrame)
			return ok && p.IsAck() && p.Data == [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
		})
		rs.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
		rs.until("SETTINGS ACK", func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() })
		rs.headers(id, true, ":status", "204")
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A server that stops reading cannot hold a request past its context.
func TestClientNonReadingServer(t *testing.T) {
	tr := newClient(t)
	addr, _ := listen(t, func(c net.Conn) {
		acceptRaw(t, c)
		time.Sleep(2 * time.Second) // reads nothing more
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := tr.RoundTrip(newRequest(t, ctx, "POST", "http://"+addr+"/", io.MultiReader(strings.NewReader(strings.Repeat("x", 8<<20)))))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v, want the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("RoundTrip returned after %v", d)
	}
}

// A server's SETTINGS_MAX_CONCURRENT_STREAMS is kept: past it, another
// connection.
func TestClientKeepsMaxConcurrentStreams(t *testing.T) {
	tr := newClient(t)
	hold := make(chan struct{})
	addr, conns := listen(t, func(c net.Conn) {
		var pre [len(ClientPreface)]byte
		io.ReadFull(c, pre[:])
		rs := &rawConn{t: t, c: c, fr: http2.NewFramer(c, c)}
		rs.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		rs.he = hpack.NewEncoder(&rs.hb)
		// The client has these SETTINGS before the first response.
		rs.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
		for {
			id, ok := rs.nextHeaders()
			if !ok {
				return
			}
			rs.headers(id, false, ":status", "200")
			<-hold
			rs.fr.WriteData(id, true, nil)
		}
	})
	first, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	second, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	close(hold)
	readAll(t, first)
	readAll(t, second)
	if n := conns.Load(); n != 2 {
		t.Errorf("two streams at once over %d connections, the server allowing one a connection", n)
	}
}

// countingConn counts the Writes made on it.
type countingConn struct {
	net.Conn
	writes *atomic.Int32
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// A request whose body the client has whole — none, one arrived whole
// (BufferedBody), a small one of declared length — is written in one
// Write with its HEADERS, its trailers too; a body of unknown length is
// sent as it comes.
func TestClientWritesAWholeRequestOnce(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			addr, _ := srv.serve(t, http.HandlerFunc(echo), 0)
			var writes atomic.Int32
			tr := &Transport{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				return countingConn{c, &writes}, err
			}}
			t.Cleanup(tr.CloseIdleConnections)
			send := func(body io.Reader, trailer http.Header) int32 {
				t.Helper()
				req := newRequest(t, context.Background(), "POST", "http://"+addr+"/", body)
				req.Trailer = trailer
				before := writes.Load()
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				readAll(t, resp)
				return writes.Load() - before
			}
			send(nil, nil) // the connection, its SETTINGS answered
			for _, tc := range []struct {
				name    string
				body    io.Reader
				trailer http.Header
				want    int32
			}{
				{"no body", nil, nil, 1},
				{"arrived whole", bufferedBody{bytes.NewReader([]byte("whole"))}, nil, 1},
				{"arrived whole, with trailers", bufferedBody{bytes.NewReader([]byte("whole"))}, http.Header{"X-T": {"1"}}, 1},
				{"arrived whole, bufferSize bytes", bufferedBody{bytes.NewReader(bytes.Repeat([]byte("b"), bufferSize))}, nil, 1},
				{"a small body of declared length", strings.NewReader("declared"), nil, 1},
				{"a body of declared length, bufferSize bytes", strings.NewReader(strings.Repeat("d", bufferSize)), nil, 1},
			} {
				if n := send(tc.body, tc.trailer); n != tc.want {
					t.Errorf("%s: %d Writes, want %d", tc.name, n, tc.want)
				}
			}
			pr, pw := io.Pipe()
			go func() {
				io.WriteString(pw, "one")
				time.Sleep(20 * time.Millisecond)
				io.WriteString(pw, "two")
				pw.Close()
			}()
			if n := send(pr, nil); n < 3 {
				t.Errorf("a body of unknown length, in two parts: %d Writes, want its HEADERS and each part apart", n)
			}
		})
	}
}

// Buffered tells what a response body's next reads return at once.
func TestClientBodyBuffered(t *testing.T) {
	release := make(chan struct{})
	addr, _ := servers[1].serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second")
	}), 0)
	// The handler is let go when the test fails too (the server's cleanup
	// waits for it).
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	t.Cleanup(let)
	tr := newClient(t)
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	b := resp.Body.(BufferedBody)
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := b.Buffered(); n != 5 && time.Now().Before(deadline); n, _ = b.Buffered() {
		time.Sleep(time.Millisecond)
	}
	if n, end := b.Buffered(); n != 5 || end {
		t.Fatalf("after the first part: %d, %v; want 5, false", n, end)
	}
	io.ReadFull(resp.Body, make([]byte, 5))
	if n, end := b.Buffered(); n != 0 || end {
		t.Errorf("read: %d, %v; want 0, false", n, end)
	}
	let()
	for _, end := b.Buffered(); !end && time.Now().Before(deadline); _, end = b.Buffered() {
		time.Sleep(time.Millisecond)
	}
	if n, end := b.Buffered(); n != 6 || !end {
		t.Errorf("at the end: %d, %v; want 6, true", n, end)
	}
	resp.Body.Close()
	if n, end := b.Buffered(); n != 0 || end {
		t.Errorf("closed: %d, %v; want 0, false", n, end)
	}
}
