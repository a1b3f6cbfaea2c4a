package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one request and its response.
type stream struct {
	sc     *Conn
	id     uint32
	ctx    context.Context
	cancel context.CancelCauseFunc

	// Set by the reader only (before the handler starts, or under
	// body.mu): the request body's framing.
	declared int64       // Content-Length, -1 if none
	received int64       // body bytes received
	recv     int64       // how much more the peer may send on the stream
	trailer  http.Header // the request's declared trailers (req.Trailer)

	body body

	send int64 // under sc.mu: how much more the response may send

	released bool // under sc.mu: its place among the concurrent streams given back
	aborted  bool // under sc.mu: reset (by either side) or the connection died
	abortE   error

	// expect: the request asked for 100 Continue (Expect: 100-continue),
	// sent when the handler first reads the body, unless a final status
	// was written first; wmu orders it with the response's HEADERS.
	expect      atomic.Bool
	finalHeader atomic.Bool // the final response's HEADERS were composed
}

// sendContinue sends the 100 Continue the request asked for, once, if no
// final response went before it.
func (st *stream) sendContinue() {
	if !st.expect.Swap(false) {
		return
	}
	_ = st.sc.write(func() error {
		if st.finalHeader.Load() {
			return nil
		}
		sc := st.sc
		sc.hbuf.Reset()
		sc.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "100"})
		return writeBlock(sc, st.id, false)
	})
}

// body is a request body: what the reader received and the handler has
// not yet read.
type body struct {
	st       *stream
	mu       sync.Mutex
	cond     sync.Cond
	buf      []byte
	done     error       // io.EOF at END_STREAM; an error when the stream was reset
	consumed int64       // read, not yet given back to the peer
	closed   bool        // the handler closed it
	trailer  http.Header // the request's trailers received, until read
}

func (b *body) Read(p []byte) (int, error) {
	if b.st.expect.Load() {
		b.st.sendContinue()
	}
	b.mu.Lock()
	for len(b.buf) == 0 && b.done == nil && !b.closed {
		b.cond.Wait()
	}
	if b.closed {
		b.mu.Unlock()
		return 0, errors.New("h2: read on closed body")
	}
	if len(b.buf) == 0 {
		err := b.done
		if err == io.EOF && b.trailer != nil {
			// The request's trailers, into req.Trailer by the handler's
			// own goroutine, as net/http's servers do.
			for k, vv := range b.trailer {
				b.st.trailer[k] = vv
			}
			b.trailer = nil
		}
		b.mu.Unlock()
		return 0, err
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	if len(b.buf) == 0 {
		b.buf = nil
	}
	b.consumed += int64(n)
	give := b.done == nil && b.consumed >= int64(orDefault(b.st.sc.s.StreamWindow, DefaultStreamWindow))/2
	var inc int64
	if give {
		inc, b.consumed = b.consumed, 0
		b.st.recv += inc
	}
	b.mu.Unlock()
	if err := b.st.sc.giveBack(int64(n)); err != nil {
		return n, nil // the connection is dying: the next read says so
	}
	if inc > 0 {
		_ = b.st.sc.write(func() error { return b.st.sc.fr.WriteWindowUpdate(b.st.id, uint32(inc)) })
	}
	return n, nil
}

func (b *body) Close() error {
	b.mu.Lock()
	unread := int64(len(b.buf))
	b.buf = nil
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	if unread > 0 {
		_ = b.st.sc.giveBack(unread)
	}
	return nil
}

// data takes a DATA frame of the stream, n bytes of the windows with
// its padding, from the reader.
func (st *stream) data(f *http2.DataFrame, n int64) error {
	b := &st.body
	b.mu.Lock()
	if b.done != nil || b.closed {
		// Reset, ended, or not read any more: the bytes go back to the
		// connection's window. DATA after END_STREAM is an error.
		ended := b.done == io.EOF
		b.mu.Unlock()
		if err := st.sc.giveBack(n); err != nil {
			return err
		}
		if ended {
			return st.sc.resetStream(st.id, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	if n > st.recv {
		b.mu.Unlock()
		return st.sc.resetStream(st.id, http2.ErrCodeFlowControl)
	}
	st.recv -= n
	p := f.Data()
	st.received += int64(len(p))
	if st.declared >= 0 && st.received > st.declared {
		b.mu.Unlock()
		return st.sc.resetStream(st.id, http2.ErrCodeProtocol)
	}
	b.buf = append(b.buf, p...)
	pad := n - int64(len(p))
	if pad > 0 {
		b.consumed += pad // padding is never read: the stream's given back with the data
	}
	if f.StreamEnded() {
		if st.declared >= 0 && st.received != st.declared {
			b.mu.Unlock()
			return st.sc.resetStream(st.id, http2.ErrCodeProtocol)
		}
		b.done = io.EOF
	}
	b.cond.Broadcast()
	b.mu.Unlock()
	if pad > 0 {
		// ... and the connection's at once: no read ever consumes it.
		return st.sc.giveBack(pad)
	}
	return nil
}

// trailers takes a HEADERS frame on the open stream: the request's
// trailers, which must end it.
func (st *stream) trailers(f *http2.MetaHeadersFrame) error {
	if !f.StreamEnded() {
		return st.sc.resetStream(st.id, http2.ErrCodeProtocol)
	}
	if len(f.PseudoFields()) > 0 {
		return st.sc.resetStream(st.id, http2.ErrCodeProtocol)
	}
	b := &st.body
	b.mu.Lock()
	if b.done != nil {
		b.mu.Unlock()
		return st.sc.resetStream(st.id, http2.ErrCodeStreamClosed)
	}
	if st.declared >= 0 && st.received != st.declared {
		b.mu.Unlock()
		return st.sc.resetStream(st.id, http2.ErrCodeProtocol)
	}
	for _, hf := range f.RegularFields() {
		k := canonical(hf.Name)
		if !httpguts.ValidTrailerHeader(k) {
			b.mu.Unlock()
			return st.sc.resetStream(st.id, http2.ErrCodeProtocol)
		}
		if _, ok := st.trailer[k]; ok {
			// Kept aside: the handler may read req.Trailer's keys
			// meanwhile; the values go in when its read ends (body.Read).
			if b.trailer == nil {
				b.trailer = http.Header{}
			}
			b.trailer[k] = append(b.trailer[k], hf.Value)
		}
	}
	b.done = io.EOF
	b.cond.Broadcast()
	b.mu.Unlock()
	return nil
}

// abort ends the stream: its context is cancelled, its body fails and
// its response writes fail. rst says the server reset it.
func (st *stream) abort(err error, rst bool) {
	sc := st.sc
	sc.mu.Lock()
	if st.aborted {
		sc.mu.Unlock()
		return
	}
	st.aborted, st.abortE = true, err
	sc.cond.Broadcast()
	sc.mu.Unlock()
	// The context first: a handler woken by its body's read failing
	// finds its context ended already, with the same cause.
	st.cancel(err)
	b := &st.body
	b.mu.Lock()
	if b.done == nil {
		b.done = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

// run serves the request with the handler.
func (st *stream) run(req *http.Request) {
	w := &responseWriter{st: st, header: make(http.Header), contentLength: -1, isHead: req.Method == http.MethodHead}
	returned := false
	defer func() {
		p := recover()
		switch {
		case returned:
			w.finish()
		case p == nil:
			// runtime.Goexit: the handler never returned, its response
			// is not whole (net/http's servers reset it too).
			st.abort(errors.New("h2: handler exited its goroutine"), true)
			_ = st.sc.write(func() error { return st.sc.fr.WriteRSTStream(st.id, http2.ErrCodeInternal) })
		case p == http.ErrAbortHandler:
			st.abort(errors.New("h2: handler aborted"), true)
			_ = st.sc.write(func() error { return st.sc.fr.WriteRSTStream(st.id, http2.ErrCodeInternal) })
		default:
			st.abort(fmt.Errorf("h2: handler panic: %v", p), true)
			_ = st.sc.write(func() error { return st.sc.fr.WriteRSTStream(st.id, http2.ErrCodeInternal) })
		}
		st.cancel(context.Canceled)
		st.sc.streamDone(st)
	}()
	st.sc.s.Handler.ServeHTTP(w, req)
	returned = true
}

// responseWriter is the handler's http.ResponseWriter.
type responseWriter struct {
	st            *stream
	header        http.Header
	status        int  // the final status written; 0 until then
	sentHeader    bool // its HEADERS are on the wire
	buf           []byte
	contentLength int64 // declared by the handler, -1 if none
	written       int64
	isHead        bool
	trailers      []string // declared in the header before it was sent
	// fields are the final response's header fields as the header map
	// held them at WriteHeader (net/http's contract: later changes are
	// not sent, but for trailers); date, that a Date is to be added;
	// hasCT and hasTE, that the handler set a Content-Type, a
	// Transfer-Encoding.
	fields             []hpack.HeaderField
	date, hasCT, hasTE bool
	done               bool
	err                error // sticky: the stream or connection failed
}

// bufferSize is how much of a response is buffered before it is sent
// without a Flush.
const bufferSize = 16 << 10

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if w.status != 0 || w.done {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 {
		// An interim response: sent at once, its fields from the header
		// map as it is now (net/http's server sends a 101 so too; HTTP/2
		// has no protocol switch, and no 1xx ever ends a stream).
		if w.err == nil {
			w.err = w.st.writeFrames(func(sc *Conn) error {
				_, hasDate := w.header["Date"]
				return w.writeHeadersLocked(sc, code, headerFields(w.header, code, nil), !hasDate, false)
			}, 0, nil, nil)
		}
		return
	}
	w.status = code
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		} else {
			w.header.Del("Content-Length")
		}
	}
	_, hasDate := w.header["Date"]
	_, w.hasCT = w.header["Content-Type"]
	_, w.hasTE = w.header["Transfer-Encoding"]
	w.date = !hasDate
	w.fields = headerFields(w.header, code, w.fields[:0])
	for _, v := range w.header["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = textproto.TrimString(k); k != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(k))
			}
		}
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, http.ErrHandlerTimeout
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.isHead {
		return len(p), nil
	}
	if len(w.buf)+len(p) <= bufferSize {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if err := w.send(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *responseWriter) WriteString(s string) (int, error) {
	if len(w.buf)+len(s) <= bufferSize && w.status != 0 && w.err == nil && !w.done && !w.isHead &&
		bodyAllowed(w.status) && (w.contentLength < 0 || w.written+int64(len(s)) <= w.contentLength) {
		w.written += int64(len(s))
		w.buf = append(w.buf, s...)
		return len(s), nil
	}
	return w.Write([]byte(s))
}

// Flush sends what is buffered, the header first if it was not sent.
func (w *responseWriter) Flush() { _ = w.FlushError() }

func (w *responseWriter) FlushError() error {
	if w.done {
		return nil
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	return w.send(nil, false)
}

// finish ends the response when the handler returns.
func (w *responseWriter) finish() {
	if w.done {
		return
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err == nil && w.contentLength >= 0 && w.written < w.contentLength && !w.isHead && bodyAllowed(w.status) {
		// A short body: the client must not take it for the whole one.
		w.err = errors.New("h2: handler wrote less than its Content-Length")
		w.st.abort(w.err, true)
		_ = w.st.sc.write(func() error { return w.st.sc.fr.WriteRSTStream(w.st.id, http2.ErrCodeInternal) })
	}
	if w.err == nil {
		w.err = w.send(nil, true)
	}
	w.done = true
	// The request's body, if the client is still sending it, is not
	// wanted: RST_STREAM(NO_ERROR) after a complete response (RFC 9113
	// §8.1).
	b := &w.st.body
	b.mu.Lock()
	open := b.done == nil
	b.mu.Unlock()
	if w.err == nil && open {
		w.st.abort(errors.New("h2: response complete"), true)
		_ = w.st.sc.write(func() error { return w.st.sc.fr.WriteRSTStream(w.st.id, http2.ErrCodeNo) })
	}
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified && (status < 100 || status > 199)
}

// send writes the header if not yet sent, then the buffered bytes and p,
// as DATA frames within the flow-control windows; end ends the stream,
// with the trailers if there are any.
func (w *responseWriter) send(p []byte, end bool) error {
	data := w.buf
	if len(p) > 0 {
		data = append(data, p...)
	}
	w.buf = w.buf[:0]
	var trailers http.Header
	if end {
		trailers = w.trailerFields()
	}
	first := !w.sentHeader
	w.sentHeader = true
	if first && !w.isHead && bodyAllowed(w.status) && len(data) > 0 {
		// The ResponseWriter contract: a Content-Type, if the handler set
		// none, sniffed from the body's first 512 bytes.
		if !w.hasCT {
			w.fields = append(w.fields, hpack.HeaderField{Name: "content-type", Value: http.DetectContentType(data)})
		}
	}
	if first && end && w.contentLength < 0 && bodyAllowed(w.status) {
		// The handler returned with its whole body buffered: its length
		// is known, and said (as net/http's servers say it).
		n := len(data)
		if w.isHead {
			n = int(w.written)
		}
		if !w.hasTE && (n > 0 || !w.isHead) {
			w.fields = append(w.fields, hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(n)})
		}
	}
	// The trailers, if any, go with the last DATA frame (or the header):
	// one Write for a response that fits the windows.
	err := w.st.writeFrames(func(sc *Conn) error {
		if first {
			if err := w.writeHeadersLocked(sc, w.status, w.fields, w.date, end && len(data) == 0 && trailers == nil); err != nil {
				return err
			}
		}
		switch {
		case !end || len(data) > 0:
			return nil
		case trailers != nil:
			return w.writeTrailersLocked(sc, trailers)
		case !first:
			// The header and the body went out before: an empty DATA
			// frame ends the stream.
			return sc.fr.WriteData(w.st.id, true, nil)
		}
		return nil
	}, len(data), func(sc *Conn, from, to int, last bool) error {
		if err := sc.fr.WriteData(w.st.id, last && end && trailers == nil, data[from:to]); err != nil {
			return err
		}
		if last && end && trailers != nil {
			return w.writeTrailersLocked(sc, trailers)
		}
		return nil
	}, w.endsWith(end))
	if len(p) > 0 {
		w.buf = data[:0] // keep the bigger buffer
	}
	if err != nil {
		w.err = err
	}
	return err
}

// endsWith is writeFrames's last for a write that ends the stream: the
// stream's place among the concurrent streams is given back as its
// END_STREAM is composed, before it is written.
func (w *responseWriter) endsWith(end bool) func() {
	if !end {
		return nil
	}
	return func() { w.st.sc.releaseSlot(w.st, true) }
}

// trailerFields are the response's trailers: the fields declared in
// Trailer before the header was sent, and those named with
// http.TrailerPrefix; nil when there are none.
func (w *responseWriter) trailerFields() http.Header {
	var t http.Header
	add := func(k string, vv []string) {
		if len(vv) == 0 || !httpguts.ValidTrailerHeader(k) {
			return
		}
		if t == nil {
			t = http.Header{}
		}
		t[k] = vv
	}
	for _, k := range w.trailers {
		add(k, w.header[k])
	}
	for k, vv := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			add(http.CanonicalHeaderKey(k[len(http.TrailerPrefix):]), vv)
		}
	}
	return t
}

// headerFields appends to dst the fields of h that a response with status
// sends: not the connection-specific ones, nor (in a 1xx) Trailer and
// Content-Length, nor those named with http.TrailerPrefix, nor any that
// is not a valid field.
func headerFields(h http.Header, status int, dst []hpack.HeaderField) []hpack.HeaderField {
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		lk := lower(k)
		if forbidden[lk] || status < 200 && (lk == "trailer" || lk == "content-length") {
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				continue
			}
			dst = append(dst, hpack.HeaderField{Name: lk, Value: v})
		}
	}
	return dst
}

// writeHeadersLocked encodes and writes a response header block of
// fields (a Date first if date); under sc.wmu.
func (w *responseWriter) writeHeadersLocked(sc *Conn, status int, fields []hpack.HeaderField, date, end bool) error {
	sc.hbuf.Reset()
	sc.enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusText(status)})
	if status >= 200 {
		w.st.finalHeader.Store(true)
		w.st.expect.Store(false)
	}
	if date && status >= 200 {
		// As net/http's servers: a Date unless the handler set one, or
		// set it to nil values to have none.
		sc.enc.WriteField(hpack.HeaderField{Name: "date", Value: sc.date()})
	}
	for _, f := range fields {
		sc.enc.WriteField(f)
	}
	return writeBlock(sc, w.st.id, end)
}

func (w *responseWriter) writeTrailersLocked(sc *Conn, t http.Header) error {
	sc.hbuf.Reset()
	for k, vv := range t {
		lk := lower(k)
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				sc.enc.WriteField(hpack.HeaderField{Name: lk, Value: v})
			}
		}
	}
	return writeBlock(sc, w.st.id, true)
}

// writeBlock writes sc.hbuf as HEADERS and as many CONTINUATION frames as
// the peer's frame size needs.
func writeBlock(sc *Conn, id uint32, end bool) error {
	sc.mu.Lock()
	maxFrame := int(sc.peerMaxFrame)
	sc.mu.Unlock()
	return writeBlockTo(sc.fr, &sc.hbuf, id, end, maxFrame)
}

func statusText(code int) string {
	switch code {
	case 200:
		return "200"
	case 204:
		return "204"
	case 404:
		return "404"
	}
	return strconv.Itoa(code)
}

// lower is strings.ToLower, without an allocation for common names.
func lower(k string) string {
	for i := 0; i < len(k); i++ {
		if c := k[i]; 'A' <= c && c <= 'Z' {
			if l, ok := commonLower[k]; ok {
				return l
			}
			return strings.ToLower(k)
		}
	}
	return k
}

var commonLower = func() map[string]string {
	m := map[string]string{}
	for l, c := range commonCanonical {
		m[c] = l
	}
	return m
}()

// writeFrames writes, in one Write as far as the windows allow: the
// frames head composes, then n bytes of DATA in frames of at most the
// peer's frame size made by data(from, to, last); more Writes when the
// windows make the data wait. last, if not nil, is called under wmu once
// the final frames are composed, before they are written.
func (st *stream) writeFrames(head func(*Conn) error, n int, data func(sc *Conn, from, to int, last bool) error, last func()) error {
	sc := st.sc
	off := 0
	headDone := false
	for {
		// Reserve what the windows allow now.
		chunk := 0
		var maxFrame int
		if off < n {
			sc.mu.Lock()
			for !st.aborted && sc.dead == nil && (st.send <= 0 || sc.connSend <= 0) {
				if !headDone {
					break // the header goes out without waiting
				}
				sc.cond.Wait()
			}
			if st.aborted || sc.dead != nil {
				err := st.abortE
				if err == nil {
					err = sc.dead
				}
				sc.mu.Unlock()
				return err
			}
			chunk = int(min(int64(n-off), st.send, sc.connSend))
			if chunk < 0 {
				chunk = 0
			}
			st.send -= int64(chunk)
			sc.connSend -= int64(chunk)
			maxFrame = int(sc.peerMaxFrame)
			sc.mu.Unlock()
		} else {
			sc.mu.Lock()
			aborted, dead := st.aborted, sc.dead
			err := st.abortE
			sc.mu.Unlock()
			if aborted || dead != nil {
				if err == nil {
					err = dead
				}
				return err
			}
		}
		err := sc.write(func() error {
			if !headDone {
				headDone = true
				if err := head(sc); err != nil {
					return err
				}
			}
			for end := off + chunk; off < end; {
				to := min(off+maxFrame, end)
				if err := data(sc, off, to, to == n); err != nil {
					return err
				}
				off = to
			}
			if off >= n && last != nil {
				last() // composed, not yet written
			}
			return nil
		})
		if err != nil {
			return err
		}
		if off >= n {
			return nil
		}
	}
}

// Buffered says what the next reads return without blocking: the bytes
// received and not yet read, and whether the request ends after them
// (Transport's BufferedBody).
func (b *body) Buffered() (n int, end bool) {
	if b.st.expect.Load() {
		return 0, false // its first read sends the 100 Continue
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, false
	}
	return len(b.buf), b.done == io.EOF
}
