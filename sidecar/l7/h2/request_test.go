package h2

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// requestSeen serves one request per call with a handler that records
// what it got.
type requestSeen struct {
	mu  sync.Mutex
	got []*http.Request
}

func (rs *requestSeen) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rs.mu.Lock()
	rs.got = append(rs.got, r)
	rs.mu.Unlock()
}

func (rs *requestSeen) last(t *testing.T) *http.Request {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.got) == 0 {
		t.Fatal("no request reached the handler")
	}
	return rs.got[len(rs.got)-1]
}

// The request a handler gets: its peer's address, its cookies joined as
// one field (RFC 9113 §8.2.3) and none made up, its declared trailers
// only when there are some, OPTIONS * allowed and * with any other method
// refused, an empty body with content-length 0 and END_STREAM.
func TestServeRequestFields(t *testing.T) {
	seen := &requestSeen{}
	addr := serve(t, &Server{Handler: seen})
	rc := dialRaw(t, addr)
	id := uint32(1)
	send := func(end bool, fields ...string) uint32 {
		t.Helper()
		rc.headers(id, end, fields...)
		id += 2
		return id - 2
	}
	answered := func(sid uint32) {
		t.Helper()
		rc.until("the response", status(sid, "200"))
	}

	answered(send(true, get("/")...))
	r := seen.last(t)
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err != nil || host != "127.0.0.1" {
		t.Errorf("RemoteAddr %q, want the peer's 127.0.0.1:port", r.RemoteAddr)
	}
	if _, ok := r.Header["Cookie"]; ok || r.Trailer != nil {
		t.Errorf("a request without cookies or trailers: Cookie %q, Trailer %v", r.Header["Cookie"], r.Trailer)
	}

	answered(send(true, append(get("/"), "cookie", "a=1", "cookie", "b=2")...))
	if c := seen.last(t).Header["Cookie"]; len(c) != 1 || c[0] != "a=1; b=2" {
		t.Errorf("two cookie fields: %q, want one \"a=1; b=2\"", c)
	}

	answered(send(true, ":method", "OPTIONS", ":scheme", "http", ":authority", "app", ":path", "*"))
	if r := seen.last(t); r.Method != "OPTIONS" || r.RequestURI != "*" {
		t.Errorf("OPTIONS *: %s %s", r.Method, r.RequestURI)
	}
	sid := send(true, ":method", "GET", ":scheme", "http", ":authority", "app", ":path", "*")
	rc.until("RST_STREAM(PROTOCOL_ERROR) for GET *", rst(sid, http2.ErrCodeProtocol))
	sid = send(true, ":method", "OPTIONS", ":scheme", "http", ":authority", "app", ":path", "x")
	rc.until("RST_STREAM(PROTOCOL_ERROR) for a relative path", rst(sid, http2.ErrCodeProtocol))

	answered(send(true, ":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/", "content-length", "0"))
	if r := seen.last(t); r.ContentLength != 0 || r.Method != "POST" {
		t.Errorf("content-length 0 with END_STREAM: %s, ContentLength %d", r.Method, r.ContentLength)
	}
}

// ErrorLog is told of a connection's error; a server without one is not.
func TestServeErrorLog(t *testing.T) {
	logged := make(chan error, 1)
	for _, s := range []*Server{
		{Handler: http.NotFoundHandler(), ErrorLog: func(_ net.Conn, err error) { logged <- err }},
		{Handler: http.NotFoundHandler()},
	} {
		c1, c2 := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- s.ServeConn(context.Background(), c1) }()
		go c2.Write([]byte(strings.Repeat("X", len(ClientPreface))))
		err := <-done
		c2.Close()
		if err == nil || !strings.Contains(err.Error(), "preface") {
			t.Errorf("a bad preface: ServeConn returned %v", err)
		}
		if s.ErrorLog != nil {
			select {
			case got := <-logged:
				if !errors.Is(got, err) {
					t.Errorf("ErrorLog got %v, ServeConn returned %v", got, err)
				}
			case <-time.After(10 * time.Second):
				t.Error("ErrorLog was never told")
			}
		}
	}
}

// A connection window of the initial size is not announced: a
// WINDOW_UPDATE of 0 is a protocol error (RFC 9113 §6.9).
func TestServeInitialConnectionWindow(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(echo), ConnWindow: 65535})
	rc := dialRaw(t, addr)
	rc.fr.WritePing(false, [8]byte{2})
	rc.quietUntil("PING ACK", func(f http2.Frame) bool {
		if wu, ok := f.(*http2.WindowUpdateFrame); ok {
			t.Errorf("WINDOW_UPDATE(%d, %d) for a window of the initial size", wu.StreamID, wu.Increment)
		}
		return pingAck(f)
	})
}
