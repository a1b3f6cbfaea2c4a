package h2

// What the client refuses before dialling, how often it dials, what it
// keeps of a host, a stalled connection's deadline (session 31, from the
// mutants of client.go that lived).

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestClientRefusesInvalidRequestsBeforeDialling: a request that cannot
// be written as HTTP/2 fails in RoundTrip before any connection is
// dialled or used — an invalid :path, method, Host, header field or
// trailer — and leaves the Transport serving: the next valid request goes
// over one connection.
func TestClientRefusesInvalidRequestsBeforeDialling(t *testing.T) {
	paths := make(chan string, 4)
	addr, conns := listen(t, func(c net.Conn) {
		rs := acceptRaw(t, c)
		for {
			f, err := rs.fr.ReadFrame()
			if err != nil {
				return
			}
			if h, ok := f.(*http2.MetaHeadersFrame); ok {
				paths <- h.PseudoValue("path")
				acHeaders(rs, h.StreamID, true, ":status", "204")
			}
		}
	})
	tr := newClient(t)
	for _, tc := range []struct {
		name string
		mod  func(req *http.Request)
	}{
		{"a :path not starting with /", func(req *http.Request) { req.URL.Opaque = "nopath" }},
		{"an invalid method", func(req *http.Request) { req.Method = "GE T" }},
		{"an invalid Host", func(req *http.Request) { req.Host = "a host" }},
		{"an invalid header field name", func(req *http.Request) { req.Header["Bad Name"] = []string{"v"} }},
		{"an invalid header field value", func(req *http.Request) { req.Header["X-V"] = []string{"a\nb"} }},
		{"a trailer that may never be", func(req *http.Request) { req.Trailer = http.Header{"Content-Length": nil} }},
		{"an invalid trailer name", func(req *http.Request) { req.Trailer = http.Header{"Bad Name": nil} }},
	} {
		req := newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil)
		tc.mod(req)
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Errorf("%s: sent", tc.name)
		}
		if n := conns.Load(); n != 0 {
			t.Fatalf("%s: refused after dialling (%d connections)", tc.name, n)
		}
	}
	// Valid: a path, and OPTIONS's asterisk-form.
	for _, path := range []string{"/p", "*"} {
		req := newRequest(t, context.Background(), "OPTIONS", "http://"+addr+"/p", nil)
		if path == "*" {
			req.URL.Path, req.URL.Opaque = "", "*"
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("a valid request (:path %s) after the refused ones: %v", path, err)
		}
		resp.Body.Close()
		if got := <-paths; got != path {
			t.Errorf(":path %q, want %q", got, path)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// TestClientBoundsDialsToAServerGoneAtOnce: a new connection whose server
// sends GOAWAY right after its SETTINGS is dialled again, but not for
// ever: a request dials three connections in all, then fails as
// ErrUnprocessed (it reached no server's application). slowDialConn holds
// each dial until the GOAWAY ended the connection, so every dial sees it.
func TestClientBoundsDialsToAServerGoneAtOnce(t *testing.T) {
	addr, conns := acServe(t, func(rs *rawConn, _ int32) {
		rs.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		acDrain(rs)
	})
	tr := acClient(t, func(_ int32, c net.Conn) net.Conn {
		t.Cleanup(func() { c.Close() })
		return &slowDialConn{Conn: c, closed: make(chan struct{})}
	})
	ctx, cancel := context.WithTimeout(context.Background(), acGuard)
	defer cancel()
	_, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/", nil))
	if !errors.Is(err, ErrUnprocessed) || !errors.Is(err, errWentAway) {
		t.Errorf("%v; want ErrUnprocessed, the connections gone at once", err)
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections dialled, want 3", n)
	}
}

// TestClientForgetsAHostWithNoConnection: once a host's last connection
// ended, the Transport keeps nothing for it (its pool goes): a relay
// that talked to many hosts does not hold one entry per host for ever.
func TestClientForgetsAHostWithNoConnection(t *testing.T) {
	addr, _ := acServe(t, func(rs *rawConn, _ int32) {
		f, err := acUntil(rs, isHeaders)
		if err != nil {
			return
		}
		acHeaders(rs, f.Header().StreamID, true, ":status", "204")
		// The server closes the connection (the listener's goroutine
		// returns).
	})
	tr := acClient(t, nil)
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !acWaitFor(func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return len(tr.pools) == 0
	}) {
		t.Errorf("the host's pool stays after its only connection ended: %d connections in it", len(acPool(tr, addr)))
	}
}

// deadlineConn records the write deadlines the client sets (and sets
// none: a Write here never times out), and blocks its Writes while
// armed until released, as a server that stopped reading for a while.
type deadlineConn struct {
	net.Conn
	armed   atomic.Bool
	entered chan struct{}
	once    sync.Once
	release chan struct{}
	mu      sync.Mutex
	wdl     time.Time
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if c.armed.Load() {
		c.once.Do(func() { close(c.entered) })
		<-c.release
	}
	return c.Conn.Write(p)
}

func (c *deadlineConn) SetWriteDeadline(d time.Time) error {
	c.mu.Lock()
	c.wdl = d
	c.mu.Unlock()
	return nil
}

func (c *deadlineConn) writeDeadline() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wdl
}

// TestClientClearsTheStallDeadline: a request that ends while another
// stream's write holds the connection sets a write deadline (the blocked
// write fails lingerTime later, and the connection with it); when the
// write gets through before, the deadline is cleared — the connection
// goes on serving, its later writes unbounded. The request that gave up
// gives its promised stream back: with the server's limit of two streams,
// the first still open, the third request goes on the same connection.
func TestClientClearsTheStallDeadline(t *testing.T) {
	addr, conns := acServe(t, func(rs *rawConn, _ int32) {
		rs.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 2})
		for first := true; ; first = false {
			id, ok := rs.nextHeaders()
			if !ok {
				return
			}
			acHeaders(rs, id, !first, ":status", "200")
		}
	})
	var dc *deadlineConn
	tr := acClient(t, func(_ int32, c net.Conn) net.Conn {
		dc = &deadlineConn{Conn: c, entered: make(chan struct{}), release: make(chan struct{})}
		return dc
	})
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	req := newRequest(t, context.Background(), "POST", "http://"+addr+"/", pr)
	req.ContentLength = -1
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	// The body writer's next Write blocks, holding the connection's writes.
	dc.armed.Store(true)
	go pw.Write([]byte("more of the body"))
	select {
	case <-dc.entered:
	case <-time.After(acGuard):
		t.Fatal("the body writer never wrote")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := tr.RoundTrip(newRequest(t, ctx, "GET", "http://"+addr+"/second", nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the request that waited for the write: %v, want its deadline", err)
	}
	if dc.writeDeadline().IsZero() {
		t.Fatal("no write deadline set for the blocked write")
	}
	// The write gets through.
	dc.armed.Store(false)
	close(dc.release)
	cc := acPool(tr, addr)[0]
	if !acWaitFor(func() bool { return !cc.stalled.Load() }) {
		t.Fatal("the connection stays stalled after its write got through")
	}
	if d := dc.writeDeadline(); !d.IsZero() {
		t.Errorf("the write deadline stays %v after the write got through", d)
	}
	resp3, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/third", nil))
	if err != nil {
		t.Fatalf("the next request: %v", err)
	}
	resp3.Body.Close()
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want the one", n)
	}
}

// TestClientSharesAConnectionWhileAStreamIsPromised: a stream promised to
// a caller and not yet opened counts against the server's
// MAX_CONCURRENT_STREAMS as one stream: a second request meanwhile goes
// on the same connection when the server allows more (here the 100
// assumed before its SETTINGS say otherwise, and they say nothing). The
// trace's GotConn holds the first request between the promise and the
// stream's opening.
func TestClientSharesAConnectionWhileAStreamIsPromised(t *testing.T) {
	addr, conns := acServe(t, func(rs *rawConn, _ int32) {
		for {
			id, ok := rs.nextHeaders()
			if !ok {
				return
			}
			acHeaders(rs, id, true, ":status", "204")
		}
	})
	tr := acClient(t, nil)
	hold, held := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hold) }) }
	t.Cleanup(release)
	ctx1 := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
		close(held)
		<-hold
	}})
	req1 := newRequest(t, ctx1, "GET", "http://"+addr+"/first", nil)
	first := make(chan error, 1)
	go func() {
		resp, err := tr.RoundTrip(req1)
		if err == nil {
			resp.Body.Close()
		}
		first <- err
	}()
	select {
	case <-held:
	case <-time.After(acGuard):
		t.Fatal("the first request never got its connection")
	}
	var info httptrace.GotConnInfo
	ctx2 := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { info = i }})
	resp, err := tr.RoundTrip(newRequest(t, ctx2, "GET", "http://"+addr+"/second", nil))
	release()
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if !info.Reused || conns.Load() != 1 {
		t.Errorf("the second request: reused %v, %d connections; want the first's connection, the one", info.Reused, conns.Load())
	}
}

// TestClientGivesBackAStreamPromisedToACallerGone: a caller whose context
// ends while the connection it dials waits for the server's SETTINGS
// gives back the stream promised to it once the dial is done: with a
// server allowing one stream, the next request goes on that connection,
// not on a new one.
func TestClientGivesBackAStreamPromisedToACallerGone(t *testing.T) {
	settings := make(chan struct{})
	addr, conns := listen(t, func(c net.Conn) {
		var pre [len(ClientPreface)]byte
		if _, err := io.ReadFull(c, pre[:]); err != nil {
			return
		}
		rs := &rawConn{t: t, c: c, fr: http2.NewFramer(c, c)}
		rs.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		rs.he = hpack.NewEncoder(&rs.hb)
		select {
		case <-settings:
		case <-time.After(acGuard):
			return
		}
		rs.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
		for {
			id, ok := rs.nextHeaders()
			if !ok {
				return
			}
			acHeaders(rs, id, true, ":status", "204")
		}
	})
	tr := acClient(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	req := newRequest(t, ctx, "GET", "http://"+addr+"/gone", nil)
	gone := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(req)
		gone <- err
	}()
	if !acWaitFor(func() bool { return conns.Load() == 1 }) {
		t.Fatal("never dialled")
	}
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("the request whose context ended: %v", err)
	}
	close(settings)
	if !acWaitFor(func() bool {
		pool := acPool(tr, addr)
		if len(pool) != 1 {
			return false
		}
		pool[0].mu.Lock()
		defer pool[0].mu.Unlock()
		return pool[0].reserved == 0
	}) {
		t.Fatal("the stream promised to the request whose context ended was never given back")
	}
	resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/next", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want the one", n)
	}
}

// TestClientUsesTheLastStreamIdentifier: a connection carries streams up
// to the last identifier a client may use, 2^31-1 (RFC 9113 §5.1.1); only
// past it does a request go on a new connection.
func TestClientUsesTheLastStreamIdentifier(t *testing.T) {
	ids := make(chan uint32, 4)
	addr, conns := acServe(t, func(rs *rawConn, _ int32) {
		for {
			id, ok := rs.nextHeaders()
			if !ok {
				return
			}
			ids <- id
			acHeaders(rs, id, true, ":status", "204")
		}
	})
	tr := acClient(t, nil)
	get := func() uint32 {
		t.Helper()
		resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return <-ids
	}
	get()
	cc := acPool(tr, addr)[0]
	cc.mu.Lock()
	cc.nextID = maxStreamID // as after 2^30-1 streams
	cc.mu.Unlock()
	if id, n := get(), conns.Load(); id != maxStreamID || n != 1 {
		t.Errorf("stream %d over %d connections; want %d on the first", id, n, uint32(maxStreamID))
	}
	if id, n := get(), conns.Load(); id != 1 || n != 2 {
		t.Errorf("past the last identifier: stream %d over %d connections; want 1 on a new one", id, n)
	}
}
