package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// fragment splits a single-record ClientHello into records of at most n
// bytes of payload.
func fragment(rec []byte, n int) []byte {
	var out []byte
	payload := rec[5:]
	for len(payload) > 0 {
		k := min(n, len(payload))
		out = append(out, 0x16, 3, 1, byte(k>>8), byte(k))
		out = append(out, payload[:k]...)
		payload = payload[k:]
	}
	return out
}

func TestParseClientHello(t *testing.T) {
	hello := testutil.ClientHello(t, &tls.Config{ServerName: "API.Example.com", NextProtos: []string{"h2", "http/1.1"}})
	for name, b := range map[string][]byte{"one record": hello, "fragmented": fragment(hello, 100)} {
		h, err := parseClientHello(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if h.serverName != "api.example.com" || !slices.Equal(h.alpn, []string{"h2", "http/1.1"}) {
			t.Fatalf("%s: %+v", name, h)
		}
		// Every proper prefix asks for more.
		for i := range len(b) {
			if _, err := parseClientHello(b[:i]); !errors.Is(err, errShortHello) {
				t.Fatalf("%s: prefix %d: %v", name, i, err)
			}
		}
	}
	noSNI := testutil.ClientHello(t, &tls.Config{InsecureSkipVerify: true})
	if h, err := parseClientHello(noSNI); err != nil || h.serverName != "" {
		t.Fatalf("no SNI: %+v %v", h, err)
	}
	for _, bad := range [][]byte{[]byte("GET / HTTP/1.1\r\n"), {0x16, 3, 1, 0, 0}, {0x16, 3, 1, 0, 4, 2, 0, 0, 0}} {
		if _, err := parseClientHello(bad); err == nil || errors.Is(err, errShortHello) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(testutil.ClientHello(f, &tls.Config{ServerName: "a.example", NextProtos: []string{"h2"}}))
	f.Add(fragment(testutil.ClientHello(f, &tls.Config{ServerName: "b.example"}), 7))
	f.Add([]byte{0x16, 3, 1, 0, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseClientHello(b)
		if err != nil && h.serverName != "" {
			t.Fatalf("error %v with server name %q", err, h.serverName)
		}
		// Parsing never depends on bytes after the hello.
		if err == nil {
			h2, err2 := parseClientHello(append(slices.Clip(b), "trailing"...))
			if err2 != nil || h2.serverName != h.serverName || !slices.Equal(h2.alpn, h.alpn) {
				t.Fatalf("trailing bytes changed the result: %+v %v vs %+v", h2, err2, h)
			}
		}
	})
}

func TestSniffHTTP(t *testing.T) {
	for in, want := range map[string]struct {
		proto    string
		complete bool
	}{
		"GET / HTTP/1.1\r\n":               {"http/1.1", true},
		"POST /a HTTP/1.0\r\nH":            {"http/1.0", true},
		"GE":                               {"", false},
		"GET /unfinished":                  {"", false},
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": {"h2c", true},
		"PRI * HTTP/2.0\r\n\r\n":           {"", false},
		"PRI * HT":                         {"", false},
		"\x00\x01binary":                   {"", true},
		"SSH-2.0-OpenSSH\r\n":              {"", true},
		"GET / SPDY/3\r\n":                 {"", true},
	} {
		proto, complete := sniffHTTP([]byte(in))
		if proto != want.proto || complete != want.complete {
			t.Errorf("%q: %q %v, want %q %v", in, proto, complete, want.proto, want.complete)
		}
	}
}

func TestSniffDoesNotConsume(t *testing.T) {
	hello := testutil.ClientHello(t, &tls.Config{ServerName: "x.example"})
	client, c := sniffPair(t)
	go func() {
		// The hello in two writes, the second after a pause so that the
		// sniffer reads it in two, then application bytes.
		client.Write(hello[:10])
		time.Sleep(20 * time.Millisecond)
		client.Write(hello[10:])
		client.Write([]byte("rest"))
		client.CloseWrite()
	}()
	s, err := sniff(c, true, true, time.Second, time.Second)
	if err != nil || s.transport != transportTLS || s.sni != "x.example" {
		t.Fatalf("sniff: %+v %v", s, err)
	}
	all, _ := io.ReadAll(newPrefixConn(c, s.prefix))
	if !bytes.Equal(all, append(slices.Clip(hello), "rest"...)) {
		t.Fatalf("replayed %d bytes, want %d", len(all), len(hello)+4)
	}
}

func TestRequestHost(t *testing.T) {
	for in, want := range map[string]string{
		"GET / HTTP/1.1\r\nhost: a.example:8080\r\n\r\n":               "a.example:8080",
		"GET http://b.example/x HTTP/1.1\r\nHost: ignored\r\n\r\n":     "b.example",
		"GET / HTTP/1.1\r\nUser-Agent: x\r\nHOST:  c.example \r\n\r\n": "c.example",
		"GET / HTTP/1.0\r\n\r\n":                                       "",
	} {
		got, _ := requestHost([]byte(in))
		if got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// TestSniffHTTPAsServersRead: what servers serve is HTTP to the sniffer:
// empty lines before the request line, any token as method, long request
// lines, bare LF; what they refuse is not.
func TestSniffHTTPAsServersRead(t *testing.T) {
	long := "GET /" + strings.Repeat("a", 10<<10) + " HTTP/1.1\r\n"
	for in, want := range map[string]struct {
		proto    string
		complete bool
	}{
		"\r\nGET / HTTP/1.1\r\n":              {"http/1.1", true},
		"\n\r\n\r\nGET / HTTP/1.0\n":          {"http/1.0", true},
		"get / HTTP/1.1\r\n":                  {"http/1.1", true},
		"M-SEARCH * HTTP/1.1\r\n":             {"http/1.1", true},
		"GET / HTTP/2.0\r\n":                  {"http/1.1", true},
		long:                                  {"http/1.1", true},
		long[:9<<10]:                          {"", false},
		"\r\n\r\n":                            {"", false},
		"hello":                               {"", false},
		"GET  / HTTP/1.1\r\n":                 {"", true},
		"GET / HTTP/1.1 \r\n":                 {"", true},
		"GET / http/1.1\r\n":                  {"", true},
		"GET / HTTP/1.1\r\r\n":                {"", true},
		"GET /\x00 HTTP/1.1\r\n":              {"", true},
		" GET / HTTP/1.1\r\n":                 {"", true},
		"GE(T / HTTP/1.1\r\n":                 {"", true},
		"CONNECT  HTTP/1.1\r\n":               {"http/1.1", true}, // net/http reads an empty authority
		"GET  HTTP/1.1\r\n":                   {"", true},
		"GET %zz HTTP/1.1\r\n":                {"", true},
		"PRI * HTTP/2.0\r\nHost: x\r\n\r\n":   {"http/1.1", true},
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nxyz": {"h2c", true},
	} {
		proto, complete := sniffHTTP([]byte(in))
		if proto != want.proto || complete != want.complete {
			t.Errorf("%.40q: %q %v, want %q %v", in, proto, complete, want.proto, want.complete)
		}
	}
	// A request line that does not end within maxRequestHead is not one.
	if proto, complete := sniffHTTP([]byte("GET /" + strings.Repeat("a", maxRequestHead))); proto != "" || !complete {
		t.Errorf("request line over maxRequestHead: %q %v", proto, complete)
	}
}

func TestParseRequestHead(t *testing.T) {
	for _, tt := range []struct {
		in, host, suspect, err string
	}{
		{in: "\r\n\r\nGET / HTTP/1.1\r\nHost: a.example\r\n\r\n", host: "a.example"},
		{in: "get / HTTP/1.1\nhost: a.example:8080\n\n", host: "a.example:8080"},
		{in: "GET http://b.example/x HTTP/1.1\r\n\r\n", host: "b.example"},
		{in: "GET http://u:p@b.example:80/x HTTP/1.1\r\n\r\n", host: "b.example:80"},
		{in: "GET http://b.example/x HTTP/1.1\r\nHost: c.example\r\n\r\n", host: "b.example", suspect: "differ"},
		{in: "GET http://b.example/x HTTP/1.1\r\nHost: B.example:80\r\n\r\n", host: "b.example"},
		{in: "CONNECT b.example:443 HTTP/1.1\r\nHost: c.example\r\n\r\n", host: "b.example:443", suspect: "differ"},
		{in: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", err: "too many Host headers"},
		{in: "GET / HTTP/1.1\r\nHost : b\r\n\r\n", suspect: "white space before the colon"},
		{in: "GET / HTTP/1.1\r\nHost: b\r\n .example\r\n\r\n", host: "b .example", suspect: "folded"},
		{in: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", host: "a b", suspect: "not a valid host"},
		{in: "GET / HTTP/1.1\r\n Host: a\r\n\r\n", err: "white space"},
		{in: "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", err: "malformed header line"},
		{in: "GET / HTTP/1.1\r\nHost a\r\n\r\n", err: "no colon"},
		{in: "GET / HTTP/1.1\r\nHost: a\r\n", err: errHeadIncomplete.Error()},
		{in: "GET / HTTP/1.0\r\n\r\n", host: ""},
	} {
		h, err := parseRequestHead([]byte(tt.in))
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: %+v %v, want error %q", tt.in, h, err, tt.err)
			}
		case err != nil || h.host != tt.host || !strings.Contains(h.suspect, tt.suspect) || (tt.suspect == "") != (h.suspect == ""):
			t.Errorf("%q: host %q suspect %q err %v, want %q %q", tt.in, h.host, h.suspect, err, tt.host, tt.suspect)
		}
	}
}

// TestParseHostileHellos: what crypto/tls reads as a ClientHello, the
// sidecar reads with the same server_name, and says when that name is not
// the one the client means.
func TestParseHostileHellos(t *testing.T) {
	for i, b := range hostileHellos(t) {
		name, reached := cryptoTLSServerName(b)
		h, err := parseClientHello(b)
		if err != nil {
			t.Fatalf("hello %d: %v", i, err)
		}
		if reached && h.serverName != asciiLower(name) {
			t.Errorf("hello %d: crypto/tls %q, sidecar %q", i, name, h.serverName)
		}
		trusted := h.serverName != "" && !h.ech && h.badName == ""
		// hostileHellos 2 (no SNI), 9 (ECH), 10 and 11 (no DNS name) and 12
		// (two host names) name no host to trust; the others evil.example.com.
		if want := !slices.Contains([]int{2, 9, 10, 11, 12}, i); trusted != want || trusted && h.serverName != "evil.example.com" {
			t.Errorf("hello %d: %+v: trusted %v", i, h, trusted)
		}
	}
	for _, bad := range [][]byte{
		{0x17, 3, 3, 0, 1, 0},                             // application data first
		{0x16, 0x10, 0, 0, 1, 1},                          // record version 16.0
		{0x15, 3, 1, 0, 2, 2, 40},                         // a fatal alert
		{0x15, 3, 1, 0, 2, 1, 0},                          // close_notify
		{0x16, 3, 1, 0x40, 1},                             // a record over 16 KiB
		{0x16, 3, 1, 0, 4, 1, 1, 0, 1},                    // a message over 64 KiB
		bytes.Repeat([]byte{0x15, 3, 1, 0, 2, 1, 90}, 17), // 17 ignored records in a row
	} {
		if _, err := parseClientHello(bad); err == nil || errors.Is(err, errShortHello) {
			t.Errorf("%x: %v, want an error", bad, err)
		}
	}
}

// TestSniffTrickledHello: a ClientHello a byte per record, a record per
// segment, is read (each read examines only the new bytes).
func TestSniffTrickledHello(t *testing.T) {
	hello := fragment(smallHello(t, "x.example"), 1)
	client, c := sniffPair(t) // client stays open until the test ends
	go func() {
		for i := 0; i < len(hello); i += 6 {
			client.Write(hello[i : i+6])
		}
	}()
	s, err := sniff(c, true, true, time.Second, 5*time.Second)
	if err != nil || s.transport != transportTLS || s.sni != "x.example" || s.unknown != "" || !bytes.Equal(s.prefix, hello) {
		t.Fatalf("sniff: %+v %v", s, err)
	}
}

// io.Copy from a prefixConn replays the sniffed bytes too. io.Copy prefers
// its source's WriteTo, and the embedded *net.TCPConn's reads the socket
// itself, past the prefix (httpegress copies a tunnel's client bytes with
// io.Copy from its prefixConn).
func TestPrefixConnWriteToReplaysThePrefix(t *testing.T) {
	client, c := sniffPair(t)
	go func() {
		client.Write([]byte("rest"))
		client.CloseWrite()
	}()
	var got bytes.Buffer
	n, err := io.Copy(&got, newPrefixConn(c, []byte("sniffed ")))
	if got.String() != "sniffed rest" || n != int64(got.Len()) || err != nil {
		t.Fatalf("io.Copy = %d, %v, copied %q; want %q", n, err, got.String(), "sniffed rest")
	}
}
