package h2

// Attacks on the client (Transport) from a hostile server, or from the
// request an app hands the relay: an attack review of the client's first
// version (session 29). Each test failed against that version because of
// the defect its comment describes; each defect is fixed, and the test
// keeps it so.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// acGuard bounds every wait of these tests: a hang guard, never a
// performance assertion.
const acGuard = 10 * time.Second

// acServe runs script as the server of each connection accepted on a
// loopback listener (n counts them, from 1), after the client's preface
// was read and an empty SETTINGS sent.
func acServe(t *testing.T, script func(rs *rawConn, n int32)) (string, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	addr, _ := listen(t, func(c net.Conn) {
		n := conns.Add(1)
		script(acceptRaw(t, c), n)
	})
	return addr, &conns
}

// acUntil reads frames until match, or an error (the read deadline is the
// hang guard); unlike rawConn.until it never fails the test, so a server
// goroutine can use it.
func acUntil(rs *rawConn, match func(http2.Frame) bool) (http2.Frame, error) {
	rs.c.SetReadDeadline(time.Now().Add(acGuard))
	defer rs.c.SetReadDeadline(time.Time{})
	for {
		f, err := rs.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if match(f) {
			return f, nil
		}
	}
}

// acHeaders writes a header block as one HEADERS frame; errors are the
// client's going away, which the test itself reports.
func acHeaders(rs *rawConn, id uint32, end bool, fields ...string) error {
	rs.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		rs.he.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return rs.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rs.hb.Bytes(), EndStream: end, EndHeaders: true})
}

func isHeaders(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok }

func isPingAck(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() }

// acDrain reads what the client sends until it goes.
func acDrain(rs *rawConn) { io.Copy(io.Discard, rs.c) }

// acClient is a Transport whose connections wrap can replace (n counts
// the dials, from 1).
func acClient(t *testing.T, wrap func(n int32, c net.Conn) net.Conn) *Transport {
	var dials atomic.Int32
	tr := &Transport{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil || wrap == nil {
			return c, err
		}
		return wrap(dials.Add(1), c), nil
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// acPool is the connections of tr's pool for addr.
func acPool(tr *Transport, addr string) []*clientConn {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if p := tr.pools[addr]; p != nil {
		return append([]*clientConn(nil), p.conns...)
	}
	return nil
}

// acStream is the open stream id of any of tr's connections.
func acStream(tr *Transport, id uint32) *clientStream {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, p := range tr.pools {
		for _, cc := range p.conns {
			cc.mu.Lock()
			cs := cc.streams[id]
			cc.mu.Unlock()
			if cs != nil {
				return cs
			}
		}
	}
	return nil
}

// acWaitFor polls cond (internal state) until it holds; false after the
// guard.
func acWaitFor(cond func() bool) bool {
	deadline := time.Now().Add(acGuard)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// recBody is a request body that records its Close (and closes what it
// reads from, as a real body's Close ends a blocked Read).
type recBody struct {
	r      io.Reader
	c      io.Closer
	once   sync.Once
	closed chan struct{}
}

func newRecBody(r io.Reader, c io.Closer) *recBody {
	return &recBody{r: r, c: c, closed: make(chan struct{})}
}

func (b *recBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *recBody) Close() error {
	b.once.Do(func() {
		close(b.closed)
		if b.c != nil {
			b.c.Close()
		}
	})
	return nil
}

func (b *recBody) wasClosed() bool {
	select {
	case <-b.closed:
		return true
	case <-time.After(acGuard):
		return false
	}
}

// Defect: a request body that is still being read when the response ends
// is never closed. The net/http RoundTripper contract: "RoundTrip must
// always close the body, including on errors" (it may do so later, in
// another goroutine). When the server's complete response arrives first
// (RFC 9113 §8.1 allows it), responseEnded resets the stream and the body
// writer's sendData fails — but only once the writer's rest.Read returns:
// a body the app holds open (an app that sends a partial request and
// waits) keeps the writer goroutine and the body forever, one more for
// each such request. x/net's transport closes the body to end the Read
// (abortRequestBodyWrite).
func TestAttackClientRequestBodyNotClosedWhenResponseEndsFirst(t *testing.T) {
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		f, err := acUntil(rs, isHeaders)
		if err != nil {
			return
		}
		id := f.Header().StreamID
		acHeaders(rs, id, false, ":status", "200")
		rs.fr.WriteData(id, true, []byte("done"))
		acDrain(rs)
	})
	tr := newClient(t)
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	body := newRecBody(pr, pr)
	req := newRequest(t, context.Background(), "POST", "http://"+addr+"/", body)
	req.ContentLength = -1
	resp, err := roundTripGuarded(t, tr, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAllGuarded(t, resp); got != "done" {
		t.Fatalf("response %q", got)
	}
	if !body.wasClosed() {
		t.Error("the response is complete and its stream reset, but the request body (still open at the app) was never closed: the body writer goroutine waits in its Read forever")
	}
}

// hookConn calls afterWrite after each Write, with what was written.
type hookConn struct {
	net.Conn
	afterWrite func(p []byte)
}

func (c hookConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.afterWrite != nil {
		c.afterWrite(p[:n])
	}
	return n, err
}

// hasHeadersFor reports whether p, the client's bytes of one Write, holds
// a HEADERS frame of stream id.
func hasHeadersFor(p []byte, id uint32) bool {
	p = bytes.TrimPrefix(p, []byte(ClientPreface))
	for len(p) >= 9 {
		n := int(p[0])<<16 | int(p[1])<<8 | int(p[2])
		if http2.FrameType(p[3]) == http2.FrameHeaders && binary.BigEndian.Uint32(p[5:9])&(1<<31-1) == id {
			return true
		}
		if len(p) < 9+n {
			return false
		}
		p = p[9+n:]
	}
	return false
}

// Defect: a streamed request body (not held) is never closed when the
// response ends before RoundTrip starts the body writer. roundTrip
// (client.go, `if !allNow && cs.ended() == nil && ...`) does not start
// writeBody once the stream has ended — responseEnded sets cs.err when
// the response's END_STREAM comes before the request's — and returns the
// response; RoundTrip closes the body only when it was held whole
// (`if whole && body != nil`). Nobody closes it: the net/http
// RoundTripper contract ("RoundTrip must always close the body") is
// broken, and with it the relay's inbound stream (or an HTTP/1 app's
// request) is never released. The interleaving — the response processed
// between the HEADERS' Write and the check — is forced here by holding
// that Write until the reader has seen the response, as a descheduled
// RoundTrip goroutine would.
func TestAttackClientBodyLeakedWhenWriterNotStarted(t *testing.T) {
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		f, err := acUntil(rs, isHeaders)
		if err != nil {
			return
		}
		acHeaders(rs, f.Header().StreamID, true, ":status", "204")
		acDrain(rs)
	})
	var tr *Transport
	var once sync.Once
	tr = acClient(t, func(_ int32, c net.Conn) net.Conn {
		return hookConn{Conn: c, afterWrite: func(p []byte) {
			if !hasHeadersFor(p, 1) {
				return
			}
			once.Do(func() {
				// The reader takes the response (the server answers the
				// HEADERS just written) and ends the stream's sending
				// side: wait for that.
				acWaitFor(func() bool {
					cs := acStream(tr, 1)
					return cs != nil && cs.ended() != nil
				})
			})
		}}
	})
	body := newRecBody(io.MultiReader(strings.NewReader("request")), nil)
	req := newRequest(t, context.Background(), "POST", "http://"+addr+"/", body)
	req.ContentLength = -1
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != 204 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if !body.wasClosed() {
		t.Error("RoundTrip returned the response and the request body was never closed (the body writer was never started)")
	}
}

// Defect: a server whose SETTINGS allow no stream
// (SETTINGS_MAX_CONCURRENT_STREAMS 0, which RFC 9113 §6.5.2 allows) makes
// getConn dial without end. dial adds the new connection to the pool
// once its SETTINGS arrived; reserve refuses it (0 streams); getConn's
// loop finds no room and dials again — a hot loop of TCP (or mTLS)
// handshakes for as long as the request's context lives (forever for one
// without a deadline), and every connection stays in the pool, open, with
// its reader goroutine (no stream ever closes on it, so no idle timer
// starts; CloseIdleConnections aside nothing ends them). The connections a
// hostile server gets the client to hold grow without bound. Expected: a
// connection just dialled that cannot take the request is not followed by
// another dial for the same request (wait for room, or fail).
func TestAttackClientDialsWithoutEndOnZeroStreams(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), acGuard)
	defer cancel()
	const limit = 8
	var conns atomic.Int32
	addr, _ := listen(t, func(c net.Conn) {
		if conns.Add(1) >= limit {
			cancel() // enough to show it: end the request
		}
		var pre [len(ClientPreface)]byte
		if _, err := io.ReadFull(c, pre[:]); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 0})
		io.Copy(io.Discard, c)
	})
	tr := newClient(t)
	_, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
	if err == nil {
		t.Fatal("a request went through a server that allows no stream")
	}
	if n := conns.Load(); n > 2 {
		t.Errorf("one request dialled %d connections (stopped at %d) to a server allowing 0 streams; %d left open in the pool", n, limit, len(acPool(tr, addr)))
	}
}

// Defect: a stream is opened on a connection that received GOAWAY after
// getConn reserved it, and then waits for a response that never comes.
// roundTrip (client.go, under cc.mu before `cs.id = cc.nextID`) checks
// cc.dead but not cc.goAway; processGoAway failed only the streams open
// then (those beyond the last stream identifier), so this one, opened
// past the GOAWAY's last stream, is one the server ignores (RFC 9113
// §6.8: "the sender of the GOAWAY frame ... ignores frames sent on
// streams initiated by the receiver" after it) — the request hangs until
// its context ends (forever without a deadline) though it was never
// processed and could have gone, safely, on a new connection. The GOAWAY
// is made to arrive between reserve and the stream's opening (where the
// trace's GotConn runs).
func TestAttackClientStreamOpenedAfterGoAway(t *testing.T) {
	goAwayNow := make(chan struct{})
	processed := make(chan error, 1)
	addr, conns := acServe(t, func(rs *rawConn, n int32) {
		if n == 1 {
			select {
			case <-goAwayNow:
			case <-time.After(acGuard):
				processed <- errors.New("never asked")
				return
			}
			rs.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
			rs.fr.WritePing(false, [8]byte{1})
			// The client's reader handles frames in order: at the PING's
			// ACK it has handled the GOAWAY.
			_, err := acUntil(rs, isPingAck)
			processed <- err
			acDrain(rs) // streams after the GOAWAY ignored, as RFC 9113 §6.8 says
			return
		}
		for {
			id, ok := rs.nextHeaders()
			if !ok {
				return
			}
			acHeaders(rs, id, true, ":status", "204")
		}
	})
	tr := newClient(t)
	var once sync.Once
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
		once.Do(func() {
			close(goAwayNow)
			if err := <-processed; err != nil {
				t.Errorf("the GOAWAY: %v", err)
			}
		})
	}})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second) // the hang guard
	defer cancel()
	resp, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatalf("a request never processed (its stream opened after the GOAWAY) failed: %v after %d connections; want it sent again on a new one", err, conns.Load())
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || conns.Load() != 2 {
		t.Errorf("%d over %d connections, want 204 from the second", resp.StatusCode, conns.Load())
	}
}

// Defect: a request that never left the client fails, not sent again,
// when its connection died between getConn's reserve and the stream's
// opening. roundTrip returns cc.dead (here errServerGone) as it is, not
// wrapped in ErrUnprocessed, so RoundTrip's retry does not apply: a
// server closing an idle connection (its idle timeout, a restart) as a
// request picks it fails that request although nothing of it was written
// — retrying is safe (x/net's transport retries such requests). The close
// is made to arrive where the trace's GotConn runs.
func TestAttackClientNotRetriedWhenConnDiesBeforeOpen(t *testing.T) {
	closeNow := make(chan struct{})
	addr, conns := acServe(t, func(rs *rawConn, n int32) {
		if n == 1 {
			select {
			case <-closeNow:
			case <-time.After(acGuard):
			}
			rs.c.Close()
			return
		}
		for {
			id, ok := rs.nextHeaders()
			if !ok {
				return
			}
			acHeaders(rs, id, true, ":status", "204")
		}
	})
	tr := newClient(t)
	var once sync.Once
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
		once.Do(func() {
			close(closeNow)
			// The reader saw the close: the connection left the pool.
			if !acWaitFor(func() bool { return len(acPool(tr, addr)) == 0 }) {
				t.Error("the closed connection stayed in the pool")
			}
		})
	}})
	ctx, cancel := context.WithTimeout(ctx, acGuard)
	defer cancel()
	resp, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatalf("a request of which nothing was written failed: %v (errors.Is ErrUnprocessed: %v); want it sent on a new connection", err, errors.Is(err, ErrUnprocessed))
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || conns.Load() != 2 {
		t.Errorf("%d over %d connections, want 204 from the second", resp.StatusCode, conns.Load())
	}
}

// Defect: the stream-level receive window taken by padding is given back
// only by a Read of response data (clientBody.Read, once cs.consumed
// reaches half the window), never when the padding arrives. RFC 9113
// §6.1: the whole DATA payload, padding included, counts against flow
// control; padding is never read, so its window must be returned by the
// receiver on its own (x/net's transport returns it at once, stream and
// connection). A server that sends padded DATA without data (legal:
// padding hides the size of messages, §10.7) exhausts the stream window
// while the caller waits in Read for data that can then never come: a
// deadlock only the request's context ends. data() gives the padding
// back to the connection at once but only counts it in cs.consumed for
// the stream.
func TestAttackClientPaddingExhaustsStreamWindow(t *testing.T) {
	updated := make(chan bool, 1)
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		f, err := acUntil(rs, isHeaders)
		if err != nil {
			updated <- false
			return
		}
		id := f.Header().StreamID
		acHeaders(rs, id, false, ":status", "200")
		pad := make([]byte, 255)
		// 255 frames of 256 bytes (1 pad length + 255 padding): 65280 of
		// the stream's 65535 bytes, no data.
		for range 255 {
			if err := rs.fr.WriteDataPadded(id, false, nil, pad); err != nil {
				updated <- false
				return
			}
		}
		_, err = acUntil(rs, func(f http2.Frame) bool {
			w, ok := f.(*http2.WindowUpdateFrame)
			return ok && w.StreamID == id
		})
		if err != nil {
			updated <- false
			rs.fr.WriteRSTStream(id, http2.ErrCodeFlowControl) // ends the client's Read
			acDrain(rs)
			return
		}
		updated <- true
		rs.fr.WriteData(id, true, []byte("data"))
		acDrain(rs)
	})
	tr := newClient(t)
	tr.StreamWindow = 65535
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body) // waits for data, as a relay does
	resp.Body.Close()
	if !<-updated {
		t.Errorf("the stream's window, taken by padding, was never given back while the caller waited for data: the server can send nothing more (read %q, %v)", b, err)
	}
}

// slowDialConn holds dial's clearing of the write deadline (the call just
// before dial waits for the SETTINGS) until the connection was closed,
// and its Close does not end the reader's Read at once: the interleaving
// of a dial goroutine descheduled between its select and its append
// while the reader handles the SETTINGS, a GOAWAY, and the die they lead
// to.
type slowDialConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *slowDialConn) SetWriteDeadline(d time.Time) error {
	if d.IsZero() {
		select {
		case <-c.closed:
		case <-time.After(acGuard):
		}
	}
	return c.Conn.SetWriteDeadline(d)
}

func (c *slowDialConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil // the real close is the test's cleanup
}

// Defect: dial appends a connection to the pool without checking that it
// is still alive. If the server sends its SETTINGS then GOAWAY (or closes)
// and the reader handles them — processGoAway/die call forget, which does
// not find the connection, not yet in the pool — before dial's `t.mu`
// section, dial adds the dead connection after its forget: it stays in
// p.conns for ever (die runs once; reserve refuses it, nothing removes
// it), with its buffers. Each time a hostile server repeats this, one
// more; getConn then dials again anyway. Expected: dial checks cc.dead /
// cc.goAway under the lock it appends under.
func TestAttackClientDeadConnLeftInPool(t *testing.T) {
	addr, _ := acServe(t, func(rs *rawConn, n int32) {
		if n == 1 {
			rs.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
			acDrain(rs)
			return
		}
		for {
			id, ok := rs.nextHeaders()
			if !ok {
				return
			}
			acHeaders(rs, id, true, ":status", "204")
		}
	})
	tr := acClient(t, func(n int32, c net.Conn) net.Conn {
		if n != 1 {
			return c
		}
		t.Cleanup(func() { c.Close() })
		return &slowDialConn{Conn: c, closed: make(chan struct{})}
	})
	ctx, cancel := context.WithTimeout(context.Background(), acGuard)
	defer cancel()
	resp, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, cc := range acPool(tr, addr) {
		cc.mu.Lock()
		dead, goAway := cc.dead, cc.goAway
		cc.mu.Unlock()
		if dead != nil || goAway {
			t.Errorf("a connection that died (%v, GOAWAY %v) before dial added it stays in the pool", dead, goAway)
		}
	}
}

// Defect: a response defined to have no content, with a content-length,
// is refused when its END_STREAM comes on an empty DATA frame rather than
// on the HEADERS. RFC 9113 §8.1.1: "A response that is defined to have no
// content, as described in [HTTP], MAY have a non-zero content-length
// header field, even though no content is included in DATA frames" — a
// 304, and the response to a HEAD. head() exempts both when the HEADERS
// end the stream, but data() does not: for a 304 it checks the DATA
// against the content-length (`cs.declared >= 0 && ... f.StreamEnded() &&
// cs.received != cs.declared`) and fails the body read; for HEAD any DATA
// frame, even empty, is "DATA in a response without a body" and the
// stream is reset with PROTOCOL_ERROR. Servers do end a stream with an
// empty DATA frame after a flushed header (weft's own, x/net's).
func TestAttackClientNoContentResponseWithLength(t *testing.T) {
	t.Run("304", func(t *testing.T) {
		addr, _ := acServe(t, func(rs *rawConn, _ int32) {
			f, err := acUntil(rs, isHeaders)
			if err != nil {
				return
			}
			id := f.Header().StreamID
			acHeaders(rs, id, false, ":status", "304", "content-length", "5", "etag", `"v1"`)
			rs.fr.WriteData(id, true, nil)
			acDrain(rs)
		})
		tr := newClient(t)
		req := newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil)
		req.Header.Set("If-None-Match", `"v1"`)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || len(b) != 0 {
			t.Errorf("a 304 with content-length 5, ended by an empty DATA frame: body %q, %v; want empty, no error", b, err)
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		reset := make(chan http2.ErrCode, 1)
		addr, _ := acServe(t, func(rs *rawConn, _ int32) {
			f, err := acUntil(rs, isHeaders)
			if err != nil {
				return
			}
			id := f.Header().StreamID
			acHeaders(rs, id, false, ":status", "200", "content-length", "5")
			rs.fr.WriteData(id, true, nil)
			rs.fr.WritePing(false, [8]byte{2})
			// Frames are handled in order: anything the empty DATA frame
			// led to is written before the PING's ACK.
			var code http2.ErrCode
			acUntil(rs, func(f http2.Frame) bool {
				if r, ok := f.(*http2.RSTStreamFrame); ok && r.StreamID == id {
					code = r.ErrCode
				}
				return isPingAck(f)
			})
			reset <- code
			acDrain(rs)
		})
		tr := newClient(t)
		resp, err := tr.RoundTrip(newRequest(t, context.Background(), "HEAD", "http://"+addr+"/", nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if code := <-reset; code == http2.ErrCodeProtocol {
			t.Errorf("a HEAD response ended by an empty DATA frame: the client reset the stream with %v", code)
		}
	})
}

// Defect: the server's connection preface is not checked to be a
// SETTINGS frame that is not an ACK. readLoop's first-frame check accepts
// any *http2.SettingsFrame, ACK included; RFC 9113 §3.4: "The server
// connection preface consists of a potentially empty SETTINGS frame
// (Section 6.5) that MUST be the first frame the server sends", an ACK
// being the acknowledgement of the client's SETTINGS, not the server's
// own (§6.5: an ACK "indicates that this frame acknowledges receipt and
// application of the peer's SETTINGS frame"). The client takes the ACK
// for the server's SETTINGS: dial lets requests through before the
// server's limits (MAX_CONCURRENT_STREAMS, windows, frame size) are
// known — what waiting for SETTINGS is for — and the connection error
// PROTOCOL_ERROR §3.4 asks for never comes.
func TestAttackClientSettingsAckAsPreface(t *testing.T) {
	goneAway := make(chan bool, 1)
	addr, _ := listen(t, func(c net.Conn) {
		var pre [len(ClientPreface)]byte
		if _, err := io.ReadFull(c, pre[:]); err != nil {
			goneAway <- false
			return
		}
		rs := &rawConn{t: t, c: c, fr: http2.NewFramer(c, c)}
		rs.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		rs.he = hpack.NewEncoder(&rs.hb)
		rs.fr.WriteSettingsAck() // not the server's SETTINGS
		f, err := acUntil(rs, func(f http2.Frame) bool {
			_, ga := f.(*http2.GoAwayFrame)
			return ga || isHeaders(f)
		})
		if err != nil {
			goneAway <- false
			return
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			goneAway <- g.ErrCode == http2.ErrCodeProtocol
			return
		}
		goneAway <- false
		acHeaders(rs, f.Header().StreamID, true, ":status", "204")
		acDrain(rs)
	})
	tr := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), acGuard)
	defer cancel()
	resp, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
	if err == nil {
		resp.Body.Close()
	}
	if !<-goneAway || err == nil {
		t.Errorf("a server whose first frame is a SETTINGS ACK: the request %v; want a connection error (GOAWAY PROTOCOL_ERROR)", err)
	}
}

// Defect: response trailers are not checked for connection-specific
// fields. RFC 9113 §8.2.2: "An endpoint MUST NOT generate an HTTP/2
// message containing connection-specific header fields. ... Any message
// containing connection-specific header fields MUST be treated as
// malformed" — and §8.1.1 makes a malformed response a stream error
// (PROTOCOL_ERROR) the client must not take. head() refuses them in the
// header (`forbidden[hf.Name]`); trailers() takes any regular field, and
// the relay hands them on in resp.Trailer (to an HTTP/1 app, a
// "Connection" or "Transfer-Encoding" field where the app's server
// interprets it).
func TestAttackClientForbiddenFieldInTrailers(t *testing.T) {
	for _, field := range []string{"connection", "transfer-encoding", "upgrade"} {
		t.Run(field, func(t *testing.T) {
			addr, _ := acServe(t, func(rs *rawConn, _ int32) {
				f, err := acUntil(rs, isHeaders)
				if err != nil {
					return
				}
				id := f.Header().StreamID
				acHeaders(rs, id, false, ":status", "200", "trailer", "X-T")
				rs.fr.WriteData(id, false, []byte("body"))
				acHeaders(rs, id, true, "x-t", "1", field, "close")
				acDrain(rs)
			})
			tr := newClient(t)
			resp, err := roundTripGuarded(t, tr, newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
			if err != nil {
				t.Fatal(err)
			}
			_, err = readGuarded(t, resp)
			resp.Body.Close()
			if err == nil {
				t.Errorf("trailers with %q were taken: resp.Trailer %v; want the response malformed", field, resp.Trailer)
			}
		})
	}
}

// gateConn stands for a connection whose server stopped reading, its TCP
// buffers full: once armed, a Write blocks (until Close, or the test's
// end), as the kernel's would.
type gateConn struct {
	net.Conn
	armed   atomic.Bool
	entered chan struct{}
	once    sync.Once
	release chan struct{}
	relOnce sync.Once
}

func (c *gateConn) Write(p []byte) (int, error) {
	if c.armed.Load() {
		c.once.Do(func() { close(c.entered) })
		<-c.release
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

func (c *gateConn) open() { c.relOnce.Do(func() { close(c.release) }) }

func (c *gateConn) Close() error {
	c.open()
	return c.Conn.Close()
}

// Defect: a request's RoundTrip is not bounded by its context while
// another stream's Write is blocked. roundTrip writes the HEADERS (and a
// held body) from RoundTrip's goroutine under cc.wmu (client.go,
// `cc.wmu.Lock()` in roundTrip), and nothing bounds the wait for wmu or
// the Write: when a server stops reading (its TCP window full), a body
// writer blocked in c.Write holds wmu, every other RoundTrip on that
// connection waits for wmu past its context — the AfterFunc's abort sets
// cs.err but cannot wake a goroutine blocked on a mutex — and the
// connection is never given up (no write deadline): a hostile server
// holds the relay's requests, each with its goroutine, for as long as it
// likes. x/net writes a request from a goroutine of its own and returns
// from RoundTrip at the context's end. The same wmu wait is in
// clientBody.Read (giveBack's WINDOW_UPDATE) and Close (the RST_STREAM).
func TestAttackClientRoundTripHangsOnBlockedWrite(t *testing.T) {
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		f, err := acUntil(rs, isHeaders)
		if err != nil {
			return
		}
		acHeaders(rs, f.Header().StreamID, false, ":status", "200")
		acDrain(rs)
	})
	var gc *gateConn
	tr := acClient(t, func(_ int32, c net.Conn) net.Conn {
		gc = &gateConn{Conn: c, entered: make(chan struct{}), release: make(chan struct{})}
		return gc
	})
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	req := newRequest(t, context.Background(), "POST", "http://"+addr+"/", pr)
	req.ContentLength = -1
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	// The server stops reading: the body writer's next Write blocks, under
	// cc.wmu.
	gc.armed.Store(true)
	go pw.Write([]byte("more of the body"))
	select {
	case <-gc.entered:
	case <-time.After(acGuard):
		t.Fatal("the body writer never wrote")
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/second", nil))
		done <- err
	}()
	t.Cleanup(func() {
		gc.open() // the connection fails; every waiter goes
		<-done
		resp.Body.Close() // blocks too while the Write does
	})
	select {
	case err := <-done:
		done <- err // for the cleanup
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the second request: %v, want its deadline", err)
		}
	case <-time.After(acGuard):
		t.Error("a RoundTrip with a 200ms deadline was still blocked 10s later, waiting for a write lock another stream's blocked Write holds")
	}
}

// zeroThenEOF is a body that, once its bytes are read, returns (0, nil)
// once before io.EOF — which io.Reader allows ("discouraged", not
// forbidden; a reader over a framed source can do it at a frame
// boundary).
type zeroThenEOF struct {
	r     *strings.Reader
	zeros int
}

func (b *zeroThenEOF) Read(p []byte) (int, error) {
	if b.r.Len() == 0 && b.zeros == 0 {
		b.zeros++
		return 0, nil
	}
	return b.r.Read(p)
}

func (*zeroThenEOF) Close() error { return nil }

// Defect: a request resent with a body from GetBody also sends again the
// bytes RoundTrip had read ahead. readWhole read a small body of declared
// length into held but could not see its end (the extra Read returned 0,
// nil), so whole is false and the rest of the body goes by the body
// writer; the server refuses the stream (REFUSED_STREAM: not processed,
// RFC 9113 §8.7, safe to resend); the writer had claimed the body, so
// RoundTrip takes a new one from req.GetBody — and sends it after the
// stale held (client.go, the retry loop: `body, err = req.GetBody()`
// leaves held and whole as they were). The new try sends the body's
// first bytes twice: here the content-length check catches it and the
// request fails; without a declared length (a BufferedBody read ahead)
// the server would get a corrupted body. Expected: a body from GetBody
// starts afresh (held = nil, or read whole again).
func TestAttackClientGetBodyRetrySendsStaleHeld(t *testing.T) {
	const payload = "payload"
	var tries atomic.Int32
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		for {
			f, err := acUntil(rs, isHeaders)
			if err != nil {
				return
			}
			id := f.Header().StreamID
			var body []byte
			for !f.(interface{ StreamEnded() bool }).StreamEnded() {
				if f, err = acUntil(rs, func(f http2.Frame) bool {
					_, data := f.(*http2.DataFrame)
					_, reset := f.(*http2.RSTStreamFrame)
					return f.Header().StreamID == id && (data || reset)
				}); err != nil {
					return
				}
				if _, reset := f.(*http2.RSTStreamFrame); reset {
					break
				}
				body = append(body, f.(*http2.DataFrame).Data()...)
			}
			if tries.Add(1) == 1 {
				rs.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
				continue
			}
			acHeaders(rs, id, false, ":status", "200")
			rs.fr.WriteData(id, true, body)
		}
	})
	tr := newClient(t)
	req := newRequest(t, context.Background(), "POST", "http://"+addr+"/", &zeroThenEOF{r: strings.NewReader(payload)})
	req.ContentLength = int64(len(payload))
	req.GetBody = func() (io.ReadCloser, error) { return &zeroThenEOF{r: strings.NewReader(payload)}, nil }
	ctx, cancel := context.WithTimeout(context.Background(), acGuard)
	defer cancel()
	resp, err := roundTripGuarded(t, tr, req.WithContext(ctx))
	if err != nil {
		t.Fatalf("a refused request, its body from GetBody: %v after %d tries; want it resent whole", err, tries.Load())
	}
	if got := readAll(t, resp); got != payload {
		t.Errorf("the server got %q, want %q", got, payload)
	}
}

// Defect: a body held whole (a BufferedBody that has arrived whole) is
// sent with the ContentLength the request declares, without checking it
// against the bytes held. encodeHeaders writes "content-length" from
// req.ContentLength, roundTrip writes held; writeBody's check
// (`sent > cl || eof && sent < cl`) is only on the streamed path. The
// client so generates a malformed request (RFC 9113 §8.1.1: a
// content-length that does not equal the sum of the DATA frames'
// payloads), which a lenient server takes as a truncated (or
// overlong) request; net/http's transports refuse it ("http:
// ContentLength=10 with Body length 5").
func TestAttackClientHeldBodyContentLengthUnchecked(t *testing.T) {
	type seen struct {
		cl string
		n  int
	}
	got := make(chan seen, 1)
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		f, err := acUntil(rs, isHeaders)
		if err != nil {
			got <- seen{"?", -1}
			return
		}
		h := f.(*http2.MetaHeadersFrame)
		id := h.StreamID
		s := seen{cl: "none"}
		for _, hf := range h.RegularFields() {
			if hf.Name == "content-length" {
				s.cl = hf.Value
			}
		}
		for !h.StreamEnded() {
			f, err := acUntil(rs, func(f http2.Frame) bool { return f.Header().StreamID == id })
			if err != nil {
				break
			}
			if d, ok := f.(*http2.DataFrame); ok {
				s.n += len(d.Data())
				if d.StreamEnded() {
					break
				}
				continue
			}
			break // RST_STREAM: the client gave up the request
		}
		got <- s
		acHeaders(rs, id, true, ":status", "204")
		acDrain(rs)
	})
	tr := newClient(t)
	req := newRequest(t, context.Background(), "POST", "http://"+addr+"/", bufferedBody{bytes.NewReader([]byte("short"))})
	req.ContentLength = 10
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return // refused, as net/http's transports do
	}
	resp.Body.Close()
	if s := <-got; s.cl == "10" && s.n == 5 {
		t.Errorf("the client sent content-length %s with %d bytes of DATA, and took the response", s.cl, s.n)
	}
}
