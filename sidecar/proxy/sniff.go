package proxy

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/weftmesh/weft/sidecar/xds"
)

// Transport protocols as xDS filter_chain_match names them.
const (
	transportTLS = "tls"
	transportRaw = "raw_buffer"
)

// maxSniff bounds what sniffing buffers: a ClientHello (possibly spread
// over several records) or an HTTP/1 request line.
const maxSniff = 64 << 10

// sniffed is what the listener filters learned from a connection's first
// bytes, and those bytes, which are not consumed: they are replayed by
// prefixConn to whatever reads the connection next.
type sniffed struct {
	transport string   // transportTLS or transportRaw
	sni       string   // TLS server_name, lowercase
	appProtos []string // TLS ALPN, or "http/1.1", "http/1.0", "h2c" for plaintext HTTP
	prefix    []byte
}

// sniff reads the first bytes of c without consuming them. It waits up to
// first for the first byte (a client that sends nothing first, as in
// server-first protocols, is raw_buffer with nothing sniffed) and up to
// rest for the remainder of a ClientHello or HTTP request line. inspectTLS
// and inspectHTTP say which listener filters run; with neither, nothing is
// read.
func sniff(c net.Conn, inspectTLS, inspectHTTP bool, first, rest time.Duration) (sniffed, error) {
	s := sniffed{transport: transportRaw}
	if !inspectTLS && !inspectHTTP {
		return s, nil
	}
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 2048)
	_ = c.SetReadDeadline(time.Now().Add(first))
	n, err := readSome(c, &buf)
	if n == 0 {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return s, nil
		}
		return s, err
	}
	_ = c.SetReadDeadline(time.Now().Add(rest))
	for {
		s.prefix = buf
		done := true
		switch {
		case inspectTLS && buf[0] == recordTypeHandshake:
			hello, perr := parseClientHello(buf)
			switch {
			case errors.Is(perr, errShortHello):
				done = false
			case perr == nil:
				s.transport, s.sni, s.appProtos = transportTLS, hello.serverName, hello.alpn
			}
		case inspectHTTP && buf[0] != recordTypeHandshake:
			proto, complete := sniffHTTP(buf)
			if proto != "" {
				s.appProtos = []string{proto}
			}
			done = complete
		}
		if done || len(buf) >= maxSniff {
			return s, nil
		}
		if _, err := readSome(c, &buf); err != nil {
			// What arrived so far is all there is: decide on it.
			s.prefix = buf
			return s, nil
		}
	}
}

// readSome appends one Read's worth to *buf, growing it up to maxSniff.
func readSome(c net.Conn, buf *[]byte) (int, error) {
	b := *buf
	if len(b) == cap(b) {
		b = append(b, make([]byte, min(cap(b), maxSniff-len(b)))...)[:len(b)]
	}
	n, err := c.Read(b[len(b):cap(b)])
	*buf = b[:len(b)+n]
	return n, err
}

// sniffHTTP recognises an HTTP/1 request line or the HTTP/2 prior-knowledge
// preface in b. complete is false while more bytes could still change the
// answer.
func sniffHTTP(b []byte) (proto string, complete bool) {
	const preface = "PRI * HTTP/2.0\r\n"
	if bytes.HasPrefix([]byte(preface), b) {
		return "", false
	}
	if bytes.HasPrefix(b, []byte(preface)) {
		return "h2c", true
	}
	// method: 1-20 uppercase letters, then a space.
	i := 0
	for i < len(b) && i <= 20 && b[i] >= 'A' && b[i] <= 'Z' {
		i++
	}
	switch {
	case i == len(b) && i <= 20:
		return "", false
	case i == 0 || i > 20 || b[i] != ' ':
		return "", true
	}
	eol := bytes.IndexByte(b, '\n')
	if eol < 0 {
		return "", len(b) >= 8<<10
	}
	line := bytes.TrimSuffix(b[:eol], []byte("\r"))
	sp := bytes.LastIndexByte(line, ' ')
	switch string(line[sp+1:]) {
	case "HTTP/1.1":
		return "http/1.1", true
	case "HTTP/1.0":
		return "http/1.0", true
	}
	return "", true
}

// prefixConn replays the sniffed bytes before reading the connection
// itself.
type prefixConn struct {
	*net.TCPConn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil // the sniff buffer is garbage once replayed
		}
		return n, nil
	}
	return c.TCPConn.Read(b)
}

// takePrefix returns the bytes not yet replayed and forgets them.
func (c *prefixConn) takePrefix() []byte {
	p := c.prefix
	c.prefix = nil
	return p
}

// needsSniff reports whether any chain that could take a connection to dst
// depends on what sniffing finds (transport protocol, SNI, application
// protocols). When none does, the proxy does not wait for the client's
// first bytes, so server-first protocols are not delayed.
func needsSniff(l *xds.Listener, dst netip.AddrPort) bool {
	for _, fc := range l.Chains {
		m := fc.Match
		if m.DestPort != 0 && m.DestPort != dst.Port() {
			continue
		}
		if len(m.Prefixes) > 0 && !slices.ContainsFunc(m.Prefixes, func(p netip.Prefix) bool { return p.Contains(dst.Addr().Unmap()) }) {
			continue
		}
		if m.TransportProtocol != "" || len(m.ServerNames) > 0 || len(m.AppProtocols) > 0 {
			return true
		}
	}
	return false
}
