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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Defaults of Transport's limits.
const (
	DefaultClientStreamWindow = 4 << 20  // as x/net/http2's transport
	DefaultClientConnWindow   = 16 << 20 // bounds what one connection buffers unread
	DefaultDialTimeout        = 10 * time.Second
	// initialPeerStreams is how many streams a connection carries before
	// the peer's SETTINGS say (RFC 9113 allows any number; x/net's
	// client assumes 100 too).
	initialPeerStreams = 100
	// maxInterim bounds the interim (1xx) responses of one request.
	maxInterim = 16
	// maxUnprocessedTries bounds how often a request the server never
	// processed (REFUSED_STREAM, beyond a GOAWAY) is sent again.
	maxUnprocessedTries = 3
)

// Transport is weft's HTTP/2 client: an http.RoundTripper over pooled
// connections, one pool per req.URL.Host, each connection carrying as
// many concurrent streams as its server allows, a new one dialled when
// they are all used. It is the client side of the connections between
// sidecars (over mTLS, ALPN h2) and of a server sidecar's connections to
// an h2c app.
//
// A request whose body is nil, or has arrived whole (a body with
// Buffered, as this package's server's request bodies), is written —
// HEADERS, DATA, trailers — in one Write by the goroutine of RoundTrip,
// and its response is read where the caller reads it: the connection's
// one reader goroutine decodes the frames and hands the response head
// and DATA to the waiting stream. Any other body is sent by a goroutine
// of its own as it is read, within the flow-control windows.
//
// Against the server it is as strict as the server is against a client:
// stream identifiers and states, flow control both ways, SETTINGS (push
// refused), the response's header list bounded (MaxHeaderListSize),
// pseudo-headers, Content-Length against the DATA received, and PING and
// SETTINGS answered by the reader. A request that the server did not
// process (REFUSED_STREAM before any response, or beyond a GOAWAY's last
// stream) is sent again on another connection when its body can be —
// none, or held whole — and otherwise fails with an error that
// errors.Is(err, ErrUnprocessed).
type Transport struct {
	// Dial opens a connection to addr (host:port) ready for HTTP/2: the
	// TLS handshake done, ALPN h2 checked, or cleartext for h2c.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// DialTimeout bounds a dial, which is shared by the requests that
	// wait for it (so not bounded by any one's context).
	DialTimeout time.Duration
	// MaxHeaderListSize bounds a response's header list (RFC 9113
	// §6.5.2's size).
	MaxHeaderListSize uint32
	// StreamWindow and ConnWindow are the receive windows: how much of
	// response bodies a stream, and a connection, buffers unread.
	StreamWindow, ConnWindow uint32
	// MaxReadFrameSize is the SETTINGS_MAX_FRAME_SIZE sent to servers.
	MaxReadFrameSize uint32
	// IdleTimeout closes a connection with no stream for this long
	// (GOAWAY first); zero: never.
	IdleTimeout time.Duration

	mu    sync.Mutex
	pools map[string]*pool
}

// ErrUnprocessed is (wrapped in) the error of a request that the server
// did not process, and that could not be sent again: it never reached
// the server's application.
var ErrUnprocessed = errors.New("h2: request not processed by the server")

// BufferedBody is a request body that can tell, without blocking, what
// its next reads return at once: n bytes, and whether the body ends after
// them.
type BufferedBody interface {
	Buffered() (n int, end bool)
}

// HeldBody is a request body that can read itself whole into memory it
// keeps (l7's record of a body for retries), so that the transport holds
// the body without a copy of its own. ReadHeld(n) reads n bytes and one
// more, to see the end: held is what was read, whole whether the body
// ended after n bytes; held is never written to afterwards. ok is false
// when it cannot (nothing was read then).
type HeldBody interface {
	ReadHeld(n int) (held []byte, whole, ok bool, err error)
}

// pool is the connections to one host.
type pool struct {
	key   string
	conns []*clientConn
	dial  *dialCall // in progress
}

type dialCall struct {
	done chan struct{}
	err  error
	cc   *clientConn // the connection, a stream reserved on it for the dialler; nil if none could be
}

// RoundTrip sends req and returns its response (see Transport).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	fail := func(err error) (*http.Response, error) {
		if body != nil {
			body.Close()
		}
		return nil, err
	}
	if req.URL == nil || req.URL.Host == "" {
		return fail(errors.New("h2: request without a host"))
	}
	if err := checkRequest(req); err != nil {
		return fail(err)
	}
	ctx := req.Context()
	trace := httptrace.ContextClientTrace(ctx)
	// A body that has arrived whole is read now and held: it goes with
	// the HEADERS in one Write, and can be sent again.
	var held []byte
	whole := body == nil
	if b, ok := body.(BufferedBody); ok && !expectsContinue(req) {
		if n, end := b.Buffered(); end && n <= bufferSize {
			var err error
			held, whole, err = readWhole(body, n)
			if err != nil {
				return fail(err)
			}
		}
	}
	if !whole && held == nil && req.ContentLength > 0 && req.ContentLength <= bufferSize && !expectsContinue(req) {
		// A small body of a declared length (an HTTP/1.1 app's request)
		// is read whole first, within the request's context: it goes
		// with the HEADERS too.
		type result struct {
			held  []byte
			whole bool
			err   error
		}
		ch := make(chan result, 1)
		go func() {
			h, w, err := readWhole(body, int(req.ContentLength))
			ch <- result{h, w, err}
		}()
		select {
		case r := <-ch:
			if r.err != nil {
				return fail(r.err)
			}
			held, whole = r.held, r.whole
		case <-ctx.Done():
			go body.Close() // a Close may wait for the Read it ends
			return nil, context.Cause(ctx)
		}
	}
	if whole && body != nil && req.ContentLength > 0 && int64(len(held)) != req.ContentLength {
		return fail(fmt.Errorf("h2: request body of %d bytes, its ContentLength %d", len(held), req.ContentLength))
	}
	for try := 1; ; try++ {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		cc, reused, err := t.getConn(ctx, req.URL.Host)
		if err != nil {
			return fail(err)
		}
		if trace != nil && trace.GotConn != nil {
			trace.GotConn(httptrace.GotConnInfo{Conn: cc.c, Reused: reused})
		}
		cs := cc.newStream(req, trace)
		var rest io.Reader
		if !whole {
			rest = body
		}
		resp, err := cs.roundTrip(held, rest)
		if err == nil {
			if body != nil && cs.bodyClaim.Load() != bodyClaimed {
				body.Close() // held whole, or the stream ended before a writer took it
			}
			return resp, nil
		}
		if !errors.Is(err, ErrUnprocessed) {
			return fail(err)
		}
		// Not processed: again, if the body can be sent again (held, the
		// stream's body writer never started on it, or a new copy).
		if try >= maxUnprocessedTries {
			return fail(err)
		}
		if whole || cs.bodyClaim.CompareAndSwap(bodyUnclaimed, bodyWithdrawn) {
			continue
		}
		if req.GetBody == nil {
			return fail(err)
		}
		if body, err = req.GetBody(); err != nil {
			return fail(err)
		}
		held, whole = nil, false // the new copy is sent whole, from its first byte
	}
}

// expectsContinue reports whether req waits for a 100 Continue before its
// body: its body is not read ahead.
func expectsContinue(req *http.Request) bool {
	return httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue")
}

// readWhole reads a body that said it holds n bytes and then ends: read
// to its EOF (which may fill req.Trailer), it is held whole; if it holds
// more, what was read is held and whole is false: the rest is sent as it
// comes.
func readWhole(body io.Reader, n int) (held []byte, whole bool, err error) {
	if hb, ok := body.(HeldBody); ok {
		if held, whole, ok, err := hb.ReadHeld(n); ok || err != nil {
			if err != nil {
				return nil, false, err
			}
			if len(held) < n { // as io.ReadFull says it
				if len(held) == 0 {
					return nil, false, io.EOF
				}
				return nil, false, io.ErrUnexpectedEOF
			}
			return held, whole, nil
		}
	}
	held = make([]byte, n, n+1)
	if _, err := io.ReadFull(body, held); err != nil {
		return nil, false, err
	}
	var one [1]byte
	m, err := body.Read(one[:])
	held = append(held, one[:m]...)
	switch {
	case err == io.EOF:
		return held, true, nil
	case err != nil:
		return nil, false, err
	}
	return held, false, nil
}

// checkRequest refuses a request that cannot be written as HTTP/2.
func checkRequest(req *http.Request) error {
	if !validMethod(req.Method) && req.Method != "" {
		return fmt.Errorf("h2: invalid method %q", req.Method)
	}
	if !httpguts.ValidHostHeader(authority(req)) {
		return errors.New("h2: invalid Host")
	}
	if req.Method != http.MethodConnect {
		if _, err := pathOf(req); err != nil {
			return err
		}
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("h2: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("h2: invalid header field value for %q", k)
			}
		}
	}
	for k := range req.Trailer {
		// As x/net's transport: these can never be trailers; other
		// fields that may not be are declared, and not sent.
		switch http.CanonicalHeaderKey(k) {
		case "Transfer-Encoding", "Trailer", "Content-Length":
			return fmt.Errorf("h2: invalid trailer %q", k)
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("h2: invalid trailer %q", k)
		}
	}
	return nil
}

func authority(req *http.Request) string {
	if req.Host != "" {
		return req.Host
	}
	return req.URL.Host
}

// pathOf is req's :path, as x/net's transport makes it.
func pathOf(req *http.Request) (string, error) {
	p := req.URL.RequestURI()
	if validPath(p) {
		return p, nil
	}
	orig := p
	p = strings.TrimPrefix(p, req.URL.Scheme+"://"+authority(req))
	if validPath(p) {
		return p, nil
	}
	return "", fmt.Errorf("h2: invalid request :path %q", orig)
}

func validPath(p string) bool {
	return p != "" && (p[0] == '/' || p == "*")
}

// getConn returns a connection to key with a stream reserved for the
// caller, dialling one when none has room. A connection a caller dialled
// has a stream reserved for that caller before anyone else sees it, so a
// caller dials at most once: if its own new connection has no room (a
// server that allows no stream) it fails.
func (t *Transport) getConn(ctx context.Context, key string) (*clientConn, bool, error) {
	for gone := 0; ; {
		t.mu.Lock()
		if t.pools == nil {
			t.pools = map[string]*pool{}
		}
		p := t.pools[key]
		if p == nil {
			p = &pool{key: key}
			t.pools[key] = p
		}
		for _, cc := range p.conns {
			if cc.reserve() {
				t.mu.Unlock()
				return cc, true, nil
			}
		}
		d, mine := p.dial, false
		if d == nil {
			d, mine = &dialCall{done: make(chan struct{})}, true
			p.dial = d
			go t.dial(ctx, p, d)
		}
		t.mu.Unlock()
		select {
		case <-d.done:
			if errors.Is(d.err, errWentAway) && gone < 2 {
				gone++ // a connection that went away at once: another
				continue
			}
			if d.err != nil {
				return nil, false, d.err
			}
			if mine {
				if d.cc == nil {
					return nil, false, fmt.Errorf("%w: the server allows no stream on a new connection", ErrUnprocessed)
				}
				return d.cc, false, nil
			}
		case <-ctx.Done():
			if mine {
				// The stream reserved for this caller goes back.
				go func() {
					<-d.done
					if d.cc != nil {
						d.cc.unreserve()
					}
				}()
			}
			return nil, false, context.Cause(ctx)
		}
	}
}

// dial makes a connection for p; ctx's values are kept, its cancellation
// is not: the connection serves whoever waits for it.
func (t *Transport) dial(ctx context.Context, p *pool, d *dialCall) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cmp0(t.DialTimeout, DefaultDialTimeout))
	defer cancel()
	c, err := t.Dial(ctx, p.key)
	var cc *clientConn
	if err == nil {
		// The preface is written within the dial's time.
		dl, _ := ctx.Deadline()
		_ = c.SetWriteDeadline(dl)
		cc, err = t.newClientConn(c, p)
		if err != nil {
			c.Close()
		} else {
			_ = c.SetWriteDeadline(time.Time{})
			// The connection takes streams once the server's SETTINGS
			// say how many (its MAX_CONCURRENT_STREAMS): before, a burst
			// of requests would be sent past a lower limit and refused.
			select {
			case <-cc.settings:
			case <-cc.readerDone:
				err = cc.deadErr()
			case <-ctx.Done():
				err = fmt.Errorf("h2: no SETTINGS from the server: %w", ctx.Err())
				cc.die(err)
			}
			if err != nil {
				cc = nil
			}
		}
	}
	if cc != nil {
		cc.mu.Lock()
		gone := cc.dead != nil || cc.goAway
		cc.idleLocked() // a connection that never takes a stream is closed idle
		cc.mu.Unlock()
		if gone {
			cc.die(errClientConnClosed)
			cc, err = nil, fmt.Errorf("%w: %w", ErrUnprocessed, errWentAway)
		}
	}
	t.mu.Lock()
	if cc != nil {
		if cc.reserve() {
			d.cc = cc // the dialler's, before anyone else sees the connection
		}
		p.conns = append(p.conns, cc)
	}
	p.dial = nil
	d.err = err
	t.mu.Unlock()
	close(d.done)
}

func cmp0[T comparable](v, d T) T {
	var zero T
	if v == zero {
		return d
	}
	return v
}

// forget removes cc from its pool.
func (t *Transport) forget(cc *clientConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := cc.pool
	if i := slices.Index(p.conns, cc); i >= 0 {
		p.conns = slices.Delete(p.conns, i, i+1)
	}
	if len(p.conns) == 0 && p.dial == nil && t.pools[p.key] == p {
		delete(t.pools, p.key)
	}
}

// CloseIdleConnections closes the connections with no stream open.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	var all []*clientConn
	for _, p := range t.pools {
		all = append(all, p.conns...)
	}
	t.mu.Unlock()
	for _, cc := range all {
		cc.closeIfIdle()
	}
}

// clientConn is one connection to a server.
type clientConn struct {
	t    *Transport
	pool *pool
	c    net.Conn
	fr   *http2.Framer // reads by the reader only; writes under wmu
	br   *bufio.Reader
	tls  *tls.ConnectionState

	wmu     wlock // held while frames are composed and written
	wbuf    bytes.Buffer
	acks    pingAcks // PING ACKs owed, sent with the next write (acks.go); under wmu
	enc     *hpack.Encoder
	hbuf    bytes.Buffer
	werr    error
	stalled atomic.Bool // a write deadline is set: a write outlived a request

	mu           sync.Mutex
	cond         *sync.Cond // send windows grew, the connection died
	streams      map[uint32]*clientStream
	reserved     int    // streams promised to callers, not yet opened
	nextID       uint32 // the next stream's identifier
	maxStreams   uint32 // the server's SETTINGS_MAX_CONCURRENT_STREAMS
	connSend     int64
	initialSend  int64 // the server's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame uint32
	connRecv     int64 // how much more the server may send, connection-wide
	connConsumed int64 // read by callers, not yet given back
	streamWin    int64 // each stream's receive window
	goAway       bool  // no new streams (a GOAWAY either way, or idle)
	full         bool  // the server refused a stream: none until one closes
	dead         error
	idle         *time.Timer
	settings     chan struct{} // closed at the server's first SETTINGS
	readerDone   chan struct{}
}

// wlock is a mutex that a caller can stop waiting for (LockCtx) or not
// wait for at all (TryLock): a write blocked on a server that does not
// read holds it.
type wlock chan struct{}

func (l wlock) Lock()   { l <- struct{}{} }
func (l wlock) Unlock() { <-l }

func (l wlock) TryLock() bool {
	select {
	case l <- struct{}{}:
		return true
	default:
		return false
	}
}

func (l wlock) LockCtx(done <-chan struct{}) bool {
	select {
	case l <- struct{}{}:
		return true
	case <-done:
		return false
	}
}

// stall is called when a request ended while the connection's writes
// were held: a write still blocked lingerTime from now fails, and the
// connection dies with it (a server that stops reading must not hold
// the requests on its connection). Once the lock is free again — the
// write done, or failed — the deadline is cleared.
func (cc *clientConn) stall() {
	if !cc.stalled.CompareAndSwap(false, true) {
		return
	}
	_ = cc.c.SetWriteDeadline(time.Now().Add(lingerTime))
	go func() {
		cc.wmu.Lock()
		if cc.werr == nil {
			_ = cc.c.SetWriteDeadline(time.Time{})
		}
		cc.stalled.Store(false)
		cc.wmu.Unlock()
	}()
}

// writeAsync is write for the caller of Read, Close or a context's end,
// which must not wait for a blocked write: when the lock is taken, the
// frames are written by a goroutine of their own.
func (cc *clientConn) writeAsync(fn func() error) {
	if cc.wmu.TryLock() {
		_ = cc.writeLocked(fn)
		cc.wmu.Unlock()
		return
	}
	go func() { _ = cc.write(fn) }()
}

// maxStreamID is the last stream identifier a client may use.
const maxStreamID = 1<<31 - 1

func (t *Transport) newClientConn(c net.Conn, p *pool) (*clientConn, error) {
	streamWin := cmp0(t.StreamWindow, DefaultClientStreamWindow)
	connWin := max(cmp0(t.ConnWindow, DefaultClientConnWindow), 65535)
	cc := &clientConn{t: t, pool: p, c: c, wmu: make(wlock, 1), streams: map[uint32]*clientStream{}, nextID: 1,
		maxStreams: initialPeerStreams, connSend: 65535, initialSend: 65535, peerMaxFrame: 16384,
		connRecv: int64(connWin), streamWin: int64(streamWin), settings: make(chan struct{}), readerDone: make(chan struct{})}
	cc.cond = sync.NewCond(&cc.mu)
	cc.br = bufio.NewReaderSize(c, 16<<10)
	cc.fr = http2.NewFramer(&cc.wbuf, cc.br)
	cc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	cc.fr.MaxHeaderListSize = cmp0(t.MaxHeaderListSize, DefaultMaxHeaderListSize)
	cc.fr.SetMaxReadFrameSize(cmp0(t.MaxReadFrameSize, DefaultMaxReadFrameSize))
	cc.enc = hpack.NewEncoder(&cc.hbuf)
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		cc.tls = &st
	}
	err := cc.write(func() error {
		cc.wbuf.WriteString(ClientPreface)
		if err := cc.fr.WriteSettings(
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWin},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: cmp0(t.MaxReadFrameSize, DefaultMaxReadFrameSize)},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: cmp0(t.MaxHeaderListSize, DefaultMaxHeaderListSize)},
		); err != nil {
			return err
		}
		if connWin > 65535 {
			return cc.fr.WriteWindowUpdate(0, connWin-65535)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	go cc.readLoop()
	return cc, nil
}

// reserve promises the caller a stream, if the connection has room.
func (cc *clientConn) reserve() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.dead != nil || cc.goAway || cc.full || uint64(len(cc.streams)+cc.reserved) >= uint64(cc.maxStreams) ||
		uint64(cc.nextID)+2*uint64(cc.reserved) > maxStreamID {
		return false
	}
	cc.reserved++
	if cc.idle != nil {
		cc.idle.Stop()
	}
	return true
}

// unreserve gives back a stream reserved and not used.
func (cc *clientConn) unreserve() {
	cc.mu.Lock()
	cc.reserved--
	cc.idleLocked()
	cc.mu.Unlock()
}

// write composes frames with fn and writes them in one Write.
func (cc *clientConn) write(fn func() error) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	return cc.writeLocked(fn)
}

func (cc *clientConn) writeLocked(fn func() error) error {
	if cc.werr != nil {
		return cc.werr
	}
	cc.wbuf.Reset()
	if err := fn(); err != nil {
		cc.werr = err
		return err
	}
	cc.acks.appendLocked(cc.fr)
	if cc.wbuf.Len() == 0 {
		return nil
	}
	_, err := cc.c.Write(cc.wbuf.Bytes())
	cc.wbuf.Reset()
	if err != nil {
		cc.werr = err
		go cc.die(fmt.Errorf("h2: writing to the server: %w", err))
		return err
	}
	return nil
}

var (
	errClientConnClosed = errors.New("h2: client connection closed")
	errServerGone       = errors.New("h2: server closed the connection")
	errIdleClosed       = errors.New("h2: idle connection closed")
	errBodyClosed       = errors.New("h2: read on closed response body")
	errWentAway         = errors.New("h2: the new connection went away at once")
)

// die ends the connection with err: every stream fails, it leaves its
// pool and is closed.
func (cc *clientConn) deadErr() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.dead == nil {
		return errServerGone
	}
	return cc.dead
}

func (cc *clientConn) die(err error) {
	cc.mu.Lock()
	if cc.dead != nil {
		cc.mu.Unlock()
		return
	}
	cc.dead = err
	if cc.idle != nil {
		cc.idle.Stop()
	}
	streams := make([]*clientStream, 0, len(cc.streams))
	for _, cs := range cc.streams {
		streams = append(streams, cs)
	}
	cc.cond.Broadcast()
	cc.mu.Unlock()
	cc.t.forget(cc)
	for _, cs := range streams {
		cs.abort(err, 0, false)
	}
	cc.c.Close()
}

// goAwayAndDie sends GOAWAY for a connection error and ends the
// connection.
func (cc *clientConn) goAwayAndDie(e connError) {
	// A write blocked on a server that does not read must not hold the
	// reader: the deadline bounds it (the connection ends anyway).
	_ = cc.c.SetWriteDeadline(time.Now().Add(lingerTime))
	_ = cc.write(func() error { return cc.fr.WriteGoAway(0, e.code, []byte(e.reason)) })
	cc.die(e)
}

// idleLocked starts the idle timer, or closes a connection going away,
// when no stream is open or promised; under cc.mu.
func (cc *clientConn) idleLocked() {
	if len(cc.streams) > 0 || cc.reserved > 0 || cc.dead != nil {
		return
	}
	if cc.goAway {
		go cc.die(errClientConnClosed)
		return
	}
	d := cc.t.IdleTimeout
	if d <= 0 {
		return
	}
	if cc.idle == nil {
		cc.idle = time.AfterFunc(d, cc.closeIfIdle)
		return
	}
	cc.idle.Reset(d)
}

// closeIfIdle sends GOAWAY and closes the connection if no stream is
// open or promised.
func (cc *clientConn) closeIfIdle() {
	cc.mu.Lock()
	idle := len(cc.streams) == 0 && cc.reserved == 0 && cc.dead == nil
	if idle {
		cc.goAway = true // no stream is promised from here
	}
	cc.mu.Unlock()
	if !idle {
		return
	}
	_ = cc.c.SetWriteDeadline(time.Now().Add(lingerTime))
	_ = cc.write(func() error { return cc.fr.WriteGoAway(0, http2.ErrCodeNo, nil) })
	cc.die(errIdleClosed)
}

// readLoop reads and handles the server's frames until the connection
// ends.
func (cc *clientConn) readLoop() {
	defer close(cc.readerDone)
	first := true
	for {
		fh, err := cc.fr.ReadFrameHeader()
		var f http2.Frame
		if err == nil {
			f, err = cc.fr.ReadFrameForHeader(fh)
		} else if errors.Is(err, http2.ErrFrameTooLarge) {
			cc.goAwayAndDie(connError{http2.ErrCodeFrameSize, "frame too large"})
			return
		}
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if err := cc.streamError(fh, se); err != nil {
					cc.goAwayAndDie(connError{http2.ErrCodeProtocol, err.Error()})
					return
				}
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				cc.goAwayAndDie(connError{http2.ErrCode(ce), err.Error()})
				return
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = errServerGone
			}
			cc.die(err)
			return
		}
		if first {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				cc.goAwayAndDie(connError{http2.ErrCodeProtocol, "first frame is not the server's SETTINGS"})
				return
			}
		}
		if err := cc.process(f); err != nil {
			var ce connError
			if errors.As(err, &ce) {
				cc.goAwayAndDie(ce)
			} else {
				cc.die(err)
			}
			return
		}
		if first {
			first = false
			close(cc.settings)
		}
	}
}

// streamError answers a stream error the Framer found: on a stream the
// client never opened it is the connection's.
func (cc *clientConn) streamError(fh http2.FrameHeader, se http2.StreamError) error {
	cs, opened := cc.stream(se.StreamID)
	if !opened {
		return fmt.Errorf("%v on idle stream %d: %v", fh.Type, se.StreamID, se)
	}
	if cs != nil {
		cs.abort(fmt.Errorf("h2: stream error from the server's frames: %v", se), se.Code, true)
	}
	return nil
}

// stream returns the open stream id, and whether id was ever opened.
func (cc *clientConn) stream(id uint32) (*clientStream, bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.streams[id], id%2 == 1 && id < cc.nextID
}

func (cc *clientConn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return cc.processSettings(f)
	case *http2.MetaHeadersFrame:
		return cc.processHeaders(f)
	case *http2.DataFrame:
		return cc.processData(f)
	case *http2.WindowUpdateFrame:
		return cc.processWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		return cc.ackPing(f.Data)
	case *http2.RSTStreamFrame:
		cs, opened := cc.stream(f.StreamID)
		if !opened {
			return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
		}
		if cs != nil {
			cs.reset(f.ErrCode)
		}
		return nil
	case *http2.GoAwayFrame:
		cc.processGoAway(f)
		return nil
	case *http2.PushPromiseFrame:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE with push disabled"}
	case *http2.ContinuationFrame:
		return connError{http2.ErrCodeProtocol, "unexpected CONTINUATION"}
	default:
		return nil // PRIORITY, unknown types (RFC 9113 §5.5)
	}
}

func (cc *clientConn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	var werr error
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return connError{http2.ErrCode(err.(http2.ConnectionError)), err.Error()}
		}
		cc.mu.Lock()
		defer cc.mu.Unlock()
		switch s.ID {
		case http2.SettingEnablePush:
			if s.Val != 0 {
				return connError{http2.ErrCodeProtocol, "a server sent SETTINGS_ENABLE_PUSH 1"}
			}
		case http2.SettingMaxConcurrentStreams:
			cc.maxStreams = s.Val
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - cc.initialSend
			cc.initialSend = int64(s.Val)
			for _, cs := range cc.streams {
				cs.send += delta
				if cs.send > maxStreamID {
					werr = connError{http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream's window"}
				}
			}
			cc.cond.Broadcast()
		case http2.SettingMaxFrameSize:
			cc.peerMaxFrame = s.Val
		case http2.SettingHeaderTableSize:
			cc.mu.Unlock()
			cc.wmu.Lock()
			cc.enc.SetMaxDynamicTableSizeLimit(s.Val)
			cc.wmu.Unlock()
			cc.mu.Lock()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	return cc.write(func() error { return cc.fr.WriteSettingsAck() })
}

func (cc *clientConn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	cc.mu.Lock()
	if f.StreamID == 0 {
		cc.connSend += int64(f.Increment)
		over := cc.connSend > maxStreamID
		cc.cond.Broadcast()
		cc.mu.Unlock()
		if over {
			return connError{http2.ErrCodeFlowControl, "connection window overflow"}
		}
		return nil
	}
	cs := cc.streams[f.StreamID]
	opened := f.StreamID%2 == 1 && f.StreamID < cc.nextID
	if cs == nil {
		cc.mu.Unlock()
		if !opened {
			return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
		}
		return nil
	}
	cs.send += int64(f.Increment)
	over := cs.send > maxStreamID
	cc.cond.Broadcast()
	cc.mu.Unlock()
	if over {
		cs.abort(errors.New("h2: the server overflowed a stream's window"), http2.ErrCodeFlowControl, true)
	}
	return nil
}

// processGoAway stops new streams; those beyond the last the server
// processes fail as unprocessed, the others go on.
func (cc *clientConn) processGoAway(f *http2.GoAwayFrame) {
	cc.mu.Lock()
	cc.goAway = true
	var beyond []*clientStream
	for id, cs := range cc.streams {
		if id > f.LastStreamID {
			beyond = append(beyond, cs)
		}
	}
	cc.idleLocked()
	cc.mu.Unlock()
	cc.t.forget(cc)
	for _, cs := range beyond {
		cs.abort(fmt.Errorf("%w: GOAWAY (%v) before stream %d", ErrUnprocessed, f.ErrCode, cs.id), 0, false)
	}
}

func (cc *clientConn) processHeaders(f *http2.MetaHeadersFrame) error {
	cs, opened := cc.stream(f.StreamID)
	if !opened {
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("HEADERS on idle stream %d", f.StreamID)}
	}
	if cs == nil {
		return nil // a stream that ended here (reset): its frames in flight are ignored
	}
	if f.Truncated {
		cs.abort(errors.New("h2: the response's header list is too large"), http2.ErrCodeCancel, true)
		return nil
	}
	cs.mu.Lock()
	got := cs.resp != nil
	cs.mu.Unlock()
	if got {
		return cs.trailers(f)
	}
	return cs.head(f)
}

func (cc *clientConn) processData(f *http2.DataFrame) error {
	n := int64(f.Length)
	cc.mu.Lock()
	if n > cc.connRecv {
		cc.mu.Unlock()
		return connError{http2.ErrCodeFlowControl, "DATA beyond the connection's window"}
	}
	cc.connRecv -= n
	cs := cc.streams[f.StreamID]
	opened := f.StreamID%2 == 1 && f.StreamID < cc.nextID
	cc.mu.Unlock()
	if cs == nil {
		if !opened {
			return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
		}
		return cc.giveBack(n) // a stream that ended here: never read
	}
	return cs.data(f, n)
}

// giveBack counts n bytes of the connection's receive window consumed and
// sends a WINDOW_UPDATE once half the window was.
func (cc *clientConn) giveBack(n int64) error {
	if inc := cc.consumed(n); inc > 0 {
		return cc.write(func() error { return cc.fr.WriteWindowUpdate(0, uint32(inc)) })
	}
	return nil
}

// giveBackAsync is giveBack for who must not wait for a blocked write.
func (cc *clientConn) giveBackAsync(n int64) {
	if inc := cc.consumed(n); inc > 0 {
		cc.writeAsync(func() error { return cc.fr.WriteWindowUpdate(0, uint32(inc)) })
	}
}

// consumed counts n bytes consumed and returns the increment to send
// (half the window or more), or 0.
func (cc *clientConn) consumed(n int64) int64 {
	win := int64(max(cmp0(cc.t.ConnWindow, DefaultClientConnWindow), 65535))
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.connConsumed += n
	inc := cc.connConsumed
	if inc < win/2 {
		return 0
	}
	cc.connConsumed = 0
	cc.connRecv += inc
	return inc
}

// closed records that cs is closed (both ways, or reset): it leaves the
// connection.
func (cc *clientConn) closed(cs *clientStream) {
	cc.mu.Lock()
	if cc.streams[cs.id] == cs {
		delete(cc.streams, cs.id)
		cc.full = false
		cc.idleLocked()
	}
	cc.cond.Broadcast()
	cc.mu.Unlock()
}

// clientStream is one request and its response.
type clientStream struct {
	cc     *clientConn
	id     uint32
	req    *http.Request
	trace  *httptrace.ClientTrace
	stopAf func() bool // under mu: stops the context's AfterFunc

	// bodyClaim: whether the body writer may read the request body, or
	// RoundTrip took it back for another try.
	bodyClaim atomic.Int32
	rest      io.Reader // under mu: the body the writer reads, until closed

	send    int64 // under cc.mu: how much more the request may send
	sentEnd bool  // under cc.mu: END_STREAM or RST_STREAM sent

	mu       sync.Mutex
	cond     sync.Cond
	resp     *http.Response // the final response head, once it arrived (the caller's from then: only Read touches it)
	noBody   bool           // the response has no body (HEAD, or ended with its HEADERS)
	err      error          // the stream failed
	recvEnd  bool           // the response ended (END_STREAM) or the stream was reset
	interim  int
	buf      []byte             // response DATA received, not yet read
	base     *[dataBufSize]byte // buf's pooled array while buf starts in it (dataBufs)
	done     error              // io.EOF at the response's end, or the stream's error
	closed   bool               // the caller closed the response body
	consumed int64              // read, not yet given back to the server
	recv     int64              // how much more the server may send on the stream
	declared int64              // the response's Content-Length, -1 if none
	received int64              // response DATA bytes
	trailer  http.Header        // the response's trailers, until the caller reads the end
}

const (
	bodyUnclaimed int32 = iota
	bodyClaimed
	bodyWithdrawn
)

func (cc *clientConn) newStream(req *http.Request, trace *httptrace.ClientTrace) *clientStream {
	cs := &clientStream{cc: cc, req: req, trace: trace, declared: -1, recv: cc.streamWin}
	cs.cond.L = &cs.mu
	return cs
}

// roundTrip opens the stream with the request's HEADERS, held (the body
// read whole, or its first bytes) and, when rest is not nil, the rest of
// the body sent by a goroutine; it returns the response once its head
// arrived.
func (cs *clientStream) roundTrip(held []byte, rest io.Reader) (*http.Response, error) {
	cc, req := cs.cc, cs.req
	hasBody := len(held) > 0 || rest != nil
	trailers := len(req.Trailer) > 0
	if ctx := req.Context(); ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() {
			cs.abort(context.Cause(ctx), http2.ErrCodeCancel, true)
		})
		cs.mu.Lock()
		cs.stopAf = stop
		cs.mu.Unlock()
	}
	if !cc.wmu.LockCtx(req.Context().Done()) {
		// A write holds the connection past this request's end.
		cc.stall()
		cc.mu.Lock()
		cc.reserved--
		cc.idleLocked()
		cc.mu.Unlock()
		cs.stopContext()
		return nil, context.Cause(req.Context())
	}
	cc.mu.Lock()
	cc.reserved--
	var err error
	switch {
	case cc.dead != nil:
		err = fmt.Errorf("%w: the connection ended before the stream opened: %v", ErrUnprocessed, cc.dead)
	case cc.goAway:
		err = fmt.Errorf("%w: the connection went away before the stream opened", ErrUnprocessed)
	default:
		err = cs.ended() // the context ended already
	}
	if err != nil {
		cc.idleLocked()
		cc.mu.Unlock()
		cc.wmu.Unlock()
		cs.stopContext()
		return nil, err
	}
	cs.id = cc.nextID
	cc.nextID += 2
	cc.streams[cs.id] = cs
	cs.send = cc.initialSend
	// What of held goes now: within the windows, in the peer's frames.
	now := int(max(min(int64(len(held)), cs.send, cc.connSend), 0))
	cs.send -= int64(now)
	cc.connSend -= int64(now)
	maxFrame := int(cc.peerMaxFrame)
	allNow := now == len(held) && rest == nil // the whole request goes in this Write
	cs.sentEnd = allNow
	cc.mu.Unlock()
	err = cc.writeLocked(func() error {
		if err := cs.encodeHeaders(hasBody || trailers); err != nil {
			return err
		}
		if err := writeBlockTo(cc.fr, &cc.hbuf, cs.id, !hasBody && !trailers, maxFrame); err != nil {
			return err
		}
		for off := 0; off < now; {
			to := min(off+maxFrame, now)
			if err := cc.fr.WriteData(cs.id, allNow && !trailers && to == now, held[off:to]); err != nil {
				return err
			}
			off = to
		}
		if allNow && trailers {
			return cs.encodeTrailers(maxFrame)
		}
		return nil
	})
	cc.wmu.Unlock()
	if err != nil {
		cs.abort(err, 0, false)
		return nil, err
	}
	if !allNow && cs.ended() == nil && (rest == nil || cs.bodyClaim.CompareAndSwap(bodyUnclaimed, bodyClaimed)) {
		cs.mu.Lock()
		cs.rest = rest
		cs.mu.Unlock()
		go cs.writeBody(held[now:], int64(now), rest)
	}
	cs.mu.Lock()
	for cs.resp == nil && cs.err == nil {
		cs.cond.Wait()
	}
	resp, err := cs.resp, cs.err
	cs.mu.Unlock()
	if resp == nil {
		return nil, err
	}
	return resp, nil
}

// encodeHeaders encodes the request's header block into cc.hbuf; under
// cc.wmu.
func (cs *clientStream) encodeHeaders(hasBody bool) error {
	cc, req := cs.cc, cs.req
	cc.hbuf.Reset()
	f := func(name, value string) { cc.enc.WriteField(hpack.HeaderField{Name: name, Value: value}) }
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	f(":authority", authority(req))
	f(":method", method)
	if method != http.MethodConnect {
		p, err := pathOf(req)
		if err != nil {
			return err
		}
		f(":path", p)
		f(":scheme", cmp0(req.URL.Scheme, "https"))
	}
	for k, vv := range req.Header {
		lk := lower(k)
		switch {
		case forbidden[lk], lk == "host", lk == "content-length", lk == "trailer":
			continue
		case lk == "te":
			// Only "trailers" may go (RFC 9113 §8.2.2).
			if httpguts.HeaderValuesContainsToken(vv, "trailers") {
				f("te", "trailers")
			}
			continue
		}
		for _, v := range vv {
			f(lk, v)
		}
	}
	if len(req.Trailer) > 0 {
		keys := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			keys = append(keys, http.CanonicalHeaderKey(k))
		}
		slices.Sort(keys)
		f("trailer", strings.Join(keys, ","))
	}
	if cl := req.ContentLength; cl > 0 && hasBody || cl == 0 && !hasBody && needsZeroLength(method) {
		f("content-length", strconv.FormatInt(cl, 10))
	}
	return nil
}

// needsZeroLength: methods whose request says "content-length: 0" when
// it has no body, as x/net's transport and net/http's send them.
func needsZeroLength(method string) bool {
	return method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
}

// encodeTrailers writes the request's trailers as HEADERS ending the
// stream; under cc.wmu.
func (cs *clientStream) encodeTrailers(maxFrame int) error {
	cc := cs.cc
	cc.hbuf.Reset()
	for k, vv := range cs.req.Trailer {
		if !httpguts.ValidTrailerHeader(k) {
			continue
		}
		lk := lower(k)
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				cc.enc.WriteField(hpack.HeaderField{Name: lk, Value: v})
			}
		}
	}
	return writeBlockTo(cc.fr, &cc.hbuf, cs.id, true, maxFrame)
}

// writeBlockTo writes the header block in hbuf as HEADERS and as many
// CONTINUATION frames as maxFrame needs.
func writeBlockTo(fr *http2.Framer, hbuf *bytes.Buffer, id uint32, end bool, maxFrame int) error {
	block := hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		chunk := block
		if len(chunk) > maxFrame {
			chunk = chunk[:maxFrame]
		}
		block = block[len(chunk):]
		var err error
		if first {
			err = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = fr.WriteContinuation(id, len(block) == 0, chunk)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// writeBody sends pending, then what rest gives, as DATA within the
// windows; the body's end ends the stream (with the trailers, if any).
// sent is what went before pending.
func (cs *clientStream) writeBody(pending []byte, sent int64, rest io.Reader) {
	cl := cs.req.ContentLength
	var err error
	buf := pending
	eof := rest == nil
	var scratch []byte
	for {
		if len(buf) == 0 && !eof {
			if scratch == nil {
				scratch = make([]byte, bufferSize)
			}
			var n int
			n, err = rest.Read(scratch)
			buf = scratch[:n]
			if err == io.EOF {
				eof, err = true, nil
			} else if err != nil {
				break
			}
			if n == 0 && !eof {
				continue
			}
		}
		sent += int64(len(buf))
		if cl > 0 && (sent > cl || eof && sent < cl) {
			err = fmt.Errorf("h2: request body of %d bytes or more, its ContentLength %d", sent, cl)
			break
		}
		if err = cs.sendData(buf, eof); err != nil {
			break
		}
		buf = nil
		if eof {
			break
		}
	}
	cs.closeRest(false)
	if err != nil {
		cs.abort(fmt.Errorf("h2: sending the request body: %w", err), http2.ErrCodeCancel, true)
	}
}

// sendData writes p as DATA, waiting for the windows; end ends the
// stream after it (or the trailers do).
func (cs *clientStream) sendData(p []byte, end bool) error {
	cc := cs.cc
	trailers := end && len(cs.req.Trailer) > 0
	for first := true; first || len(p) > 0; first = false {
		cc.mu.Lock()
		for cs.ended() == nil && cc.dead == nil && len(p) > 0 && (cs.send <= 0 || cc.connSend <= 0) {
			cc.cond.Wait()
		}
		err := cs.ended()
		if err == nil {
			err = cc.dead
		}
		if err != nil {
			cc.mu.Unlock()
			return err
		}
		chunk := int(max(min(int64(len(p)), cs.send, cc.connSend), 0))
		cs.send -= int64(chunk)
		cc.connSend -= int64(chunk)
		maxFrame := int(cc.peerMaxFrame)
		last := end && chunk == len(p)
		if last {
			cs.sentEnd = true
		}
		cc.mu.Unlock()
		err = cc.write(func() error {
			for off := 0; off < chunk; {
				to := min(off+maxFrame, chunk)
				if err := cc.fr.WriteData(cs.id, last && !trailers && to == chunk, p[off:to]); err != nil {
					return err
				}
				off = to
			}
			switch {
			case last && trailers:
				return cs.encodeTrailers(maxFrame)
			case last && chunk == 0:
				return cc.fr.WriteData(cs.id, true, nil)
			}
			return nil
		})
		if err != nil {
			return err
		}
		p = p[chunk:]
	}
	return nil
}

// ended is the stream's error once it was reset or failed, or nil; the
// response's end is not one (the request may still be sent).
func (cs *clientStream) ended() error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.err
}

// responseStatuses are http.Response.Status for the codes that have a
// text (http.StatusText), made once rather than per response; the ~60 of
// them, not all 900 codes a :status can hold, so start-up makes few.
var responseStatuses = func() (t [900]string) {
	for i := range t {
		if text := http.StatusText(100 + i); text != "" {
			t[i] = strconv.Itoa(100+i) + " " + text
		}
	}
	return t
}()

// responseStatus is the Status of a response whose :status is code
// (100–999): "200 OK", or "599 " for a code without a text.
func responseStatus(code int) string {
	if s := responseStatuses[code-100]; s != "" {
		return s
	}
	return strconv.Itoa(code) + " "
}

// head takes the response's HEADERS: an interim response, or the final
// one, which RoundTrip returns.
func (cs *clientStream) head(f *http2.MetaHeadersFrame) error {
	status := f.PseudoValue("status")
	for _, hf := range f.PseudoFields() {
		if hf.Name != ":status" {
			cs.abort(fmt.Errorf("h2: response pseudo-header %s", hf.Name), http2.ErrCodeProtocol, true)
			return nil
		}
	}
	code, err := strconv.Atoi(status)
	if len(status) != 3 || err != nil || code < 100 {
		cs.abort(fmt.Errorf("h2: malformed response :status %q", status), http2.ErrCodeProtocol, true)
		return nil
	}
	regular := f.RegularFields()
	header := make(http.Header, len(regular))
	vals := make([]string, len(regular)) // every field's first value, one allocation
	var declaredTrailer http.Header
	for _, hf := range regular {
		if forbidden[hf.Name] {
			cs.abort(fmt.Errorf("h2: connection-specific response field %s", hf.Name), http2.ErrCodeProtocol, true)
			return nil
		}
		k := canonical(hf.Name)
		if k == "Trailer" {
			if declaredTrailer == nil {
				declaredTrailer = http.Header{}
			}
			for _, v := range strings.Split(hf.Value, ",") {
				if v = textproto.TrimString(v); v != "" {
					declaredTrailer[http.CanonicalHeaderKey(v)] = nil
				}
			}
			continue
		}
		if vv, ok := header[k]; ok {
			header[k] = append(vv, hf.Value)
		} else {
			vals[0] = hf.Value
			header[k], vals = vals[:1:1], vals[1:]
		}
	}
	if code < 200 {
		if f.StreamEnded() {
			cs.abort(errors.New("h2: an interim response ended the stream"), http2.ErrCodeProtocol, true)
			return nil
		}
		cs.interim++
		if cs.interim > maxInterim {
			cs.abort(errors.New("h2: too many interim responses"), http2.ErrCodeProtocol, true)
			return nil
		}
		if cs.trace != nil && cs.trace.Got1xxResponse != nil {
			if err := cs.trace.Got1xxResponse(code, textproto.MIMEHeader(header)); err != nil {
				cs.abort(err, http2.ErrCodeCancel, true)
			}
		}
		return nil
	}
	resp := &http.Response{
		Status:        responseStatus(code),
		StatusCode:    code,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        header,
		Trailer:       declaredTrailer,
		Request:       cs.req,
		TLS:           cs.cc.tls,
		ContentLength: -1,
	}
	if vv := header["Content-Length"]; len(vv) > 0 {
		for _, v := range vv[1:] {
			if v != vv[0] {
				cs.abort(errors.New("h2: conflicting response content-length"), http2.ErrCodeProtocol, true)
				return nil
			}
		}
		n, err := strconv.ParseUint(vv[0], 10, 63)
		if err != nil {
			cs.abort(errors.New("h2: malformed response content-length"), http2.ErrCodeProtocol, true)
			return nil
		}
		resp.ContentLength = int64(n)
	} else if f.StreamEnded() && cs.req.Method != http.MethodHead {
		resp.ContentLength = 0
	}
	end := f.StreamEnded()
	switch {
	case cs.req.Method == http.MethodHead, code == http.StatusNotModified:
		// No content, whatever its content-length says (RFC 9110 §8.6);
		// an empty DATA may still end the stream.
		resp.Body = http.NoBody
	case end && resp.ContentLength > 0:
		cs.abort(errors.New("h2: response with a content-length and no body"), http2.ErrCodeProtocol, true)
		return nil
	case end:
		resp.Body = http.NoBody
	default:
		resp.Body = clientBody{cs}
	}
	cs.mu.Lock()
	if cs.err != nil {
		cs.mu.Unlock()
		return nil
	}
	if resp.Body != http.NoBody {
		cs.declared = resp.ContentLength
	} else {
		cs.noBody = true
	}
	cs.resp = resp
	if end {
		cs.recvEnd = true
		cs.done = io.EOF
	}
	cs.cond.Broadcast()
	cs.mu.Unlock()
	if end {
		cs.responseEnded()
	}
	return nil
}

// trailers takes the response's trailers, which must end the stream.
func (cs *clientStream) trailers(f *http2.MetaHeadersFrame) error {
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
		cs.abort(errors.New("h2: malformed response trailers"), http2.ErrCodeProtocol, true)
		return nil
	}
	t := http.Header{}
	for _, hf := range f.RegularFields() {
		if forbidden[hf.Name] {
			cs.abort(fmt.Errorf("h2: connection-specific field %s in the response's trailers", hf.Name), http2.ErrCodeProtocol, true)
			return nil
		}
		k := canonical(hf.Name)
		t[k] = append(t[k], hf.Value)
	}
	cs.mu.Lock()
	if cs.recvEnd {
		cs.mu.Unlock()
		cs.abort(errors.New("h2: HEADERS after the response ended"), http2.ErrCodeStreamClosed, true)
		return nil
	}
	if cs.declared >= 0 && cs.received != cs.declared {
		cs.mu.Unlock()
		cs.abort(errors.New("h2: response body shorter than its content-length"), http2.ErrCodeProtocol, true)
		return nil
	}
	cs.trailer = t
	cs.recvEnd = true
	if cs.done == nil {
		cs.done = io.EOF
	}
	cs.cond.Broadcast()
	cs.mu.Unlock()
	cs.responseEnded()
	return nil
}

// data takes a DATA frame of the stream, n bytes of the windows.
func (cs *clientStream) data(f *http2.DataFrame, n int64) error {
	cc := cs.cc
	cs.mu.Lock()
	switch {
	case cs.resp == nil:
		cs.mu.Unlock()
		if err := cc.giveBack(n); err != nil {
			return err
		}
		cs.abort(errors.New("h2: DATA before the response's HEADERS"), http2.ErrCodeProtocol, true)
		return nil
	case cs.recvEnd:
		cs.mu.Unlock()
		if err := cc.giveBack(n); err != nil {
			return err
		}
		cs.abort(errors.New("h2: DATA after the response ended"), http2.ErrCodeStreamClosed, true)
		return nil
	case cs.noBody && len(f.Data()) > 0:
		cs.mu.Unlock()
		if err := cc.giveBack(n); err != nil {
			return err
		}
		cs.abort(errors.New("h2: DATA in a response without content (HEAD, 304)"), http2.ErrCodeProtocol, true)
		return nil
	case n > cs.recv:
		cs.mu.Unlock()
		if err := cc.giveBack(n); err != nil {
			return err
		}
		cs.abort(errors.New("h2: DATA beyond the stream's window"), http2.ErrCodeFlowControl, true)
		return nil
	}
	cs.recv -= n
	p := f.Data()
	cs.received += int64(len(p))
	if cs.declared >= 0 && (cs.received > cs.declared || f.StreamEnded() && cs.received != cs.declared) {
		cs.mu.Unlock()
		if err := cc.giveBack(n); err != nil {
			return err
		}
		cs.abort(errors.New("h2: response body not of its content-length"), http2.ErrCodeProtocol, true)
		return nil
	}
	give := n
	var pad int64
	end := f.StreamEnded()
	if !cs.closed && cs.err == nil {
		if cs.buf == nil && len(p) <= dataBufSize {
			cs.base = dataBufs.Get().(*[dataBufSize]byte)
			cs.buf = cs.base[:0]
		}
		cs.buf = append(cs.buf, p...)
		// Padding is never read: it goes back to both windows at once,
		// else padding alone could use up the stream's window.
		pad = n - int64(len(p))
		give = pad
		if end {
			pad = 0 // the stream's window ends with it
		}
		cs.recv += pad
	}
	if end {
		cs.recvEnd = true
		if cs.done == nil {
			cs.done = io.EOF
		}
	}
	cs.cond.Broadcast()
	cs.mu.Unlock()
	if end {
		cs.responseEnded()
	}
	if pad > 0 {
		if err := cc.write(func() error { return cc.fr.WriteWindowUpdate(cs.id, uint32(pad)) }); err != nil {
			return err
		}
	}
	if give > 0 {
		return cc.giveBack(give)
	}
	return nil
}

// responseEnded: the response's END_STREAM arrived. A request still being
// sent is not wanted any more: it is reset (CANCEL), which closes the
// stream on both sides; else the stream is closed.
func (cs *clientStream) responseEnded() {
	cc := cs.cc
	cc.mu.Lock()
	sentEnd := cs.sentEnd
	if !sentEnd {
		cs.sentEnd = true
	}
	cc.mu.Unlock()
	if sentEnd {
		cs.stopContext()
		cc.closed(cs)
		return
	}
	cs.mu.Lock()
	if cs.err == nil {
		cs.err = errors.New("h2: the response ended before the request") // for the body writer
	}
	cs.mu.Unlock()
	cc.cond.Broadcast()
	cs.stopContext()
	cs.closeRest(true)
	cc.writeAsync(func() error { return cc.fr.WriteRSTStream(cs.id, http2.ErrCodeCancel) })
	cc.closed(cs)
}

// closeRest closes the request body the body writer reads, once: at the
// writer's end, or when the stream ends first (async: a Close may wait for
// the Read it ends).
func (cs *clientStream) closeRest(async bool) {
	cs.mu.Lock()
	rest := cs.rest
	cs.rest = nil
	cs.mu.Unlock()
	c, ok := rest.(io.Closer)
	if !ok {
		return
	}
	if async {
		go c.Close()
		return
	}
	c.Close()
}

func (cs *clientStream) stopContext() {
	cs.mu.Lock()
	stop := cs.stopAf
	cs.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// reset takes the server's RST_STREAM.
func (cs *clientStream) reset(code http2.ErrCode) {
	cs.mu.Lock()
	noResponse := cs.resp == nil
	cs.mu.Unlock()
	err := fmt.Errorf("h2: stream reset by the server: %v", code)
	if code == http2.ErrCodeRefusedStream && noResponse {
		err = fmt.Errorf("%w: REFUSED_STREAM", ErrUnprocessed)
		cs.abort(err, 0, false)
		// The server has no room now, whatever its SETTINGS say (it may
		// not yet have counted a stream it ended): the connection takes
		// no new stream until another of its streams closes.
		cs.cc.mu.Lock()
		cs.cc.full = len(cs.cc.streams) > 0
		cs.cc.mu.Unlock()
		return
	}
	cs.abort(err, 0, false)
}

// abort ends the stream with err: RoundTrip and the body's reads fail
// with it (a response read to its end stays so), the body writer stops.
// rst sends RST_STREAM with code.
func (cs *clientStream) abort(err error, code http2.ErrCode, rst bool) {
	cc := cs.cc
	cs.mu.Lock()
	if cs.err != nil && cs.recvEnd {
		cs.mu.Unlock()
		return
	}
	if cs.err == nil {
		cs.err = err
	}
	if cs.done == nil {
		cs.done = err
	}
	first := !cs.recvEnd
	cs.recvEnd = true
	unread := int64(len(cs.buf))
	if cs.done != io.EOF {
		cs.dropBuf()
		cs.consumed = 0
	} else {
		unread = 0 // read to the end it will be, and given back then
	}
	cs.cond.Broadcast()
	cs.mu.Unlock()
	if !first {
		return
	}
	cs.stopContext()
	cc.mu.Lock()
	opened := cs.id != 0 && cc.streams[cs.id] == cs
	cs.sentEnd = true
	cc.cond.Broadcast()
	cc.mu.Unlock()
	cs.closeRest(true)
	if unread > 0 {
		cc.giveBackAsync(unread)
	}
	if rst && opened {
		if !cc.wmu.TryLock() {
			cc.stall() // the stream ends while a write holds the connection
			go func() { _ = cc.write(func() error { return cc.fr.WriteRSTStream(cs.id, code) }) }()
		} else {
			_ = cc.writeLocked(func() error { return cc.fr.WriteRSTStream(cs.id, code) })
			cc.wmu.Unlock()
		}
	}
	cc.closed(cs)
}

// dataBufSize is the size of the pooled arrays a response's DATA is kept
// in until it is read: most responses' bodies (the 1 KiB of an API's
// answer) fit one, and the stream gives it back once they are read;
// DATA beyond it goes to memory of its own, as before.
const dataBufSize = 4 << 10

var dataBufs = sync.Pool{New: func() any { return new([dataBufSize]byte) }}

// dropBuf lets go of the DATA not read (none, when the reader took it
// all), giving the pooled array back: nothing else holds a slice of it,
// for Read copies out of buf. Under cs.mu.
func (cs *clientStream) dropBuf() {
	cs.buf = nil
	if cs.base != nil {
		dataBufs.Put(cs.base)
		cs.base = nil
	}
}

// clientBody is a response's body.
type clientBody struct{ cs *clientStream }

func (b clientBody) Read(p []byte) (int, error) {
	cs := b.cs
	cs.mu.Lock()
	for len(cs.buf) == 0 && cs.done == nil && !cs.closed {
		cs.cond.Wait()
	}
	if cs.closed {
		cs.mu.Unlock()
		return 0, errBodyClosed
	}
	if len(cs.buf) == 0 {
		err := cs.done
		if err == io.EOF && cs.trailer != nil {
			if cs.resp.Trailer == nil {
				cs.resp.Trailer = make(http.Header, len(cs.trailer))
			}
			for k, vv := range cs.trailer {
				cs.resp.Trailer[k] = vv
			}
			cs.trailer = nil
		}
		cs.mu.Unlock()
		return 0, err
	}
	n := copy(p, cs.buf)
	cs.buf = cs.buf[n:]
	if len(cs.buf) == 0 {
		cs.dropBuf()
	}
	cs.consumed += int64(n)
	var inc int64
	if !cs.recvEnd && cs.consumed >= cs.cc.streamWin/2 {
		inc, cs.consumed = cs.consumed, 0
		cs.recv += inc
	}
	cs.mu.Unlock()
	cc := cs.cc
	_ = cc.giveBack(int64(n))
	if inc > 0 {
		_ = cc.write(func() error { return cc.fr.WriteWindowUpdate(cs.id, uint32(inc)) })
	}
	return n, nil
}

// Buffered says what the next reads return without blocking: the bytes
// received and not yet read, and whether the response ends after them.
func (b clientBody) Buffered() (int, bool) {
	cs := b.cs
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		return 0, false
	}
	return len(cs.buf), cs.done == io.EOF
}

// Close ends the body; before its end, the stream is reset (CANCEL).
func (b clientBody) Close() error {
	cs := b.cs
	cs.mu.Lock()
	if cs.closed {
		cs.mu.Unlock()
		return nil
	}
	cs.closed = true
	atEnd := cs.done == io.EOF
	unread := int64(len(cs.buf))
	cs.dropBuf()
	cs.cond.Broadcast()
	cs.mu.Unlock()
	if unread > 0 {
		cs.cc.giveBackAsync(unread)
	}
	if !atEnd {
		cs.abort(errBodyClosed, http2.ErrCodeCancel, true)
	}
	return nil
}
