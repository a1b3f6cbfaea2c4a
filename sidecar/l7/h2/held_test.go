package h2

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// gatedConn is a server's side of a pipe whose Write of a PING ack waits
// for gate (once): the reader is held there, between two frames it
// already read.
type gatedConn struct {
	net.Conn
	once    sync.Once
	blocked chan struct{}
	gate    chan struct{}
}

func (c *gatedConn) Write(b []byte) (int, error) {
	if len(b) >= 9 && b[3] == 0x6 && b[4]&0x1 != 0 {
		c.once.Do(func() {
			close(c.blocked)
			<-c.gate
		})
	}
	return c.Conn.Write(b)
}

// heldServer serves one end of a pipe with a handler that reports what
// its request's body holds when it starts; the other end, with the
// server's frames read and discarded, is returned with a framer writing
// to a buffer (sent by the caller in one Write).
func heldServer(t *testing.T, wrap func(net.Conn) net.Conn) (client net.Conn, fr *http2.Framer, out *bytes.Buffer, enc func(...string) []byte, started <-chan [2]int) {
	t.Helper()
	cs, ss := net.Pipe()
	t.Cleanup(func() { cs.Close(); ss.Close() })
	st := make(chan [2]int, 4)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, end := r.Body.(interface{ Buffered() (int, bool) }).Buffered()
		e := 0
		if end {
			e = 1
		}
		st <- [2]int{n, e}
		io.Copy(io.Discard, r.Body)
	})}
	done := make(chan struct{})
	go func() { _ = s.ServeConn(context.Background(), wrap(ss)); close(done) }()
	t.Cleanup(func() { cs.Close(); <-done })
	go io.Copy(io.Discard, cs) // the server's SETTINGS, acks, responses
	out = &bytes.Buffer{}
	out.WriteString(ClientPreface)
	fr = http2.NewFramer(out, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	he := hpack.NewEncoder(&hb)
	enc = func(fields ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			_ = he.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return bytes.Clone(hb.Bytes())
	}
	return cs, fr, out, enc, st
}

var post = []string{":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/"}

// TestHandlerStartsWithTheFramesAlreadyRead: a request's HEADERS and its
// DATA read together from the connection — here with PINGs between them,
// whose ACKs the reader is held writing — start the handler once the
// reader has taken the DATA: the body is whole when the handler starts
// (Buffered: 5 bytes, and the end), which a proxy's handler passes on in
// one write. Started at the HEADERS, the handler ran while the reader was
// held, and found nothing yet.
func TestHandlerStartsWithTheFramesAlreadyRead(t *testing.T) {
	g := &gatedConn{blocked: make(chan struct{}), gate: make(chan struct{})}
	c, fr, out, enc, started := heldServer(t, func(c net.Conn) net.Conn { g.Conn = c; return g })
	// PING ACKs go with the next write, or maxPendingAcks at a time by
	// the reader itself (acks.go): that write holds the reader.
	setAckDelay(t, time.Hour)
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(post...), EndHeaders: true})
	for i := range maxPendingAcks {
		_ = fr.WritePing(false, [8]byte{byte(i)})
	}
	_ = fr.WriteData(1, true, []byte("hello"))
	go c.Write(out.Bytes())
	select {
	case <-g.blocked:
	case <-time.After(5 * time.Second):
		t.Fatal("the server never acked the PING")
	}
	// A handler started at the HEADERS runs now, the reader held.
	select {
	case got := <-started:
		close(g.gate)
		t.Fatalf("the handler started before the reader took the DATA read with its HEADERS: its body held %d bytes, end %v", got[0], got[1] == 1)
	case <-time.After(100 * time.Millisecond):
	}
	close(g.gate)
	select {
	case got := <-started:
		if got != [2]int{5, 1} {
			t.Errorf("the handler started with %d bytes of its body buffered, end %v; want 5 and the end", got[0], got[1] == 1)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never started")
	}
}

// TestHeldHandlerNeverWaitsForTheConnection: a handler is held only while
// the next frame is whole in the read buffer — not behind a frame cut
// short, nor behind a header block that CONTINUATION frames may complete,
// either of which the reader would wait for the client to finish (a
// client that never does would stall the request it already sent).
func TestHeldHandlerNeverWaitsForTheConnection(t *testing.T) {
	for _, tc := range []struct {
		name string
		next func(fr *http2.Framer, out *bytes.Buffer, enc func(...string) []byte)
	}{
		{"a DATA frame cut short", func(fr *http2.Framer, out *bytes.Buffer, _ func(...string) []byte) {
			_ = fr.WriteData(1, false, []byte("0123456789"))
			out.Truncate(out.Len() - 4)
		}},
		{"HEADERS without END_HEADERS", func(fr *http2.Framer, _ *bytes.Buffer, enc func(...string) []byte) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(post...), EndHeaders: false})
		}},
		{"a frame header alone", func(fr *http2.Framer, out *bytes.Buffer, _ func(...string) []byte) {
			_ = fr.WritePing(false, [8]byte{2})
			out.Truncate(out.Len() - 8)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, fr, out, enc, started := heldServer(t, func(c net.Conn) net.Conn { return c })
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(post...), EndHeaders: true})
			tc.next(fr, out, enc)
			go c.Write(out.Bytes())
			select {
			case got := <-started:
				if got != [2]int{0, 0} {
					t.Errorf("the handler started with %d bytes buffered, end %v; want none yet", got[0], got[1] == 1)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the handler was held while the reader waited for the rest of the next frame")
			}
		})
	}
}

// TestHeldHandlerRunsWhenTheConnectionEnds: a connection that ends (here
// for a protocol error) with a handler still held starts it — it sees
// its request's context end — and ServeConn returns, which waits for every
// handler to return: a held one never started would keep it forever.
func TestHeldHandlerRunsWhenTheConnectionEnds(t *testing.T) {
	cs, ss := net.Pipe()
	defer cs.Close()
	ended := make(chan error, 1)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		ended <- r.Context().Err()
	})}
	served := make(chan error, 1)
	go func() { served <- s.ServeConn(context.Background(), ss) }()
	go io.Copy(io.Discard, cs)
	var out bytes.Buffer
	out.WriteString(ClientPreface)
	fr := http2.NewFramer(&out, nil)
	_ = fr.WriteSettings()
	var hb bytes.Buffer
	he := hpack.NewEncoder(&hb)
	for i := 0; i+1 < len(post); i += 2 {
		_ = he.WriteField(hpack.HeaderField{Name: post[i], Value: post[i+1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	fr.AllowIllegalWrites = true
	if err := fr.WriteWindowUpdate(0, 0); err != nil { // a connection error (RFC 9113 §6.9)
		t.Fatal(err)
	}
	go cs.Write(out.Bytes())
	select {
	case err := <-served:
		if err == nil {
			t.Error("ServeConn returned nil after a protocol error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn did not return after a protocol error with a handler held")
	}
	select {
	case err := <-ended:
		if err == nil {
			t.Error("the held handler's request context did not end")
		}
	default:
		t.Error("the held handler never ran")
	}
}
