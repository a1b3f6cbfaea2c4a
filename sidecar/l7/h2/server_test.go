package h2

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
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
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// serve starts s on a loopback listener, each connection served with
// ServeConn; it returns the address.
func serve(t testing.TB, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close() // a client may keep its connection: Serve returns once it is closed
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
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = s.ServeConn(context.Background(), c)
			}()
		}
	}()
	return l.Addr().String()
}

// h2cClient is x/net/http2's transport speaking prior-knowledge HTTP/2 in
// the clear: net/http's own client, the peer weft's server must serve.
func h2cClient(t testing.TB) *http.Client {
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, n, a)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func echo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Path", r.URL.RequestURI())
	w.Header().Set("X-Host", r.Host)
	io.Copy(w, r.Body)
}

func TestServeRequests(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(echo)})
	c := h2cClient(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 5<<16) // 5 MiB: beyond every window, both ways
	for _, tc := range []struct {
		method, path string
		body         []byte
	}{
		{"GET", "/a?b=c", nil},
		{"POST", "/small", []byte("hello")},
		{"PUT", "/big", big},
		{"DELETE", "/x%20y", nil},
	} {
		req, _ := http.NewRequest(tc.method, "http://"+addr+tc.path, bytes.NewReader(tc.body))
		if tc.body == nil {
			req.Body = nil
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || !bytes.Equal(got, tc.body) || res.StatusCode != 200 || res.ProtoMajor != 2 {
			t.Errorf("%s %s: %d %s, %d bytes back (want %d), %v", tc.method, tc.path, res.StatusCode, res.Proto, len(got), len(tc.body), err)
		}
		if res.Header.Get("X-Method") != tc.method || res.Header.Get("X-Path") != tc.path || res.Header.Get("X-Host") != addr {
			t.Errorf("%s %s: the handler saw %v", tc.method, tc.path, res.Header)
		}
	}
}

// Many requests at once on one connection, each its own answer.
func TestServeConcurrentStreams(t *testing.T) {
	var conns atomic.Int32
	addr := serve(t, &Server{Handler: http.HandlerFunc(echo), Context: func(net.Conn) context.Context {
		conns.Add(1)
		return context.Background()
	}})
	c := h2cClient(t)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := strings.Repeat(fmt.Sprint(i), 1000+i*37)
			res, err := c.Post("http://"+addr+"/", "text/plain", strings.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			got, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || string(got) != body {
				errs <- fmt.Errorf("request %d: %d bytes back, %v", i, len(got), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want the client's one", n)
	}
}

// Trailers both ways: the request's reach the handler once its body ends;
// the response's, declared or with http.TrailerPrefix, reach the client.
func TestServeTrailers(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "Grpc-Status")
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		io.WriteString(w, "body")
		w.Header().Set("Grpc-Status", r.Trailer.Get("X-Sum"))
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})})
	req, _ := http.NewRequest("POST", "http://"+addr+"/", io.MultiReader(strings.NewReader("abc")))
	req.Trailer = http.Header{"X-Sum": nil}
	pr, pw := io.Pipe()
	req.Body = pr
	go func() {
		io.WriteString(pw, "abc")
		req.Trailer.Set("X-Sum", "7")
		pw.Close()
	}()
	res, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(got) != "body" || res.Trailer.Get("Grpc-Status") != "7" || res.Trailer.Get("X-Late") != "late" {
		t.Errorf("got %q, trailers %v", got, res.Trailer)
	}
}

// A full-duplex exchange: the handler answers each line of the request
// body as it comes, flushing, before the body ends.
func TestServeFullDuplex(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			fmt.Fprintf(w, "echo %s\n", sc.Text())
			w.(http.Flusher).Flush()
		}
	})})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "http://"+addr+"/", pr)
	res, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(res.Body)
	for i := range 5 {
		fmt.Fprintf(pw, "line %d\n", i)
		l, err := br.ReadString('\n')
		if err != nil || l != fmt.Sprintf("echo line %d\n", i) {
			t.Fatalf("round %d: %q, %v", i, l, err)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil {
		t.Errorf("after the request ended: %q, %v", rest, err)
	}
	res.Body.Close()
}

// A client that gives up on a request resets its stream: the handler's
// context ends.
func TestServeClientCancel(t *testing.T) {
	ended := make(chan error, 1)
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			ended <- context.Cause(r.Context())
		case <-time.After(10 * time.Second):
			ended <- errors.New("the handler's context did not end")
		}
	})})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	res, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	res.Body.Close()
	if err := <-ended; !errors.Is(err, errStreamReset) {
		t.Errorf("the handler's context ended with %v, want the client's reset", err)
	}
}

// Interim responses go out at once; the final one after them.
func TestServeInterim(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.WriteHeader(http.StatusCreated)
	})})
	var got []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		got = append(got, fmt.Sprint(code, " ", h.Get("Link")))
		return nil
	}})
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	res, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 201 || len(got) != 1 || got[0] != "103 </style.css>; rel=preload" || res.Header.Get("Link") != "" {
		t.Errorf("status %d, interim %q, final Link %q", res.StatusCode, got, res.Header.Get("Link"))
	}
}

// rawConn is a hostile client: frames written and read by hand.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	fr *http2.Framer
	hb bytes.Buffer
	he *hpack.Encoder
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c, fr: http2.NewFramer(c, c)}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.he = hpack.NewEncoder(&rc.hb)
	if _, err := io.WriteString(c, ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (rc *rawConn) headers(id uint32, end bool, fields ...string) {
	rc.t.Helper()
	rc.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		rc.he.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.hb.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		rc.t.Fatal(err)
	}
}

func get(path string) []string {
	return []string{":method", "GET", ":scheme", "http", ":authority", "app", ":path", path}
}

// until reads frames until match says it has what it waits for, or the
// connection ends (then it fails the test with what it read).
func (rc *rawConn) until(what string, match func(http2.Frame) bool) http2.Frame {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var seen []string
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			rc.t.Fatalf("waiting for %s: %v (read %v)", what, err, seen)
		}
		if match(f) {
			return f
		}
		seen = append(seen, fmt.Sprintf("%v", f.Header()))
	}
}

func goAway(code http2.ErrCode) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		return ok && g.ErrCode == code
	}
}

func rst(id uint32, code http2.ErrCode) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == id && r.ErrCode == code
	}
}

func status(id uint32, code string) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == id && h.PseudoValue("status") == code
	}
}

// The rules RFC 9113 sets the client, each broken by a hostile one.
func TestServeRefusesProtocolErrors(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(echo), MaxHeaderListSize: 4096})
	t.Run("even stream", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(2, true, get("/")...)
		rc.until("GOAWAY(PROTOCOL_ERROR)", goAway(http2.ErrCodeProtocol))
	})
	t.Run("stream id going back", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(5, true, get("/")...)
		rc.until("the answer", status(5, "200"))
		rc.headers(3, true, get("/")...)
		rc.until("RST_STREAM(STREAM_CLOSED)", rst(3, http2.ErrCodeStreamClosed))
	})
	t.Run("missing :path", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "app")
		rc.until("RST_STREAM(PROTOCOL_ERROR)", rst(1, http2.ErrCodeProtocol))
	})
	t.Run("connection-specific field", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(1, true, append(get("/"), "transfer-encoding", "chunked")...)
		rc.until("RST_STREAM(PROTOCOL_ERROR)", rst(1, http2.ErrCodeProtocol))
	})
	t.Run("te other than trailers", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(1, true, append(get("/"), "te", "gzip")...)
		rc.until("RST_STREAM(PROTOCOL_ERROR)", rst(1, http2.ErrCodeProtocol))
	})
	t.Run("header list too large", func(t *testing.T) {
		rc := dialRaw(t, addr)
		// Three fields of 2,000 bytes: each fits, the list (4,096) not.
		x := strings.Repeat("x", 2000)
		rc.headers(1, true, append(get("/"), "x-a", x, "x-b", x, "x-c", x)...)
		rc.until("431", status(1, "431"))
		// The connection serves on.
		rc.headers(3, true, get("/")...)
		rc.until("the next answer", status(3, "200"))
	})
	t.Run("DATA beyond the stream window", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/")
		chunk := make([]byte, 16384)
		// The server's window is 1 MiB; the connection's too, so the
		// stream's is what 65 frames of 16 KiB overflow first.
		for i := 0; i < 65; i++ {
			if err := rc.fr.WriteData(1, false, chunk); err != nil {
				break
			}
		}
		rc.until("a FLOW_CONTROL_ERROR", func(f http2.Frame) bool {
			return rst(1, http2.ErrCodeFlowControl)(f) || goAway(http2.ErrCodeFlowControl)(f)
		})
	})
	t.Run("content-length and the body disagree", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/", "content-length", "3")
		rc.fr.WriteData(1, true, []byte("four"))
		rc.until("RST_STREAM(PROTOCOL_ERROR)", rst(1, http2.ErrCodeProtocol))
	})
	t.Run("WINDOW_UPDATE overflow", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.fr.WriteWindowUpdate(0, 1<<31-1)
		rc.until("GOAWAY(FLOW_CONTROL_ERROR)", goAway(http2.ErrCodeFlowControl))
	})
	t.Run("PUSH_PROMISE", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
		rc.until("GOAWAY(PROTOCOL_ERROR)", goAway(http2.ErrCodeProtocol))
	})
	t.Run("first frame not SETTINGS", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fr := http2.NewFramer(c, c)
		io.WriteString(c, ClientPreface)
		fr.WritePing(false, [8]byte{})
		rc := &rawConn{t: t, c: c, fr: fr}
		rc.until("GOAWAY(PROTOCOL_ERROR)", goAway(http2.ErrCodeProtocol))
	})
}

// The rapid-reset attack (CVE-2023-44487): streams opened and reset at
// once, faster than handlers end. Handlers running stay bounded by
// MaxConcurrentStreams, and a peer that keeps at it is sent away.
func TestServeRapidReset(t *testing.T) {
	var running, most atomic.Int32
	release := make(chan struct{})
	addr := serve(t, &Server{MaxConcurrentStreams: 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release // the handler outlives its stream
		running.Add(-1)
	})})
	defer close(release)
	rc := dialRaw(t, addr)
	rc.hb.Reset()
	for i, f := range get("/") {
		if i%2 == 0 {
			rc.he.WriteField(hpack.HeaderField{Name: f, Value: get("/")[i+1]})
		}
	}
	block := append([]byte(nil), rc.hb.Bytes()...)
	wfr := http2.NewFramer(rc.c, nil) // the writer's own: rc.fr reads meanwhile
	go func() {
		for id := uint32(1); id < 2000; id += 2 {
			// Errors end the loop: the server sends the attacker away.
			if wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}) != nil ||
				wfr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				return
			}
		}
	}()
	rc.until("GOAWAY(ENHANCE_YOUR_CALM)", goAway(http2.ErrCodeEnhanceYourCalm))
	if m := most.Load(); m > 10 {
		t.Errorf("%d handlers ran at once, MaxConcurrentStreams 10", m)
	}
}

// PING and SETTINGS are answered.
func TestServeControlFrames(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(echo)})
	rc := dialRaw(t, addr)
	rc.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	rc.until("the PING's ack", func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck() && p.Data == [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	})
	rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	rc.until("the SETTINGS ack", func(f http2.Frame) bool {
		s, ok := f.(*http2.SettingsFrame)
		return ok && s.IsAck()
	})
	// With a 10-byte window, a 25-byte answer comes 10 bytes at a time,
	// as the client opens the window.
	rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/")
	rc.fr.WriteData(1, true, []byte("0123456789012345678901234"))
	var got []byte
	for len(got) < 25 {
		f := rc.until("DATA", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
		if len(f.Data()) > 10 {
			t.Fatalf("a DATA frame of %d bytes in a 10-byte window", len(f.Data()))
		}
		got = append(got, f.Data()...)
		if len(got) < 25 {
			rc.fr.WriteWindowUpdate(1, 10)
		}
	}
	if string(got) != "0123456789012345678901234" {
		t.Errorf("got %q", got)
	}
}

// Shutdown: GOAWAY, the open stream finishes, then the connection closes.
func TestServeShutdown(t *testing.T) {
	started := make(chan struct{})
	finish := make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-finish
		io.WriteString(w, "done")
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conns := make(chan *Conn, 1)
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		sc := s.NewConn(context.Background(), c)
		conns <- sc
		served <- sc.Serve()
	}()
	rc := dialRaw(t, l.Addr().String())
	rc.headers(1, true, get("/")...)
	<-started
	sc := <-conns
	shut := make(chan error, 1)
	go func() { shut <- sc.Shutdown(context.Background()) }()
	rc.until("GOAWAY(NO_ERROR)", goAway(http2.ErrCodeNo))
	close(finish)
	rc.until("the open stream's answer", func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		return ok && d.StreamID == 1 && string(d.Data()) == "done" && d.StreamEnded()
	})
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// More of the rules a hostile client breaks (mutation testing found them
// untested, session 28).
func TestServeRefusesFlowAndStateErrors(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // holds the stream open until it is reset
	})})
	t.Run("RST_STREAM on an idle stream", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.fr.WriteRSTStream(7, http2.ErrCodeCancel)
		rc.until("GOAWAY(PROTOCOL_ERROR)", goAway(http2.ErrCodeProtocol))
	})
	t.Run("WINDOW_UPDATE on an idle stream", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.fr.WriteWindowUpdate(9, 100)
		rc.until("GOAWAY(PROTOCOL_ERROR)", goAway(http2.ErrCodeProtocol))
	})
	t.Run("a stream's window past 2^31-1", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(1, true, get("/")...)
		// Its window is 65,535 until the client's SETTINGS say more: one
		// more than 2^31-1 − 65,535 overflows it, exactly.
		rc.fr.WriteWindowUpdate(1, 1<<31-1-65535+1)
		rc.until("RST_STREAM(FLOW_CONTROL_ERROR)", rst(1, http2.ErrCodeFlowControl))
	})
	t.Run("a stream's window at 2^31-1", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(1, true, get("/")...)
		rc.fr.WriteWindowUpdate(1, 1<<31-1-65535) // exactly the largest window: allowed
		rc.fr.WritePing(false, [8]byte{9})
		f := rc.until("the PING's ack, or a reset", func(f http2.Frame) bool {
			p, ok := f.(*http2.PingFrame)
			return ok && p.IsAck() || rst(1, http2.ErrCodeFlowControl)(f)
		})
		if _, ok := f.(*http2.RSTStreamFrame); ok {
			t.Error("a window of exactly 2^31-1 was taken for an overflow")
		}
	})
}

// A small response leaves in one Write: its HEADERS, DATA and END_STREAM,
// or its trailers ending it (gRPC's status).
func TestServeWritesAResponseOnce(t *testing.T) {
	var writes atomic.Int32
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/trailers" {
			w.Header().Set("Trailer", "Grpc-Status")
		}
		io.WriteString(w, "message")
		if r.URL.Path == "/trailers" {
			w.Header().Set("Grpc-Status", "0")
		}
	})}
	addr, _ := listen(t, func(c net.Conn) { _ = s.ServeConn(context.Background(), countingConn{c, &writes}) })
	client := h2cClient(t)
	get := func(path string) (int32, *http.Response) {
		t.Helper()
		before := writes.Load()
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(resp.Body); string(b) != "message" {
			t.Fatalf("%s: %q", path, b)
		}
		resp.Body.Close()
		return writes.Load() - before, resp
	}
	get("/") // the connection, its SETTINGS answered
	if n, _ := get("/"); n != 1 {
		t.Errorf("a response: %d Writes, want 1", n)
	}
	if n, resp := get("/trailers"); n != 1 || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("a response with trailers: %d Writes, trailers %v; want 1, Grpc-Status 0", n, resp.Trailer)
	}
}

// PrefaceTimeout bounds the wait for the client preface only: a
// connection whose preface came in time is not ended when the timeout
// would have passed — requests before and well after it are served on
// the one connection.
func TestServerPrefaceTimeoutEndsWithThePreface(t *testing.T) {
	const timeout = 100 * time.Millisecond
	srv := &Server{PrefaceTimeout: timeout, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})}
	addr, accepted := listen(t, func(c net.Conn) { _ = srv.ServeConn(context.Background(), c) })
	tr := newClient(t)
	for i := range 2 {
		resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if b := readAll(t, resp); b != "ok" {
			t.Fatalf("request %d: %q", i, b)
		}
		time.Sleep(3 * timeout)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("two requests %v apart took %d connections: the preface's deadline outlived the preface", 3*timeout, n)
	}
}
