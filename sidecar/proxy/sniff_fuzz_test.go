package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// Differential tests: the sniffer against the servers whose reading of the
// same bytes it must not fall short of (net/http for HTTP/1, crypto/tls
// for a ClientHello). The app chooses every byte; where a server would
// serve a request the sniffer must have seen it, under the same name.

// hostileHTTP are request heads that servers serve and an older sniffer
// did not classify (or routed by another Host than servers use).
var hostileHTTP = []string{
	"GET / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
	"\r\nGET / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
	"\r\n\r\n\nGET / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
	"get / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
	"Get / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
	"x-custom-method! / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
	"GET /" + strings.Repeat("a", 10<<10) + " HTTP/1.1\r\nHost: evil.example.com\r\n\r\n",
	"GET / HTTP/1.1\nHost: evil.example.com\n\n",
	"GET / HTTP/1.1\r\nHost: evil.example.com\r\n\n",
	"GET / HTTP/1.0\r\nHost: evil.example.com\r\n\r\n",
	"GET / HTTP/1.2\r\nHost: evil.example.com\r\n\r\n",
	"GET / HTTP/2.0\r\nHost: evil.example.com\r\n\r\n",
	"GET http://evil.example.com/ HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
	"GET http://api.example.com@evil.example.com:80/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
	"GET foo://evil.example.com/ HTTP/1.1\r\n\r\n",
	"CONNECT evil.example.com:443 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
	"GET / HTTP/1.1\r\nhOsT: evil.example.com\r\n\r\n",
	"GET / HTTP/1.1\r\nHost:evil.example.com\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: \t evil.example.com \t \r\n\r\n",
	"GET / HTTP/1.1\r\nX: a\r\n b\r\nHost: evil.example.com\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: evil\r\n .example.com\r\n\r\n",
	"GET / HTTP/1.1\r\nHost : evil.example.com\r\nHost: api.example.com\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: api.example.com\r\nHost: evil.example.com\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"PRI * HTTP/2.0\r\nHost: evil.example.com\r\n\r\n",
	"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: evil.example.com\r\nContent-Length: 3\r\n\r\nabc",
}

// FuzzSniffHTTPAgainstNetHTTP: whatever http.ReadRequest reads as a
// request, the sniffer classifies as HTTP/1 (or h2c: the HTTP/2 preface)
// and parseRequestHead gives it the Host net/http gives it, whether the
// bytes arrive at once or a byte at a time.
func FuzzSniffHTTPAgainstNetHTTP(f *testing.F) {
	for _, s := range hostileHTTP {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		if end := headEnd(b); end < 0 || end > maxRequestHead {
			// The proxy reads at most maxRequestHead of a head (and refuses
			// the request beyond, 431); net/http reads up to 1 MiB.
			return
		}
		proto, complete := sniffHTTP(b)
		switch {
		case !complete && len(b) < len(h2Preface) && strings.HasPrefix(h2Preface, string(b)):
			return // waits for the rest of the HTTP/2 preface
		case proto == "h2c":
			if !bytes.HasPrefix(b, []byte(h2Preface)) {
				t.Fatalf("%q: h2c without the HTTP/2 preface", b)
			}
			return
		case !complete || !strings.HasPrefix(proto, "http/1"):
			t.Fatalf("%q: net/http reads a %s request for %q; the sniffer says %q (complete %v)", b, req.Method, req.Host, proto, complete)
		}
		var s httpScan
		for i := 1; i <= len(b); i++ {
			p, c := s.scan(b[:i])
			if c {
				if p != proto {
					t.Fatalf("%q: a byte at a time the sniffer says %q after %d bytes, at once %q", b, p, i, proto)
				}
				break
			}
		}
		h, err := parseRequestHead(b)
		if err != nil {
			t.Fatalf("%q: net/http reads a request for %q; parseRequestHead: %v", b, req.Host, err)
		}
		if h.host != req.Host || h.method != req.Method {
			t.Fatalf("%q: net/http reads %s for Host %q, the proxy %s for %q", b, req.Method, req.Host, h.method, h.host)
		}
	})
}

// cryptoTLSServerName feeds b to a crypto/tls server and reports the
// ServerName its GetConfigForClient saw, if it got that far.
func cryptoTLSServerName(b []byte) (string, bool) {
	cli, srv := net.Pipe()
	defer srv.Close()
	go func() {
		_, _ = cli.Write(b)
		cli.Close() // the server reads EOF after b
	}()
	go func() { _, _ = io.Copy(io.Discard, cli) }() // alerts
	var name string
	reached := false
	stop := errors.New("seen")
	conf := &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		name, reached = chi.ServerName, true
		return nil, stop
	}}
	_ = srv.SetDeadline(time.Now().Add(5 * time.Second))
	_ = tls.Server(srv, conf).Handshake()
	return name, reached
}

// FuzzClientHelloAgainstCryptoTLS: whenever crypto/tls's server reads
// bytes as a ClientHello (it reaches GetConfigForClient), the sidecar's
// parser reads the same server_name from them, at once and record by
// record as they arrive. With record 0, b is the bytes on the wire; with
// record n > 0, b is a handshake message sent in records of n bytes (so
// that mutations reach the message's fields more often).
func FuzzClientHelloAgainstCryptoTLS(f *testing.F) {
	for _, b := range hostileHellos(f) {
		f.Add(b, uint8(0))
	}
	for _, n := range []uint8{1, 7, 255} {
		f.Add(smallHello(f, "evil.example.com")[5:], n)
		f.Add(withExtension(f, smallHello(f, "a.example"), extECH, echOuter())[5:], n)
	}
	f.Fuzz(func(t *testing.T, b []byte, record uint8) {
		if record > 0 {
			b = fragment(append([]byte{recordTypeHandshake, 3, 1, 0, 0}, b...), int(record))
		}
		if len(b) > maxSniff {
			return // beyond the sniffer's bound: a connection without a name
		}
		name, reached := cryptoTLSServerName(b)
		if !reached {
			return
		}
		h, err := parseClientHello(b)
		if err != nil {
			t.Fatalf("%x: crypto/tls reads a ClientHello for %q; the sidecar: %v", b, name, err)
		}
		if h.serverName != asciiLower(name) {
			t.Fatalf("%x: crypto/tls reads server_name %q, the sidecar %q", b, name, h.serverName)
		}
		var r helloReader
		for i := 1; i <= len(b); i++ {
			h2, err := r.read(b[:i])
			if errors.Is(err, errShortHello) {
				continue
			}
			if err != nil || h2.serverName != h.serverName {
				t.Fatalf("%x: read a byte at a time: %+v %v after %d bytes, at once %+v", b, h2, err, i, h)
			}
			break
		}
	})
}

// smallHello is a Go client's ClientHello (X25519 only: a few hundred
// bytes) for sni, in one record.
func smallHello(t testing.TB, sni string) []byte {
	t.Helper()
	return testutil.ClientHello(t, &tls.Config{ServerName: sni, InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{tls.X25519}})
}

// withExtension returns the one-record ClientHello rec with extension typ
// (data) added last.
func withExtension(t testing.TB, rec []byte, typ uint16, data []byte) []byte {
	t.Helper()
	body := slices.Clone(rec[9:])
	i := 2 + 32
	i += 1 + int(body[i])                       // session id
	i += 2 + (int(body[i])<<8 | int(body[i+1])) // cipher suites
	i += 1 + int(body[i])                       // compression methods
	extLen := int(body[i])<<8 | int(body[i+1])
	if i+2+extLen != len(body) {
		t.Fatalf("withExtension: unexpected ClientHello layout")
	}
	extLen += 4 + len(data)
	body[i], body[i+1] = byte(extLen>>8), byte(extLen)
	body = append(body, byte(typ>>8), byte(typ), byte(len(data)>>8), byte(len(data)))
	body = append(body, data...)
	msg := append([]byte{handshakeTypeClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{recordTypeHandshake, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

// echOuter is an encrypted_client_hello extension of type outer, as a
// client that hides its name sends it (the payload is opaque here).
func echOuter() []byte {
	b := []byte{0, 0, 1, 0, 1, 7, 0, 32}
	b = append(b, bytes.Repeat([]byte{0xaa}, 32)...)
	b = append(b, 0, 64)
	return append(b, bytes.Repeat([]byte{0xbb}, 64)...)
}

// sniExt is a server_name extension with the given host names.
func sniExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, 0, byte(len(n)>>8), byte(len(n)))
		list = append(list, n...)
	}
	return append([]byte{byte(len(list) >> 8), byte(len(list))}, list...)
}

// splitRecords re-cuts the one-record ClientHello rec into records whose
// payloads are cut at the given offsets.
func splitRecords(rec []byte, cuts ...int) []byte {
	var out []byte
	payload, prev := rec[5:], 0
	for _, c := range append(cuts, len(payload)) {
		p := payload[prev:c]
		out = append(out, recordTypeHandshake, rec[1], rec[2], byte(len(p)>>8), byte(len(p)))
		out = append(out, p...)
		prev = c
	}
	return out
}

// hostileHellos are ClientHellos crypto/tls reads that an older parser did
// not, or named differently.
func hostileHellos(t testing.TB) [][]byte {
	evil := smallHello(t, "evil.example.com")
	warning := []byte{recordTypeAlert, 3, 1, 0, 2, 1, 90} // user_canceled, warning
	v0 := slices.Clone(evil)
	v0[1], v0[2] = 0, 1
	return [][]byte{
		evil,
		smallHello(t, "EVIL.Example.COM"),
		smallHello(t, ""),
		splitRecords(evil, 4),  // the handshake header alone first
		splitRecords(evil, 60), // two records
		fragment(evil, 1),      // a byte per record
		append(slices.Clone(warning), evil...),
		append(splitRecords(evil, 30)[:35], append(slices.Clone(warning), splitRecords(evil, 30)[35:]...)...),
		v0, // record version 0x0001: crypto/tls checks only < 0x1000
		withExtension(t, smallHello(t, "public.example.net"), extECH, echOuter()),
		withExtension(t, smallHello(t, ""), extServerName, sniExt("evil.example.com\x00.api.example.com")),
		withExtension(t, smallHello(t, ""), extServerName, sniExt(strings.Repeat("a", 300)+".example.com")),
		withExtension(t, smallHello(t, ""), extServerName, sniExt("evil.example.com", "api.example.com")),
	}
}
