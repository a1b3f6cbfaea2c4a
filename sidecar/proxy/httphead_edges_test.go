package proxy

import (
	"strings"
	"testing"
)

// Edges of the HTTP/1 request reading (httphead.go) that the tests of
// sniff_test.go leave open: the byte classes at each end of their ranges,
// the bounds at exactly their size, and the forms of Host that servers
// split the same way. What is asserted is what the proxy does with the
// bytes an app sends: call them HTTP or not (and when it knows), route
// them by which Host, refuse them as ambiguous, or delimit their body.

// TestSniffHTTPEdges: the sniffer's answer for request lines at the edges
// of what servers read.
func TestSniffHTTPEdges(t *testing.T) {
	// A request line whose LF is the last byte of maxRequestHead, and one
	// whose LF is the byte after it.
	fill := func(n int) string {
		const pre, post = "GET /", " HTTP/1.1\n"
		return pre + strings.Repeat("a", n-len(pre)-len(post)) + post
	}
	for _, tt := range []struct {
		name, in string
		proto    string
		complete bool
	}{
		{"no bytes yet", "", "", false},
		{"request line ending at the bound", fill(maxRequestHead), "http/1.1", true},
		{"request line ending one byte past the bound", fill(maxRequestHead + 1), "", true},
		{"request line with CRLF ending one byte past the bound", fill(maxRequestHead)[:maxRequestHead-1] + "\r\n", "", true},
		// A method is at least one token byte: a leading space is not the
		// start of a request line, and the sniffer knows at once.
		{"leading space", " ", "", true},
		{"leading space then a line", " /x HTTP/1.1\r\n", "", true},
		// Every digit is a version digit; net/http reads HTTP/9.9 and
		// answers 505, routed by Host like HTTP/1.1.
		{"version digits 0", "GET / HTTP/0.0\r\n", "http/1.1", true},
		{"version digits 9", "GET / HTTP/9.9\r\n", "http/1.1", true},
		{"version with a letter for a digit", "GET / HTTP/1.x\r\n", "", true},
		{"version with a colon for a digit", "GET / HTTP/1.:\r\n", "", true},
		{"version with a slash for a digit", "GET / HTTP/1./\r\n", "", true},
		{"version cut at the dot", "GET / HTTP/1", "", false},
		{"version over its length", "GET / HTTP/1.11\r\n", "", true},
		{"version without its dot", "GET / HTTP/1,1\r\n", "", true},
		{"DEL in the target", "GET /\x7f HTTP/1.1\r\n", "", true},
		{"US in the target", "GET /\x1f HTTP/1.1\r\n", "", true},
		{"tilde in the target", "GET /~ HTTP/1.1\r\n", "http/1.1", true},
		{"bare CR then a byte", "GET / HTTP/1.1\rX", "", true},
		// Methods are tokens: the ends of each range of letters and
		// digits are token bytes, their neighbours are not.
		{"method of the token ranges' ends", "azAZ09 / HTTP/1.1\r\n", "http/1.1", true},
		{"method of token punctuation", "!#$%&'*+-.^_`|~ / HTTP/1.1\r\n", "http/1.1", true},
		{"method with @", "G@T / HTTP/1.1\r\n", "", true},
		{"method with [", "G[T / HTTP/1.1\r\n", "", true},
		{"method with {", "G{T / HTTP/1.1\r\n", "", true},
		{"method with /", "G/T / HTTP/1.1\r\n", "", true},
		{"method with :", "G:T / HTTP/1.1\r\n", "", true},
		{"method with DEL", "G\x7fT / HTTP/1.1\r\n", "", true},
		{"method with a high byte", "G\x80T / HTTP/1.1\r\n", "", true},
	} {
		proto, complete := sniffHTTP([]byte(tt.in))
		if proto != tt.proto || complete != tt.complete {
			t.Errorf("%s: %q %v, want %q %v", tt.name, proto, complete, tt.proto, tt.complete)
		}
	}
}

// TestRequestHeadEnd: where a head ends is where the next request starts.
// A head read too long would carry the next request on this one's
// decision; one read too short leaves its end as the next request's
// start, and a request without header fields would wait for ever.
func TestRequestHeadEnd(t *testing.T) {
	for _, tt := range []struct{ head, next string }{
		{"GET / HTTP/1.1\n\n", ""},
		{"GET / HTTP/1.1\r\n\r\n", ""},
		{"GET / HTTP/1.1\r\n\n", ""},
		{"\r\nGET / HTTP/1.1\n\n", ""},
		{"GET / HTTP/1.1\nHost: a.example\n\n", ""},
		{"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n", ""},
		// Pipelined: the first head's end, whichever form each takes.
		{"GET / HTTP/1.1\n\n", "GET / HTTP/1.1\r\nHost: b.example\r\n\r\n"},
		{"GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\nHost: b.example\n\n"},
		{"GET / HTTP/1.1\nHost: a.example\n\n", "GET / HTTP/1.1\r\nHost: b.example\r\n\r\n"},
		{"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n", "GET / HTTP/1.1\nHost: b.example\n\n"},
	} {
		in := tt.head + tt.next
		h, err := parseRequestHead([]byte(in))
		if err != nil || h.n != len(tt.head) {
			t.Errorf("%q: head of %d bytes (%v), want %d", in, h.n, err, len(tt.head))
		}
		if end := headEnd([]byte(tt.head[:len(tt.head)-1])); end >= 0 {
			t.Errorf("%q: a head without its last byte ends at %d", tt.head, end)
		}
	}
}

// TestRequestHeadEdges: the Host a request is routed by, whether it is
// refused as ambiguous (suspect) or for its framing, and how its body is
// delimited, at the edges of what servers read.
func TestRequestHeadEdges(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		host     string
		suspect  string // a part of the reason; "" for none
		framing  string // a part of the reason; "" for none
		chunked  bool
		length   int64
		err      string // a part of the error; "" for none
		notErr   string // what the error must not say
	}{
		// A header folded with a tab: the next header is read as its own,
		// whatever bytes the folded line holds.
		{name: "tab-folded header before Host", in: "GET / HTTP/1.1\r\nX: a\r\n\tb c\r\nHost: a.example\r\n\r\n", host: "a.example"},
		{name: "tab-folded header then Host", in: "GET / HTTP/1.1\r\nX: a\r\n\tb\r\nHost: a.example\r\n\r\n", host: "a.example"},
		// HTTP/1.0 has no chunked coding: net/http reads no body, so a
		// proxy that forwarded one could smuggle the next request in it.
		{name: "HTTP/1.0 with Transfer-Encoding", in: "POST / HTTP/1.0\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n", host: "a.example", framing: "HTTP/1.0"},
		{name: "HTTP/1.1 chunked", in: "POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n", host: "a.example", chunked: true},
		{name: "HTTP/1.0 with Content-Length", in: "POST / HTTP/1.0\r\nHost: a.example\r\nContent-Length: 7\r\n\r\n", host: "a.example", length: 7},
		// A header line whose name is empty is malformed; it has a colon.
		{name: "empty header name", in: "GET / HTTP/1.1\r\n: x\r\n\r\n", err: "malformed header line", notErr: "no colon"},
		{name: "header line without a colon", in: "GET / HTTP/1.1\r\nX\r\n\r\n", err: "no colon"},
		// Header values: visible bytes from '!' up, space and tab.
		{name: "value of the lowest visible byte", in: "GET / HTTP/1.1\r\nHost: a.example\r\nX: !\r\n\r\n", host: "a.example"},
		{name: "value with a control byte", in: "GET / HTTP/1.1\r\nHost: a.example\r\nX: a\x1fb\r\n\r\n", err: "malformed header line"},
		{name: "value with DEL", in: "GET / HTTP/1.1\r\nHost: a.example\r\nX: a\x7fb\r\n\r\n", err: "malformed header line"},
		// Host names of every byte class servers split the same way.
		{name: "host of the ranges' ends", in: "GET / HTTP/1.1\r\nHost: az.AZ-09_x.example\r\n\r\n", host: "az.AZ-09_x.example"},
		{name: "host with a port of 0 and 9", in: "GET / HTTP/1.1\r\nHost: a.example:9090\r\n\r\n", host: "a.example:9090"},
		{name: "host with a port of five digits", in: "GET / HTTP/1.1\r\nHost: a.example:65535\r\n\r\n", host: "a.example:65535"},
		{name: "host with a port of six digits", in: "GET / HTTP/1.1\r\nHost: a.example:655350\r\n\r\n", host: "a.example:655350", suspect: "not a host name"},
		{name: "host with an empty port", in: "GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n", host: "a.example:", suspect: "not a host name"},
		{name: "host with a letter in the port", in: "GET / HTTP/1.1\r\nHost: a.example:8o\r\n\r\n", host: "a.example:8o", suspect: "not a host name"},
		{name: "host with a dot in the port", in: "GET / HTTP/1.1\r\nHost: a.example:8.\r\n\r\n", host: "a.example:8.", suspect: "not a host name"},
		{name: "host with a semicolon in the port", in: "GET / HTTP/1.1\r\nHost: a.example:8;\r\n\r\n", host: "a.example:8;", suspect: "not a host name"},
		{name: "host of a port only", in: "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", host: ":80", suspect: "not a host name"},
		{name: "host with a comma", in: "GET / HTTP/1.1\r\nHost: a,b.example\r\n\r\n", host: "a,b.example", suspect: "not a host name"},
		{name: "host with an at sign", in: "GET / HTTP/1.1\r\nHost: a@b.example\r\n\r\n", host: "a@b.example", suspect: "not a valid host"},
		{name: "host with a slash", in: "GET / HTTP/1.1\r\nHost: a/b.example\r\n\r\n", host: "a/b.example", suspect: "not a valid host"},
		// Bracketed IPv6 (here the IPv4-mapped form of 127.0.0.1).
		{name: "bracketed IPv6 host", in: "GET / HTTP/1.1\r\nHost: [::ffff:127.0.0.1]\r\n\r\n", host: "[::ffff:127.0.0.1]"},
		{name: "bracketed IPv6 host and port", in: "GET / HTTP/1.1\r\nHost: [::ffff:127.0.0.1]:8080\r\n\r\n", host: "[::ffff:127.0.0.1]:8080"},
		{name: "bracketed IPv6 host and an empty port", in: "GET / HTTP/1.1\r\nHost: [::ffff:127.0.0.1]:\r\n\r\n", host: "[::ffff:127.0.0.1]:", suspect: "not a host name"},
		{name: "bracketed IPv6 host and a name", in: "GET / HTTP/1.1\r\nHost: [::ffff:127.0.0.1]a.example\r\n\r\n", host: "[::ffff:127.0.0.1]a.example", suspect: "not a host name"},
		{name: "bracketed IPv4 address", in: "GET / HTTP/1.1\r\nHost: [127.0.0.1]\r\n\r\n", host: "[127.0.0.1]", suspect: "not a host name"},
		{name: "bracket not closed", in: "GET / HTTP/1.1\r\nHost: [::ffff:127.0.0.1\r\n\r\n", host: "[::ffff:127.0.0.1", suspect: "not a host name"},
		{name: "bracket holding no address", in: "GET / HTTP/1.1\r\nHost: [a.example]\r\n\r\n", host: "[a.example]", suspect: "not a host name"},
		// CONNECT names no route by its authority (the tunnel is decided
		// by destination): an authority net/http accepts is not refused.
		{name: "CONNECT to an authority with sub-delims", in: "CONNECT a!b.example:443 HTTP/1.1\r\n\r\n", host: "a!b.example:443"},
		{name: "CONNECT to an authority with a quote", in: "CONNECT a'b.example:443 HTTP/1.1\r\n\r\n", host: "a'b.example:443"},
	} {
		h, err := parseRequestHead([]byte(tt.in))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || (tt.notErr != "" && strings.Contains(err.Error(), tt.notErr)) {
				t.Errorf("%s: %+v %v, want an error saying %q (not %q)", tt.name, h, err, tt.err, tt.notErr)
			}
			continue
		}
		switch {
		case err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case h.host != tt.host:
			t.Errorf("%s: host %q, want %q", tt.name, h.host, tt.host)
		case (tt.suspect == "") != (h.suspect == "") || !strings.Contains(h.suspect, tt.suspect):
			t.Errorf("%s: suspect %q, want %q", tt.name, h.suspect, tt.suspect)
		case (tt.framing == "") != (h.framing == "") || !strings.Contains(h.framing, tt.framing):
			t.Errorf("%s: framing %q, want %q", tt.name, h.framing, tt.framing)
		case h.chunked != tt.chunked || h.contentLength != tt.length:
			t.Errorf("%s: chunked %v length %d, want %v %d", tt.name, h.chunked, h.contentLength, tt.chunked, tt.length)
		}
	}
}
