package l7

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"

	"golang.org/x/net/http/httpguts"

	"github.com/weftmesh/weft/sidecar/l7/h2"
)

// relay is the reverse proxy of both sidecars' request paths: a request
// goes on with its hop-by-hop fields removed, and its response comes back
// the same way, its body streamed, its trailers and interim (1xx)
// responses passed on. It does what httputil.ReverseProxy does in its
// Rewrite mode — the sidecars used it until weft's own took its place, to
// save per request its copy of the request (Clone), the second client
// trace it composed with the forwarder's by reflection, and a timer per
// streamed response — and is held to it by relay_test.go, which runs the
// same requests and responses through both.
//
// Differences, each deliberate (relay_test.go and relay_attack_test.go
// test each):
//   - a request's trailers go on with their values (ReverseProxy copied
//     the request's trailer map before its body was read, so the values
//     the app sent after the body never reached the endpoint) — those it
//     declared that may be trailers, never one it did not declare or a
//     hop-by-hop, framing or routing field;
//   - an interim 101 (which HTTP/2 forbids, RFC 9113 §8.6) is not passed
//     on, and a final 101 is a failure (502): the sidecars serve upgrades
//     on a path of their own (upgrade.go), so a 101 here was never asked
//     for; a final status below 100 or above 999 (http.ReadResponse
//     takes "042") is a failure too, where ReverseProxy's WriteHeader
//     panicked with the endpoint's body left open;
//   - an HTTP/1.1 request that expects 100-continue gets its 100 from the
//     relay when its body is first read, under the lock that orders the
//     interim responses (net/http's automatic one is written unlocked
//     beside a 103 the relay writes from another goroutine), and an
//     endpoint's own 100 after it is not passed on a second time;
//   - an interim response's fields are never read by net/http's HTTP/2
//     server after WriteHeader returned (golang/go#67940: its encoder may
//     still be reading the handler's map when a reset stream lets
//     WriteHeader return; the relay clears that map next);
//   - the request body refuses reads once serve has returned, as
//     ReverseProxy's does (golang/go#46866), and a query of more
//     parameters than Go's parser takes goes on empty, as ReverseProxy
//     sent it;
//   - an interim response's hop-by-hop fields are removed, as a final
//     one's (ReverseProxy passed them on: into HTTP/2, where they make
//     the response malformed);
//   - the CloseNotifier of a ResponseWriter whose request has no
//     cancellable context is not watched (net/http's servers always give
//     one).
type relay struct {
	// rewrite edits the outgoing request (out) after the hop-by-hop
	// fields are removed: its URL, its header fields (the app's
	// forwarding fields, X-Forwarded-*, are already back as in).
	rewrite func(in, out *http.Request)
	// roundTrip sends out; got1xx must be told of every interim response.
	// With trace1xx, out's context carries a client trace that tells it
	// (a transport that reports interim responses through httptrace);
	// otherwise roundTrip does (the forwarder's own trace, per try).
	roundTrip func(out *http.Request, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error)
	trace1xx  bool
	// modifyResponse edits the response to out before it is copied (nil:
	// none).
	modifyResponse func(out *http.Request, res *http.Response)
	// fail answers a request that got no response; r is the outgoing one.
	fail   func(w http.ResponseWriter, r *http.Request, err error)
	logger *slog.Logger
}

// hopFields are the fields that describe one connection, not the message,
// removed from every request and response the relay passes on (RFC 9110
// §7.6.1; Keep-Alive, Proxy-Connection and the Proxy-* of RFC 2616 too).
var hopFields = [...]string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// dropHopFields removes the fields that Connection names, then hopFields.
func dropHopFields(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopFields {
		delete(h, k)
	}
}

// forwardingFields are the app's forwarding fields: the mesh is
// transparent, so they go on as the app sent them (none are added).
var forwardingFields = [...]string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// upgradeOf is the protocol a request or response with header h switches
// to, or "".
func upgradeOf(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// printable reports whether s is printable ASCII.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// reqBody is the outgoing request's body: the incoming request's, its
// Close doing nothing (the transport closes the body it is given; the
// incoming request's is its server's). Reads fail once serve has returned
// (a handler must not read its request's body after it returned, and a
// transport may still be reading: ReverseProxy's guard, golang/go#46866).
// Before its first read, first runs (when set); at its end, the values of
// the trailers it announces (to) are taken from from, the incoming
// request's trailers, which its server fills then.
type reqBody struct {
	src      io.Reader
	closed   atomic.Bool
	first    func()
	from, to http.Header
}

var errReadAfterServe = errors.New("l7: request body read after the relay returned")

func (b *reqBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errReadAfterServe
	}
	if f := b.first; f != nil {
		b.first = nil
		f()
	}
	n, err := b.src.Read(p)
	if err == io.EOF {
		for k := range b.to {
			b.to[k] = b.from[k]
		}
	}
	return n, err
}

func (*reqBody) Close() error { return nil }

// Buffered passes on its source's (h2.BufferedBody): nothing, before a
// first read that has something to do or after the relay returned.
func (b *reqBody) Buffered() (int, bool) {
	src, ok := b.src.(h2.BufferedBody)
	if !ok || b.first != nil || b.closed.Load() {
		return 0, false
	}
	return src.Buffered()
}

// trailerField reports whether a request's declared trailer k goes on:
// a field that may be a trailer (RFC 9110 §6.5.1; not framing, routing,
// authentication...), not hop-by-hop.
func trailerField(k string) bool {
	for _, h := range hopFields {
		if strings.EqualFold(k, h) {
			return false
		}
	}
	return httpguts.ValidTrailerHeader(k)
}

func (p *relay) serve(w http.ResponseWriter, in *http.Request) {
	// Interim responses go to the app as they come, until the final one.
	var (
		mu        sync.Mutex
		done      bool
		continued bool // a 100 Continue was written
	)
	got1xx := func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		defer mu.Unlock()
		if done || code == http.StatusSwitchingProtocols || code == http.StatusContinue && continued {
			return nil
		}
		continued = continued || code == http.StatusContinue
		wh := w.Header()
		for k, vv := range h {
			addValues(wh, k, vv)
		}
		// An interim response's hop-by-hop fields are the endpoint's
		// connection's, as a final one's (HTTP/2 forbids them in any).
		dropHopFields(wh)
		// net/http's HTTP/2 server may return from WriteHeader(1xx)
		// while it still encodes the fields from this very map (the
		// stream reset or the connection gone meanwhile:
		// golang/go#67940), and the map is cleared below and written
		// again after; with a Content-Length in it, the server encodes
		// a copy, taken before WriteHeader returns (neither server
		// sends a 1xx's Content-Length).
		if _, ok := wh["Content-Length"]; !ok {
			wh["Content-Length"] = nil
		}
		w.WriteHeader(code)
		clear(wh) // a 1xx's fields are its own
		return nil
	}
	var out *http.Request
	if p.trace1xx {
		out = in.WithContext(httptrace.WithClientTrace(in.Context(), &httptrace.ClientTrace{Got1xxResponse: got1xx}))
	} else {
		out = new(http.Request)
		*out = *in
	}
	out.Header = in.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	var body *reqBody
	switch {
	case in.ContentLength == 0:
		out.Body = nil
	case in.Body != nil:
		body = &reqBody{src: in.Body}
		defer body.closed.Store(true)
		out.Body = body
		if in.ProtoMajor == 1 && in.ProtoMinor >= 1 && httpguts.HeaderValuesContainsToken(in.Header["Expect"], "100-continue") {
			// net/http's HTTP/1 server writes its automatic 100
			// Continue when the body is first read (a transport's
			// goroutine) with no lock against an interim response that
			// got1xx writes from another: the relay writes it itself,
			// under mu.
			body.first = func() {
				mu.Lock()
				defer mu.Unlock()
				if !done && !continued {
					continued = true
					w.WriteHeader(http.StatusContinue)
				}
			}
		}
	}
	// The request's trailers: those it declared that may be trailers,
	// their values taken when its body ends. Not the incoming request's
	// map itself: net/http's HTTP/1 server adds to it, when the body
	// ends, every field the app sent after the body, declared or not
	// (Connection, Content-Length, Host...), and a client request's
	// trailer keys must not change once it is sent (the transport checked
	// them; HTTP/2 would carry them as they are).
	out.Trailer = nil
	if len(in.Trailer) > 0 {
		tr := make(http.Header, len(in.Trailer))
		for k := range in.Trailer {
			if trailerField(k) {
				tr[k] = nil
			}
		}
		if len(tr) > 0 {
			out.Trailer = tr
			if body != nil {
				body.from, body.to = in.Trailer, tr
			}
		}
	}
	out.Close = false
	up := upgradeOf(out.Header)
	if !printable(up) {
		p.fail(w, in, fmt.Errorf("client tried to switch to invalid protocol %q", up))
		return
	}
	dropHopFields(out.Header)
	// A client that says it takes trailers is told so (the header of the
	// incoming request: the field is hop-by-hop).
	if httpguts.HeaderValuesContainsToken(in.Header["Te"], "trailers") {
		out.Header["Te"] = []string{"trailers"}
	}
	if up != "" {
		out.Header["Connection"] = []string{"Upgrade"}
		out.Header["Upgrade"] = []string{up}
	}
	delete(out.Header, "Forwarded")
	for _, k := range forwardingFields {
		if v, ok := in.Header[k]; ok {
			out.Header[k] = v
		} else {
			delete(out.Header, k)
		}
	}
	if q := cleanQuery(out.URL.RawQuery); q != out.URL.RawQuery {
		u := *out.URL
		u.RawQuery = q
		out.URL = &u
	}
	p.rewrite(in, out)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // not the transport's default
	}

	res, err := p.roundTrip(out, got1xx)
	mu.Lock()
	done = true
	mu.Unlock()
	if err != nil {
		p.fail(w, out, err)
		return
	}
	if res.StatusCode < 100 || res.StatusCode > 999 {
		// http.ReadResponse takes "000" to "099"; WriteHeader panics on them.
		res.Body.Close()
		p.fail(w, out, fmt.Errorf("l7: the endpoint answered with status %d", res.StatusCode))
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		res.Body.Close()
		p.fail(w, out, errors.New("l7: the endpoint switched protocols unasked"))
		return
	}
	dropHopFields(res.Header)
	if p.modifyResponse != nil {
		p.modifyResponse(out, res)
	}
	wh := w.Header()
	for k, vv := range res.Header {
		addValues(wh, k, vv)
	}
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		wh.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(res.StatusCode)

	// A streamed response (no length, or server-sent events) is flushed
	// at once and after every write: its parts are not held back — unless
	// more of it has arrived (more): then it goes with that.
	var rc *http.ResponseController
	if res.ContentLength == -1 || eventStream(res.Header.Get("Content-Type")) {
		rc = http.NewResponseController(w)
		if !more(res.Body) {
			rc.Flush()
		}
	}
	if err := p.copyBody(w, rc, res.Body); err != nil {
		res.Body.Close()
		// All that can be done mid-response is to cut it: net/http's
		// servers take this panic as the handler aborting (RST_STREAM,
		// or the connection closed). Outside a server (tests), return.
		if in.Context().Value(http.ServerContextKey) != nil {
			panic(http.ErrAbortHandler)
		}
		return
	}
	res.Body.Close() // its trailers are in res.Trailer from here

	if len(res.Trailer) > 0 && in.ProtoMajor == 1 {
		// Chunked, whatever the length: trailers follow the body (HTTP/2
		// sends them after it in any case).
		http.NewResponseController(w).Flush()
	}
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			addValues(wh, k, vv)
		}
		return
	}
	for k, vv := range res.Trailer {
		k = http.TrailerPrefix + k
		for _, v := range vv {
			wh.Add(k, v)
		}
	}
}

// addValues adds vv to h's values of k: vv itself when h has none (the
// response a relay copies is not used after, so its slices are not
// copied; the server snapshots the head when it is written). No values
// add nothing, not even k (a Content-Type without values would stop the
// server from sniffing one).
func addValues(h http.Header, k string, vv []string) {
	if len(vv) == 0 {
		return
	}
	if old, ok := h[k]; ok {
		h[k] = append(old, vv...)
		return
	}
	h[k] = vv
}

// eventStream reports whether a Content-Type is server-sent events
// (text/event-stream, any parameters, any case).
func eventStream(ct string) bool {
	const sse = "text/event-stream"
	// Parse only what may be one: a media type parsed allocates.
	if t := strings.TrimLeftFunc(ct, unicode.IsSpace); len(t) < len(sse) || !strings.EqualFold(t[:len(sse)], sse) {
		return false
	}
	base, _, _ := mime.ParseMediaType(ct)
	return base == sse
}

// copyBody copies a response body to w through a pooled buffer, flushing
// through rc after each write when rc is set.
// more reports whether body's next read returns at once (weft's HTTP/2
// client's bodies say): bytes already received, or its end. Then what was
// written is not flushed yet: it goes with what follows — the rest, or the
// response's end and trailers — in one write.
func more(body io.Reader) bool {
	b, ok := body.(h2.BufferedBody)
	if !ok {
		return false
	}
	n, end := b.Buffered()
	return n > 0 || end
}

func (p *relay) copyBody(w io.Writer, rc *http.ResponseController, body io.Reader) error {
	buf := sharedBuffers.Get()
	defer sharedBuffers.Put(buf)
	for {
		n, rerr := body.Read(buf)
		if rerr != nil && rerr != io.EOF && rerr != context.Canceled && p.logger != nil {
			p.logger.Debug("response body read failed", "err", rerr)
		}
		if n > 0 {
			m, werr := w.Write(buf[:n])
			if werr != nil {
				return werr
			}
			if m != n {
				return io.ErrShortWrite
			}
			if rc != nil && !more(body) {
				rc.Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// cleanQuery is q with its parameters parsed and encoded again when a ';'
// or a bad escape would make the app read them otherwise than the
// sidecar's routing did (Go's and other parsers disagree on them); q
// itself otherwise.
func cleanQuery(q string) string {
	// More parameters than Go's parser takes (url.ParseQuery fails on
	// them all): encoded again, that is none, as ReverseProxy does.
	if strings.Count(q, "&") >= maxQueryParams {
		return reencodeQuery(q)
	}
	for i := 0; i < len(q); {
		switch q[i] {
		case ';':
			return reencodeQuery(q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencodeQuery(q)
			}
			i += 3
		default:
			i++
		}
	}
	return q
}

// maxQueryParams is net/url's default bound on a query's parameters.
const maxQueryParams = 10000

func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
