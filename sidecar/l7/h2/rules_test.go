package h2

import (
	"context"
	"errors"
	"net"
	"net/http"
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
// connection's: DATA is dropped, a malformed frame resets the stream
// (RFC 9113 §5.1: closed, not idle).
func TestServeFramesOnAClosedStream(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(echo)})
	rc := dialRaw(t, addr)
	rc.headers(1, true, get("/")...)
	rc.quietUntil("the response", status(1, "200"))
	rc.fr.WriteData(1, false, []byte("late"))
	rc.fr.AllowIllegalWrites = true
	rc.fr.WriteWindowUpdate(1, 0) // a stream error the Framer finds
	rc.quietUntil("RST_STREAM(PROTOCOL_ERROR) for the closed stream", rst(1, http2.ErrCodeProtocol))
	rc.fr.WritePing(false, [8]byte{3})
	rc.quietUntil("PING ACK: the connection serves on", pingAck)
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
