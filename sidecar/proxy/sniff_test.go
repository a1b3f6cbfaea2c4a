package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// clientHelloBytes captures the first flight of a Go TLS client.
func clientHelloBytes(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		tls.Client(a, cfg).Handshake()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	b.Close()
	return append(hdr, body...)
}

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
	hello := clientHelloBytes(t, &tls.Config{ServerName: "API.Example.com", NextProtos: []string{"h2", "http/1.1"}})
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
	noSNI := clientHelloBytes(t, &tls.Config{InsecureSkipVerify: true})
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
	f.Add(clientHelloBytes(f, &tls.Config{ServerName: "a.example", NextProtos: []string{"h2"}}))
	f.Add(fragment(clientHelloBytes(f, &tls.Config{ServerName: "b.example"}), 7))
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
		"GET / HTTP/1.1\r\n":     {"http/1.1", true},
		"POST /a HTTP/1.0\r\nH":  {"http/1.0", true},
		"GE":                     {"", false},
		"GET /unfinished":        {"", false},
		"PRI * HTTP/2.0\r\n\r\n": {"h2c", true},
		"PRI * HT":               {"", false},
		"\x00\x01binary":         {"", true},
		"SSH-2.0-OpenSSH\r\n":    {"", true},
		"GET / SPDY/3\r\n":       {"", true},
	} {
		proto, complete := sniffHTTP([]byte(in))
		if proto != want.proto || complete != want.complete {
			t.Errorf("%q: %q %v, want %q %v", in, proto, complete, want.proto, want.complete)
		}
	}
}

func TestSniffDoesNotConsume(t *testing.T) {
	hello := clientHelloBytes(t, &tls.Config{ServerName: "x.example"})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		// The hello in two writes, then application bytes.
		c.Write(hello[:10])
		time.Sleep(20 * time.Millisecond)
		c.Write(hello[10:])
		c.Write([]byte("rest"))
		c.(*net.TCPConn).CloseWrite()
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := sniff(c, true, true, time.Second, time.Second)
	if err != nil || s.transport != transportTLS || s.sni != "x.example" {
		t.Fatalf("sniff: %+v %v", s, err)
	}
	all, _ := io.ReadAll(&prefixConn{TCPConn: c.(*net.TCPConn), prefix: s.prefix})
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
