package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/sidecar/egress"
)

// HTTP/1 request heads read as servers read them. The app chooses every
// byte, so the sniffer must call HTTP whatever an HTTP server would serve
// (net/http's http.ReadRequest at least, and the leading empty lines RFC
// 9112 section 2.2 lets servers skip), and the Host the proxy routes by
// must be the one such a server uses. A head the proxy cannot read as
// servers do is refused, never forwarded under a guessed name.

// h2Preface is HTTP/2's connection preface (prior knowledge, h2c).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// httpScan recognises the request line of an HTTP/1 request incrementally:
// each call to scan examines only the bytes it has not seen, so a request
// line trickled a byte at a time costs linear time. The zero value is
// ready.
type httpScan struct {
	pos   int // bytes of the buffer examined
	state int
	n     int // bytes of the current element (method, target, version)
	start int // where the request line starts, after leading empty lines
	proto string
	done  bool
	// why says why the bytes are not an HTTP/1 request line (when done
	// with proto "").
	why string
}

const (
	scanLead    = iota // CR and LF before the request line
	scanMethod         // method token
	scanTarget         // request-target
	scanVersion        // "HTTP/x.y"
	scanCR             // CR after the version: LF must follow
)

// sniffHTTP classifies b (the first bytes of a connection): "http/1.1" or
// "http/1.0" for an HTTP/1 request line, "h2c" for the HTTP/2 preface, ""
// otherwise. complete is false while more bytes could change the answer.
func sniffHTTP(b []byte) (proto string, complete bool) {
	var s httpScan
	return s.scan(b)
}

// scan continues over b, which extends the bytes of the previous call.
func (s *httpScan) scan(b []byte) (proto string, complete bool) {
	if s.done {
		return s.proto, true
	}
	if s.pos == 0 && len(b) > 0 && b[0] == 'P' {
		// The HTTP/2 preface, only at the very start (as servers read it).
		switch {
		case len(b) < len(h2Preface) && strings.HasPrefix(h2Preface, string(b)):
			return "", false
		case bytes.HasPrefix(b, []byte(h2Preface)):
			return s.finish("h2c", "")
		}
		// Otherwise an HTTP/1 request line, PRI or not.
	}
	for ; s.pos < len(b); s.pos++ {
		c := b[s.pos]
		if s.pos >= maxRequestHead {
			return s.finish("", fmt.Sprintf("no HTTP/1 request line within %d bytes", maxRequestHead))
		}
		switch s.state {
		case scanLead:
			if c == '\r' || c == '\n' {
				continue
			}
			s.start, s.state = s.pos, scanMethod
			fallthrough
		case scanMethod:
			switch {
			case c == ' ' && s.n > 0:
				s.state, s.n = scanTarget, 0
			case isTokenByte(c):
				s.n++
			default:
				return s.finish("", "not an HTTP/1 request line (method)")
			}
		case scanTarget:
			switch {
			case c == ' ': // empty only for CONNECT, which parseRequestLine checks
				s.state, s.n = scanVersion, 0
			case c < ' ' || c == 0x7f:
				return s.finish("", "not an HTTP/1 request line (request-target)")
			default:
				s.n++
			}
		case scanVersion:
			const v = "HTTP/#.#" // '#': a digit
			switch {
			case s.n == len(v) && c == '\r':
				s.state = scanCR
			case s.n == len(v) && c == '\n':
				return s.line(b[s.start:s.pos])
			case s.n < len(v) && v[s.n] == '#' && '0' <= c && c <= '9',
				s.n < len(v) && v[s.n] != '#' && v[s.n] == c:
				s.n++
			default:
				return s.finish("", "not an HTTP/1 request line (version)")
			}
		case scanCR:
			if c != '\n' {
				return s.finish("", "not an HTTP/1 request line (CR without LF)")
			}
			return s.line(b[s.start : s.pos-1])
		}
	}
	return "", false
}

// line decides on a whole request line (without its end of line) as
// net/http does.
func (s *httpScan) line(line []byte) (string, bool) {
	rl, err := parseRequestLine(string(line))
	if err != nil {
		return s.finish("", err.Error())
	}
	if rl.proto == "HTTP/1.0" {
		return s.finish("http/1.0", "")
	}
	// HTTP/1.1 and any other version net/http parses (it answers 505 to
	// those it does not serve): routed by Host like HTTP/1.1.
	return s.finish("http/1.1", "")
}

func (s *httpScan) finish(proto, why string) (string, bool) {
	s.done, s.proto, s.why = true, proto, why
	return proto, true
}

// requestLine is the parsed request line of an HTTP/1 request.
type requestLine struct {
	method, target, proto string
	// authority is the request-target's host as net/http reads it
	// (URL.Host): an absolute-form target's authority, or a CONNECT
	// target; "" for origin-form and "*".
	authority string
}

// parseRequestLine parses line as net/http's ReadRequest does: method SP
// request-target SP HTTP-version, the method a token (any case), the
// version "HTTP/d.d", the target what url.ParseRequestURI accepts
// (CONNECT: an authority).
func parseRequestLine(line string) (requestLine, error) {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return requestLine{}, errors.New("malformed HTTP request line")
	}
	if !isToken(method) {
		return requestLine{}, fmt.Errorf("invalid HTTP method %q", method)
	}
	if _, _, ok := http.ParseHTTPVersion(proto); !ok {
		return requestLine{}, fmt.Errorf("malformed HTTP version %q", proto)
	}
	raw := target
	justAuthority := method == "CONNECT" && !strings.HasPrefix(raw, "/")
	if justAuthority {
		raw = "http://" + raw
	}
	u, err := url.ParseRequestURI(raw)
	if err != nil {
		return requestLine{}, fmt.Errorf("malformed request-target: %w", err)
	}
	return requestLine{method: method, target: target, proto: proto, authority: u.Host}, nil
}

// requestHead is what the proxy reads of an HTTP/1 request head.
type requestHead struct {
	requestLine
	// host is the Host net/http's server uses (Request.Host): the
	// request-target's authority, else the Host header; "" when neither.
	host string
	// suspect, when set, says why another server could read another
	// host than host off this head: the proxy refuses such a request
	// (400) rather than route it by a name a server might not use.
	suspect string
	n       int // length of the head: leading empty lines and the empty line that ends it included

	// The body's framing (RFC 9112 section 6): contentLength bytes, or
	// chunked; a request with neither has no body. framing, when set,
	// says why the body cannot be delimited safely (both headers, lengths
	// that differ, a transfer coding other than chunked): a proxy that
	// forwards it could disagree with the server on where the next request
	// starts, so such a request is refused.
	contentLength int64
	chunked       bool
	framing       string
	// upgrade: the request asks to switch protocols (Upgrade, and
	// "upgrade" in Connection); after a 101 the bytes are not HTTP.
	upgrade bool
	// upgradeTo is the Upgrade header's value; h2 says the request carries
	// HTTP2-Settings (an h2c upgrade, whatever Upgrade says).
	upgradeTo string
	h2        bool
}

var errHeadIncomplete = errors.New("proxy: HTTP request head incomplete")

// headEnd returns the length of the HTTP/1 request head at the start of b
// (up to and including the empty line that ends it), or -1 when b does not
// hold a whole head yet. Lines end with LF, optionally preceded by CR, as
// net/http reads them; empty lines before the request line are skipped.
func headEnd(b []byte) int {
	i := 0
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		i++
	}
	nl := bytes.IndexByte(b[i:], '\n')
	if nl < 0 {
		return -1
	}
	// The head ends at the first empty line after the request line:
	// "\n\n" or "\n\r\n", the request line's own LF included.
	from := i + nl
	a := bytes.Index(b[from:], []byte("\n\n"))
	c := bytes.Index(b[from:], []byte("\n\r\n"))
	switch {
	case a < 0 && c < 0:
		return -1
	case c < 0 || (a >= 0 && a < c):
		return from + a + 2
	default:
		return from + c + 3
	}
}

// parseRequestHead parses the HTTP/1 request head at the start of b as
// net/http's http.ReadRequest does (headers as net/textproto reads them:
// obsolete line folding joined with a space, a header name with a space
// before the colon kept apart, more than one Host refused), after skipping
// leading empty lines. It returns errHeadIncomplete when b does not hold
// the whole head; any other error is a request net/http refuses too.
func parseRequestHead(b []byte) (requestHead, error) {
	end := headEnd(b)
	if end < 0 {
		return requestHead{}, errHeadIncomplete
	}
	h := requestHead{n: end}
	b = b[:end]
	i := 0
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		i++
	}
	line, i := readLine(b, i)
	rl, err := parseRequestLine(string(line))
	if err != nil {
		return requestHead{}, err
	}
	h.requestLine = rl
	if i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		return requestHead{}, errors.New("malformed header: first line starts with white space")
	}
	var hosts, lengths, codings []string
	var upgrade, connUpgrade bool
	for {
		var line []byte
		line, i = readLine(b, i)
		if len(line) == 0 {
			break // the empty line that ends the head
		}
		if bytes.IndexByte(line, ':') < 0 {
			return requestHead{}, fmt.Errorf("malformed header line %q: no colon", truncate(line))
		}
		kv := append([]byte(nil), trimSpaceTab(line)...)
		folded := false
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
				i++
			}
			var more []byte
			more, i = readLine(b, i)
			kv = append(append(kv, ' '), trimSpaceTab(more)...)
			folded = true
		}
		k, v, _ := bytes.Cut(kv, []byte(":"))
		key, spaced, ok := headerKey(k)
		if !ok {
			return requestHead{}, fmt.Errorf("malformed header line %q", truncate(kv))
		}
		for _, c := range v {
			if !validHeaderValueByte(c) {
				return requestHead{}, fmt.Errorf("malformed header line %q", truncate(kv))
			}
		}
		value := string(bytes.TrimLeft(v, " \t"))
		switch {
		case !spaced && strings.EqualFold(key, "host"):
			hosts = append(hosts, value)
			if folded {
				h.suspect = "Host header folded over several lines"
			}
		case spaced && strings.EqualFold(strings.TrimRight(key, " "), "host"):
			h.suspect = "Host header with white space before the colon"
		case spaced && (strings.EqualFold(strings.TrimRight(key, " "), "content-length") ||
			strings.EqualFold(strings.TrimRight(key, " "), "transfer-encoding")):
			h.framing = "framing header with white space before the colon"
		case folded && (strings.EqualFold(key, "content-length") || strings.EqualFold(key, "transfer-encoding")):
			h.framing = "framing header folded over several lines"
		case strings.EqualFold(key, "content-length"):
			lengths = append(lengths, strings.TrimRight(value, " \t"))
		case strings.EqualFold(key, "transfer-encoding"):
			codings = append(codings, strings.TrimRight(value, " \t"))
		case strings.EqualFold(key, "upgrade"):
			upgrade = true
			h.upgradeTo = strings.TrimSpace(value)
		case strings.EqualFold(key, "http2-settings"):
			h.h2 = true
		case strings.EqualFold(key, "connection"):
			for _, tok := range strings.Split(value, ",") {
				connUpgrade = connUpgrade || strings.EqualFold(strings.TrimSpace(tok), "upgrade")
			}
		}
	}
	h.upgrade = upgrade && connUpgrade
	if len(codings) > 0 && rl.proto == "HTTP/1.0" && h.framing == "" {
		// net/http reads no body then; a proxy that forwarded one would
		// disagree on where the next request starts.
		h.framing = "Transfer-Encoding in an HTTP/1.0 request"
	}
	h.contentLength, h.chunked, h.framing = bodyFraming(lengths, codings, h.framing)
	if len(hosts) > 1 {
		return requestHead{}, errors.New("too many Host headers")
	}
	h.host = rl.authority
	switch {
	case h.host == "" && len(hosts) == 1:
		h.host = hosts[0]
	case h.host != "" && len(hosts) == 1 && egress.HostName(hosts[0]) != egress.HostName(h.host):
		if h.suspect == "" {
			h.suspect = fmt.Sprintf("request-target authority %q and Host header %q differ", h.host, hosts[0])
		}
	}
	switch {
	case h.suspect != "":
	case !validHost(h.host):
		h.suspect = fmt.Sprintf("Host %q is not a valid host", h.host)
	case h.host != "" && rl.method != http.MethodConnect && !routableHost(h.host):
		// Servers cut such names differently (nginx at the first colon):
		// the route could be another server's than the one decided.
		h.suspect = fmt.Sprintf("Host %q is not a host name or address with an optional port", h.host)
	}
	return h, nil
}

// bodyFraming reads a request's Content-Length and Transfer-Encoding
// values: the body's length, or chunked, or why the body cannot be
// delimited safely (framing, kept when already set).
func bodyFraming(lengths, codings []string, framing string) (int64, bool, string) {
	if framing != "" {
		return 0, false, framing
	}
	switch {
	case len(codings) > 0 && len(lengths) > 0:
		return 0, false, "both Transfer-Encoding and Content-Length"
	case len(codings) > 1 || len(codings) == 1 && !strings.EqualFold(codings[0], "chunked"):
		return 0, false, fmt.Sprintf("Transfer-Encoding %q (only chunked is forwarded)", strings.Join(codings, ", "))
	case len(codings) == 1:
		return 0, true, ""
	case len(lengths) == 0:
		return 0, false, ""
	}
	for _, l := range lengths[1:] {
		if l != lengths[0] {
			return 0, false, fmt.Sprintf("Content-Length values differ (%q)", strings.Join(lengths, ", "))
		}
	}
	n, err := strconv.ParseUint(lengths[0], 10, 63)
	if err != nil || lengths[0] == "" {
		return 0, false, fmt.Sprintf("Content-Length %q", lengths[0])
	}
	return int64(n), false, ""
}

// readLine returns the line of b starting at i without its end of line
// (LF, or CRLF), and where the next line starts.
func readLine(b []byte, i int) ([]byte, int) {
	nl := bytes.IndexByte(b[i:], '\n')
	if nl < 0 {
		return b[i:], len(b)
	}
	line := b[i : i+nl]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, i + nl + 1
}

func trimSpaceTab(b []byte) []byte { return bytes.Trim(b, " \t") }

func truncate(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

// headerKey checks a header name as net/textproto does: token bytes, or
// spaces (kept, and then the name is not canonicalised: "Host " is not
// Host). ok is false for an empty or otherwise invalid name.
func headerKey(k []byte) (key string, spaced, ok bool) {
	if len(k) == 0 {
		return "", false, false
	}
	for _, c := range k {
		switch {
		case isTokenByte(c):
		case c == ' ':
			spaced = true
		default:
			return "", false, false
		}
	}
	return string(k), spaced, true
}

// validHeaderValueByte: VCHAR, SP, HTAB and obs-text, as net/textproto.
func validHeaderValueByte(c byte) bool {
	return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f)
}

// tchar (RFC 9110 section 5.6.2).
func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if !isTokenByte(s[i]) {
			return false
		}
	}
	return true
}

// validHost: the bytes net/http's server accepts in a Host (httpguts.
// ValidHostHeader); it answers 400 to others. "" is valid (no Host).
// routableHost reports whether h is a name (letters, digits, '-', '.',
// '_') or a bracketed IPv6 address, with at most an optional ":port" of
// digits: the Host forms every server splits the same way.
func routableHost(h string) bool {
	name, port := h, ""
	if strings.HasPrefix(h, "[") {
		i := strings.IndexByte(h, ']')
		if i < 0 {
			return false
		}
		if a, err := netip.ParseAddr(h[1:i]); err != nil || !a.Is6() {
			return false
		}
		name, port = "", h[i+1:]
		if port != "" {
			if port[0] != ':' {
				return false
			}
			port = port[1:]
			if port == "" {
				return false
			}
		}
	} else if i := strings.IndexByte(h, ':'); i >= 0 {
		name, port = h[:i], h[i+1:]
		if port == "" {
			return false
		}
	}
	if len(port) > 5 {
		return false
	}
	for i := range len(port) {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	if strings.HasPrefix(h, "[") {
		return true
	}
	if name == "" {
		return false
	}
	for i := range len(name) {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

func validHost(h string) bool {
	for i := range len(h) {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!$%&()*+,-.:;=[]_~'", c) >= 0:
		default:
			return false
		}
	}
	return true
}
