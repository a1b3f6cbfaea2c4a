package h1

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
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Defaults and bounds.
const (
	// DefaultMaxHeaderBytes bounds a request head when the Server says
	// nothing (net/http's default).
	DefaultMaxHeaderBytes = http.DefaultMaxHeaderBytes
	// headerSlop is read past MaxHeaderBytes before a head is refused:
	// the read buffer's size, as net/http allows.
	headerSlop = 4 << 10
	// readBufSize is a connection's read buffer.
	readBufSize = 4 << 10
	// wholeLimit is the largest body held back for a Content-Length: a
	// handler that returns having written at most this much (and never
	// flushed) has its response sent with one, in one Write.
	wholeLimit = 16 << 10
	// flushAt is how much of a streamed response is gathered before it
	// is written to the connection (a Flush writes it at once).
	flushAt = 16 << 10
	// watchAfter is how long a handler runs before its connection is
	// watched for the client going away.
	watchAfter = 50 * time.Millisecond
)

// ErrServerClosed is returned by ServeConn once Shutdown or Close was
// called.
var ErrServerClosed = errors.New("h1: server closed")

// Server serves HTTP/1.1 connections given to ServeConn.
type Server struct {
	// Handler serves each request; required.
	Handler http.Handler
	// HeaderTimeout bounds the time to read a request's head, from its
	// first byte — the first request's from ServeConn, as net/http's
	// server counts it (a connection that sends nothing ends then);
	// zero: unbounded.
	HeaderTimeout time.Duration
	// IdleTimeout closes a connection that waits this long for its next
	// request; zero: never.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's head (and a chunked body's
	// trailers); zero: DefaultMaxHeaderBytes. Past it: 431.
	MaxHeaderBytes int
	// ErrorLog, if not nil, is told of requests refused and handlers
	// that panicked.
	ErrorLog func(c net.Conn, err error)
	// H2C, if not nil, serves a connection whose first bytes are HTTP/2's
	// client preface (prior knowledge, as net/http's server does with
	// Protocols' UnencryptedHTTP2); c reads those bytes again. Without
	// it such a connection is refused (505).
	H2C func(ctx context.Context, c net.Conn) error

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutdown bool // no new connections; each closes once idle
	closed   bool
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return DefaultMaxHeaderBytes
}

// connState is where a connection is between its requests.
type connState int

const (
	stateIdle     connState = iota // waiting for a request
	stateActive                    // reading or serving one
	stateHijacked                  // its handler took it
	stateNew                       // waiting for its first request
)

// newGrace is how long Shutdown lets a new connection send its first
// request (net/http's 5 s): the client has just connected to send it, and
// a fresh connection closed unanswered is not tried again.
const newGrace = 5 * time.Second

// conn is one served connection.
type conn struct {
	s   *Server
	c   net.Conn
	ctx context.Context
	lr  limitReader // under br: bounds a head's bytes
	br  *bufio.Reader
	out bytes.Buffer // the response gathered, written by flushOut
	// fields are the final response's header fields, written out by
	// WriteHeader for writeHead
	fields bytes.Buffer
	hb     []byte // a response's body held back for its Content-Length
	// werr is the first write error: the connection is broken, later
	// writes fail with it.
	werr    error
	state   connState // under s.mu
	since   time.Time // when ServeConn took it
	dateAt  time.Time
	dateStr string
	// the request being served (the reader's, the handler's and the
	// watch's: under mu)
	mu       sync.Mutex
	watching bool          // the watch reads the connection
	watchEnd chan struct{} // closed when it stops reading
	served   bool          // the handler returned (or hijacked): no watch
	armed    armedWatch    // what the watch timer is for
	// watchTimer is the connection's watch timer, armed per request
	// (the serving goroutine's)
	watchTimer *time.Timer
	remote     string // the client's address, once
	// reqNum counts the requests: a watch whose timer fired for an
	// earlier one, its goroutine run late, does not watch this one.
	reqNum uint64
}

// limitReader reads c until remain is spent (a negative remain: no
// bound); past it, it says so (hit) and reports EOF.
type limitReader struct {
	c      net.Conn
	remain int64
	hit    bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.remain == 0 {
		l.hit = true
		return 0, io.EOF
	}
	if l.remain > 0 && int64(len(p)) > l.remain {
		p = p[:l.remain]
	}
	n, err := l.c.Read(p)
	if l.remain > 0 {
		l.remain -= int64(n)
	}
	return n, err
}

// ServeConn serves c until the client closes it, a timeout, Shutdown or
// Close ends it, or a handler that hijacked it returns; c is closed then
// (not once hijacked: the handler owns it). ctx is the parent of its
// requests' contexts.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	cn := &conn{s: s, c: c, ctx: ctx, lr: limitReader{c: c, remain: -1}, since: time.Now()}
	s.mu.Lock()
	if s.shutdown || s.closed {
		s.mu.Unlock()
		c.Close()
		return ErrServerClosed
	}
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[cn] = struct{}{}
	cn.state = stateActive
	s.mu.Unlock()
	cn.br = bufio.NewReaderSize(&cn.lr, readBufSize)
	// Deferred: a handler that ends the goroutine (runtime.Goexit) ends
	// the connection too, closed with its response unfinished.
	defer func() {
		s.mu.Lock()
		delete(s.conns, cn)
		hijacked := cn.state == stateHijacked
		s.mu.Unlock()
		if !hijacked {
			c.Close()
		}
	}()
	cn.serve()
	return nil
}

// setState moves cn to st; false if the server is shutting down (or
// closed) and cn should end instead — for a new connection's first
// request (first), only once the server is closed.
func (cn *conn) setState(st connState, first bool) bool {
	cn.s.mu.Lock()
	defer cn.s.mu.Unlock()
	cn.state = st
	return !cn.s.closed && (first || !cn.s.shutdown)
}

// Shutdown stops new connections, closes the idle ones (a new one once it
// sent nothing for newGrace) and lets the others finish the request they
// serve (closing after it); it returns once none is left — but for the
// hijacked ones (tunnels: their handlers own them) — or with ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	s.closeIdleLocked()
	s.mu.Unlock()
	wait := time.Millisecond
	for {
		s.mu.Lock()
		s.closeIdleLocked()
		n := 0
		for cn := range s.conns {
			if cn.state != stateHijacked { // a tunnel is its handler's (net/http's Shutdown does not wait for it either)
				n++
			}
		}
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

func (s *Server) closeIdleLocked() {
	for cn := range s.conns {
		if cn.state == stateIdle || cn.state == stateNew && time.Since(cn.since) > newGrace {
			cn.c.Close()
		}
	}
}

// Close closes every connection being served (not the hijacked ones).
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for cn := range s.conns {
		if cn.state != stateHijacked {
			cn.c.Close()
		}
	}
	return nil
}

// serve reads and serves requests until the connection ends; true if a
// handler hijacked it.
func (cn *conn) serve() (hijacked bool) {
	s := cn.s
	limit := int64(s.maxHeaderBytes() + headerSlop)
	for first := true; ; first = false {
		deadline := false
		// The head's bound counts what the read buffer holds already.
		cn.lr.remain, cn.lr.hit = max(limit-int64(cn.br.Buffered()), 0), false
		// A new connection's first request is served even once Shutdown
		// began (its response closes the connection); Shutdown closes it
		// if it does not come (newGrace).
		if cn.br.Buffered() == 0 {
			cn.shrink()
			st := stateIdle
			if first {
				st = stateNew
			}
			if !cn.setState(st, first) {
				return false
			}
			switch {
			case first && s.HeaderTimeout > 0:
				// The first head's time counts from the connection's
				// start, as net/http's server counts it: a client that
				// connected and sends nothing is not kept for
				// IdleTimeout (or for ever without one).
				_ = cn.c.SetReadDeadline(cn.since.Add(s.HeaderTimeout))
				deadline = true
			case s.IdleTimeout > 0:
				_ = cn.c.SetReadDeadline(time.Now().Add(s.IdleTimeout))
				deadline = true
			}
			if _, err := cn.br.Peek(1); err != nil {
				return false // the client closed it, the idle timeout, Close
			}
		}
		if !cn.setState(stateActive, first) {
			return false
		}
		if s.HeaderTimeout > 0 && (first || !headBuffered(cn.br)) {
			start := time.Now()
			if first {
				start = cn.since
			}
			_ = cn.c.SetReadDeadline(start.Add(s.HeaderTimeout))
			deadline = true
		} else if deadline && s.HeaderTimeout <= 0 {
			_ = cn.c.SetReadDeadline(time.Time{})
			deadline = false
		}
		if first && s.H2C != nil && cn.sniffH2() {
			if deadline {
				_ = cn.c.SetReadDeadline(time.Time{})
			}
			cn.lr.remain = -1
			s.mu.Lock()
			delete(s.conns, cn) // the HTTP/2 server's from here
			s.mu.Unlock()
			_ = s.H2C(cn.ctx, bufferedConn{Conn: cn.c, br: cn.br})
			return false
		}
		req, err := http.ReadRequest(cn.br)
		cn.lr.remain = -1
		if err != nil {
			cn.refuse(err)
			return false
		}
		if deadline {
			_ = cn.c.SetReadDeadline(time.Time{})
		}
		if err := check(req); err != nil {
			cn.refuse(err)
			return false
		}
		keep, hijacked := cn.serveRequest(req)
		if hijacked {
			return true
		}
		if !keep {
			return false
		}
	}
}

// headBuffered says whether a whole request head is in br already
// (reading it waits for nothing: no header deadline is needed, an idle
// one still set does not matter).
func headBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, []byte("\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

// keepBuf is the most of its buffers a connection keeps while idle.
const keepBuf = 4 << 10

// shrink lets go of buffers a large response grew, as the connection
// goes idle: an idle connection holds its read buffer and at most
// keepBuf of each.
func (cn *conn) shrink() {
	if cap(cn.hb) > keepBuf {
		cn.hb = nil
	}
	if cn.out.Cap() > keepBuf {
		cn.out = bytes.Buffer{}
	}
	if cn.fields.Cap() > keepBuf {
		cn.fields = bytes.Buffer{}
	}
}

// h2Preface is what an HTTP/2 client with prior knowledge sends first.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// sniffH2 says whether the connection starts with HTTP/2's preface,
// reading no more of it than its first bytes that match.
func (cn *conn) sniffH2() bool {
	for n := 1; n <= len(h2Preface); n++ {
		b, err := cn.br.Peek(n)
		if err != nil || string(b) != h2Preface[:n] {
			return false
		}
	}
	return true
}

// bufferedConn is a connection whose reads start with what br holds.
type bufferedConn struct {
	net.Conn
	br *bufio.Reader
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// statusError is a request refused with its status.
type statusError struct {
	code int
	text string
}

func (e statusError) Error() string { return fmt.Sprintf("%d %s", e.code, e.text) }

// refuse answers a request that could not be read or is refused, in
// net/http's server's words, and the connection ends: a client that
// closed it or timed out gets nothing.
func (cn *conn) refuse(err error) {
	const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	var se statusError
	cn.out.Reset()
	switch {
	case errors.As(err, &se):
		fmt.Fprintf(&cn.out, "HTTP/1.1 %d %s: %s%s%d %s: %s", se.code, http.StatusText(se.code), se.text, errorHeaders,
			se.code, http.StatusText(se.code), se.text)
	case cn.lr.hit:
		const publicErr = "431 Request Header Fields Too Large"
		cn.out.WriteString("HTTP/1.1 " + publicErr + errorHeaders + publicErr)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, net.ErrClosed):
		return
	default:
		var ne net.Error
		if errors.As(err, &ne) {
			return // the connection failed
		}
		if isUnsupportedTE(err) {
			cn.out.WriteString("HTTP/1.1 501 Not Implemented" + errorHeaders + "Unsupported transfer encoding")
		} else {
			const publicErr = "400 Bad Request"
			cn.out.WriteString("HTTP/1.1 " + publicErr + errorHeaders + publicErr)
		}
	}
	if cn.s.ErrorLog != nil {
		cn.s.ErrorLog(cn.c, fmt.Errorf("h1: request refused: %w", err))
	}
	if cn.flushOut() != nil {
		return
	}
	// What the client still sends is read and dropped for a while: closed
	// with it unread, the connection would be reset, and the reset may
	// reach the client before the answer.
	if cw, ok := cn.c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	cn.lr.remain = -1
	_ = cn.c.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.Copy(io.Discard, io.LimitReader(cn.br, lingerBytes))
}

// lingerTime and lingerBytes bound what refuse reads after its answer.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 256 << 10
)

// isUnsupportedTE: http.ReadRequest's error for a Transfer-Encoding other
// than chunked, or more than one (net/http's server answers 501). Its
// text starts the error's: others quote what the client sent after theirs.
func isUnsupportedTE(err error) bool {
	return strings.HasPrefix(err.Error(), "unsupported transfer encoding:") ||
		strings.HasPrefix(err.Error(), "too many transfer encodings:")
}

// check refuses what net/http's server refuses on top of ReadRequest.
func check(req *http.Request) error {
	if req.ProtoMajor != 1 {
		return statusError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	// http.ReadRequest refused a second Host field and took the Host out
	// of the fields (into req.Host, unless the target was in absolute
	// form): an HTTP/1.1 request without one, or with an empty one, is
	// refused (net/http's server serves an empty Host).
	if req.ProtoAtLeast(1, 1) && req.Host == "" && req.Method != http.MethodConnect {
		return statusError{http.StatusBadRequest, "missing required Host header"}
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return statusError{http.StatusBadRequest, "malformed Host header"}
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return statusError{http.StatusBadRequest, "invalid header name"}
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return statusError{http.StatusBadRequest, "invalid header value"}
			}
		}
	}
	return nil
}

// serveRequest runs the handler for req and finishes its response; keep
// says whether the connection serves another request.
func (cn *conn) serveRequest(req *http.Request) (keep, hijacked bool) {
	ctx, cancel := context.WithCancelCause(cn.ctx)
	defer cancel(nil)
	req = req.WithContext(ctx)
	if cn.remote == "" {
		cn.remote = cn.c.RemoteAddr().String()
	}
	req.RemoteAddr = cn.remote
	if tc, ok := cn.c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		req.TLS = &st
	}
	w := &response{cn: cn, req: req, hdr: make(http.Header), cl: -1}
	expect := req.Header["Expect"]
	switch {
	case len(expect) == 0:
	case httpguts.HeaderValuesContainsToken(expect, "100-continue"):
		// Met by the body's first read; a request without a body, or an
		// HTTP/1.0 one (it cannot take a 1xx), is served without it, as
		// net/http's server serves it: some clients ask on every POST.
		w.expect = req.ProtoAtLeast(1, 1) && req.ContentLength != 0
	default:
		// An expectation this server cannot meet (RFC 9110 §10.1.1).
		w.closeAfter = true
		w.WriteHeader(http.StatusExpectationFailed)
		w.finish()
		return false, false
	}
	switch {
	case len(req.TransferEncoding) > 0:
		w.body = &chunkedBody{bodyState: bodyState{w: w}, r: newChunkedReader(cn.br)}
		req.Body = w.body
	case req.ContentLength > 0:
		w.body = &lengthBody{bodyState: bodyState{w: w}, remain: req.ContentLength}
		req.Body = w.body
	default:
		req.Body = http.NoBody
	}
	cn.mu.Lock()
	cn.served, cn.watching = false, false
	cn.reqNum++
	n := cn.reqNum
	cn.mu.Unlock()
	cn.armWatch(n, w, cancel)
	aborted := cn.run(w, req)
	cn.watchTimer.Stop()
	cn.stopWatch()
	cancel(nil)
	if w.hijacked {
		return false, true
	}
	if aborted {
		return false, false
	}
	w.finish()
	return !w.closeAfter && cn.werr == nil, false
}

// run calls the handler; true if it panicked (the response is cut: the
// connection ends without it).
func (cn *conn) run(w *response, req *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			aborted = true
			if v != http.ErrAbortHandler && cn.s.ErrorLog != nil {
				cn.s.ErrorLog(cn.c, fmt.Errorf("h1: handler panicked: %v", v))
			}
		}
	}()
	cn.s.Handler.ServeHTTP(w, req)
	return false
}

// armWatch has watch called for request n after watchAfter, by the
// connection's one timer (a timer and a closure a request less).
func (cn *conn) armWatch(n uint64, w *response, cancel context.CancelCauseFunc) {
	cn.mu.Lock()
	cn.armed = armedWatch{n: n, w: w, cancel: cancel}
	cn.mu.Unlock()
	if cn.watchTimer == nil {
		cn.watchTimer = time.AfterFunc(watchAfter, cn.fireWatch)
		return
	}
	cn.watchTimer.Reset(watchAfter)
}

// armedWatch is the request the timer is armed for.
type armedWatch struct {
	n      uint64
	w      *response
	cancel context.CancelCauseFunc
}

// fireWatch is the timer's: it watches the request armed last (a timer
// whose goroutine runs late may find a later request armed, which watch
// then checks as it checks any).
func (cn *conn) fireWatch() {
	cn.mu.Lock()
	a := cn.armed
	cn.mu.Unlock()
	if a.w != nil {
		cn.watch(a.n, a.w, a.cancel)
	}
}

// watch reads the connection once the handler of request n ran for
// watchAfter, its request body read to its end: the client closing the
// connection (or resetting it) ends the request's context. Bytes that
// arrive instead (a pipelined request) stay in the read buffer for the
// next request. The timer's goroutine may run late: once request n was
// served (a later one may be reading the connection), it does nothing.
func (cn *conn) watch(n uint64, w *response, cancel context.CancelCauseFunc) {
	cn.mu.Lock()
	if cn.served || n != cn.reqNum || (w.body != nil && !w.body.atEOF()) || cn.br.Buffered() > 0 {
		cn.mu.Unlock()
		return
	}
	cn.watching, cn.watchEnd = true, make(chan struct{})
	end := cn.watchEnd
	cn.mu.Unlock()
	defer close(end)
	if _, err := cn.br.Peek(1); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		cancel(fmt.Errorf("h1: the client went away: %w", err))
	}
}

// stopWatch ends the watch's read, if any, and waits for it: the
// connection is the server's again.
func (cn *conn) stopWatch() {
	cn.mu.Lock()
	cn.served = true
	cn.armed = armedWatch{} // not kept past its request
	watching, end := cn.watching, cn.watchEnd
	cn.watching = false
	cn.mu.Unlock()
	if !watching {
		return
	}
	_ = cn.c.SetReadDeadline(time.Unix(1, 0))
	<-end
	_ = cn.c.SetReadDeadline(time.Time{})
}

// flushOut writes what is gathered.
func (cn *conn) flushOut() error {
	if cn.werr != nil {
		cn.out.Reset()
		return cn.werr
	}
	if cn.out.Len() == 0 {
		return nil
	}
	_, err := cn.c.Write(cn.out.Bytes())
	cn.out.Reset()
	if err != nil {
		cn.werr = err
	}
	return err
}

// date is the Date of a response, made once a second.
func (cn *conn) date() string {
	now := time.Now()
	if now.Sub(cn.dateAt) < time.Second && cn.dateStr != "" {
		return cn.dateStr
	}
	cn.dateAt, cn.dateStr = now.Truncate(time.Second), now.UTC().Format(http.TimeFormat)
	return cn.dateStr
}
