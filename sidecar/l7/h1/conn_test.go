package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestServerBodyCutShort: a request body that ends before its declared
// length (the client stopped sending) reads as io.ErrUnexpectedEOF, as
// net/http's server reads it — never as a whole body that ends (a proxy
// would pass the cut body on as complete).
func TestServerBodyCutShort(t *testing.T) {
	got := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		got <- fmt.Sprintf("%q %v", b, err)
	})
	var reads []string
	for _, addr := range []string{serveStd(t, h), serveH1Addr(t, h, nil)} {
		c := dialApp(t, addr)
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhalf.")
		c.(*net.TCPConn).CloseWrite()
		select {
		case g := <-got:
			reads = append(reads, g)
		case <-time.After(10 * time.Second):
			t.Fatal("the handler never finished reading the body")
		}
	}
	if want := `"half." unexpected EOF`; reads[0] != want || reads[1] != want {
		t.Errorf("a body cut short read as: net/http %s, weft %s; want %s", reads[0], reads[1], want)
	}
}

// serveH1Addr is serveH1's address alone.
func serveH1Addr(t *testing.T, h http.Handler, conf func(*Server)) string {
	t.Helper()
	addr, _ := serveH1(t, h, conf)
	return addr
}

// headOf is a GET's head of exactly n bytes (one field padded).
func headOf(n int) string {
	const start, end = "GET / HTTP/1.1\r\nHost: a\r\nX: ", "\r\n\r\n"
	return start + strings.Repeat("y", n-len(start)-len(end)) + end
}

// TestServerHeadLimit: a head of MaxHeaderBytes is served, as net/http's
// server serves it; one past MaxHeaderBytes and the read buffer's slop is
// refused (431) — sent alone, as net/http's server refuses it, and as much
// when it came pipelined, its start in the bytes of the request before it
// (the bound counts what the read buffer holds already).
func TestServerHeadLimit(t *testing.T) {
	const max = 16 << 10 // serveH1's and serveStd's MaxHeaderBytes
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	std, weft := serveStd(t, h), serveH1Addr(t, h, nil)
	over := headOf(max + headerSlop + 3000)
	for _, tc := range []struct {
		head, want string
	}{
		{headOf(max), "HTTP/1.1 200 OK"},
		{over, "HTTP/1.1 431 Request Header Fields Too Large"},
	} {
		if s, w := firstLine(t, std, tc.head), firstLine(t, weft, tc.head); s != tc.want || w != tc.want {
			t.Errorf("a head of %d bytes: net/http %q, weft %q; want %q", len(tc.head), s, w, tc.want)
		}
	}
	// Pipelined: the first 3000 bytes of the head that is too long come
	// with the request before it (read with it, into the read buffer), the
	// rest once that request was answered.
	c := dialApp(t, weft)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"+over[:3000])
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	io.WriteString(c, over[3000:])
	if l, err := br.ReadString('\n'); strings.TrimSpace(l) != "HTTP/1.1 431 Request Header Fields Too Large" {
		t.Errorf("a head of %d bytes, pipelined: answered %q, %v; want 431 as when it comes alone", len(over), l, err)
	}
}

// TestServerTrailerLimit: a chunked request body's trailers are bounded
// as a head is (Server.MaxHeaderBytes and the read buffer's slop): a trailer
// section of MaxHeaderBytes is read, and the body read to its end; trailers
// past the bound fail the body's read.
func TestServerTrailerLimit(t *testing.T) {
	const max = 16 << 10 // serveH1's MaxHeaderBytes
	got := make(chan string, 1)
	addr := serveH1Addr(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		got <- fmt.Sprintf("%q %d %v", b, len(r.Trailer.Get("X-T")), err)
	}), nil)
	for _, tc := range []struct {
		n    int
		want string
	}{
		{max - len("X-T: \r\n\r\n"), fmt.Sprintf(`"abc" %d <nil>`, max-len("X-T: \r\n\r\n"))}, // a trailer section of MaxHeaderBytes
		{max + headerSlop + readBufSize + 1000, `"abc" 0 h1: request trailers too large`},     // past what the read buffer held too
	} {
		c := dialApp(t, addr)
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: "+strings.Repeat("t", tc.n)+"\r\n\r\n")
		select {
		case g := <-got:
			if g != tc.want {
				t.Errorf("a trailer field of %d bytes: the body read as %s; want %s", tc.n, g, tc.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a trailer field of %d bytes: the handler never finished reading the body", tc.n)
		}
	}
}

// TestServerHeadInPiecesWithoutHeaderTimeout: with no HeaderTimeout a
// head may take its time — the idle timeout, if any, bounds the wait for
// its first bytes only — and with no IdleTimeout a connection waits for
// its requests for ever: a kept-alive connection whose next head arrives
// in two pieces, the second after longer than IdleTimeout, is served, as
// net/http's server serves it.
func TestServerHeadInPiecesWithoutHeaderTimeout(t *testing.T) {
	const pause = 400 * time.Millisecond
	for _, idle := range []time.Duration{0, pause / 2} {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) })
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		std := &http.Server{Handler: h, IdleTimeout: idle}
		go std.Serve(l)
		t.Cleanup(func() { std.Close() })
		weft := serveH1Addr(t, h, func(s *Server) { s.HeaderTimeout, s.IdleTimeout = 0, idle })
		for _, srv := range []struct{ name, addr string }{{"net/http", l.Addr().String()}, {"weft", weft}} {
			c := dialApp(t, srv.addr)
			br := bufio.NewReader(c)
			var got []string
			for _, pieces := range [][]string{
				{"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"},
				{"GET /2 HTTP/1.1\r\n", "Host: a\r\n\r\n"},
			} {
				for i, p := range pieces {
					if i > 0 {
						time.Sleep(pause)
					}
					io.WriteString(c, p)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					got = append(got, err.Error())
					break
				}
				b, _ := io.ReadAll(resp.Body)
				got = append(got, string(b))
			}
			if g := strings.Join(got, " "); g != "/1 /2" {
				t.Errorf("%s, IdleTimeout %v: answered %q, want /1 /2", srv.name, idle, g)
			}
		}
	}
}

// TestServerH2CReadsOn: the connection handed to H2C reads what the client
// sends after the preface — later, and past any head's bound — as a
// connection does.
func TestServerH2CReadsOn(t *testing.T) {
	const n = 64 << 10
	read := make(chan struct{})
	got := make(chan string, 1)
	addr := serveH1Addr(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), func(s *Server) {
		s.H2C = func(ctx context.Context, c net.Conn) error {
			b := make([]byte, len(h2Preface))
			if _, err := io.ReadFull(c, b); err != nil {
				got <- err.Error()
				return nil
			}
			close(read)
			b = make([]byte, n)
			m, err := io.ReadFull(c, b)
			got <- fmt.Sprint(m, err)
			return nil
		}
	})
	c := dialApp(t, addr)
	io.WriteString(c, h2Preface)
	select {
	case <-read:
	case g := <-got:
		t.Fatalf("H2C could not read the preface: %s", g)
	case <-time.After(10 * time.Second):
		t.Fatal("the preface was not handed to H2C")
	}
	io.WriteString(c, strings.Repeat("f", n))
	select {
	case g := <-got:
		if want := fmt.Sprint(n, nil); g != want {
			t.Errorf("H2C read what followed the preface: %s, want %s", g, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("H2C never read what followed the preface")
	}
}

// TestServerH2CWholePreface: a connection whose first bytes are HTTP/2's
// preface but for its last is not HTTP/2's: it is HTTP/1.1's, and a
// request line of version 2.0 is refused (505), as net/http's server
// refuses it; H2C never sees it.
func TestServerH2CWholePreface(t *testing.T) {
	called := make(chan struct{}, 1)
	addr := serveH1Addr(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), func(s *Server) {
		s.H2C = func(ctx context.Context, c net.Conn) error {
			called <- struct{}{}
			return nil
		}
	})
	almost := h2Preface[:len(h2Preface)-1] + "x"
	if l := firstLine(t, addr, almost); !strings.HasPrefix(l, "HTTP/1.1 505 ") {
		t.Errorf("%q answered %q, want a 505", almost, l)
	}
	if len(called) > 0 {
		t.Errorf("%q was handed to H2C", almost)
	}
}

// TestServerRefusalReachesTheClient: a request refused while its client is
// still sending (its body) is answered, and the server goes on reading what
// the client sends for a while (it does not close the connection with
// bytes unread, which resets it: the reset can destroy the answer before
// the client read it, and fails the client's writes). The client reads the
// answer, then the connection's end; what it writes after that (the rest
// of its body) does not fail.
func TestServerRefusalReachesTheClient(t *testing.T) {
	const n = 64 << 10
	addr := serveH1Addr(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), nil)
	c := dialApp(t, addr)
	body := strings.Repeat("b", n)
	if _, err := io.WriteString(c, fmt.Sprintf("POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s", 2*n, body)); err != nil { // no Host: 400
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 400 ") || err != nil {
		t.Errorf("the client read %.40q, then %v; want the 400, then the connection's end", b, err)
	}
	if _, err := io.WriteString(c, body); err != nil {
		t.Errorf("the rest of the body, sent after the answer: %v", err)
	}
}

// TestServerLogsPanics: a handler's panic is told to ErrorLog, its
// connection ended unanswered (as net/http's server ends it); a panic
// with http.ErrAbortHandler, a response cut on purpose, is not logged.
func TestServerLogsPanics(t *testing.T) {
	logged := make(chan error, 4)
	addr := serveH1Addr(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		panic("boom")
	}), func(s *Server) { s.ErrorLog = func(c net.Conn, err error) { logged <- err } })
	for _, p := range []string{"/abort", "/boom"} {
		if l := firstLine(t, addr, "GET "+p+" HTTP/1.1\r\nHost: a\r\n\r\n"); !strings.HasPrefix(l, "no response") {
			t.Errorf("%s: answered %q", p, l)
		}
	}
	var errs []string // ErrorLog is called before the connection closes
drain:
	for {
		select {
		case err := <-logged:
			errs = append(errs, err.Error())
		default:
			break drain
		}
	}
	if len(errs) != 1 || !strings.Contains(errs[0], "boom") {
		t.Errorf("logged %q, want the panic boom alone", errs)
	}
}

// TestServerWriteFailsOnceTheClientWentAway: once a write to the client
// failed (it reset the connection), every later Write fails too — a small
// one that only adds to what is gathered as well — as net/http's do: a
// handler copying a stream learns from any Write that no one reads it.
func TestServerWriteFailsOnceTheClientWentAway(t *testing.T) {
	started := make(chan struct{})
	got := make(chan string, 1)
	addr := serveH1Addr(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done(): // the watch saw the reset
		case <-time.After(10 * time.Second):
			got <- "the request's context never ended"
			return
		}
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			_, err = w.Write(make([]byte, 32<<10))
		}
		_, err2 := w.Write([]byte("x"))
		got <- fmt.Sprintf("a Write failed %v, a small one after it failed %v", err != nil, err2 != nil)
	}), nil)
	c := dialApp(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	c.(*net.TCPConn).SetLinger(0) // reset
	c.Close()
	select {
	case g := <-got:
		if want := "a Write failed true, a small one after it failed true"; g != want {
			t.Errorf("%s; want %s", g, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the handler never finished")
	}
}

// TestServerClose: Close closes the connections being served — an idle
// one ends at once — but not a hijacked one, its handler's.
func TestServerClose(t *testing.T) {
	hijacked, closed := make(chan net.Conn, 1), make(chan struct{})
	addr, s := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hijack" {
			return
		}
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		hijacked <- c
		<-closed
		io.WriteString(c, "still the handler's")
		c.Close()
	}), nil)
	idle := dialApp(t, addr)
	ibr := bufio.NewReader(idle)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(ibr, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	tunnel := dialApp(t, addr)
	io.WriteString(tunnel, "GET /hijack HTTP/1.1\r\nHost: a\r\n\r\n")
	<-hijacked
	s.Close()
	close(closed)
	if _, err := ibr.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("the idle connection after Close: %v, want it closed (EOF)", err)
	}
	if b, err := io.ReadAll(tunnel); string(b) != "still the handler's" || err != nil {
		t.Errorf("the hijacked connection after Close carried %q, %v; want its handler's bytes", b, err)
	}
}

// TestServerShutdownEndsASilentNewConnection: a connection that sends
// nothing is closed once it was open for newGrace (net/http's 5 s) and
// Shutdown returns then. Without a HeaderTimeout: serveH1's (5 s, as long
// as newGrace) would end the connection by itself, Shutdown's check or not.
func TestServerShutdownEndsASilentNewConnection(t *testing.T) {
	addr, s := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), func(srv *Server) { srv.HeaderTimeout = 0 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(newGrace + 20*time.Second))
	until(t, func() bool { return len(s.conns) == 1 }, s)
	ctx, cancel := context.WithTimeout(context.Background(), newGrace+15*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var serr error
	wg.Go(func() { serr = s.Shutdown(ctx) })
	if b, err := io.ReadAll(c); len(b) > 0 || err != nil {
		t.Errorf("the silent connection got %q, %v; want it closed", b, err)
	}
	wg.Wait()
	if serr != nil {
		t.Errorf("Shutdown: %v", serr)
	}
}

// TestServerHijackAfterWriteHeader: a handler that chooses its status
// with WriteHeader and then hijacks the connection — a 101 before it
// speaks the upgraded protocol — has that head sent first, its Connection
// field (the upgrade) with it, as net/http's server sends it: the client
// reads the same bytes from both (their Date aside).
func TestServerHijackAfterWriteHeader(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Upgrade", "x")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusSwitchingProtocols)
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		io.WriteString(c, "in the new protocol")
		c.Close()
	})
	var got []string
	for _, addr := range []string{serveStd(t, h), serveH1Addr(t, h, nil)} {
		c := dialApp(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if i := strings.Index(s, "\r\nDate: "); i >= 0 {
			if j := strings.Index(s[i+2:], "\r\n"); j >= 0 {
				s = s[:i+2] + "Date: (set)" + s[i+2+j:]
			}
		}
		got = append(got, s)
	}
	if got[0] != got[1] {
		t.Errorf("the client read\nfrom net/http's server %q\nfrom weft's           %q", got[0], got[1])
	}
}

// TestServerStopsABodyReadLeftRunning: a handler that returns while a
// goroutine of its own still waits in a read of the request's body (the
// client has not sent it) has that read ended — it fails — and its
// response sent, the connection closed after it (where the body stopped
// is not known).
func TestServerStopsABodyReadLeftRunning(t *testing.T) {
	readErr := make(chan error, 1)
	addr := serveH1Addr(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		go func() {
			_, err := io.ReadAll(r.Body)
			readErr <- err
		}()
		time.Sleep(100 * time.Millisecond) // the goroutine waits in its read (if it is late, the read fails all the same)
		io.WriteString(w, "answered")
	}), nil)
	c := dialApp(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "answered" || !resp.Close {
		t.Errorf("the response: %q, Connection: close %v; want answered, true", b, resp.Close)
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("the body read left running ended without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the body read left running never ended")
	}
}
