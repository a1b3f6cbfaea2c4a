package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// sniffPair is a loopback TCP connection: client writes what the test
// sends, server is what sniff reads.
func sniffPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestSniffClientClosesBeforeSending: a client that closes without a byte
// is an error, the read's own (io.EOF), not a connection without a name.
func TestSniffClientClosesBeforeSending(t *testing.T) {
	c, s := sniffPair(t)
	c.Close()
	sn, err := sniff(s, true, true, 5*time.Second, 10*time.Second)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("sniff: %+v, err %v: want io.EOF", sn, err)
	}
}

// TestSniffWordThenSilence: bytes that could still begin a request line
// (a word without a space), then a pause of the first-byte wait, are
// decided then as not HTTP, not held until the sniff deadline: a
// client-first protocol waiting for an answer is not held up.
func TestSniffWordThenSilence(t *testing.T) {
	c, s := sniffPair(t)
	if _, err := c.Write([]byte("HELLO")); err != nil {
		t.Fatal(err)
	}
	first := 100 * time.Millisecond
	sn, err := sniff(s, true, true, first, 3*time.Second)
	if err != nil || sn.transport != transportRaw || string(sn.prefix) != "HELLO" ||
		!strings.HasSuffix(sn.unknown, "(then silent for 100ms)") {
		t.Fatalf("sniff: %+v %v: want HELLO, decided after a pause of %v", sn, err, first)
	}
}

// TestSniffWordThenEOF: the client stops sending after part of a request
// line; sniffing decides on what it has, and says so.
func TestSniffWordThenEOF(t *testing.T) {
	c, s := sniffPair(t)
	if _, err := c.Write([]byte("GET")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	sn, err := sniff(s, true, true, time.Hour, time.Hour)
	if err != nil || string(sn.prefix) != "GET" || len(sn.appProtos) != 0 ||
		sn.unknown != "HTTP request line incomplete after 3 bytes (then the client stopped sending)" {
		t.Fatalf("sniff: %+v %v", sn, err)
	}
}

// TestSniffStopsAtMaxSniff: a ClientHello that keeps coming past maxSniff
// (a 64 KiB message a byte per record) is a connection without a name,
// decided at maxSniff bytes, all of them kept to replay.
func TestSniffStopsAtMaxSniff(t *testing.T) {
	c, s := sniffPair(t)
	msg := append([]byte{handshakeTypeClientHello, 0, 0xff, 0xff}, make([]byte, 0xffff)...)
	hello := fragment(append([]byte{recordTypeHandshake, 3, 1, 0, 0}, msg...), 1)
	go func() { _, _ = c.Write(hello) }() // more than sniff reads: the write stays blocked until Cleanup
	type result struct {
		sn  sniffed
		err error
	}
	done := make(chan result, 1)
	go func() {
		sn, err := sniff(s, true, false, time.Hour, time.Hour)
		done <- result{sn, err}
	}()
	// A sniff that does not stop at maxSniff reads on for ever: fail, not hang.
	r := testutil.Receive(t, done, "sniff to stop at maxSniff")
	sn, err := r.sn, r.err
	if err != nil || len(sn.prefix) != maxSniff || string(sn.prefix) != string(hello[:maxSniff]) ||
		sn.unknown != "ClientHello incomplete after 131072 bytes (sniffing stops at 131072 bytes)" {
		t.Fatalf("sniff: %d bytes, %q, %v", len(sn.prefix), sn.unknown, err)
	}
}

// TestNeedsSniffOnlyForChainsThatCanTakeTheConnection: the proxy waits for
// a client's first bytes only when a chain that matches the destination's
// port and address depends on them.
func TestNeedsSniffOnlyForChainsThatCanTakeTheConnection(t *testing.T) {
	chain := func(m model.ChainMatch) *model.FilterChain { return &model.FilterChain{Match: m} }
	meshNet := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}
	inMesh := netip.MustParseAddrPort("198.18.2.3:443")
	cases := []struct {
		name   string
		chains []*model.FilterChain
		dst    netip.AddrPort
		want   bool
	}{
		{"no chain", nil, inMesh, false},
		{"a chain on address and port alone", []*model.FilterChain{chain(model.ChainMatch{DestPort: 443, Prefixes: meshNet})}, inMesh, false},
		{"server names on the port", []*model.FilterChain{chain(model.ChainMatch{DestPort: 443, ServerNames: []string{"a.example"}})}, inMesh, true},
		{"server names on another port", []*model.FilterChain{chain(model.ChainMatch{DestPort: 80, ServerNames: []string{"a.example"}})}, inMesh, false},
		{"server names on any port", []*model.FilterChain{chain(model.ChainMatch{ServerNames: []string{"a.example"}})}, inMesh, true},
		{"transport protocol in the range", []*model.FilterChain{chain(model.ChainMatch{Prefixes: meshNet, TransportProtocol: transportTLS})}, inMesh, true},
		{"transport protocol in the range, IPv4-mapped", []*model.FilterChain{chain(model.ChainMatch{Prefixes: meshNet, TransportProtocol: transportTLS})},
			netip.MustParseAddrPort("[::ffff:198.18.2.3]:443"), true},
		{"transport protocol outside the range", []*model.FilterChain{chain(model.ChainMatch{Prefixes: meshNet, TransportProtocol: transportTLS})},
			netip.MustParseAddrPort("192.0.2.1:443"), false},
		{"application protocols", []*model.FilterChain{chain(model.ChainMatch{DestPort: 443}), chain(model.ChainMatch{AppProtocols: []string{"http/1.1"}})}, inMesh, true},
	}
	for _, tc := range cases {
		if got := needsSniff(&model.Listener{Chains: tc.chains}, tc.dst); got != tc.want {
			t.Errorf("%s: needsSniff = %v, want %v", tc.name, got, tc.want)
		}
	}
}
