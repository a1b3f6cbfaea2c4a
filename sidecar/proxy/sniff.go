package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/rawio"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Transport protocols as xDS filter_chain_match names them.
const (
	transportTLS = "tls"
	transportRaw = "raw_buffer"
)

// maxSniff bounds what sniffing buffers: a ClientHello of up to
// crypto/tls's 64 KiB message, spread over as many records as the client
// likes (each adds a 5-byte header), or an HTTP/1 request line of up to
// maxRequestHead. A hello that does not fit is a connection whose name is
// unknown.
const maxSniff = 2 * maxHandshakeMsg

// sniffed is what the listener filters learned from a connection's first
// bytes, and those bytes, which are not consumed: they are replayed by
// prefixConn to whatever reads the connection next.
type sniffed struct {
	transport string   // transportTLS or transportRaw
	sni       string   // TLS server_name, lowercase
	appProtos []string // TLS ALPN, or "http/1.1", "http/1.0", "h2c" for plaintext HTTP
	prefix    []byte
	// unknown says why the first bytes name no destination: "" for a
	// ClientHello with a server_name that can be trusted, and for an
	// HTTP/1 request (its Host is read once an HTTP chain routes it).
	unknown string
}

// sniff reads the first bytes of c without consuming them. It waits up to
// first for the first byte (a client that sends nothing first, as in
// server-first protocols, is raw_buffer with nothing sniffed), and all of
// it, the remainder of a ClientHello or HTTP request line included, takes
// rest at most from the call (the inbound listener's caller adds the TLS
// handshake under the same deadline, from accept). inspectTLS
// and inspectHTTP say which listener filters run; with neither, nothing is
// read.
//
// A ClientHello is read as crypto/tls's server reads one (over several
// TCP segments and several records, warning alerts skipped), an HTTP/1
// request line as net/http's server reads one (after any empty lines,
// any token as method, up to maxRequestHead long); each new read examines
// only the new bytes. Bytes that could still become a request line but
// are followed by a pause of first are decided as not HTTP (a client-first
// protocol waiting for an answer). unknown says why no name was learned.
func sniff(c net.Conn, inspectTLS, inspectHTTP bool, first, rest time.Duration) (sniffed, error) {
	return sniffUntil(c, inspectTLS, inspectHTTP, first, time.Now().Add(rest))
}

// sniffInitial is the sniff buffer's first size, allocated once the first
// byte has arrived; it doubles as bytes come, up to maxSniff.
const sniffInitial = 2048

// sniffUntil is sniff with the whole of it bounded by deadline (the
// connection's HandshakeTimeout, counted from accept). Nothing is
// buffered before the client's first byte: the wait for it holds one
// byte, so a connection that opens and sends nothing costs its socket and
// goroutine only.
func sniffUntil(c net.Conn, inspectTLS, inspectHTTP bool, first time.Duration, deadline time.Time) (sniffed, error) {
	s := sniffed{transport: transportRaw}
	if !inspectTLS && !inspectHTTP {
		return s, nil
	}
	defer c.SetReadDeadline(time.Time{})
	firstBy := time.Now().Add(first)
	if deadline.Before(firstBy) {
		firstBy = deadline
	}
	_ = c.SetReadDeadline(firstBy)
	var one [1]byte
	n, err := c.Read(one[:])
	if n == 0 {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			s.unknown = fmt.Sprintf("nothing sent within %v", first)
			return s, nil
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return s, err
	}
	buf := append(make([]byte, 0, sniffInitial), one[0])
	_ = c.SetReadDeadline(deadline)
	var hr helloReader
	var req httpScan
	for {
		s.prefix = buf
		done, hello := true, false
		switch {
		case inspectTLS && (buf[0] == recordTypeHandshake || buf[0] == recordTypeAlert):
			h, perr := hr.read(buf)
			switch {
			case errors.Is(perr, errShortHello):
				done, hello = false, true
				s.unknown = fmt.Sprintf("ClientHello incomplete after %d bytes", len(buf))
			case perr != nil:
				s.unknown = "not a ClientHello: " + strings.TrimPrefix(perr.Error(), "proxy: ClientHello: ")
			default:
				s.transport, s.sni, s.appProtos, s.unknown = transportTLS, h.serverName, h.alpn, ""
				switch {
				case h.ech:
					s.unknown = fmt.Sprintf("ClientHello with encrypted_client_hello (outer server_name %q)", h.serverName)
				case h.badName != "":
					s.unknown = h.badName
				case h.serverName == "":
					s.unknown = "ClientHello without server_name"
				}
			}
		case inspectHTTP:
			proto, complete := req.scan(buf)
			s.unknown = ""
			switch {
			case proto == "h2c":
				s.appProtos = []string{proto}
				s.unknown = "HTTP/2 prior knowledge (h2c): no Host read"
			case proto != "":
				s.appProtos = []string{proto}
			case complete:
				s.unknown = "neither a TLS ClientHello nor an HTTP request: " + req.why
			default:
				s.unknown = fmt.Sprintf("HTTP request line incomplete after %d bytes", len(buf))
			}
			done = complete
		default:
			s.unknown = "not a TLS ClientHello"
		}
		if !done && len(buf) >= maxSniff {
			s.unknown += fmt.Sprintf(" (sniffing stops at %d bytes)", maxSniff)
			return s, nil
		}
		if done {
			return s, nil
		}
		// A ClientHello has until the deadline. What could still be an
		// HTTP request line but is not one yet (a word without a space)
		// is as likely a client-first protocol waiting for an answer: a
		// pause of first decides it as not HTTP, so such protocols are not
		// held up. Either way the connection has no name then.
		idle := !hello && time.Until(deadline) > first
		if idle {
			_ = c.SetReadDeadline(time.Now().Add(first))
		}
		_, err := readSome(c, &buf)
		if idle {
			_ = c.SetReadDeadline(deadline)
		}
		if err != nil {
			// What arrived so far is all there is: decide on it.
			s.prefix = buf
			s.unknown += fmt.Sprintf(" (then %s)", readEnd(err, idle, first))
			return s, nil
		}
	}
}

// readEnd says how a read that ended sniffing ended.
func readEnd(err error, idle bool, first time.Duration) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout() && idle:
		return fmt.Sprintf("silent for %v", first)
	case errors.As(err, &ne) && ne.Timeout():
		return "stalled past the sniff deadline"
	case errors.Is(err, io.EOF):
		return "the client stopped sending"
	}
	return err.Error()
}

// readSome appends one Read's worth to *buf, doubling it when full up to
// maxSniff exactly (append would round the capacity up past it, and a read
// would then fill the excess).
func readSome(c net.Conn, buf *[]byte) (int, error) {
	b := *buf
	if len(b) == cap(b) {
		b = append(make([]byte, 0, min(2*cap(b), maxSniff)), b...)
	}
	n, err := c.Read(b[len(b):cap(b)])
	*buf = b[:len(b)+n]
	return n, err
}

// prefixConn replays the sniffed bytes before reading the connection
// itself. Its reads and writes are internal/rawio's: system calls that do
// not wake the runtime's monitor thread.
type prefixConn struct {
	*net.TCPConn
	raw    net.Conn // TCPConn with rawio's Read and Write
	prefix []byte
}

func newPrefixConn(c *net.TCPConn, prefix []byte) *prefixConn {
	return &prefixConn{TCPConn: c, raw: rawio.Wrap(c), prefix: prefix}
}

func (c *prefixConn) Write(b []byte) (int, error) { return c.raw.Write(b) }

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil // the sniff buffer is garbage once replayed
		}
		return n, nil
	}
	return c.raw.Read(b)
}

// WriteTo copies the connection to w through Read: the prefix, then the
// socket with rawio's reads. It hides the embedded *net.TCPConn's WriteTo,
// which io.Copy would prefer and which reads the socket itself, past the
// bytes not yet replayed.
func (c *prefixConn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
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
func needsSniff(l *model.Listener, dst netip.AddrPort) bool {
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
