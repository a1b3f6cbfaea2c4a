package dnsproxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/weftmesh/weft/api/names"
	wm "github.com/weftmesh/weft/internal/metrics"
)

// Defaults of [Server].
const (
	DefaultPort        = names.SidecarDNSPort
	DefaultTimeout     = 5 * time.Second
	DefaultMaxInFlight = 256
	// tcpIdle closes a client's DNS-over-TCP connection that sent nothing
	// for this long (RFC 7766 suggests seconds).
	tcpIdle = 10 * time.Second
)

// Results of a query, the label of weft_sidecar_dns_queries_total.
const (
	resultAnswered  = "answered"       // the nameserver answered; the answer went back to the app
	resultMalformed = "malformed"      // not one well-formed query: dropped
	resultUpstream  = "upstream_error" // no nameserver answered in time: the app retries or fails as with any lost packet
	resultOverload  = "overload"       // MaxInFlight queries were outstanding: dropped
)

// Server forwards the pod's DNS to its nameservers and records the answers
// in Names.
type Server struct {
	Names     *Names
	Upstreams []netip.AddrPort // the pod's nameservers, port 53, in resolv.conf order
	// Timeout bounds one exchange with one nameserver (DefaultTimeout).
	Timeout time.Duration
	// MaxInFlight bounds the UDP queries being answered at once
	// (DefaultMaxInFlight).
	MaxInFlight int
	Logger      *slog.Logger
	// Dial opens the connection to a nameserver; nil is net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	once    sync.Once
	sem     chan struct{}
	queries *wm.CounterVec // transport, result
}

// Register adds the server's series to reg (weft_sidecar_dns_queries_total
// and weft_sidecar_dns_names); call it before serving.
func (s *Server) Register(reg *wm.Registry) error {
	q, err := reg.NewCounterVec("weft_sidecar_dns_queries_total",
		"DNS queries from the pod through the sidecar's proxy, by transport (udp, tcp) and result (answered, malformed, upstream_error, overload).",
		"transport", "result")
	if err != nil {
		return err
	}
	s.queries = q
	return reg.NewGaugeFunc("weft_sidecar_dns_names", "Names the sidecar holds addresses for (egress name binding).",
		func() float64 { return float64(s.Names.Len()) })
}

func (s *Server) init() {
	s.once.Do(func() {
		if s.Timeout <= 0 {
			s.Timeout = DefaultTimeout
		}
		if s.MaxInFlight <= 0 {
			s.MaxInFlight = DefaultMaxInFlight
		}
		if s.Logger == nil {
			s.Logger = slog.New(slog.DiscardHandler)
		}
		if s.Dial == nil {
			var d net.Dialer
			s.Dial = d.DialContext
		}
		s.sem = make(chan struct{}, s.MaxInFlight)
	})
}

func (s *Server) count(transport, result string) {
	if s.queries != nil {
		s.queries.With(transport, result).Inc()
	}
}

// ServeUDP answers queries arriving on pc until ctx ends or pc fails.
func (s *Server) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	s.init()
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if retry, err := readErr(ctx, "udp", err); !retry {
				return err
			}
			continue
		}
		q, ok := parseQuery(buf[:n])
		if !ok {
			s.count("udp", resultMalformed)
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			s.count("udp", resultOverload)
			continue
		}
		msg := append([]byte(nil), buf[:n]...)
		wg.Go(func() {
			defer func() { <-s.sem }()
			resp, err := s.exchange(ctx, "udp", q, msg)
			if err != nil {
				s.count("udp", resultUpstream)
				s.Logger.Debug("query unanswered", "name", q.name, "type", q.typ.String(), "err", err)
				return
			}
			s.count("udp", resultAnswered)
			_, _ = pc.WriteTo(resp, from)
		})
	}
}

// readErr sorts a failed read or accept: a timeout is retried, the end of
// ctx ends serving (nil), anything else is the listener's error.
func readErr(ctx context.Context, proto string, err error) (retry bool, _ error) {
	if ctx.Err() != nil {
		return false, nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true, nil
	}
	return false, fmt.Errorf("dnsproxy: %s: %w", proto, err)
}

// ServeTCP answers DNS over TCP (RFC 7766: two-byte length, then the
// message; several per connection) on l until ctx ends or l fails.
func (s *Server) ServeTCP(ctx context.Context, l net.Listener) error {
	s.init()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	defer func() {
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			if retry, err := readErr(ctx, "tcp", err); !retry {
				return err
			}
			continue
		}
		mu.Lock()
		open[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(open, c)
				mu.Unlock()
				c.Close()
			}()
			s.serveTCPConn(ctx, c)
		})
	}
}

func (s *Server) serveTCPConn(ctx context.Context, c net.Conn) {
	for ctx.Err() == nil {
		_ = c.SetReadDeadline(time.Now().Add(tcpIdle))
		msg, err := readTCPMsg(c)
		if err != nil {
			return
		}
		q, ok := parseQuery(msg)
		if !ok {
			s.count("tcp", resultMalformed)
			return // the stream cannot be trusted to be framed any more
		}
		resp, err := s.exchange(ctx, "tcp", q, msg)
		if err != nil {
			s.count("tcp", resultUpstream)
			return
		}
		s.count("tcp", resultAnswered)
		_ = c.SetWriteDeadline(time.Now().Add(s.Timeout))
		if err := writeTCPMsg(c, resp); err != nil {
			return
		}
	}
}

func readTCPMsg(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

func writeTCPMsg(w io.Writer, msg []byte) error {
	if len(msg) > 65535 {
		return errors.New("dnsproxy: message over 65535 bytes")
	}
	b := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(len(msg)))
	copy(b[2:], msg)
	_, err := w.Write(b)
	return err
}

// exchange asks the nameservers in order, over network ("udp" or "tcp"),
// under an ID of its own, and returns the first answer with the app's ID
// restored. A well-formed answer to q is recorded in Names.
func (s *Server) exchange(ctx context.Context, network string, q question, msg []byte) ([]byte, error) {
	if len(s.Upstreams) == 0 {
		return nil, errors.New("dnsproxy: no nameservers")
	}
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	out := append([]byte(nil), msg...)
	binary.BigEndian.PutUint16(out, id)
	var errs []error
	for _, up := range s.Upstreams {
		resp, err := s.ask(ctx, network, up, id, out)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, a := range addresses(q, resp) {
			s.Names.Record(q.name, a.addr, a.ttl)
		}
		binary.BigEndian.PutUint16(resp, q.id)
		return resp, nil
	}
	return nil, errors.Join(errs...)
}

// ask sends one query to one nameserver and waits for the response that
// carries id (other datagrams on the socket are ignored).
func (s *Server) ask(ctx context.Context, network string, up netip.AddrPort, id uint16, msg []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	c, err := s.Dial(ctx, network, up.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	if network == "tcp" {
		if err := writeTCPMsg(c, msg); err != nil {
			return nil, err
		}
		resp, err := readTCPMsg(c)
		if err != nil {
			return nil, err
		}
		if len(resp) < 12 || binary.BigEndian.Uint16(resp) != id {
			return nil, fmt.Errorf("dnsproxy: %s answered another query", up)
		}
		return resp, nil
	}
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if n >= 12 && binary.BigEndian.Uint16(buf) == id && buf[2]&0x80 != 0 {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}

// Listen opens UDP and TCP on one port of addr, as a DNS server listens.
// With port 0 (tests) the port UDP got may be taken for TCP: another is
// tried.
func Listen(addr string) (net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	tries := 1
	if port == "0" {
		tries = 20
	}
	var err error
	for range tries {
		var pc net.PacketConn
		pc, err = net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		var l net.Listener
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
	}
	return nil, nil, err
}
