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
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ClientPreface is what a client sends first on an HTTP/2 connection.
const ClientPreface = http2.ClientPreface

// Defaults of Server's limits.
const (
	DefaultMaxConcurrentStreams = 250
	DefaultMaxHeaderListSize    = 1 << 20
	DefaultStreamWindow         = 1 << 20
	DefaultConnWindow           = 1 << 20
	DefaultMaxReadFrameSize     = 1 << 20
)

// Server serves HTTP/2 connections.
type Server struct {
	// Handler serves each request; required.
	Handler http.Handler
	// MaxConcurrentStreams is the SETTINGS_MAX_CONCURRENT_STREAMS sent
	// to the peer: streams whose handlers are running, a stream reset by
	// the peer counting until its handler returns.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a request's header list (RFC 9113 §6.5.2's
	// size: names, values and 32 bytes a field); a bigger one gets 431.
	MaxHeaderListSize uint32
	// StreamWindow and ConnWindow are the receive windows: how much of
	// request bodies a stream, and the connection, buffers unread.
	StreamWindow, ConnWindow uint32
	// MaxReadFrameSize is the SETTINGS_MAX_FRAME_SIZE sent to the peer.
	MaxReadFrameSize uint32
	// IdleTimeout closes a connection with no stream open for this long
	// (GOAWAY first); zero: never.
	IdleTimeout time.Duration
	// PrefaceTimeout bounds the wait for the client preface, from
	// ServeConn (a client that connects and says nothing holds no
	// connection past it: net/http's ReadHeaderTimeout counts from the
	// connection's start too); zero: no bound.
	PrefaceTimeout time.Duration
	// Context, if not nil, gives the context of c's requests.
	Context func(c net.Conn) context.Context
	// ErrorLog, if not nil, is told of connection errors.
	ErrorLog func(c net.Conn, err error)
}

func (s *Server) maxStreams() uint32 {
	if s.MaxConcurrentStreams == 0 {
		return DefaultMaxConcurrentStreams
	}
	return s.MaxConcurrentStreams
}

func orDefault(v, d uint32) uint32 {
	if v == 0 {
		return d
	}
	return v
}

// ServeConn serves c, whose next bytes are the client preface, until the
// peer closes it, an error ends it, Shutdown (of the returned Conn) or
// ctx ends it. It returns when c is closed and every handler returned.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	sc := s.newConn(ctx, c)
	return sc.serve()
}

// NewConn returns c's server connection, to be served with Serve; its
// Shutdown may be called at any time.
func (s *Server) NewConn(ctx context.Context, c net.Conn) *Conn {
	return s.newConn(ctx, c)
}

// Conn is one served connection.
type Conn struct {
	s      *Server
	c      net.Conn
	ctx    context.Context // the requests' parent
	cancel context.CancelCauseFunc
	fr     *http2.Framer // reads by the reader only; writes under wmu
	br     *bufio.Reader
	held   []heldStream // the reader's: handlers not yet started (release)
	tls    *tls.ConnectionState
	remote string

	wmu  sync.Mutex
	wbuf bytes.Buffer // frames composed, written to c by flush
	enc  *hpack.Encoder
	hbuf bytes.Buffer // the header block being encoded
	werr error        // sticky: a failed write ends the connection
	// PING ACKs owed, sent with the next write (acks.go)
	acks pingAcks
	// Under wmu: the Date of responses, made once a second.
	dateAt  time.Time
	dateStr string

	mu            sync.Mutex
	cond          *sync.Cond // send windows grew, a stream ended, the connection died
	streams       map[uint32]*stream
	running       int // handlers running (reset streams too)
	lastID        uint32
	refused       int // streams refused for running handlers since one completed
	connSend      int64
	initialSend   int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame  uint32
	connRecv      int64 // how much more the peer may send, connection-wide
	connConsumed  int64 // read by handlers, not yet returned to the peer
	goAway        bool  // no new streams
	dead          error // the connection ended
	idle          *time.Timer
	handlersEnded chan struct{} // closed when dead and running reaches 0
}

func (s *Server) newConn(ctx context.Context, c net.Conn) *Conn {
	sc := &Conn{s: s, c: c, streams: map[uint32]*stream{}, initialSend: 65535, connSend: 65535,
		peerMaxFrame: 16384, connRecv: 65535, handlersEnded: make(chan struct{})}
	sc.cond = sync.NewCond(&sc.mu)
	if s.Context != nil {
		ctx = s.Context(c)
	}
	sc.ctx, sc.cancel = context.WithCancelCause(ctx)
	sc.br = bufio.NewReaderSize(c, 16<<10)
	sc.fr = http2.NewFramer(&sc.wbuf, sc.br)
	sc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	sc.fr.MaxHeaderListSize = orDefault(s.MaxHeaderListSize, DefaultMaxHeaderListSize)
	sc.fr.SetMaxReadFrameSize(orDefault(s.MaxReadFrameSize, DefaultMaxReadFrameSize))
	sc.enc = hpack.NewEncoder(&sc.hbuf)
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		sc.tls = &st
	}
	if a := c.RemoteAddr(); a != nil {
		sc.remote = a.String()
	}
	return sc
}

// aLongTimeAgo is a deadline in the past: it ends a read at once.
var aLongTimeAgo = time.Unix(1, 0)

// connError ends the connection with a GOAWAY of code.
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e connError) Error() string {
	return fmt.Sprintf("h2: connection error %v: %s", e.code, e.reason)
}

var (
	errShutdown    = errors.New("h2: server connection shut down")
	errIdle        = errors.New("h2: idle timeout")
	errClientGone  = errors.New("h2: client closed the connection")
	errStreamReset = errors.New("h2: stream reset by the client")
)

// Serve serves the connection; see ServeConn.
func (sc *Conn) Serve() error { return sc.serve() }

func (sc *Conn) serve() (err error) {
	defer func() {
		if p := recover(); p != nil {
			// A panic of the reader is weft's own bug, not a peer's
			// doing (a peer's bad frames are errors): the process's
			// state cannot be trusted past it — the reader may hold a
			// lock, the connection's or the process's workers', that
			// the steps below or the running handlers need — so the
			// panic goes on at once, to crash the process with its
			// stack, rather than wait for handlers first (which hung
			// it for ever when one waited on such a lock or ignored
			// its cancelled context).
			panic(p)
		}
		sc.die(err)
		sc.acks.stop()
		sc.release() // their handlers see the connection's end
		var ce connError
		if errors.As(err, &ce) {
			sc.linger()
		}
		sc.c.Close()
		sc.mu.Lock()
		for sc.running > 0 {
			sc.cond.Wait()
		}
		sc.mu.Unlock()
		if errors.Is(err, errClientGone) || errors.Is(err, errShutdown) || errors.Is(err, errIdle) {
			err = nil
		}
		if err != nil && sc.s.ErrorLog != nil {
			sc.s.ErrorLog(sc.c, err)
		}
	}()
	// The connection's context ending (ServeConn's ctx, or die) ends its
	// reads and its writes at once, even a write blocked on a peer that
	// does not read.
	stop := context.AfterFunc(sc.ctx, func() {
		sc.c.SetReadDeadline(aLongTimeAgo)
		sc.c.SetWriteDeadline(aLongTimeAgo)
	})
	defer stop()
	var preface [len(ClientPreface)]byte
	if d := sc.s.PrefaceTimeout; d > 0 {
		sc.c.SetReadDeadline(time.Now().Add(d))
	}
	if _, err := io.ReadFull(sc.br, preface[:]); err != nil {
		return fmt.Errorf("h2: reading the client preface: %w", err)
	}
	if sc.s.PrefaceTimeout > 0 {
		sc.c.SetReadDeadline(time.Time{})
		if sc.ctx.Err() != nil { // ended meanwhile: its deadline stands
			sc.c.SetReadDeadline(aLongTimeAgo)
		}
	}
	if string(preface[:]) != ClientPreface {
		return errors.New("h2: bad client preface")
	}
	streamWin := orDefault(sc.s.StreamWindow, DefaultStreamWindow)
	connWin := orDefault(sc.s.ConnWindow, DefaultConnWindow)
	if err := sc.write(func() error {
		if err := sc.fr.WriteSettings(
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: sc.s.maxStreams()},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWin},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: orDefault(sc.s.MaxReadFrameSize, DefaultMaxReadFrameSize)},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: orDefault(sc.s.MaxHeaderListSize, DefaultMaxHeaderListSize)},
		); err != nil {
			return err
		}
		if connWin > 65535 {
			return sc.fr.WriteWindowUpdate(0, connWin-65535)
		}
		return nil
	}); err != nil {
		return err
	}
	sc.mu.Lock()
	sc.connRecv = int64(max(connWin, 65535))
	sc.armIdleLocked()
	sc.mu.Unlock()
	first := true
	for {
		if len(sc.held) > 0 && !sc.nextFrameBuffered() {
			sc.release()
		}
		fh, err := sc.fr.ReadFrameHeader()
		var f http2.Frame
		if err == nil {
			f, err = sc.fr.ReadFrameForHeader(fh)
		} else if errors.Is(err, http2.ErrFrameTooLarge) {
			return sc.goAwayAndClose(connError{http2.ErrCodeFrameSize, "frame too large"})
		}
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if err := sc.streamError(fh, se); err != nil {
					var ce connError
					if errors.As(err, &ce) {
						return sc.goAwayAndClose(ce)
					}
					return err
				}
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return sc.goAwayAndClose(connError{http2.ErrCode(ce), err.Error()})
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) {
				return errClientGone
			}
			if cause := context.Cause(sc.ctx); cause != nil && sc.ctx.Err() != nil {
				return cause
			}
			if sc.isDead() != nil {
				return sc.isDead()
			}
			return err
		}
		if first {
			if _, ok := f.(*http2.SettingsFrame); !ok {
				return sc.goAwayAndClose(connError{http2.ErrCodeProtocol, "first frame is not SETTINGS"})
			}
			first = false
		}
		if err := sc.process(f, streamWin); err != nil {
			var ce connError
			if errors.As(err, &ce) {
				return sc.goAwayAndClose(ce)
			}
			return err
		}
	}
}

// process handles one frame, from the reader.
func (sc *Conn) process(f http2.Frame, streamWin uint32) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return sc.processSettings(f)
	case *http2.MetaHeadersFrame:
		return sc.processHeaders(f, streamWin)
	case *http2.DataFrame:
		return sc.processData(f)
	case *http2.WindowUpdateFrame:
		return sc.processWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		return sc.ackPing(f.Data)
	case *http2.RSTStreamFrame:
		sc.mu.Lock()
		st := sc.streams[f.StreamID]
		idle := st == nil && f.StreamID > sc.lastID
		sc.mu.Unlock()
		if idle {
			return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
		}
		if st != nil {
			st.abort(errStreamReset, false)
		}
		return nil
	case *http2.GoAwayFrame:
		sc.mu.Lock()
		sc.goAway = true
		sc.mu.Unlock()
		return nil
	case *http2.PushPromiseFrame:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	case *http2.PriorityFrame:
		return nil
	case *http2.ContinuationFrame:
		// The Framer joins CONTINUATION to its HEADERS; one alone is an
		// error it reports itself.
		return connError{http2.ErrCodeProtocol, "unexpected CONTINUATION"}
	default:
		return nil // unknown frame types are ignored (RFC 9113 §5.5)
	}
}

func (sc *Conn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	var werr error
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return connError{http2.ErrCode(err.(http2.ConnectionError)), err.Error()}
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			sc.mu.Lock()
			delta := int64(s.Val) - sc.initialSend
			sc.initialSend = int64(s.Val)
			for _, st := range sc.streams {
				st.send += delta
				if st.send > 1<<31-1 {
					werr = connError{http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream's window"}
				}
			}
			sc.cond.Broadcast()
			sc.mu.Unlock()
		case http2.SettingMaxFrameSize:
			sc.mu.Lock()
			sc.peerMaxFrame = s.Val
			sc.mu.Unlock()
		case http2.SettingHeaderTableSize:
			sc.wmu.Lock()
			sc.enc.SetMaxDynamicTableSizeLimit(s.Val)
			sc.wmu.Unlock()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	return sc.write(func() error { return sc.fr.WriteSettingsAck() })
}

func (sc *Conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	sc.mu.Lock()
	if f.StreamID == 0 {
		sc.connSend += int64(f.Increment)
		over := sc.connSend > 1<<31-1
		sc.cond.Broadcast()
		sc.mu.Unlock()
		if over {
			return connError{http2.ErrCodeFlowControl, "connection window overflow"}
		}
		return nil
	}
	st := sc.streams[f.StreamID]
	if st == nil {
		idle := f.StreamID > sc.lastID
		sc.mu.Unlock()
		if idle {
			return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
		}
		return nil // a closed stream's: allowed
	}
	st.send += int64(f.Increment)
	over := st.send > 1<<31-1
	sc.cond.Broadcast()
	sc.mu.Unlock()
	if over {
		return sc.resetStream(f.StreamID, http2.ErrCodeFlowControl)
	}
	return nil
}

// forbidden are the connection-specific fields HTTP/2 forbids (RFC 9113
// §8.2.2).
var forbidden = map[string]bool{"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true}

func (sc *Conn) processHeaders(f *http2.MetaHeadersFrame, streamWin uint32) error {
	id := f.StreamID
	sc.mu.Lock()
	if st := sc.streams[id]; st != nil {
		sc.mu.Unlock()
		return st.trailers(f) // the request's trailers, or an error
	}
	if id%2 != 1 {
		sc.mu.Unlock()
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("HEADERS on even stream %d", id)}
	}
	if id <= sc.lastID {
		// A stream that ended (its response complete, or reset): the
		// peer's trailers or a late HEADERS (RFC 9113 §5.1, closed).
		sc.mu.Unlock()
		return sc.write(func() error { return sc.fr.WriteRSTStream(id, http2.ErrCodeStreamClosed) })
	}
	sc.lastID = id
	if sc.goAway || sc.dead != nil {
		sc.mu.Unlock()
		return sc.resetStream(id, http2.ErrCodeRefusedStream)
	}
	if uint32(sc.running) >= sc.s.maxStreams() {
		// refused counts the refusals since a stream last completed: a
		// peer that keeps opening streams while none completes is sent
		// away. At least 100 are allowed: before a client has the
		// server's SETTINGS it may not know MAX_CONCURRENT_STREAMS
		// (x/net's client assumes 100).
		sc.refused++
		tooMany := sc.refused > max(2*int(sc.s.maxStreams()), 100)
		sc.mu.Unlock()
		if tooMany {
			// The peer keeps opening streams past the limit (resetting
			// them, as the rapid-reset attack does, or not): send it
			// away rather than refuse it one stream at a time.
			return connError{http2.ErrCodeEnhanceYourCalm, "too many streams refused"}
		}
		return sc.resetStream(id, http2.ErrCodeRefusedStream)
	}
	sc.mu.Unlock()
	if f.Truncated {
		return sc.answerAndReset(id, http.StatusRequestHeaderFieldsTooLarge)
	}
	req, st, err := sc.newRequest(f, streamWin)
	if err != nil {
		return sc.resetStream(id, http2.ErrCodeProtocol)
	}
	sc.mu.Lock()
	if sc.dead != nil {
		sc.mu.Unlock()
		st.cancel(sc.dead)
		return nil
	}
	sc.streams[id] = st
	sc.running++
	if sc.idle != nil {
		sc.idle.Stop()
	}
	sc.mu.Unlock()
	if f.StreamEnded() {
		workers.run(st, req)
	} else {
		sc.held = append(sc.held, heldStream{st, req})
	}
	return nil
}

// heldStream is a request whose handler has not started yet.
type heldStream struct {
	st  *stream
	req *http.Request
}

// A request whose HEADERS do not end its stream has its handler started
// once the reader has taken every whole frame already read from the
// connection, not at once: a client that sends a small request's HEADERS
// and DATA together (gRPC's unary calls, weft's client sidecar) then has
// the whole body in the request when its handler starts — which a proxy's
// handler passes on in one write (the body's Buffered) — instead of racing
// the reader to it. The reader never waits for the connection with a
// handler held: nextFrameBuffered is false when the next frame is not
// whole in the read buffer, or is a header block that CONTINUATION frames
// may follow.

// nextFrameBuffered says whether the next frame is whole in the read
// buffer, so that reading it does not wait for the connection.
func (sc *Conn) nextFrameBuffered() bool {
	n := sc.br.Buffered()
	if n < 9 {
		return false
	}
	h, err := sc.br.Peek(9)
	if err != nil {
		return false
	}
	if (h[3] == 0x1 || h[3] == 0x5) && h[4]&0x4 == 0 { // HEADERS or PUSH_PROMISE without END_HEADERS
		return false
	}
	return n >= 9+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

// release starts the handlers held.
func (sc *Conn) release() {
	for i, h := range sc.held {
		workers.run(h.st, h.req)
		sc.held[i] = heldStream{}
	}
	sc.held = sc.held[:0]
}

// answerAndReset answers a request the server does not pass on with
// status and an empty body, ending the stream, without a handler.
func (sc *Conn) answerAndReset(id uint32, status int) error {
	return sc.write(func() error {
		sc.hbuf.Reset()
		sc.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
		sc.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: "0"})
		return sc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: sc.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	})
}

func (sc *Conn) newRequest(f *http2.MetaHeadersFrame, streamWin uint32) (*http.Request, *stream, error) {
	var method, path, scheme, authority string
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":path":
			path = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":authority":
			authority = hf.Value
		default:
			return nil, nil, fmt.Errorf("h2: pseudo-header %s", hf.Name)
		}
	}
	if method == "" || !validMethod(method) {
		return nil, nil, errors.New("h2: bad :method")
	}
	isConnect := method == http.MethodConnect
	if isConnect {
		if path != "" || scheme != "" || authority == "" {
			return nil, nil, errors.New("h2: bad CONNECT")
		}
	} else if path == "" || scheme == "" || (path[0] != '/' && !(path == "*" && method == http.MethodOptions)) {
		return nil, nil, errors.New("h2: bad :path or :scheme")
	}
	header := make(http.Header, len(f.Fields))
	var cookies []string
	var declared []string
	for _, hf := range f.RegularFields() {
		if forbidden[hf.Name] {
			return nil, nil, fmt.Errorf("h2: connection-specific field %s", hf.Name)
		}
		if hf.Name == "te" && hf.Value != "trailers" {
			return nil, nil, errors.New("h2: te other than trailers")
		}
		if hf.Name == "cookie" {
			cookies = append(cookies, hf.Value)
			continue
		}
		k := canonical(hf.Name)
		header[k] = append(header[k], hf.Value)
		if k == "Trailer" {
			declared = append(declared, hf.Value)
		}
	}
	if len(cookies) > 0 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")} // RFC 9113 §8.2.3
	}
	if authority == "" {
		authority = header.Get("Host")
	}
	var u *url.URL
	var err error
	if isConnect {
		u = &url.URL{Host: authority}
		path = authority
	} else if u, err = url.ParseRequestURI(path); err != nil {
		return nil, nil, err
	}
	cl := int64(-1)
	if vv := header["Content-Length"]; len(vv) > 0 {
		for _, v := range vv[1:] {
			if v != vv[0] {
				return nil, nil, errors.New("h2: conflicting content-length")
			}
		}
		n, err := strconv.ParseUint(vv[0], 10, 63)
		if err != nil {
			return nil, nil, errors.New("h2: bad content-length")
		}
		cl = int64(n)
	}
	end := f.StreamEnded()
	if end {
		if cl > 0 {
			return nil, nil, errors.New("h2: content-length with no body")
		}
		cl = 0
	}
	st := &stream{sc: sc, id: f.StreamID, declared: cl, recv: int64(streamWin)}
	st.ctx, st.cancel = context.WithCancelCause(sc.ctx)
	sc.mu.Lock()
	st.send = sc.initialSend
	sc.mu.Unlock()
	st.body.cond.L = &st.body.mu
	req := &http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     header,
		Host:       authority,
		RemoteAddr: sc.remote,
		RequestURI: path,
		TLS:        sc.tls,
	}
	if len(declared) > 0 {
		req.Trailer = http.Header{}
		for _, v := range declared {
			for _, k := range strings.Split(v, ",") {
				k = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(k))
				if k != "" && httpguts.ValidTrailerHeader(k) {
					req.Trailer[k] = nil
				}
			}
		}
		st.trailer = req.Trailer
	}
	req.ContentLength = cl
	if end {
		st.body.done = io.EOF
		req.Body = http.NoBody
	} else {
		req.Body = &st.body
		st.body.st = st
		if httpguts.HeaderValuesContainsToken(header["Expect"], "100-continue") {
			// The server answers it (on the first read of the body), as
			// net/http's does; the handler does not see it.
			st.expect.Store(true)
			delete(header, "Expect")
		}
	}
	req = req.WithContext(st.ctx)
	return req, st, nil
}

func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// canonical is the canonical form of a lowercase field name; common ones
// come from a table, without an allocation.
func canonical(name string) string {
	if c, ok := commonCanonical[name]; ok {
		return c
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

var commonCanonical = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Content-Encoding", "Content-Length", "Content-Type", "Cookie", "Date", "Etag", "Expect", "Forwarded",
		"Grpc-Accept-Encoding", "Grpc-Encoding", "Grpc-Message", "Grpc-Status", "Grpc-Timeout", "Host",
		"If-Modified-Since", "If-None-Match", "Last-Modified", "Location", "Origin", "Referer", "Server",
		"Set-Cookie", "Te", "Trailer", "User-Agent", "Vary", "Via", "X-Forwarded-For", "X-Forwarded-Proto",
		"X-Request-Id", "X-Envoy-Attempt-Count", "Traceparent", "Tracestate", "B3", "X-B3-Traceid", "X-B3-Spanid",
		"X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Flags", "X-Ot-Span-Context"} {
		m[strings.ToLower(k)] = k
	}
	return m
}()

func (sc *Conn) processData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length) // padding counts against the windows (RFC 9113 §6.9.1)
	sc.mu.Lock()
	if n > sc.connRecv {
		sc.mu.Unlock()
		return connError{http2.ErrCodeFlowControl, "DATA beyond the connection's window"}
	}
	sc.connRecv -= n
	st := sc.streams[id]
	if st == nil {
		idle := id > sc.lastID
		sc.mu.Unlock()
		if idle {
			return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
		}
		// A stream that ended: its frames still in flight are ignored
		// (RFC 9113 §5.1), their bytes given back: it will never read them.
		return sc.giveBack(n)
	}
	sc.mu.Unlock()
	return st.data(f, n)
}

// streamError answers a stream error the Framer found in a frame of
// header fh: a malformed HEADERS opens its stream (lastID) and resets it,
// so that the identifier cannot be used again (RFC 9113 §5.1.1); any
// other frame's error on an idle stream is the connection's (§5.1), and
// on a stream that was opened, the stream's.
func (sc *Conn) streamError(fh http2.FrameHeader, se http2.StreamError) error {
	sc.mu.Lock()
	idle := se.StreamID > sc.lastID
	if idle && fh.Type == http2.FrameHeaders && se.StreamID%2 == 1 {
		sc.lastID, idle = se.StreamID, false
	}
	sc.mu.Unlock()
	if idle {
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("%v on idle stream %d: %v", fh.Type, se.StreamID, se)}
	}
	return sc.resetStream(se.StreamID, se.Code)
}

// giveBack counts n bytes of the connection's receive window as consumed
// (read by a handler, or never to be read: padding, a stream that ended)
// and sends a WINDOW_UPDATE for the connection once half of its window has
// been consumed.
func (sc *Conn) giveBack(n int64) error {
	win := int64(max(orDefault(sc.s.ConnWindow, DefaultConnWindow), 65535))
	sc.mu.Lock()
	sc.connConsumed += n
	inc := sc.connConsumed
	if inc < win/2 {
		sc.mu.Unlock()
		return nil
	}
	sc.connConsumed = 0
	sc.connRecv += inc
	sc.mu.Unlock()
	return sc.write(func() error { return sc.fr.WriteWindowUpdate(0, uint32(inc)) })
}

// resetStream sends RST_STREAM and forgets the stream (its handler, if
// any, sees its context cancelled).
func (sc *Conn) resetStream(id uint32, code http2.ErrCode) error {
	sc.mu.Lock()
	st := sc.streams[id]
	sc.mu.Unlock()
	if st != nil {
		st.abort(fmt.Errorf("h2: stream reset: %v", code), true)
	}
	return sc.write(func() error { return sc.fr.WriteRSTStream(id, code) })
}

// write composes frames with fn and writes them to the connection: one
// Write for all of them.
func (sc *Conn) write(fn func() error) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	if sc.werr != nil {
		return sc.werr
	}
	sc.wbuf.Reset()
	if err := fn(); err != nil {
		sc.werr = err
		return err
	}
	return sc.flushLocked()
}

func (sc *Conn) flushLocked() error {
	sc.acks.appendLocked(sc.fr)
	if sc.wbuf.Len() == 0 {
		return nil
	}
	_, err := sc.c.Write(sc.wbuf.Bytes())
	sc.wbuf.Reset()
	if err != nil {
		sc.werr = err
		sc.die(err)
	}
	return err
}

// lingerTime bounds how long a connection sent away for an error is read
// (and what is read discarded) before it is closed.
const lingerTime = time.Second

// linger half-closes the connection after a GOAWAY sent for an error and
// reads, discarding, until the peer closes or lingerTime passes: closing
// with the peer's frames unread would reset the connection, and a reset
// can reach the peer before the GOAWAY that says why (RFC 9113 §6.8).
func (sc *Conn) linger() {
	if cw, ok := sc.c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = sc.c.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.Copy(io.Discard, sc.br)
}

// goAwayAndClose sends GOAWAY for e and ends the connection.
func (sc *Conn) goAwayAndClose(e connError) error {
	sc.mu.Lock()
	last := sc.lastID
	sc.mu.Unlock()
	_ = sc.write(func() error { return sc.fr.WriteGoAway(last, e.code, []byte(e.reason)) })
	return e
}

// Shutdown sends GOAWAY (no new streams) and waits until the streams open
// end or ctx does, then closes the connection.
func (sc *Conn) Shutdown(ctx context.Context) error {
	sc.mu.Lock()
	sc.goAway = true
	last := sc.lastID
	sc.mu.Unlock()
	// The GOAWAY is written on its own goroutine: a writer blocked on a
	// peer that does not read must not hold Shutdown past ctx (closing
	// the connection below ends that write, and this one).
	go func() { _ = sc.write(func() error { return sc.fr.WriteGoAway(last, http2.ErrCodeNo, nil) }) }()
	done := make(chan struct{})
	go func() {
		sc.mu.Lock()
		for len(sc.streams) > 0 && sc.dead == nil {
			sc.cond.Wait()
		}
		sc.mu.Unlock()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	sc.die(errShutdown)
	sc.c.Close()
	return err
}

// date is the Date of responses, made at most once a second.
func (sc *Conn) date() string {
	now := time.Now().Truncate(time.Second)
	if now.Equal(sc.dateAt) {
		return sc.dateStr
	}
	sc.dateAt, sc.dateStr = now, now.UTC().Format(http.TimeFormat)
	return sc.dateStr
}

// Close ends the connection at once: its requests' contexts are
// cancelled and it is closed; Serve returns once the handlers have.
func (sc *Conn) Close() error {
	sc.die(errShutdown)
	return sc.c.Close()
}

// die marks the connection dead with err (the first one) and cancels its
// requests.
func (sc *Conn) die(err error) {
	if err == nil {
		err = errClientGone
	}
	sc.mu.Lock()
	if sc.dead == nil {
		sc.dead = err
		if sc.idle != nil {
			sc.idle.Stop()
		}
	}
	streams := make([]*stream, 0, len(sc.streams))
	for _, st := range sc.streams {
		streams = append(streams, st)
	}
	sc.cond.Broadcast()
	sc.mu.Unlock()
	for _, st := range streams {
		st.abort(err, false)
	}
	sc.cancel(err)
}

func (sc *Conn) isDead() error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.dead
}

// armIdleLocked starts the idle timer: no stream open.
func (sc *Conn) armIdleLocked() {
	if sc.s.IdleTimeout <= 0 || sc.dead != nil {
		return
	}
	if sc.idle == nil {
		sc.idle = time.AfterFunc(sc.s.IdleTimeout, func() {
			// Checked and marked going away at once: a stream that
			// arrives after is refused (REFUSED_STREAM: the client
			// retries it elsewhere), never cut.
			sc.mu.Lock()
			idle := len(sc.streams) == 0 && !sc.goAway && sc.dead == nil
			if idle {
				sc.goAway = true
			}
			last := sc.lastID
			sc.mu.Unlock()
			if idle {
				// No stream is open, so nothing else is written: a
				// deadline bounds the GOAWAY, and a write blocked on a
				// peer that does not read with it.
				_ = sc.c.SetWriteDeadline(time.Now().Add(lingerTime))
				_ = sc.write(func() error { return sc.fr.WriteGoAway(last, http2.ErrCodeNo, []byte("idle")) })
				sc.die(errIdle)
				sc.c.Close()
			}
		})
		return
	}
	sc.idle.Reset(sc.s.IdleTimeout)
}

// releaseSlot gives back the stream's place among MaxConcurrentStreams,
// once: when its response's last frame is composed, before it is written
// (a client that opens its next stream as soon as it sees END_STREAM is
// then never refused), or when its handler returns. A completed response
// also clears the refusals counted.
func (sc *Conn) releaseSlot(st *stream, completed bool) {
	sc.mu.Lock()
	if !st.released {
		st.released = true
		sc.running--
		if completed {
			sc.refused = 0
		}
		sc.cond.Broadcast()
	}
	sc.mu.Unlock()
}

// streamDone removes a stream whose handler returned.
func (sc *Conn) streamDone(st *stream) {
	sc.releaseSlot(st, false)
	sc.mu.Lock()
	if sc.streams[st.id] == st {
		delete(sc.streams, st.id)
	}
	if len(sc.streams) == 0 {
		sc.armIdleLocked()
	}
	sc.cond.Broadcast()
	sc.mu.Unlock()
}
