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

	"golang.org/x/net/http/httpguts"
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
// Differences, each deliberate: a request's trailers go on with their
// values (ReverseProxy copied the request's trailer map before its body
// was read, so the values the app sent after the body never reached the
// endpoint); an interim 101 (which HTTP/2 forbids,
// RFC 9113 §8.6) is not passed on, and a final 101 is a failure (502):
// the sidecars serve upgrades on a path of their own (upgrade.go), so a
// 101 here was never asked for; the CloseNotifier of a ResponseWriter
// whose request has no cancellable context is not watched (net/http's
// servers always give one).
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

// noClose is a request body whose Close does nothing: the transport closes
// the body it is given, and the incoming request's is its server's.
type noClose struct{ io.Reader }

func (noClose) Close() error { return nil }

func (p *relay) serve(w http.ResponseWriter, in *http.Request) {
	// Interim responses go to the app as they come, until the final one.
	var (
		mu   sync.Mutex
		done bool
	)
	got1xx := func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		defer mu.Unlock()
		if done || code == http.StatusSwitchingProtocols {
			return nil
		}
		wh := w.Header()
		for k, vv := range h {
			addValues(wh, k, vv)
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
	switch {
	case in.ContentLength == 0:
		out.Body = nil
	case in.Body != nil:
		out.Body = noClose{in.Body}
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
	// at once and after every write: its parts are not held back.
	var rc *http.ResponseController
	if res.ContentLength == -1 || eventStream(res.Header.Get("Content-Type")) {
		rc = http.NewResponseController(w)
		rc.Flush()
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

	if len(res.Trailer) > 0 {
		// Chunked, whatever the length: trailers follow the body.
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
	if t := strings.TrimLeft(ct, " \t"); len(t) < len(sse) || !strings.EqualFold(t[:len(sse)], sse) {
		return false
	}
	base, _, _ := mime.ParseMediaType(ct)
	return base == sse
}

// copyBody copies a response body to w through a pooled buffer, flushing
// through rc after each write when rc is set.
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
			if rc != nil {
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

func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
