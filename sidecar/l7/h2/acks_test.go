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

// writesConn records each Write of the side it wraps.
type writesConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *writesConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(b))
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// framesOf parses the frames of each recorded Write: per Write, the
// frame types in it ("ping-ack", "headers", "data", "other").
func (c *writesConn) framesOf(t *testing.T) [][]string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]string
	for _, w := range c.writes {
		w = bytes.TrimPrefix(w, []byte(ClientPreface))
		var kinds []string
		for len(w) >= 9 {
			n := int(w[0])<<16 | int(w[1])<<8 | int(w[2])
			switch {
			case w[3] == 0x6 && w[4]&1 != 0:
				kinds = append(kinds, "ping-ack")
			case w[3] == 0x1:
				kinds = append(kinds, "headers")
			case w[3] == 0x0:
				kinds = append(kinds, "data")
			default:
				kinds = append(kinds, "other")
			}
			if len(w) < 9+n {
				t.Fatalf("a Write ends inside a frame")
			}
			w = w[9+n:]
		}
		out = append(out, kinds)
	}
	return out
}

func setAckDelay(t *testing.T, d time.Duration) {
	old := pingAckDelay
	pingAckDelay = d
	t.Cleanup(func() { pingAckDelay = old })
}

// TestServerAcksAPingWithItsNextWrite: a PING's ACK goes out in the
// connection's next write (here a response's), not in one of its own;
// with no write to go with, it goes after pingAckDelay. gRPC's peers send
// a PING per burst of DATA they get (their BDP estimate): an ACK of its
// own was a system call per call.
func TestServerAcksAPingWithItsNextWrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		delay   time.Duration
		request bool
	}{
		{"with the response", time.Hour, true},
		{"alone, after the delay", 20 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setAckDelay(t, tc.delay)
			cs, ss := net.Pipe()
			defer cs.Close()
			wc := &writesConn{Conn: ss}
			s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
			done := make(chan struct{})
			go func() { s.ServeConn(context.Background(), wc); close(done) }()
			defer func() { cs.Close(); <-done }()
			fr := http2.NewFramer(cs, cs)
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			// An ACK never sent fails the read, not the package's timeout.
			cs.SetReadDeadline(time.Now().Add(10 * time.Second))
			go func() {
				io.WriteString(cs, ClientPreface)
				fr.WriteSettings()
				fr.WritePing(false, [8]byte{7})
				if tc.request {
					var hb bytes.Buffer
					enc := hpack.NewEncoder(&hb)
					g := get("/")
					for i := 0; i+1 < len(g); i += 2 {
						enc.WriteField(hpack.HeaderField{Name: g[i], Value: g[i+1]})
					}
					fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
				}
			}()
			start := time.Now()
			var acked time.Duration
			for acked == 0 || (tc.request && !respEnded(wc)) {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatal(err)
				}
				if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
					acked = time.Since(start)
				}
			}
			writes := wc.framesOf(t)
			for _, w := range writes {
				if len(w) == 1 && w[0] == "ping-ack" && tc.request {
					t.Errorf("the ACK went in a Write of its own (writes %v), want it with the response", writes)
				}
			}
			if !tc.request && acked < tc.delay/2 {
				t.Errorf("acked after %v, want after about %v", acked, tc.delay)
			}
		})
	}
}

// respEnded says whether the server wrote a DATA frame (the response's).
func respEnded(wc *writesConn) bool {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	for _, w := range wc.writes {
		if bytes.Contains(w, []byte("ok")) {
			return true
		}
	}
	return false
}

// TestServerAcksAPingFloodInBatches: a peer sending PINGs faster than
// anything is written has their ACKs written maxPendingAcks at a time,
// the reader waiting for each write: what is owed stays bounded.
func TestServerAcksAPingFloodInBatches(t *testing.T) {
	setAckDelay(t, time.Hour)
	cs, ss := net.Pipe()
	defer cs.Close()
	wc := &writesConn{Conn: ss}
	s := &Server{Handler: http.NotFoundHandler()}
	done := make(chan struct{})
	go func() { s.ServeConn(context.Background(), wc); close(done) }()
	defer func() { cs.Close(); <-done }()
	fr := http2.NewFramer(cs, cs)
	// ACKs left owed (a batch that is never written) fail the read, not
	// the package's timeout.
	cs.SetReadDeadline(time.Now().Add(10 * time.Second))
	go func() {
		io.WriteString(cs, ClientPreface)
		fr.WriteSettings()
		for i := range 3 * maxPendingAcks {
			fr.WritePing(false, [8]byte{byte(i)})
		}
	}()
	acks := 0
	for acks < 3*maxPendingAcks {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
			if p.Data[0] != byte(acks) {
				t.Fatalf("ACK %d carries %d: out of order", acks, p.Data[0])
			}
			acks++
		}
	}
	for _, w := range wc.framesOf(t) {
		n := 0
		for _, k := range w {
			if k == "ping-ack" {
				n++
			}
		}
		if n != 0 && n != maxPendingAcks {
			t.Errorf("a Write with %d ACKs, want %d at a time", n, maxPendingAcks)
		}
	}
}

// TestClientAcksAPingWithItsNextWrite: the client side too — a server's
// PING (gRPC servers send one per burst of DATA they get) is acked with
// the client's next write, here the next request's HEADERS.
func TestClientAcksAPingWithItsNextWrite(t *testing.T) {
	setAckDelay(t, time.Hour)
	var wc *writesConn
	tr := &Transport{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		wc = &writesConn{Conn: c}
		return wc, nil
	}}
	defer tr.CloseIdleConnections()
	addr, _ := listen(t, func(c net.Conn) {
		rs := acceptRaw(t, c)
		for i := 0; ; i++ {
			id, ok := rs.nextHeaders()
			if !ok {
				return
			}
			if i == 0 {
				rs.fr.WritePing(false, [8]byte{9})
			}
			rs.hb.Reset()
			rs.he.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			rs.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rs.hb.Bytes(), EndStream: true, EndHeaders: true})
		}
	})
	for range 2 {
		resp, err := roundTripGuarded(t, tr, newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
		if err != nil {
			t.Fatal(err)
		}
		readGuarded(t, resp)
	}
	writes := wc.framesOf(t)
	with := false
	for _, w := range writes {
		for i, k := range w {
			if k == "ping-ack" {
				if len(w) == 1 {
					t.Errorf("the ACK went in a Write of its own: %v", writes)
				}
				with = with || (i+1 < len(w) || i > 0)
			}
		}
	}
	if !with {
		t.Errorf("no ACK sent with the second request: %v", writes)
	}
}
