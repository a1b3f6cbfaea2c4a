package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/api/audit"
	wm "github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/sidecar/capture"
	"github.com/weftmesh/weft/sidecar/dnsproxy"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// NameBinder tells whether a name may stand for an address (implemented
// by sidecar/dnsproxy.Names).
type NameBinder interface {
	Bind(ctx context.Context, name string, addr netip.Addr) dnsproxy.Binding
}

// Config configures a Proxy. Zero fields get the defaults in their comments.
type Config struct {
	// SVID is the pod's X.509-SVID and Bundle the trust bundle; both are
	// read per handshake, so rotation applies to the next connection.
	SVID   x509svid.Source
	Bundle x509bundle.Source
	// TrustDomain: inbound peers must be members of it.
	TrustDomain spiffeid.TrustDomain
	// Config returns the current xDS configuration (nil until the first
	// complete one). Each connection reads it once, when accepted, and
	// keeps the chain and cluster it chose: pushes never touch open
	// connections.
	Config func() *model.Config
	// Demand returns a current configuration holding a cluster that is
	// learnt on demand (model.Config.OnDemand, OnDemandChain), asking the
	// control plane for it if it is not held, and a release for when the
	// connection ends (sidecar/xds.Client.Demand). A connection to such a
	// cluster waits for it at most DemandTimeout (5s), then is refused
	// (reason "on_demand"): fail closed. Nil: a configuration that learns
	// clusters on demand refuses connections to clusters it lacks.
	Demand        func(ctx context.Context, cluster string) (cfg *model.Config, release func(), err error)
	DemandTimeout time.Duration
	// Destination returns a current configuration that decides a
	// connection to a destination looked up on demand
	// (model.Config.LookUp; sidecar/xds.Client.Destination): one holding
	// its destination listener, or one the control plane has answered has
	// none. A connection waits for it at most DemandTimeout, then is
	// refused (reason "on_demand"): never sent down the egress chains
	// undecided. Nil: a configuration that looks destinations up refuses
	// every outbound connection.
	Destination func(ctx context.Context, dst netip.AddrPort) (cfg *model.Config, release func(), err error)

	// InboundAddr is where capture redirects inbound TCP: ":15006", which
	// Go opens dual-stack ([::] taking IPv4 as well) where the pod has
	// IPv6 and as 0.0.0.0 where it has not.
	InboundAddr  string // ":15006"
	OutboundAddr string // "127.0.0.1:15001"
	// OutboundAddr6 is the outbound listener for the pod's IPv6 TCP,
	// which capture redirects to [::1]:15001 (loopback of the same family:
	// IPv4 127.0.0.1 cannot take it). Default "[::1]:15001" when
	// OutboundAddr is left to its default too, none when OutboundAddr is
	// set (tests listening on port 0 get no second listener); "-" opens
	// none. Where the pod has no IPv6 (disabled, or not in the kernel),
	// Run logs that and serves IPv4 alone; any other failure to listen
	// fails Run, as for OutboundAddr.
	OutboundAddr6 string
	AdminAddr     string // "127.0.0.1:15000"; "-" serves no admin endpoint
	// Pprof serves Go's profiles at /debug/pprof/ on the admin endpoint;
	// off unless set (the pod's weft.dev/pprof: "true").
	Pprof bool

	// OriginalDst returns where a redirected connection was going
	// (default capture.OriginalDst: SO_ORIGINAL_DST).
	OriginalDst func(*net.TCPConn) (netip.AddrPort, error)
	// Dial connects upstream (default net.Dialer.DialContext).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// LocalAddrs are the pod's own addresses: the only original
	// destinations inbound delivery dials, and what selfDial takes a
	// wildcard listener's address for. Default: the addresses of the
	// interfaces when Run starts (the sidecar shares the pod's network).
	LocalAddrs []netip.Addr
	// DialFrom connects upstream from the source address src, for
	// clusters that name one (the inbound clusters' 127.0.0.6 and ::6):
	// default net.Dialer with LocalAddr src.
	DialFrom func(ctx context.Context, network string, src netip.Addr, addr string) (net.Conn, error)
	// Names binds egress names to addresses (sidecar/dnsproxy.Names): a
	// connection an EgressPolicy rule allowed by SNI or Host is forwarded
	// only to an address that name resolves to for this pod. nil checks
	// nothing (weft-sidecar always sets it).
	Names NameBinder
	// Audit, if set, receives one event per egress connection (a chain
	// with "weft.egress" metadata) when it ends, forwarded or refused — on
	// an HTTP chain one per request: sidecar/audit.Recorder.Record.
	Audit func(audit.Event)

	Logger  *slog.Logger
	Clock   clock.Clock  // nil: the real clock; the drain timeout, accept backoff and idle sweeper run on it
	Metrics *wm.Registry // where the proxy's series go; nil: a private registry

	ConnectTimeout time.Duration // upstream connect, when the cluster sets none: 1s
	DrainTimeout   time.Duration // how long Run waits for open connections once ctx ends: 20s
	SniffTimeout   time.Duration // wait for a client's first byte before deciding it sends none: 200ms
	// HandshakeTimeout bounds everything before a connection is
	// established, counted from accept: its first bytes (sniffing), its
	// first HTTP request head, the TLS handshakes and the upstream
	// connect: 10s (Istio's connect timeout; Envoy's listener filters get
	// 15s). A later request head on an HTTP egress connection gets it too,
	// counted from the head's first byte (net/http's ReadHeaderTimeout).
	HandshakeTimeout time.Duration
	// IdleTimeout closes an established connection that moved no byte
	// either way (nothing read, no write completed) for that long: 1h,
	// Envoy's tcp_proxy and HTTP connection manager idle_timeout. A
	// keep-alive HTTP egress connection waiting for its next request is
	// idle too. Checked every IdleTimeout/8 (at least 10ms, at most 1m),
	// so such a connection closes within IdleTimeout and one such tick.
	// Negative: never.
	IdleTimeout time.Duration
	// WriteTimeout bounds each write to either side of an established
	// connection: a peer that stops reading for that long, with the
	// kernel's buffers full, has its connection closed: 5m (Envoy's
	// stream_idle_timeout; nginx's send_timeout is 60s, but an L4 proxy
	// carries consumers that legitimately pause). Negative: never.
	WriteTimeout time.Duration
	// MaxConnections caps the connections open through the proxy at once
	// (both directions); past it a new one is closed at accept. Default:
	// ConnectionsFor(MemoryLimit), so that that many connections, each in
	// its costliest state, fit the memory the sidecar runs under.
	// MaxPendingPerSource caps one source address's connections not yet
	// established (sniffing, handshaking): 128, so that a neighbour that
	// opens handshakes and stalls cannot take every descriptor, nor keep
	// other sources out. Both refusals count as reason "overload".
	MaxConnections      int
	MaxPendingPerSource int
	// MemoryLimit is the memory the sidecar runs under, in bytes: the Go
	// runtime's soft limit (internal/memtune: 90% of the container's
	// memory.max, or GOMEMLIMIT); 0 or less: none known. It sets
	// MaxConnections' default.
	MemoryLimit int64
	// SplitRand returns a uniform integer in [0, n) for the weighted
	// splits of HTTP routes (nil: math/rand/v2); tests fix its seed.
	SplitRand func(n int) int
	// IdleParkAfter is how long one direction of a connection is silent
	// before it gives up its goroutine and waits in the proxy's epoll set
	// (park.go): 1s; negative never parks.
	IdleParkAfter time.Duration
}

// What the connection cap is derived from (README, "The sidecar under
// abuse", has the measurements).
const (
	// MaxConnectionsCeiling is MaxConnections' default without a memory
	// limit, and its largest derived value.
	MaxConnectionsCeiling = 16384
	// MinConnections is the smallest derived MaxConnections, whatever the
	// memory limit: below it the sidecar would be of no use.
	MinConnections = 64
	// ConnMemory is what one connection may cost the sidecar (Go heap
	// and stacks) in its costliest state, with headroom: both of its
	// directions stuck in a write to a peer that stopped reading, through
	// mTLS, ~150 KB (TestStuckWritersFitMemoryLimit; one direction
	// stuck ~89 KB, BenchmarkConnMemory): each direction's copy buffer
	// held in the blocked write, crypto/tls's record buffers, the
	// goroutines. A ClientHello or request head being sniffed holds at
	// most maxSniff (128 KiB).
	ConnMemory = 192 << 10
	// MemoryReserve is what the sidecar keeps out of the memory limit for
	// everything but connections: the runtime, the xDS configuration,
	// the DNS proxy's names, the audit queue, the garbage collector's
	// slack.
	MemoryReserve = 24 << 20
)

// ConnectionsFor is the connection cap that fits a memory limit (bytes; 0
// or less: none): (limit - MemoryReserve) / ConnMemory, at least
// MinConnections and at most MaxConnectionsCeiling.
func ConnectionsFor(limit int64) int {
	if limit <= 0 {
		return MaxConnectionsCeiling
	}
	n := (limit - MemoryReserve) / ConnMemory
	return int(max(MinConnections, min(n, MaxConnectionsCeiling)))
}

// DefaultOutboundAddr6 is Config.OutboundAddr6's default.
const DefaultOutboundAddr6 = "[::1]:15001"

func (c *Config) defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	dur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.InboundAddr, ":15006")
	if c.OutboundAddr == "" {
		def(&c.OutboundAddr6, DefaultOutboundAddr6)
	}
	def(&c.OutboundAddr, "127.0.0.1:15001")
	def(&c.AdminAddr, "127.0.0.1:15000")
	dur(&c.ConnectTimeout, time.Second)
	dur(&c.DemandTimeout, 5*time.Second)
	dur(&c.DrainTimeout, 20*time.Second)
	dur(&c.SniffTimeout, 200*time.Millisecond)
	dur(&c.HandshakeTimeout, 10*time.Second)
	dur(&c.IdleTimeout, time.Hour)
	dur(&c.WriteTimeout, 5*time.Minute)
	if c.MaxConnections <= 0 {
		c.MaxConnections = ConnectionsFor(c.MemoryLimit)
	}
	if c.MaxPendingPerSource <= 0 {
		c.MaxPendingPerSource = 128
	}
	dur(&c.IdleParkAfter, time.Second)
	if c.OriginalDst == nil {
		c.OriginalDst = capture.OriginalDst
	}
	if c.Dial == nil {
		c.Dial = (&net.Dialer{}).DialContext
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Metrics == nil {
		c.Metrics = wm.NewRegistry()
	}
}

// Proxy is the sidecar's data plane: the inbound and outbound listeners and
// the admin endpoint.
type Proxy struct {
	cfg  Config
	log  *slog.Logger
	td   spiffeid.TrustDomain
	svid x509svid.Source
	m    *metrics
	reg  *registry
	lb   *balancer
	l7   *l7Engine // the HTTP data plane (l7.go)

	ready                         chan struct{}
	inAddr, outAddr, adminAddrNet net.Addr
	outAddr6                      net.Addr               // nil without an IPv6 outbound listener
	parker                        atomic.Pointer[parker] // while Run parks idle flows
	// idle closes idle connections (IdleTimeout); nil when it is off. Set
	// by Run before it accepts, swept by one goroutine of Run's.
	idle *idleSweeper
	// own are the proxy's listening addresses and local are this host's
	// (the pod's) addresses, set by Run before it accepts: selfDial.
	own   []netip.AddrPort
	local map[netip.Addr]bool

	open      atomic.Int64 // connections between accept and close
	pendingMu sync.Mutex
	pending   map[netip.Addr]int // per source: accepted, not yet established or refused
}

// reasonOverload is the refusal reason of a connection past
// MaxConnections or MaxPendingPerSource.
const reasonOverload = "overload"

// admit counts a new connection from src, or says why it must be closed.
func (p *Proxy) admit(src netip.Addr) string {
	if p.open.Add(1) > int64(p.cfg.MaxConnections) {
		p.open.Add(-1)
		return fmt.Sprintf("%d connections open (MaxConnections)", p.cfg.MaxConnections)
	}
	p.pendingMu.Lock()
	defer p.pendingMu.Unlock()
	if p.pending[src] >= p.cfg.MaxPendingPerSource {
		p.open.Add(-1)
		return fmt.Sprintf("%s has %d connections not yet established (MaxPendingPerSource)", src, p.cfg.MaxPendingPerSource)
	}
	if p.pending == nil {
		p.pending = map[netip.Addr]int{}
	}
	p.pending[src]++
	return ""
}

// settled ends src's pending count for one connection.
func (p *Proxy) settled(src netip.Addr) {
	p.pendingMu.Lock()
	if p.pending[src]--; p.pending[src] <= 0 {
		delete(p.pending, src)
	}
	p.pendingMu.Unlock()
}

// selfDial reports whether dialling addr would reach one of the proxy's
// own listeners: a connection whose original destination is the sidecar
// itself (podIP:15006, 127.0.0.1:15001) would otherwise be forwarded to
// itself, again and again.
func (p *Proxy) selfDial(addr netip.AddrPort) bool {
	a := addr.Addr().Unmap()
	for _, l := range p.own {
		if l.Port() != addr.Port() {
			continue
		}
		if l.Addr().Unmap() == a || l.Addr().IsUnspecified() && (a.IsLoopback() || a.IsUnspecified() || p.local[a]) {
			return true
		}
	}
	return false
}

// reasonLoop is the refusal reason of a connection that would reach the
// sidecar itself.
const reasonLoop = "loop"

// ParkedFlows is how many connection directions wait, idle, in the
// proxy's epoll set instead of on a goroutine of their own.
func (p *Proxy) ParkedFlows() int {
	if pk := p.parker.Load(); pk != nil {
		return pk.parkedFlows()
	}
	return 0
}

// New checks cfg and registers the proxy's metrics; Run serves.
func New(cfg Config) (*Proxy, error) {
	cfg.defaults()
	switch {
	case cfg.SVID == nil:
		return nil, errors.New("proxy: New: Config.SVID is nil")
	case cfg.Bundle == nil:
		return nil, errors.New("proxy: New: Config.Bundle is nil")
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("proxy: New: Config.TrustDomain is empty")
	case cfg.Config == nil:
		return nil, errors.New("proxy: New: Config.Config is nil")
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("proxy: New: metrics: %w", err)
	}
	p := &Proxy{
		cfg: cfg, log: cfg.Logger, td: cfg.TrustDomain, svid: svidSource{cfg.SVID}, m: m,
		reg: newRegistry(), lb: newBalancer(), ready: make(chan struct{}),
	}
	if p.l7, err = newL7Engine(p, cfg.Metrics); err != nil {
		return nil, fmt.Errorf("proxy: New: metrics: %w", err)
	}
	err = cfg.Metrics.NewGaugeFunc("weft_sidecar_parked_flows",
		"Directions of open connections idle long enough to wait in the proxy's epoll set instead of on a goroutine.",
		func() float64 { return float64(p.ParkedFlows()) })
	if err != nil {
		return nil, fmt.Errorf("proxy: New: metrics: %w", err)
	}
	return p, nil
}

// svidSource marks failures to get our own SVID, so that they are counted
// as such rather than blamed on the peer.
type svidSource struct{ x509svid.Source }

func (s svidSource) GetX509SVID() (*x509svid.SVID, error) {
	v, err := s.Source.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoSVID, err)
	}
	return v, nil
}

// Ready is closed once Run listens on every address.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// InboundAddr, OutboundAddr, OutboundAddr6 and AdminAddr are the bound
// addresses, valid once Ready is closed (AdminAddr is nil without an admin
// endpoint, OutboundAddr6 without an IPv6 outbound listener).
func (p *Proxy) InboundAddr() net.Addr   { return p.inAddr }
func (p *Proxy) OutboundAddr() net.Addr  { return p.outAddr }
func (p *Proxy) OutboundAddr6() net.Addr { return p.outAddr6 }
func (p *Proxy) AdminAddr() net.Addr     { return p.adminAddrNet }

// Connections lists the established connections (what /connections serves).
func (p *Proxy) Connections() []ConnInfo { return p.reg.snapshot() }

// Run listens and serves until ctx ends, then drains: it stops accepting,
// waits up to DrainTimeout for open connections to finish, closes those
// left and returns. It returns an error if a listener cannot be opened or
// fails.
func (p *Proxy) Run(ctx context.Context) error {
	var lc net.ListenConfig
	inL, err := lc.Listen(ctx, "tcp", p.cfg.InboundAddr)
	if err != nil {
		return fmt.Errorf("proxy: inbound listener %s: %w", p.cfg.InboundAddr, err)
	}
	outL, err := lc.Listen(ctx, "tcp", p.cfg.OutboundAddr)
	if err != nil {
		inL.Close()
		return fmt.Errorf("proxy: outbound listener %s: %w", p.cfg.OutboundAddr, err)
	}
	outL6, err := p.listenOutbound6(ctx, &lc)
	if err != nil {
		inL.Close()
		outL.Close()
		return err
	}
	closeOut := func() {
		outL.Close()
		if outL6 != nil {
			outL6.Close()
		}
	}
	var admin *http.Server
	var adminL net.Listener
	if p.cfg.AdminAddr != "-" {
		adminL, err = lc.Listen(ctx, "tcp", p.cfg.AdminAddr)
		if err != nil {
			inL.Close()
			closeOut()
			return fmt.Errorf("proxy: admin listener %s: %w", p.cfg.AdminAddr, err)
		}
		p.adminAddrNet = adminL.Addr()
		admin = &http.Server{Handler: p.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	}
	p.inAddr, p.outAddr = inL.Addr(), outL.Addr()
	for _, a := range []net.Addr{inL.Addr(), outL.Addr(), p.adminAddrNet} {
		if ta, ok := a.(*net.TCPAddr); ok {
			p.own = append(p.own, ta.AddrPort())
		}
	}
	if outL6 != nil {
		p.own = append(p.own, outL6.Addr().(*net.TCPAddr).AddrPort())
	}
	p.local = map[netip.Addr]bool{}
	for _, a := range p.cfg.LocalAddrs {
		p.local[a.Unmap()] = true
	}
	if addrs, err := net.InterfaceAddrs(); err == nil && p.cfg.LocalAddrs == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
					p.local[ip.Unmap()] = true
				}
			}
		}
	}

	// connCtx ends when drain gives up: it aborts dials and handshakes.
	connCtx, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	var accepters, handlers sync.WaitGroup
	env := pipeEnv{run: &handlers, idle: p.cfg.IdleParkAfter, write: max(p.cfg.WriteTimeout, 0)}
	var parked sync.WaitGroup
	if p.cfg.IdleParkAfter > 0 {
		pk, err := newParker()
		if err != nil {
			// Connections still work, each direction keeping its goroutine.
			p.log.Warn("idle connections will not be parked", "err", err)
		} else {
			env.park = pk
			p.parker.Store(pk)
			defer pk.close()
			parked.Go(func() {
				if err := pk.run(); err != nil {
					p.log.Error("parker stopped", "err", err)
				}
			})
		}
	}
	var swept sync.WaitGroup
	stopSweep := make(chan struct{})
	if p.cfg.IdleTimeout > 0 {
		p.idle = newIdleSweeper(p.cfg.Clock, p.cfg.IdleTimeout, func(cn *conn) {
			p.m.timeouts.With(cn.direction, timeoutIdle).Inc()
			p.log.Debug("connection idle: closing", "direction", cn.direction, "src", cn.src, "dst", cn.dst, "idle_timeout", p.cfg.IdleTimeout)
			cn.closeAll()
		})
		swept.Go(func() { p.idle.run(stopSweep) })
	}
	defer func() {
		close(stopSweep)
		swept.Wait()
	}()
	p.l7.start()
	defer p.l7.close()
	errs := make(chan error, 4)
	serve := func(l net.Listener, direction string) {
		// One write-timeout counter per listener, not a closure per
		// connection.
		env := env
		env.writeTimedOut = func() { p.m.timeouts.With(direction, timeoutWrite).Inc() }
		var backoff time.Duration
		for {
			c, err := l.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				// Out of file descriptors (EMFILE, ENFILE), or a connection
				// aborted before it was accepted: the listener is fine, and
				// the sidecar must stay up. Wait, longer each time, and
				// accept again (net/http's server does the same).
				p.m.acceptErrors.With(direction).Inc()
				if backoff == 0 {
					backoff = 5 * time.Millisecond
				} else {
					backoff = min(2*backoff, time.Second)
				}
				p.log.Warn("accept failed; retrying", "direction", direction, "listener", l.Addr().String(), "err", err, "retry_in", backoff)
				select {
				case <-p.cfg.Clock.After(backoff):
				case <-ctx.Done():
					return
				}
				continue
			}
			backoff = 0
			handlers.Go(func() { p.handle(connCtx, c.(*net.TCPConn), direction, env) })
		}
	}
	accepters.Go(func() { serve(inL, inbound) })
	accepters.Go(func() { serve(outL, outbound) })
	if outL6 != nil {
		p.outAddr6 = outL6.Addr()
		accepters.Go(func() { serve(outL6, outbound) })
	}
	if admin != nil {
		accepters.Go(func() {
			if err := admin.Serve(adminL); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("proxy: admin server: %w", err)
			}
		})
	}
	p.log.Info("listening", "inbound", p.inAddr.String(), "outbound", p.outAddr.String(), "outbound6", p.outAddr6, "admin", p.adminAddrNet,
		"max_connections", p.cfg.MaxConnections, "memory_limit", p.cfg.MemoryLimit)
	close(p.ready)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	// Drain: stop accepting, let open connections finish, then cut them.
	inL.Close()
	closeOut()
	open := p.reg.len()
	p.log.Info("draining", "open", open, "timeout", p.cfg.DrainTimeout)
	timer := p.cfg.Clock.NewTimer(p.cfg.DrainTimeout)
	// HTTP connections of the l7 engine are asked to finish: idle ones
	// close now, HTTP/2 ones get GOAWAY.
	l7ctx, l7stop := context.WithCancel(context.Background())
	var l7drain sync.WaitGroup
	l7drain.Go(func() { p.l7.shutdown(l7ctx) })
	select {
	case <-p.reg.emptied():
	case <-timer.C():
		left := p.reg.all()
		p.log.Warn("drain timeout: closing open connections", "open", len(left))
		abort()
		for _, c := range left {
			c.closeAll()
		}
	}
	timer.Stop()
	handlers.Wait()
	l7stop()
	l7drain.Wait()
	if env.park != nil {
		if err := env.park.shutdown(); err != nil {
			p.log.Error("stopping the parker", "err", err)
		}
		parked.Wait()
	}
	if admin != nil {
		admin.Close()
	}
	inL.Close()
	closeOut()
	accepters.Wait()
	return runErr
}

// listenOutbound6 opens the IPv6 outbound listener, or none: when
// OutboundAddr6 is "" or "-", and when the pod has no IPv6, which is
// logged (its IPv6 TCP, if any, is then refused).
func (p *Proxy) listenOutbound6(ctx context.Context, lc *net.ListenConfig) (net.Listener, error) {
	addr := p.cfg.OutboundAddr6
	if addr == "" || addr == "-" {
		return nil, nil
	}
	l, err := lc.Listen(ctx, "tcp", addr)
	switch {
	case err == nil:
		return l, nil
	case noIPv6(err):
		p.log.Info("no IPv6 outbound listener: the pod has no IPv6", "addr", addr, "err", err)
		return nil, nil
	}
	return nil, fmt.Errorf("proxy: outbound listener %s: %w", addr, err)
}

// noIPv6 tells the errors of a listen on an IPv6 address where IPv6 is
// off: EADDRNOTAVAIL when lo has no ::1 (net.ipv6.conf.*.disable_ipv6=1),
// EAFNOSUPPORT and EPROTONOSUPPORT when the kernel has no IPv6 at all.
func noIPv6(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EPROTONOSUPPORT)
}

// handle owns one accepted connection until it is established, then hands
// it to the two flows that forward it (started with env.run), the last of
// which finishes it. The goroutine that sniffed, dialled and handshook ends
// there, so an idle connection keeps only the flows' small stacks, and not
// even those once its flows park.
func (p *Proxy) handle(ctx context.Context, c *net.TCPConn, direction string, env pipeEnv) {
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	if why := p.admit(src); why != "" {
		c.Close()
		p.m.connFailures.With(direction, reasonOverload).Inc()
		p.log.Warn("connection refused at accept", "direction", direction, "src", c.RemoteAddr().String(), "reason", why)
		return
	}
	// handle returns once the connection is established (its flows
	// started) or refused: either way it is no longer pending.
	defer p.settled(src)
	cn := &conn{direction: direction, src: c.RemoteAddr().String(), start: p.cfg.Clock.Now()}
	cn.track(c)
	p.reg.add(cn)
	p.m.active.With(direction).Inc()
	p.m.total.With(direction).Inc()
	finish := func() {
		cn.closeAll()
		p.reg.remove(cn)
		p.m.active.With(direction).Dec()
		p.open.Add(-1)
	}
	// What the client does before its connection is established shares
	// one deadline from accept: inbound, sniffing, the TLS handshake (and
	// the connect to the app on loopback); outbound, sniffing and the
	// first HTTP request head (cn.by), the upstream connect and handshake
	// being bounded by their own timeouts. (Socket deadlines: wall time.)
	cn.by = time.Now().Add(p.cfg.HandshakeTimeout)
	var fw *forwarding
	var err error
	if direction == inbound {
		hctx, cancel := context.WithDeadline(ctx, cn.by)
		fw, err = p.inbound(hctx, c, cn)
		cancel()
	} else {
		fw, err = p.outbound(ctx, c, cn)
	}
	if err != nil {
		if !time.Now().Before(cn.by) {
			p.m.timeouts.With(direction, timeoutHandshake).Inc()
		}
		finish()
		p.log.Debug("connection refused", "direction", direction, "src", cn.src, "dst", cn.dst, "err", err)
		return
	}
	// Established: from here each write is bounded by WriteTimeout and
	// the whole connection by IdleTimeout (timeouts.go).
	var w *idleWatch
	if p.idle != nil {
		w = p.idle.watch(cn)
	}
	cn.mu.Lock()
	cn.watch = w
	cn.mu.Unlock()
	env.watch = w
	p.forward(cn, fw, env, func() {
		w.stop()
		finish()
	})
	w.start()
}

// refusal is why a connection was closed without being proxied: a label of
// weft_sidecar_connection_failures_total, or of
// weft_sidecar_handshake_failures_total when handshake is set.
type refusal struct {
	reason    string
	handshake bool
	err       error
}

func (r *refusal) Error() string { return r.reason + ": " + r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// refuse counts a refusal and returns it as an error.
func (p *Proxy) refuse(direction string, cn *conn, r *refusal) error {
	if r.handshake {
		p.m.hsFailures.With(direction, r.reason).Inc()
	} else {
		p.m.connFailures.With(direction, r.reason).Inc()
	}
	// The peer graph counts the refusals of a client by this sidecar (its
	// TLS, identity or policy said no), not a client that left by itself
	// or a sidecar that was not ready.
	if direction == inbound && (r.handshake && r.reason != reasonPeerClosed || r.reason == reasonAuthzDenied) {
		p.m.peers.byAddress(peerRefused, cn.src) // by address: peers.go
	}
	p.log.Info("connection refused", "direction", direction, "src", cn.src, "dst", cn.dst,
		"chain", cn.chain, "reason", r.reason, "err", r.err)
	return r
}

func refused(reason string, format string, args ...any) *refusal {
	return &refusal{reason: reason, err: fmt.Errorf(format, args...)}
}

// authorize runs the chain's RBAC filters for peer ("" for a plaintext
// peer) connecting to port: enforced DENY filters first, then enforced
// ALLOW filters; shadow filters only count and log what they would have
// done.
func (p *Proxy) authorize(direction string, fc *model.FilterChain, peer string, port uint16) error {
	for _, f := range fc.RBAC {
		if !f.Shadow {
			continue
		}
		if ok, policy := f.Allows(peer, port); !ok {
			p.m.shadowDenies.With(direction, policy).Inc()
			p.log.Info("shadow RBAC would deny", "direction", direction, "chain", fc.Name, "spiffe_id", peer, "port", port, "policy", policy)
		}
	}
	for _, action := range []model.RBACAction{model.RBACDeny, model.RBACAllow} {
		for _, f := range fc.RBAC {
			if f.Shadow || f.Action != action {
				continue
			}
			if ok, policy := f.Allows(peer, port); !ok {
				p.m.denials.With(direction, policy).Inc()
				who := peer
				if who == "" {
					who = "plaintext peer"
				}
				return &authzError{reason: reasonAuthzDenied, policy: policy,
					msg: fmt.Sprintf("proxy: RBAC %s of chain %s denies %s to port %d (policy %q)", action, fc.Name, who, port, policy)}
			}
		}
	}
	return nil
}

// dialUpstream connects to one of addrs (in order), trying the next once
// when a connect fails.
func (p *Proxy) dialUpstream(ctx context.Context, cl *model.Cluster, addrs []netip.AddrPort) (net.Conn, netip.AddrPort, error) {
	timeout := cl.ConnectTimeout
	if timeout <= 0 {
		timeout = p.cfg.ConnectTimeout
	}
	var errs []error
	for i, a := range addrs {
		if i == 2 {
			break
		}
		dctx, cancel := context.WithTimeout(ctx, timeout)
		c, err := p.dial(dctx, cl, a)
		cancel()
		if err == nil {
			return c, a, nil
		}
		errs = append(errs, err)
	}
	return nil, netip.AddrPort{}, fmt.Errorf("proxy: cluster %s: %w", cl.Name, errors.Join(errs...))
}
