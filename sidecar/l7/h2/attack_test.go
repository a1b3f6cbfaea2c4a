package h2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// serveOne accepts one connection on a loopback listener and serves it
// with sc := s.NewConn(ctx, c); sc.Serve(). The accepted socket gets a
// small send buffer so that a peer that stops reading stalls the
// server's writes after kilobytes rather than megabytes (as the proxy
// tests do); it changes when, not whether, a write blocks.
func serveOne(t *testing.T, s *Server, ctx context.Context) (addr string, conns <-chan *Conn, served <-chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	cc := make(chan *Conn, 1)
	sv := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			sv <- err
			return
		}
		c.(*net.TCPConn).SetWriteBuffer(4096)
		sc := s.NewConn(ctx, c)
		cc <- sc
		sv <- sc.Serve()
	}()
	return l.Addr().String(), cc, sv
}

// stall floods PINGs without reading the answers until the server stops
// reading — no byte of ours is taken for three 300ms periods in a row —
// which it does when it is blocked in a Write of a PING ack, holding its
// write lock.
func stall(t *testing.T, rc *rawConn) (stalled bool) {
	t.Helper()
	rc.c.(*net.TCPConn).SetReadBuffer(4096)
	start := time.Now()
	var batch bytes.Buffer
	wfr := http2.NewFramer(&batch, nil)
	for i := 0; i < 1000; i++ {
		wfr.WritePing(false, [8]byte{byte(i)})
	}
	pings := batch.Bytes()
	deadline := time.Now().Add(15 * time.Second)
	idle, sent := 0, 0
	for off := 0; time.Now().Before(deadline); {
		rc.c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := rc.c.Write(pings[off:])
		sent += n
		off = (off + n) % len(pings)
		if err == nil {
			idle = 0
			continue
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Logf("flooding PINGs: %v", err)
			return false // the server closed the connection
		}
		if n > 0 {
			idle = 0
			continue
		}
		if idle++; idle == 3 {
			rc.c.SetWriteDeadline(time.Time{})
			t.Logf("the server stopped reading after %d bytes of PINGs (%v, the last 900ms waiting)", sent, time.Since(start))
			return true
		}
	}
	t.Fatal("the server never stopped reading")
	return false
}

// Found by the attack review (session 28), fixed since: no write deadline anywhere. A peer that stops reading blocks
// the server in net.Conn.Write while it holds wmu; then Shutdown(ctx)
// blocks writing its GOAWAY and never returns, whatever ctx says.
func TestAttackShutdownHangsOnNonReadingPeer(t *testing.T) {
	addr, conns, served := serveOne(t, &Server{Handler: http.HandlerFunc(echo)}, context.Background())
	rc := dialRaw(t, addr)
	sc := <-conns
	if !stall(t, rc) {
		t.Fatal("the server closed the connection")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	start := time.Now()
	go func() { shut <- sc.Shutdown(ctx) }()
	select {
	case err := <-shut:
		t.Logf("Shutdown returned %v after %v", err, time.Since(start))
		shut <- err
	case <-time.After(3 * time.Second):
		t.Errorf("Shutdown(ctx with a 200ms deadline) has not returned after 3s: blocked writing GOAWAY to a peer that does not read")
	}
	rc.c.Close() // unblocks the server's write
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Error("Serve did not return after the client closed")
	}
	<-shut
}

// Found by the attack review (session 28), fixed since: same cause. With IdleTimeout and no stream open, a peer that
// stops reading keeps the connection forever: the idle timer's callback
// blocks writing its GOAWAY before it closes the connection.
func TestAttackIdleTimeoutDefeatedByNonReadingPeer(t *testing.T) {
	addr, _, served := serveOne(t, &Server{Handler: http.HandlerFunc(echo), IdleTimeout: 5 * time.Second}, context.Background())
	rc := dialRaw(t, addr)
	stall(t, rc) // if the idle timeout ends the connection first, fine
	select {
	case err := <-served:
		t.Logf("Serve returned %v", err)
	case <-time.After(7 * time.Second):
		t.Errorf("IdleTimeout 5s, no stream ever opened: the connection is still served 7s after the peer stopped reading")
		rc.c.Close()
		<-served
	}
}

// Found by the attack review (session 28), fixed since: same cause. ServeConn's ctx ending only sets a read deadline;
// a reader blocked in a Write never sees it, so ServeConn never returns.
func TestAttackServeCtxCancelIgnoredOnNonReadingPeer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, _, served := serveOne(t, &Server{Handler: http.HandlerFunc(echo)}, ctx)
	rc := dialRaw(t, addr)
	if !stall(t, rc) {
		t.Fatal("the server closed the connection")
	}
	cancel()
	select {
	case err := <-served:
		t.Logf("Serve returned %v", err)
	case <-time.After(3 * time.Second):
		t.Errorf("ServeConn's ctx was cancelled 3s ago; it has not returned")
		rc.c.Close()
		<-served
	}
}

// Found by the attack review (session 28), fixed since: the padding of DATA frames is taken from the connection's
// receive window but never given back (body.Read returns only the data
// bytes read; data() puts the padding in the stream's count only). A
// peer that pads its DATA — allowed, RFC 9113 §6.1 — sees the
// connection's window close for good after ~1 MiB of padding: every
// request body on the connection stalls.
func TestAttackPaddingLeaksConnectionWindow(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})})
	rc := dialRaw(t, addr)
	var connWin, streamWin atomic.Int64
	connWin.Store(65535)
	streamWin.Store(65535)
	got := make(chan string, 1)
	go func() {
		for {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
					streamWin.Add(int64(v) - 65535)
				}
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					connWin.Add(int64(f.Increment))
				} else {
					streamWin.Add(int64(f.Increment))
				}
			case *http2.DataFrame:
				got <- string(f.Data())
			case *http2.RSTStreamFrame, *http2.GoAwayFrame:
				got <- fmt.Sprint(f)
			}
		}
	}()
	rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/")
	data, pad := make([]byte, 16), make([]byte, 200)
	frameLen := int64(1 + len(data) + len(pad))
	var sent, sentData int64
	const total = 3 << 20 // bytes of DATA frames, padding included
	for sent < total {
		waitUntil := time.Now().Add(2 * time.Second)
		for connWin.Load() < frameLen || streamWin.Load() < frameLen {
			if time.Now().After(waitUntil) {
				t.Fatalf("after %d bytes of padded DATA (%d of them data, the handler read them all), the server's windows stay shut: connection %d, stream %d",
					sent, sentData, connWin.Load(), streamWin.Load())
			}
			time.Sleep(time.Millisecond)
		}
		connWin.Add(-frameLen)
		streamWin.Add(-frameLen)
		if err := rc.fr.WriteDataPadded(1, false, data, pad); err != nil {
			t.Fatal(err)
		}
		sent += frameLen
		sentData += int64(len(data))
	}
	rc.fr.WriteData(1, true, nil)
	select {
	case s := <-got:
		if s != fmt.Sprint(sentData) {
			t.Errorf("handler read %s bytes, want %d", s, sentData)
		}
	case <-time.After(5 * time.Second):
		t.Error("no answer")
	}
}

// Found by the attack review (session 28), fixed since: a 304 (or 204) whose header carries a Content-Length — RFC 9110
// §8.6 lets a 304 carry the selected representation's length, and a
// proxy forwards it as the upstream sent it — is turned into
// RST_STREAM(INTERNAL_ERROR): finish counts it as a short body.
func TestAttackNotModifiedWithContentLengthReset(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1234")
		w.Header().Set("Etag", `"x"`)
		w.WriteHeader(http.StatusNotModified)
	})})
	res, err := h2cClient(t).Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("a 304 with Content-Length: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 304 {
		t.Errorf("status %d, want 304", res.StatusCode)
	}
}

// Found by the attack review (session 28), fixed since: WriteHeader(101) is taken as the final status: the response is
// HEADERS :status 101 with END_STREAM, malformed in HTTP/2 (RFC 9113
// §8.1: a 1xx is never final; §8.6: no 101 in HTTP/2).
func TestAttack101SentAsFinalResponse(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusSwitchingProtocols)
	})})
	rc := dialRaw(t, addr)
	rc.headers(1, true, get("/")...)
	f := rc.until("the response", func(f http2.Frame) bool {
		_, isH := f.(*http2.MetaHeadersFrame)
		_, isR := f.(*http2.RSTStreamFrame)
		return (isH || isR) && f.Header().StreamID == 1
	})
	if h, ok := f.(*http2.MetaHeadersFrame); ok {
		if st := h.PseudoValue("status"); strings.HasPrefix(st, "1") && h.StreamEnded() {
			t.Errorf("the server ended stream 1 with a HEADERS of :status %s (END_STREAM on an informational response)", st)
		}
	}
}

// Found by the attack review (session 28), fixed since: a stream error the Framer reports for a frame opening a new
// stream (WINDOW_UPDATE increment 0, an invalid header field) is answered
// with RST_STREAM without the stream ever being counted as opened
// (lastID): the server sends RST_STREAM on an idle stream (RFC 9113
// §6.4 forbids it; §5.1: a frame other than HEADERS/PRIORITY on an idle
// stream is a connection error), and the stream it reset can be opened
// again afterwards (§5.1.1).
func TestAttackStreamErrorLeavesStreamIdle(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(echo)})
	t.Run("WINDOW_UPDATE 0 on an idle stream", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.fr.AllowIllegalWrites = true // the Framer refuses to write an increment of 0
		if err := rc.fr.WriteWindowUpdate(99, 0); err != nil {
			t.Fatal(err)
		}
		f := rc.until("RST_STREAM or GOAWAY", func(f http2.Frame) bool {
			_, r := f.(*http2.RSTStreamFrame)
			_, g := f.(*http2.GoAwayFrame)
			return r || g
		})
		if r, ok := f.(*http2.RSTStreamFrame); ok {
			t.Errorf("the server sent RST_STREAM(%v) on stream %d, which is idle", r.ErrCode, r.StreamID)
		}
	})
	t.Run("reuse of a stream the server reset", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.headers(1, true, append(get("/"), "X-Upper", "1")...) // an uppercase name: malformed
		rc.until("RST_STREAM(1, PROTOCOL_ERROR)", rst(1, http2.ErrCodeProtocol))
		rc.headers(1, true, get("/again")...) // stream 1 is closed: must not start a request
		f := rc.until("an answer on stream 1, or a GOAWAY", func(f http2.Frame) bool {
			_, g := f.(*http2.GoAwayFrame)
			return g || f.Header().StreamID == 1
		})
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			t.Errorf("HEADERS on stream 1 after the server reset it: the server served it (:status %s)", h.PseudoValue("status"))
		}
	})
}

// Found by the attack review (session 28), fixed since: the rapid-reset guard counts refusals over the connection's
// whole life and never forgets them. A compliant peer — a reset stream
// no longer counts toward its concurrency limit (RFC 9113 §5.1.2), so it
// may open another one at once while the server's handler still runs —
// that cancels a request now and then on a long-lived connection is
// eventually sent away with ENHANCE_YOUR_CALM, and the connection error
// kills its other, innocent, streams in flight.
func TestAttackRefusedCountNeverDecays(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	ended := make(chan struct{}, 1)
	innocent := make(chan error, 1)
	addr, conns, _ := serveOne(t, &Server{MaxConcurrentStreams: 2, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/long": // a long-lived stream, e.g. a watch
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			innocent <- context.Cause(r.Context())
		case "/slow": // a handler that takes a moment to notice a reset
			started <- struct{}{}
			<-release
			ended <- struct{}{}
		}
	})}, context.Background())
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	rc := dialRaw(t, addr)
	sc := <-conns
	// settle waits until only stream 1's handler runs: a handler's stream
	// is counted until shortly after its response's END_STREAM is sent.
	settle := func() {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			sc.mu.Lock()
			n := sc.running
			sc.mu.Unlock()
			if n == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d handlers still running", n)
			}
		}
	}
	rc.headers(1, true, get("/long")...)
	rc.until("stream 1's header", status(1, "200"))
	id := uint32(3)
	for round := 1; round <= 6; round++ {
		settle()
		rc.headers(id, true, get("/slow")...)
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: the handler of stream %d did not start", round, id)
		}
		rc.fr.WriteRSTStream(id, http2.ErrCodeCancel) // the client gave up
		// One open stream (1) of 2 in the client's count: it may open one.
		rc.headers(id+2, true, get("/fast")...)
		f := rc.until("REFUSED_STREAM or a GOAWAY", func(f http2.Frame) bool {
			_, g := f.(*http2.GoAwayFrame)
			return g || rst(id+2, http2.ErrCodeRefusedStream)(f)
		})
		if g, ok := f.(*http2.GoAwayFrame); ok {
			var cause error
			select {
			case cause = <-innocent:
			case <-time.After(2 * time.Second):
			}
			t.Fatalf("round %d: GOAWAY(%v) after %d refused streams, each one after a reset, interleaved with normal requests; the innocent stream 1 ended with %v",
				round, g.ErrCode, round, cause)
		}
		release <- struct{}{}
		<-ended
		// Once the handler returned (its send on ended comes before its
		// return: settle waits for the stream's count to drop), a normal
		// request is served.
		settle()
		rc.headers(id+4, true, get("/fast")...)
		rc.until("a normal request's answer", status(id+4, "200"))
		id += 6
	}
}

// Found by the attack review (session 28), fixed since: (same guard): a handler's stream is counted in running until
// its goroutine gets to streamDone, after the response's END_STREAM is on
// the wire. A client that opens a stream only once the previous one is
// closed — never more than MAX_CONCURRENT_STREAMS open in its view —
// is refused now and then, and each refusal counts toward the
// connection-fatal ENHANCE_YOUR_CALM.
func TestAttackSequentialClientRefused(t *testing.T) {
	addr := serve(t, &Server{MaxConcurrentStreams: 1, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})})
	rc := dialRaw(t, addr)
	refused := 0
	for id := uint32(1); id < 2*5000; id += 2 {
		rc.headers(id, true, get("/")...)
		f := rc.until("stream's end", func(f http2.Frame) bool {
			_, g := f.(*http2.GoAwayFrame)
			h, ok := f.(*http2.MetaHeadersFrame)
			return g || rst(id, http2.ErrCodeRefusedStream)(f) || ok && h.StreamID == id && h.StreamEnded()
		})
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			t.Fatalf("stream %d: GOAWAY(%v) %q after %d refusals of a client with at most one stream open", id, f.ErrCode, f.DebugData(), refused)
		case *http2.RSTStreamFrame:
			refused++
		}
	}
	if refused > 0 {
		t.Errorf("%d of 5000 sequential requests refused", refused)
	}
}

// The same with x/net/http2's own client: 16 goroutines sending requests
// in a loop over connections limited to 4 streams. The client respects
// the limit (it opens more connections), yet requests fail.
func TestAttackGoClientSentAway(t *testing.T) {
	addr := serve(t, &Server{MaxConcurrentStreams: 4, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})})
	c := h2cClient(t)
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			for range 3000 {
				res, err := c.Get("http://" + addr + "/")
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
			errs <- nil
		}()
	}
	failed := 0
	for range 16 {
		if err := <-errs; err != nil {
			if failed++; failed == 1 {
				t.Errorf("a request failed: %v", err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of 16 request loops failed", failed)
	}
}
