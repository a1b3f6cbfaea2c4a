package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// response is a request's http.ResponseWriter.
type response struct {
	cn  *conn
	req *http.Request
	hdr http.Header
	// body is the request's body (nil: none).
	body reqBody
	// expect: the request asked for 100 Continue, not sent yet.
	expect bool
	// contMu orders the 100 Continue a body's first read sends — maybe on
	// a goroutine of the handler's, while the handler writes — with the
	// handler's own writes: expect changes, and headWritten becomes true,
	// under it; once the final head is written (or the connection
	// hijacked) no 100 Continue is sent, as it would be read as the
	// response's body.
	contMu sync.Mutex

	status      int   // the final status, once WriteHeader chose it
	headWritten bool  // the head is in cn.out (or sent)
	held        bool  // body bytes are held in cn.hb for a Content-Length
	cl          int64 // the handler's Content-Length; -1: none
	written     int64 // body bytes the handler wrote
	chunked     bool
	noBody      bool     // HEAD, or a status without a body: writes are dropped
	closeAfter  bool     // the connection ends after this response
	trailers    []string // announced, as WriteHeader found the Trailer field
	trailerHdr  []string // the Trailer field's values
	hasDate     bool     // the handler set (or suppressed) Date
	connClose   bool     // the handler's Connection says close
	hijacked    bool
	done        bool // the handler returned: Write and Flush fail
}

var (
	errBodyNotAllowed = http.ErrBodyNotAllowed
	errContentLength  = http.ErrContentLength
	errHijacked       = http.ErrHijacked
	errDone           = errors.New("h1: response used after its handler returned")
)

func (w *response) Header() http.Header { return w.hdr }

// WriteHeader sends an interim response (1xx but 101) at once; a final
// status is held until the body's framing is known.
func (w *response) WriteHeader(code int) {
	if w.hijacked || w.done || w.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		panic("h1: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.contMu.Lock()
		defer w.contMu.Unlock()
		if code == http.StatusContinue && !w.expect {
			return // not asked for: the client did not wait
		}
		if code == http.StatusContinue {
			w.expect = false
		}
		writeStatusLine(&w.cn.out, w.req, code)
		_ = w.hdr.WriteSubset(&w.cn.out, interimExclude)
		w.cn.out.WriteString("\r\n")
		_ = w.cn.flushOut()
		return
	}
	w.status = code
	if v := w.hdr.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			w.cl = n
		}
	}
	w.noBody = w.req.Method == http.MethodHead || !bodyAllowed(code)
	// The head is what the header map holds now (net/http's contract:
	// changes after WriteHeader are not sent, but for trailers): its
	// fields are written out here, the framing ones when the body's
	// framing is known (writeHead).
	w.trailers = declaredTrailers(w.hdr)
	w.trailerHdr = slices.Clone(w.hdr["Trailer"])
	_, w.hasDate = w.hdr["Date"]
	w.connClose = httpguts.HeaderValuesContainsToken(w.hdr["Connection"], "close")
	exclude := headExclude
	if code == http.StatusSwitchingProtocols {
		exclude = switchExclude
	}
	if hasPrefixed(w.hdr) {
		exclude = withPrefixed(exclude, w.hdr)
	}
	w.cn.fields.Reset()
	_ = w.hdr.WriteSubset(&w.cn.fields, exclude)
}

// interimExclude: an interim response carries the handler's fields but
// not those that frame a body.
var interimExclude = map[string]bool{"Content-Length": true, "Transfer-Encoding": true, "Trailer": true, "Connection": true}

func bodyAllowed(code int) bool {
	return !(code >= 100 && code <= 199) && code != http.StatusNoContent && code != http.StatusNotModified
}

// writeStatusLine writes a response's first line; its version is the request's
// (HTTP/1.0 or HTTP/1.1), as net/http's server answers.
func writeStatusLine(out *bytes.Buffer, req *http.Request, code int) {
	if req.ProtoAtLeast(1, 1) {
		out.WriteString("HTTP/1.1 ")
	} else {
		out.WriteString("HTTP/1.0 ")
	}
	writeInt(out, int64(code), 10)
	if t := http.StatusText(code); t != "" {
		out.WriteByte(' ')
		out.WriteString(t)
	} else {
		out.WriteString(" status code ")
		writeInt(out, int64(code), 10)
	}
	out.WriteString("\r\n")
}

// writeInt writes n in base to out (strconv.FormatInt without its string).
func writeInt(out *bytes.Buffer, n int64, base int) {
	out.Write(strconv.AppendInt(out.AvailableBuffer(), n, base))
}

func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, errHijacked
	}
	if w.done {
		return 0, errDone
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			w.written += int64(len(p))
			return len(p), nil
		}
		return 0, errBodyNotAllowed
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, errContentLength
	}
	w.written += int64(len(p))
	if !w.headWritten {
		if len(w.cn.hb)+len(p) <= wholeLimit {
			w.cn.hb = append(w.cn.hb, p...)
			w.held = true
			return len(p), nil
		}
		w.writeHead(false)
	}
	w.appendBody(p)
	if w.cn.out.Len() >= flushAt {
		if err := w.cn.flushOut(); err != nil {
			return 0, err
		}
	}
	return len(p), w.cn.werr
}

// appendBody adds p to the gathered output, framed.
func (w *response) appendBody(p []byte) {
	if w.chunked {
		writeInt(&w.cn.out, int64(len(p)), 16)
		w.cn.out.WriteString("\r\n")
		w.cn.out.Write(p)
		w.cn.out.WriteString("\r\n")
		return
	}
	w.cn.out.Write(p)
}

// FlushError sends the head and what the handler wrote.
func (w *response) FlushError() error {
	if w.hijacked {
		return errHijacked
	}
	if w.done {
		return errDone
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headWritten {
		w.writeHead(false)
	}
	return w.cn.flushOut()
}

func (w *response) Flush() { _ = w.FlushError() }

// Hijack hands the connection to the handler: what the server read of it
// and did not use is in the returned reader.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, errHijacked
	}
	if w.done {
		return nil, nil, errDone
	}
	if w.headWritten || w.held || w.status != 0 {
		// Whatever was written goes first — a head WriteHeader chose too
		// (a 101 before the handler speaks the new protocol), as
		// net/http's server sends it.
		if !w.headWritten {
			w.writeHead(false)
		}
		if err := w.cn.flushOut(); err != nil {
			return nil, nil, err
		}
	}
	w.cn.stopWatch()
	w.contMu.Lock()
	w.expect = false // the handler writes to the connection from here
	w.contMu.Unlock()
	w.hijacked = true
	w.cn.s.mu.Lock()
	w.cn.state = stateHijacked
	w.cn.s.mu.Unlock()
	return w.cn.c, bufio.NewReadWriter(w.cn.br, bufio.NewWriter(w.cn.c)), nil
}

// headExclude are the fields the server writes itself.
var headExclude = map[string]bool{"Content-Length": true, "Transfer-Encoding": true, "Connection": true, "Trailer": true}

// switchExclude: a 101's Connection field is the handler's (it names the
// upgrade), as net/http's server sends it.
var switchExclude = map[string]bool{"Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

// writeHead gathers the head of the final response; final says the
// handler returned (the held body is all of it).
func (w *response) writeHead(final bool) {
	w.contMu.Lock()
	w.headWritten = true
	w.contMu.Unlock()
	req := w.req
	out := &w.cn.out
	writeStatusLine(out, req, w.status)
	length := int64(-1)
	switch {
	case w.cl >= 0:
		length = w.cl
	case final && bodyAllowed(w.status) && (req.Method != http.MethodHead || w.written > 0) && len(w.trailers) == 0:
		length = w.written
	}
	switch {
	case !bodyAllowed(w.status):
		length = -1 // 101, 204, 304: nothing framed, no Content-Length (net/http's server sends none)
	case length < 0 && req.Method != http.MethodHead:
		if req.ProtoAtLeast(1, 1) {
			w.chunked = true
		} else {
			w.closeAfter = true // the body ends with the connection
		}
	}
	if !w.closeAfter && w.wantsClose() {
		w.closeAfter = true
	}
	if !w.chunked {
		w.trailers = nil // they cannot follow a body that is not chunked
	}
	out.Write(w.cn.fields.Bytes())
	if !w.hasDate {
		out.WriteString("Date: ")
		out.WriteString(w.cn.date())
		out.WriteString("\r\n")
	}
	if length >= 0 {
		out.WriteString("Content-Length: ")
		writeInt(out, length, 10)
		out.WriteString("\r\n")
	}
	if w.chunked {
		out.WriteString("Transfer-Encoding: chunked\r\n")
		if len(w.trailerHdr) > 0 {
			_ = http.Header{"Trailer": w.trailerHdr}.Write(out)
		}
	}
	switch {
	case w.status == http.StatusSwitchingProtocols:
		// the handler's Connection field was written with the others
	case !req.ProtoAtLeast(1, 1):
		if !w.closeAfter { // an HTTP/1.0 connection closes unless it says so
			out.WriteString("Connection: keep-alive\r\n")
		}
	case w.closeAfter:
		out.WriteString("Connection: close\r\n")
	}
	out.WriteString("\r\n")
	if w.held {
		w.held = false
		w.appendBody(w.cn.hb)
		w.cn.hb = w.cn.hb[:0]
	}
}

// wantsClose says whether the connection ends after this response: the
// client asked, the handler did, the server is shutting down, or the
// request's body cannot be skipped to the next request.
func (w *response) wantsClose() bool {
	if w.req.Close || w.cn.werr != nil {
		return true
	}
	if w.connClose {
		return true
	}
	w.cn.s.mu.Lock()
	stopping := w.cn.s.shutdown || w.cn.s.closed
	w.cn.s.mu.Unlock()
	if stopping {
		return true
	}
	return w.body != nil && !w.body.skippable()
}

// declaredTrailers are the field names the Trailer field announces.
func declaredTrailers(h http.Header) []string {
	var names []string
	for _, v := range h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k)); k != "" {
				names = append(names, k)
			}
		}
	}
	return names
}

func hasPrefixed(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

func withPrefixed(base map[string]bool, h http.Header) map[string]bool {
	m := make(map[string]bool, len(base)+1)
	for k, v := range base {
		m[k] = v
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			m[k] = true
		}
	}
	return m
}

// finish ends the response after its handler returned: the head if not
// sent, what is held, the chunked encoding's end and its trailers, in
// one Write; the request's body is skipped to its end or the connection
// marked to close.
func (w *response) finish() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.body != nil {
		w.body.stop()
	}
	if !w.headWritten {
		w.writeHead(true)
	} else if w.body != nil && !w.body.skippable() {
		w.closeAfter = true
	}
	if w.chunked {
		w.cn.out.WriteString("0\r\n")
		w.writeTrailers()
		w.cn.out.WriteString("\r\n")
	}
	if w.cl >= 0 && w.written < w.cl && !w.noBody {
		// Short of its Content-Length: the client would wait for the
		// rest; the connection ends (it sees the response cut).
		w.closeAfter = true
	}
	w.done = true
	_ = w.cn.flushOut()
	if !w.closeAfter && w.body != nil {
		w.body.skip()
	}
}

// writeTrailers adds the trailers: the announced fields' values, and
// those named with http.TrailerPrefix.
func (w *response) writeTrailers() {
	t := make(http.Header)
	for _, k := range w.trailers {
		if vv, ok := w.hdr[k]; ok {
			t[k] = vv
		}
	}
	for k, vv := range w.hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			t[textproto.CanonicalMIMEHeaderKey(k[len(http.TrailerPrefix):])] = vv
		}
	}
	for k := range t {
		if !httpguts.ValidTrailerHeader(k) {
			delete(t, k)
		}
	}
	_ = t.Write(&w.cn.out)
}

// reqBody is a request's body as the server reads it.
type reqBody interface {
	Read([]byte) (int, error)
	Close() error
	atEOF() bool
	// skippable: the rest of the body has arrived (or there is none), so
	// the next request can be found after it.
	skippable() bool
	// stop ends the handler's reads: later ones fail.
	stop()
	// skip discards the rest, which has arrived.
	skip()
}

// bodyState is what both bodies share.
type bodyState struct {
	w       *response
	mu      sync.Mutex
	eof     bool
	closed  bool // closed by the handler, or stopped
	reading bool // a Read is in progress (the handler's goroutines)
	// ended is signalled when a Read ends (stop waits on it); made by
	// stop, the only waiter
	ended *sync.Cond
	// continued: the 100 Continue question is settled for the reads
	// (they are not concurrent with each other)
	continued bool
}

var errBodyClosed = errors.New("http: invalid Read on closed Body")

// begin starts a Read: the 100 Continue first if it is owed.
func (b *bodyState) begin() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return errBodyClosed
	}
	b.reading = true
	b.mu.Unlock()
	if !b.continued {
		b.continued = true
		if err := b.w.writeContinue(); err != nil {
			b.end(false)
			return err
		}
	}
	return nil
}

// writeContinue sends the 100 Continue the request asked for, unless it
// was sent, or the final head was written (or the connection hijacked:
// Hijack settles it).
func (w *response) writeContinue() error {
	w.contMu.Lock()
	defer w.contMu.Unlock()
	if !w.expect || w.headWritten {
		return nil
	}
	w.expect = false
	w.cn.out.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	return w.cn.flushOut()
}

// expecting says whether the 100 Continue is still owed.
func (w *response) expecting() bool {
	w.contMu.Lock()
	defer w.contMu.Unlock()
	return w.expect
}

func (b *bodyState) end(eof bool) {
	b.mu.Lock()
	b.reading = false
	if eof {
		b.eof = true
	}
	if b.ended != nil {
		b.ended.Broadcast()
	}
	b.mu.Unlock()
}

func (b *bodyState) atEOF() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof
}

func (b *bodyState) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// stop ends the handler's reads; one in progress (a goroutine the
// handler left reading) is ended by a read deadline in the past.
func (b *bodyState) stop() {
	b.mu.Lock()
	b.closed = true
	reading := b.reading
	b.mu.Unlock()
	if !reading {
		return
	}
	_ = b.w.cn.c.SetReadDeadline(time.Unix(1, 0))
	b.mu.Lock()
	if b.ended == nil {
		b.ended = sync.NewCond(&b.mu)
	}
	for b.reading {
		b.ended.Wait()
	}
	b.mu.Unlock()
	_ = b.w.cn.c.SetReadDeadline(time.Time{})
	b.w.closeAfter = true // the read may have ended anywhere in the body
}

// lengthBody is a body of a declared length.
type lengthBody struct {
	bodyState
	remain int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if err := b.begin(); err != nil {
		return 0, err
	}
	if b.remain == 0 {
		b.end(true)
		return 0, io.EOF
	}
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.w.cn.br.Read(p)
	b.remain -= int64(n)
	switch {
	case b.remain == 0:
		b.end(true)
		return n, io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	b.end(false)
	return n, err
}

// Buffered says what the next reads return without blocking (h2's
// BufferedBody): the bytes of the body already read from the connection,
// and whether they are the rest of it.
func (b *lengthBody) Buffered() (int, bool) {
	if b.w.expecting() {
		return 0, false // the first read sends the 100 Continue
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.reading {
		return 0, false
	}
	n := int64(b.w.cn.br.Buffered())
	if n >= b.remain {
		return int(b.remain), true
	}
	return int(n), false
}

func (b *lengthBody) skippable() bool {
	if b.w.expecting() {
		return false // the client may or may not send it
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.reading {
		return false // a goroutine of the handler's reads it (and br)
	}
	return b.remain == 0 || int64(b.w.cn.br.Buffered()) >= b.remain
}

func (b *lengthBody) skip() {
	_, _ = b.w.cn.br.Discard(int(b.remain))
	b.remain = 0
}

// chunkedBody is a chunked body, its trailers read into the request's
// Trailer.
type chunkedBody struct {
	bodyState
	r      io.Reader
	ended  bool // the last chunk and the trailers were read
	failed error
}

func newChunkedReader(br *bufio.Reader) io.Reader { return httputil.NewChunkedReader(br) }

func (b *chunkedBody) Read(p []byte) (int, error) {
	if err := b.begin(); err != nil {
		return 0, err
	}
	if b.failed != nil {
		b.end(false)
		return 0, b.failed
	}
	if b.ended {
		b.end(true)
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		if terr := b.readTrailer(); terr != nil {
			b.failed = terr
			b.end(false)
			return n, terr
		}
		b.ended = true
		b.end(true)
		return n, io.EOF
	}
	if err != nil {
		b.failed = err
	}
	b.end(false)
	return n, err
}

// readTrailer reads the trailer section after the last chunk, bounded as
// a head is.
func (b *chunkedBody) readTrailer() error {
	cn := b.w.cn
	cn.lr.remain, cn.lr.hit = int64(cn.s.maxHeaderBytes()+headerSlop), false
	defer func() { cn.lr.remain = -1 }()
	h, err := textproto.NewReader(cn.br).ReadMIMEHeader()
	if err != nil {
		if cn.lr.hit {
			return errors.New("h1: request trailers too large")
		}
		return err
	}
	if len(h) == 0 {
		return nil
	}
	// All of them, as net/http's server takes them: what passes them on
	// decides which may be sent (the relay sends the declared ones that
	// can be trailers).
	req := b.w.req
	if req.Trailer == nil {
		req.Trailer = make(http.Header, len(h))
	}
	for k, vv := range h {
		req.Trailer[k] = vv
	}
	return nil
}

// skippable: a chunked body's end is known only once read.
func (b *chunkedBody) skippable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.reading && b.ended && b.failed == nil
}

func (b *chunkedBody) skip() {}
