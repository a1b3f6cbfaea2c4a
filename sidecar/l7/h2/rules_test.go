package h2

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// CONNECT has :method and :authority only (RFC 9113 §8.5); a method is a
// token; two content-length fields must agree.
func TestServeRequestRules(t *testing.T) {
	seen := &requestSeen{}
	addr := serve(t, &Server{Handler: seen})
	rc := dialRaw(t, addr)
	rc.headers(1, true, ":method", "CONNECT", ":authority", "backend:443")
	rc.quietUntil("200 for a CONNECT", status(1, "200"))
	if r := seen.last(t); r.Method != "CONNECT" || r.Host != "backend:443" {
		t.Errorf("CONNECT: %s %s", r.Method, r.Host)
	}
	id := uint32(3)
	for _, tc := range []struct {
		name   string
		fields []string
	}{
		{"CONNECT with a :path", []string{":method", "CONNECT", ":authority", "backend:443", ":path", "/"}},
		{"CONNECT with a :scheme", []string{":method", "CONNECT", ":authority", "backend:443", ":scheme", "https"}},
		{"CONNECT without :authority", []string{":method", "CONNECT"}},
		{"a method that is not a token", []string{":method", "G T", ":scheme", "http", ":authority", "app", ":path", "/"}},
		{"content-length fields that differ", append(get("/"), "content-length", "0", "content-length", "1")},
	} {
		rc.headers(id, true, tc.fields...)
		rc.quietUntil(tc.name+": RST_STREAM(PROTOCOL_ERROR)", rst(id, http2.ErrCodeProtocol))
		id += 2
	}
	rc.headers(id, true, append(get("/"), "content-length", "0", "content-length", "0")...)
	rc.quietUntil("200 for content-length fields that agree", status(id, "200"))
}

// Frames on a stream that ended are the stream's concern, not the
// connection's: DATA is dropped (or, while the handler has not yet
// returned, answered with RST_STREAM(STREAM_CLOSED): either is the
// stream's, RFC 9113 §5.1), a malformed frame resets the stream (closed,
// not idle).
func TestServeFramesOnAClosedStream(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(echo)})
	rc := dialRaw(t, addr)
	rc.headers(1, true, get("/")...)
	rc.quietUntil("the response", status(1, "200"))
	rc.fr.WriteData(1, false, []byte("late"))
	rc.fr.AllowIllegalWrites = true
	rc.fr.WriteWindowUpdate(1, 0) // a stream error the Framer finds
	rc.until("RST_STREAM(PROTOCOL_ERROR) for the closed stream", func(f http2.Frame) bool {
		switch {
		case rst(1, http2.ErrCodeProtocol)(f):
			return true
		case rst(1, http2.ErrCodeStreamClosed)(f):
			return false // the late DATA's, the stream not yet forgotten
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v for frames on a closed stream", f.ErrCode)
		case *http2.RSTStreamFrame:
			t.Fatalf("RST_STREAM %v on %d", f.ErrCode, f.StreamID)
		}
		return false
	})
	rc.fr.WritePing(false, [8]byte{3})
	rc.quietUntil("PING ACK: the connection serves on", pingAck)
	// A stream reset before any handler ran is closed at once: its late
	// DATA is dropped, whenever it comes.
	rc.headers(3, true, ":method", "G T", ":scheme", "http", ":authority", "app", ":path", "/")
	rc.quietUntil("RST_STREAM(PROTOCOL_ERROR) for a method not a token", rst(3, http2.ErrCodeProtocol))
	rc.fr.WriteData(3, false, []byte("late"))
	rc.fr.WritePing(false, [8]byte{8})
	rc.quietUntil("PING ACK: DATA on the reset stream dropped", pingAck)
}

// The idle timeout runs again once the last stream is done.
func TestServeIdleAfterTheLastStream(t *testing.T) {
	addr := serve(t, &Server{IdleTimeout: 100 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(250 * time.Millisecond) // longer than the idle timeout
	})})
	rc := dialRaw(t, addr)
	rc.headers(1, true, get("/")...)
	rc.quietUntil("the response", status(1, "200"))
	rc.until("GOAWAY after the idle timeout", goAway(http2.ErrCodeNo))
}

// ServeConn returns the cause its context was cancelled with.
func TestServeConnReturnsTheCause(t *testing.T) {
	cause := errors.New("the sidecar drains")
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	s := &Server{Handler: http.HandlerFunc(echo)}
	addr, _ := listen(t, func(c net.Conn) { done <- s.ServeConn(ctx, c) })
	rc := dialRaw(t, addr)
	rc.fr.WritePing(false, [8]byte{4})
	rc.quietUntil("PING ACK: serving", pingAck)
	cancel(cause)
	select {
	case err := <-done:
		if !errors.Is(err, cause) {
			t.Errorf("ServeConn returned %v, want the context's cause", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn did not return")
	}
}

// brokenConn fails its reads with errBroken once broken is set.
type brokenConn struct {
	net.Conn
	broken atomic.Bool
}

var errBroken = errors.New("the connection broke")

func (c *brokenConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.broken.Load() {
		return 0, errBroken
	}
	return n, err
}

// A read error that is not the peer's close (nor the context's end)
// ends the connection with it: ServeConn returns it and ErrorLog is told.
func TestServeConnReturnsAReadError(t *testing.T) {
	done := make(chan error, 1)
	logged := make(chan error, 1)
	var bc *brokenConn
	accepted := make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(echo), ErrorLog: func(c net.Conn, err error) { logged <- err }}
	addr, _ := listen(t, func(c net.Conn) {
		bc = &brokenConn{Conn: c}
		close(accepted)
		done <- s.ServeConn(context.Background(), bc)
	})
	rc := dialRaw(t, addr)
	rc.fr.WritePing(false, [8]byte{6})
	rc.quietUntil("PING ACK: serving", pingAck)
	<-accepted
	bc.broken.Store(true)
	rc.fr.WritePing(false, [8]byte{7}) // the read that fails
	select {
	case err := <-done:
		if !errors.Is(err, errBroken) {
			t.Errorf("ServeConn returned %v, want the read's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn did not return")
	}
	select {
	case err := <-logged:
		if !errors.Is(err, errBroken) {
			t.Errorf("ErrorLog told %v, want the read's error", err)
		}
	default:
		t.Error("ErrorLog not told")
	}
}

// A request cut by the server's own Conn.Close is told so: its body's
// read fails, and its context ends, with the shutdown, not a client
// that left.
func TestServeCloseTellsTheHandler(t *testing.T) {
	reading := make(chan struct{})
	got := make(chan [2]error, 1)
	addr, conns, served := serveOne(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(reading)
		_, err := io.ReadAll(r.Body)
		got <- [2]error{err, context.Cause(r.Context())}
	})}, context.Background())
	rc := dialRaw(t, addr)
	rc.post(1, "")
	<-reading
	sc := <-conns
	sc.Close()
	errs := <-got
	if !errors.Is(errs[0], errShutdown) || !errors.Is(errs[1], errShutdown) {
		t.Errorf("the body's read failed with %v, the context's cause %v; want %v", errs[0], errs[1], errShutdown)
	}
	<-served
}

// Shutdown waits for the streams open, but not once the client has gone:
// it returns then, though a handler that ignores its context still runs.
func TestServeShutdownEndsWithTheClient(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	addr, conns, served := serveOne(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	})}, context.Background())
	rc := dialRaw(t, addr)
	rc.headers(1, true, get("/")...)
	<-started
	sc := <-conns
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- sc.Shutdown(ctx) }()
	rc.until("GOAWAY", goAway(http2.ErrCodeNo))
	rc.c.Close()
	err := <-shut
	close(release)
	if err != nil {
		t.Errorf("Shutdown = %v once the client left, want nil", err)
	}
	<-served
}
