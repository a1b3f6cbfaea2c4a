package l7

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/weftmesh/weft/internal/rawio"
)

// AppH1 is the server sidecar's HTTP/1.1 client to the app. It serves the
// requests that make nearly all of an HTTP/1.1 app's traffic — no body, or
// one read whole (wholeSmallBody), no trailers, no Expect and no Upgrade —
// in the goroutine of the request: it writes the head and the body in one
// system call and reads the response where the caller reads it.
// net/http's transport hands every request to two goroutines of its
// connection (persistConn's writeLoop and readLoop) and back through
// channels and selects (docs/decisions.md; the gain is in
// sidecar/proxy/bench/README.md, "Session 24"). Every other request —
// a streamed body, trailers, 100-continue, an upgrade, a close, or
// anything AppH1 would write otherwise than net/http — goes to Fallback,
// unchanged.
//
// What it writes is what net/http's transport writes for the same request
// (TestAppH1WritesAsNetHTTP compares the bytes); a response is read by
// net/http's own http.ReadResponse, its head bounded as the transport
// bounds one (10 MiB), the interim responses before it counted in (the
// transport bounds each). A connection goes back to the idle pool only once its
// response is read to the end, with nothing after it, the response not
// asking to close; before an idle connection is reused the kernel is asked,
// without reading or waiting (MSG_PEEK|MSG_DONTWAIT), whether the app has
// closed it or sent anything unasked: such a connection is closed, not
// used. A request that fails on a reused connection before any byte of a
// response came back is tried again on another connection when nothing of
// it was written (AppH1 holds its bytes), or when net/http's transport
// would send it again: no body, and GET, HEAD, OPTIONS, TRACE or an
// Idempotency-Key. A request whose context has ended is not sent.
type AppH1 struct {
	// Dial connects to the app's address (the request's URL host).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Fallback serves the requests AppH1 does not (AppTransport's).
	Fallback http.RoundTripper
	// MaxIdlePerHost and IdleTimeout bound the idle connections kept
	// per app address: 64 and 90 s when zero, as AppTransport's.
	MaxIdlePerHost int
	IdleTimeout    time.Duration
	// MaxResponseHeaderBytes bounds a response's head (1xx heads
	// included): 10 MiB when zero, net/http's default.
	MaxResponseHeaderBytes int64

	mu   sync.Mutex
	idle map[string][]*h1Conn
}

// NewAppH1 is the HTTP/1.1 client of an app reached by dial, with
// AppTransport's settings and AppTransport(dial) as its Fallback.
func NewAppH1(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *AppH1 {
	return &AppH1{Dial: dial, Fallback: AppTransport(dial)}
}

// errHeadTooLong is a response whose head exceeds MaxResponseHeaderBytes.
var errHeadTooLong = errors.New("l7: the app's response head is too long")

// h1Conn is a connection to the app.
type h1Conn struct {
	c   net.Conn
	br  *bufio.Reader // reads through h1Reader
	key string        // the app's address
	// limit is what reads may still return: the head's bound while one is
	// read, unbounded after; nread counts what they returned since the
	// request was written.
	limit, nread int64
	// idle closes the connection once it has been idle for IdleTimeout.
	idle *time.Timer
}

type h1Reader struct{ pc *h1Conn }

func (r h1Reader) Read(p []byte) (int, error) {
	pc := r.pc
	if pc.limit <= 0 {
		return 0, errHeadTooLong
	}
	if int64(len(p)) > pc.limit {
		p = p[:pc.limit]
	}
	n, err := pc.c.Read(p)
	pc.limit -= int64(n)
	pc.nread += int64(n)
	return n, err
}

// RoundTrip serves r (see AppH1).
func (t *AppH1) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	if err := ctx.Err(); err != nil {
		// Abandoned (the client reset its stream): nothing goes to the app.
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, err
	}
	body, ok := h1Eligible(r)
	if !ok {
		return t.fallback(r)
	}
	buf := headBuffers.Get().(*[]byte)
	defer headBuffers.Put(buf)
	head, ok := appendHead((*buf)[:0], r, len(body))
	if !ok {
		return t.fallback(r)
	}
	head = append(head, body...)
	*buf = head
	if r.Body != nil {
		r.Body.Close() // in memory or none: nothing is lost
	}
	for {
		pc, reused, err := t.conn(ctx, r.URL.Host)
		if err != nil {
			return nil, err
		}
		resp, written, err := t.exchange(ctx, pc, r, head)
		if err == nil {
			return resp, nil
		}
		pc.c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// The app closed it meanwhile: another when nothing was written
		// (AppH1 holds the bytes), or when net/http would send it again.
		if reused && pc.nread == 0 && (written == 0 || len(body) == 0 && replayable(r)) {
			continue
		}
		return nil, err
	}
}

// fallback sends r through Fallback; a body read whole goes as a
// bytes.Reader, which net/http's transport knows to be in memory and
// writes with the head in one system call.
func (t *AppH1) fallback(r *http.Request) (*http.Response, error) {
	if t.Fallback == nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, errors.New("l7: AppH1 has no Fallback for this request")
	}
	if w, ok := r.Body.(*wholeBody); ok {
		r.Body = io.NopCloser(bytes.NewReader(w.b[w.off:]))
	}
	return t.Fallback.RoundTrip(r)
}

// exchange writes the request's bytes on pc and reads its response; on an
// error the caller closes pc. written is what was written of req.
func (t *AppH1) exchange(ctx context.Context, pc *h1Conn, r *http.Request, req []byte) (resp *http.Response, written int, err error) {
	stop := context.AfterFunc(ctx, func() { pc.c.SetDeadline(aLongTimeAgo) })
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if err := ctx.Err(); err != nil { // ended while a connection was found
		return nil, 0, err
	}
	pc.nread = 0
	if written, err = pc.c.Write(req); err != nil {
		return nil, written, err
	}
	pc.limit = cmp.Or(t.MaxResponseHeaderBytes, 10<<20)
	trace := httptrace.ContextClientTrace(ctx)
	for {
		resp, err = http.ReadResponse(pc.br, r)
		if err != nil {
			if pc.limit <= 0 { // the head cut short reads as some other error
				err = errHeadTooLong
			}
			return nil, written, err
		}
		code := resp.StatusCode
		if code < 100 || code >= 200 {
			break
		}
		if code == http.StatusSwitchingProtocols {
			return nil, written, errors.New("l7: the app switched protocols unasked")
		}
		// An interim response: the relay forwards it through the
		// trace, as net/http's transport calls it.
		if trace != nil && trace.Got1xxResponse != nil {
			if err = trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, written, err
			}
		}
	}
	pc.limit = math.MaxInt64
	if resp.Body == http.NoBody {
		t.release(pc, stop, !resp.Close)
		return resp, written, nil
	}
	resp.Body = &h1Body{t: t, pc: pc, body: resp.Body, stop: stop, ctx: ctx, keep: !resp.Close}
	return resp, written, nil
}

// errBodyClosed is a read after Close, as net/http's.
var errBodyClosed = errors.New("http: read on closed response body")

// release gives pc back to the idle pool when keep, the response is read
// to its end with nothing after it and the request's context did not
// interrupt it (stop tells); else closes it.
func (t *AppH1) release(pc *h1Conn, stop func() bool, keep bool) {
	if !stop() || !keep || pc.br.Buffered() > 0 {
		pc.c.Close()
		return
	}
	t.put(pc)
}

// h1Body is a response's body: its end gives the connection back. Close
// may be called while a Read waits (as on net/http's bodies): it closes the
// connection, which ends the Read; whichever of the two ends the body
// first decides what becomes of the connection.
type h1Body struct {
	t    *AppH1
	pc   *h1Conn
	body io.ReadCloser
	stop func() bool
	ctx  context.Context
	keep bool
	end  atomic.Int32 // bodyOpen, bodyEOF or bodyClosed
}

const (
	bodyOpen = iota
	bodyEOF
	bodyClosed // by Close or by a failed read
)

func (b *h1Body) Read(p []byte) (int, error) {
	switch b.end.Load() {
	case bodyEOF:
		return 0, io.EOF
	case bodyClosed:
		return 0, errBodyClosed
	}
	n, err := b.body.Read(p)
	switch {
	case err == io.EOF:
		if b.end.CompareAndSwap(bodyOpen, bodyEOF) {
			b.t.release(b.pc, b.stop, b.keep)
		}
	case err != nil:
		if b.end.CompareAndSwap(bodyOpen, bodyClosed) {
			b.stop()
			b.pc.c.Close()
		}
		if cerr := b.ctx.Err(); cerr != nil {
			err = cerr
		}
	}
	return n, err
}

// Close before the end closes the connection: what is left of the
// response is not worth reading, as net/http's transport judges.
func (b *h1Body) Close() error {
	if b.end.CompareAndSwap(bodyOpen, bodyClosed) {
		b.stop()
		b.pc.c.Close()
	}
	return nil
}

// conn returns an idle connection to key that the app has neither closed
// nor written to, or a new one.
func (t *AppH1) conn(ctx context.Context, key string) (*h1Conn, bool, error) {
	for {
		pc := t.get(key)
		if pc == nil {
			break
		}
		if quiet(pc.c) {
			return pc, true, nil
		}
		pc.c.Close()
	}
	c, err := t.Dial(ctx, "tcp", key)
	if err != nil {
		return nil, false, err
	}
	pc := &h1Conn{c: c, key: key, limit: math.MaxInt64}
	pc.br = bufio.NewReaderSize(h1Reader{pc}, 4<<10)
	return pc, false, nil
}

func (t *AppH1) get(key string) *h1Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	for l := t.idle[key]; len(l) > 0; l = t.idle[key] {
		pc := l[len(l)-1] // the most recently used: the others may time out
		l[len(l)-1] = nil
		t.idle[key] = l[:len(l)-1]
		if pc.idle.Stop() {
			return pc
		}
		// Its timer fired: it is being closed.
	}
	return nil
}

func (t *AppH1) put(pc *h1Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.idle[pc.key]
	if len(l) >= cmp.Or(t.MaxIdlePerHost, 64) {
		pc.c.Close()
		return
	}
	if t.idle == nil {
		t.idle = make(map[string][]*h1Conn)
	}
	t.idle[pc.key] = append(l, pc)
	timeout := cmp.Or(t.IdleTimeout, 90*time.Second)
	if pc.idle == nil {
		pc.idle = time.AfterFunc(timeout, func() { t.expire(pc) })
	} else {
		pc.idle.Reset(timeout)
	}
}

// expire closes pc, idle too long, and forgets it.
func (t *AppH1) expire(pc *h1Conn) {
	t.mu.Lock()
	l := t.idle[pc.key]
	if i := slices.Index(l, pc); i >= 0 {
		t.idle[pc.key] = slices.Delete(l, i, i+1)
	}
	t.mu.Unlock()
	pc.c.Close()
}

// CloseIdleConnections closes the idle connections, AppH1's and
// Fallback's.
func (t *AppH1) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, l := range idle {
		for _, pc := range l {
			if pc.idle.Stop() {
				pc.c.Close()
			}
		}
	}
	if c, ok := t.Fallback.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// quiet reports whether c, idle, has nothing to read and is open: the app
// has neither closed it nor sent anything unasked. A connection the kernel
// cannot be asked about (not a syscall.Conn, nor wrapping one that NetConn
// returns) is never quiet: it is not used again.
//
// A connection that answers Quiet itself (rawio.Conn, the sidecar's
// sockets) is asked that way: it allocates nothing, and the check is made
// on every request.
func quiet(c net.Conn) bool {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if q, ok := c.(interface{ Quiet() bool }); ok {
			return q.Quiet()
		}
		if _, sys := c.(syscall.Conn); sys || !ok {
			break
		}
		c = w.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	return rawio.Quiet(rc)
}

// h1Eligible reports whether AppH1 serves r itself, and its body if it has
// one: a plain-HTTP request with no body or one read whole, no trailers, no
// Expect, no upgrade and nothing asking to close.
func h1Eligible(r *http.Request) ([]byte, bool) {
	if r.URL == nil || r.URL.Scheme != "http" || r.URL.Host == "" || r.Close || r.Trailer != nil || len(r.TransferEncoding) > 0 {
		return nil, false
	}
	for _, k := range [...]string{"Expect", "Upgrade", "Connection", "Transfer-Encoding", "Trailer"} {
		if _, ok := r.Header[k]; ok {
			return nil, false
		}
	}
	switch b := r.Body.(type) {
	case nil:
		return nil, r.ContentLength == 0
	case *wholeBody:
		if int64(len(b.b)) != r.ContentLength || b.read {
			return nil, false
		}
		return b.b, true
	}
	if r.Body == http.NoBody {
		return nil, r.ContentLength == 0
	}
	return nil, false
}

// appendHead appends the head of r, a body of n bytes behind it, as
// net/http's Request.Write writes it: the request line, Host, User-Agent
// when not empty, Content-Length, then the other fields sorted by name,
// values trimmed; ok is false for anything net/http would refuse or write
// otherwise (those go to the Fallback).
func appendHead(b []byte, r *http.Request, n int) ([]byte, bool) {
	if !validMethod(r.Method) || r.Method == http.MethodConnect {
		return b, false
	}
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	if !httpguts.ValidHostHeader(host) || strings.Contains(host, "%") {
		return b, false
	}
	uri := r.URL.RequestURI()
	if uri == "" || !plainURI(uri) {
		return b, false
	}
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = append(b, uri...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	if ua, ok := r.Header["User-Agent"]; ok {
		if len(ua) > 0 && ua[0] != "" { // validated below, with the other values
			b = append(b, "User-Agent: "...)
			b = append(b, strings.Trim(ua[0], " \t")...)
			b = append(b, "\r\n"...)
		}
	} else {
		return b, false // net/http would name itself; the relay always sets it
	}
	if n > 0 || r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, "\r\n"...)
	}
	var keys [32]string
	ks := keys[:0]
	for k, vv := range r.Header {
		// net/http's transport refuses a request with any invalid name or
		// value, those it does not write included.
		if !httpguts.ValidHeaderFieldName(k) {
			return b, false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return b, false
			}
		}
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		ks = append(ks, k)
	}
	slices.Sort(ks)
	for _, k := range ks {
		for _, v := range r.Header[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, strings.Trim(v, " \t")...)
			b = append(b, "\r\n"...)
		}
	}
	return append(b, "\r\n"...), true
}

// headBuffers hold a request's bytes while they are written.
var headBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// plainURI: no control characters, spaces or non-ASCII bytes, which
// net/http writes as they are.
func plainURI(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// replayable: a request net/http's transport would send again after its
// connection failed (Request.isReplayable's methods and header; unlike
// RFC 9110's idempotent, PUT and DELETE are not among them).
func replayable(r *http.Request) bool {
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := r.Header["Idempotency-Key"]
	_, b := r.Header["X-Idempotency-Key"]
	return a || b
}
