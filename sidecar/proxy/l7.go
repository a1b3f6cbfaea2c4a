package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	wm "github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/sidecar/balance"
	"github.com/weftmesh/weft/sidecar/l7"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// The HTTP-aware data plane ([l7], docs/l7.md) wired to the configuration.
//
// Client side: a connection on an in-mesh chain whose target is a route
// configuration (an http_connection_manager without weft.egress metadata)
// is served by one l7.ConnServer for the whole proxy (HTTP/1.1 and h2c);
// each request is routed on the configuration current when it arrives
// (the connection keeps the chain it chose at accept: its route
// configuration's name), and forwarded by the l7.Forwarder over the
// route's weighted clusters. Each cluster with HTTP/2 and upstream TLS is
// an l7.Cluster: a balance.Balancer over its healthy endpoints and an
// l7.MeshTransport whose connections are dialled and handshaken as the L4
// path's (dial, handshakeUpstream), with ALPN h2; a request that switches
// protocols (WebSocket) gets a connection of its own, dialled and
// handshaken the same way without ALPN (Cluster.DialTunnel), which the
// server sidecar takes on the port's L4 chain. Each ejection of an
// endpoint by a cluster's balancer is counted in
// weft_sidecar_http_ejections_total{cluster}.
//
// Server side: a connection on an inbound chain whose target is a route
// configuration (inbound|<port>|h2) is served, after its mTLS handshake and
// the chain's connection-level RBAC, by the l7.Inbound of the route's
// cluster, which delivers each request to the app as the L4 path would
// deliver the connection (dial: from 127.0.0.6 / ::6 to the original
// destination, or to 127.0.0.1 for a loopback port), in HTTP/1.1 or h2c
// as the cluster's HTTP protocol says.
//
// State is kept by cluster name across configurations: a balancer keeps
// what it learned of endpoints that stay (their moving averages, their
// ejections) while its endpoints change; its transport keeps its pooled
// connections. It is brought up to date with the configuration the first
// time a request or a connection sees a new one; a cluster that is gone
// then has its idle connections closed (requests in flight finish).

// l7Engine is a proxy's HTTP data plane.
type l7Engine struct {
	p       *Proxy
	metrics *l7.Metrics
	fwd     *l7.Forwarder
	limits  l7.ServerLimits
	server  *l7.ConnServer // set by start

	snap atomic.Pointer[l7Snapshot]

	mu     sync.Mutex // over what follows and over building snapshots
	out    map[string]*meshCluster
	in     map[string]*appCluster
	closed bool
}

// l7Snapshot is a configuration with its routes made l7 routes.
type l7Snapshot struct {
	cfg    *model.Config
	routes map[*model.Route]*l7.Route
}

// meshCluster is an outbound cluster of HTTP/2 over mTLS.
type meshCluster struct {
	*meshConns
	c *l7.Cluster
}

// meshConns is what a cluster keeps whatever changes: its transport and
// the definition its dials read.
type meshConns struct {
	model atomic.Pointer[model.Cluster]
	tr    *l7.H2Transport
}

// appCluster is an inbound cluster delivering requests to the app.
type appCluster struct {
	model atomic.Pointer[model.Cluster]
	in    *l7.Inbound
	tr    [2]idleCloser // HTTP/1.1 (l7.AppH1), h2c (l7.AppH2C)
}

func newL7Engine(p *Proxy, reg *wm.Registry) (*l7Engine, error) {
	m, err := l7.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	e := &l7Engine{p: p, metrics: m, fwd: &l7.Forwarder{Rand: p.cfg.SplitRand},
		out: map[string]*meshCluster{}, in: map[string]*appCluster{}}
	e.limits = l7.ServerLimits{HeaderTimeout: p.cfg.HandshakeTimeout, IdleTimeout: max(p.cfg.IdleTimeout, 0), MaxHeaderBytes: maxRequestHead}
	return e, nil
}

// start serves the app's connections (Run, before it accepts).
func (e *l7Engine) start() {
	h := &l7.Handler{Route: e.route, Forwarder: e.fwd,
		Endpoint: func(r *http.Request) netip.AddrPort { return connOf(r).dst }, Metrics: e.metrics, Logger: e.p.log.With("l7", outbound)}
	e.server = l7.NewConnServer(h, e.limits, e.p.log.With("l7", outbound))
}

// shutdown asks the connections being served to finish (drain): HTTP/2
// GOAWAY, HTTP/1.1 closed after the response in progress; idle ones are
// closed now. It returns when they are done or ctx ends.
func (e *l7Engine) shutdown(ctx context.Context) {
	e.mu.Lock()
	var ins []*l7.Inbound
	for _, ac := range e.in {
		ins = append(ins, ac.in)
	}
	e.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { _ = e.server.Shutdown(ctx) })
	for _, in := range ins {
		wg.Go(func() { _ = in.Shutdown(ctx) })
	}
	wg.Wait()
}

// close stops everything (Run, once its connections are done).
func (e *l7Engine) close() {
	e.server.Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for name, mc := range e.out {
		mc.tr.CloseIdleConnections()
		delete(e.out, name)
	}
	for name, ac := range e.in {
		ac.close()
		delete(e.in, name)
	}
}

// idleCloser is an app transport.
type idleCloser interface {
	http.RoundTripper
	CloseIdleConnections()
}

func (ac *appCluster) close() {
	ac.in.Close()
	for _, tr := range ac.tr {
		tr.CloseIdleConnections()
	}
}

// current returns the snapshot of the current configuration, bringing the
// clusters up to date with it first if it is new.
func (e *l7Engine) current() *l7Snapshot {
	cfg := e.p.cfg.Config()
	if s := e.snap.Load(); s != nil && s.cfg == cfg {
		return s
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.snap.Load(); s != nil && s.cfg == cfg {
		return s
	}
	s := e.build(cfg)
	e.snap.Store(s)
	return s
}

// build brings the clusters up to date with cfg and makes its routes; e.mu
// is held.
func (e *l7Engine) build(cfg *model.Config) *l7Snapshot {
	s := &l7Snapshot{cfg: cfg, routes: map[*model.Route]*l7.Route{}}
	if cfg == nil || e.closed {
		return s
	}
	for name, cl := range cfg.Clusters {
		if cl.HTTP != model.HTTP2 || cl.UpstreamTLS == nil {
			continue
		}
		mc := e.out[name]
		switch {
		case mc == nil:
			mc = e.newMeshCluster(cl, nil)
		case !sameOutlier(mc.model.Load().Outlier, cl.Outlier):
			mc = e.newMeshCluster(cl, mc) // a balancer's outlier settings are fixed
		case budgetOf(cl.RetryBudget) != mc.c.Budget:
			mc = &meshCluster{meshConns: mc.meshConns, c: &l7.Cluster{Name: name, Balancer: mc.c.Balancer, Transport: mc.tr,
				Scheme: "https", Budget: budgetOf(cl.RetryBudget), DialTunnel: mc.c.DialTunnel}}
		}
		if old := e.out[name]; old != nil && !slices.Equal(old.model.Load().UpstreamTLS.SANs, cl.UpstreamTLS.SANs) {
			// Pooled connections were verified against the SANs of before.
			old.tr.CloseIdleConnections()
		}
		mc.model.Store(cl)
		mc.c.Balancer.Update(e.endpoints(cfg, cl))
		e.out[name] = mc
	}
	for name, mc := range e.out {
		if cl := cfg.Clusters[name]; cl == nil || cl.HTTP != model.HTTP2 || cl.UpstreamTLS == nil {
			mc.tr.CloseIdleConnections()
			delete(e.out, name)
		}
	}
	for name, ac := range e.in {
		if cl := cfg.Clusters[name]; cl == nil {
			// Connections being served keep their Inbound until they end.
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), e.p.cfg.DrainTimeout)
				defer cancel()
				_ = ac.in.Shutdown(ctx)
				ac.close()
			}()
			delete(e.in, name)
		}
	}
	for _, rc := range cfg.Routes {
		for _, vh := range rc.VirtualHosts {
			for _, mr := range vh.Routes {
				s.routes[mr] = e.route7(cfg, vh, mr)
			}
		}
	}
	return s
}

// route7 is a model route of cfg as the forwarder takes it; e.mu is held.
func (e *l7Engine) route7(cfg *model.Config, vh *model.VirtualHost, mr *model.Route) *l7.Route {
	r := &l7.Route{Name: cmp.Or(mr.Name, vh.Name), Timeout: mr.Timeout, ClusterNotFound: mr.ClusterNotFound}
	if rp := mr.Retry; rp != nil {
		r.Retry = l7.RetryPolicy{Retries: int(rp.NumRetries), PerTryTimeout: rp.PerTryTimeout, On: retryOn(rp.On),
			StatusCodes: slices.Clone(rp.StatusCodes)}
	}
	r.RequestHeaders, r.ResponseHeaders = headerMutation(mr.RequestHeaders), headerMutation(mr.ResponseHeaders)
	r.PathRewrite, r.HostRewrite = pathRewrite(mr.PathRewrite), mr.HostRewrite
	if rd := mr.Redirect; rd != nil {
		r.Redirect = &l7.Redirect{Status: rd.Status, Scheme: rd.Scheme, Host: rd.Host, Port: rd.Port, Path: rd.Path,
			PathRewrite: pathRewrite(rd.PathRewrite), StripQuery: rd.StripQuery}
	}
	for _, wc := range mr.Clusters {
		// Missing only where the route says what to answer for it: a
		// cluster that is absent for a moment (routes and clusters
		// arrive as separate responses) takes no share, as before.
		b := l7.Backend{Weight: wc.Weight, Missing: mr.ClusterNotFound != 0 && cfg.Clusters[wc.Name] == nil}
		if mc := e.out[wc.Name]; mc != nil {
			b.Cluster = mc.c
		}
		// A cluster that is not HTTP/2 over mTLS gets no requests: the
		// split goes to the others, and with none 503 no_backend. On a
		// route with cluster_not_found_response_code, a cluster the
		// configuration does not have takes its share, answered with it.
		r.Backends = append(r.Backends, b)
	}
	return r
}

// headerMutation is a route's header mutation as the engine takes it.
func headerMutation(m model.HeaderMutation) l7.HeaderMutation {
	out := l7.HeaderMutation{Remove: slices.Clone(m.Remove)}
	for _, hv := range m.Add {
		out.Add = append(out.Add, l7.HeaderOption{Name: hv.Name, Value: hv.Value, Action: headerAction(hv.Action), KeepEmpty: hv.KeepEmpty})
	}
	return out
}

func headerAction(a model.AppendAction) l7.HeaderAction {
	switch a {
	case model.AddIfAbsent:
		return l7.AddIfAbsent
	case model.OverwriteIfExistsOrAdd:
		return l7.OverwriteOrAdd
	case model.OverwriteIfExists:
		return l7.OverwriteIfExists
	}
	return l7.AppendOrAdd
}

func pathRewrite(p *model.PathRewrite) *l7.PathRewrite {
	if p == nil {
		return nil
	}
	return &l7.PathRewrite{Matched: p.Matched, Prefix: p.Prefix, Regex: p.Regex, Substitution: p.Substitution}
}

// retryOn maps Envoy's retry_on to the forwarder's conditions. What may
// have reached the app (reset, 5xx, per-try timeout) the forwarder retries
// only for idempotent methods, whatever the route says (docs/l7.md).
func retryOn(on model.RetryOn) l7.RetryOn {
	var r l7.RetryOn
	for _, m := range []struct {
		from model.RetryOn
		to   l7.RetryOn
	}{
		{model.RetryConnectFailure, l7.ConnectFailure},
		// Go's HTTP/2 transport retries a REFUSED_STREAM itself where it
		// can; what it gives up on is a reset to the forwarder.
		{model.RetryRefusedStream, l7.Reset},
		{model.RetryReset, l7.Reset},
		// Envoy's 5xx and gateway-error include connect failures and
		// resets.
		{model.Retry5xx, l7.Status5xx | l7.Reset | l7.ConnectFailure},
		{model.RetryGatewayError, l7.GatewayError | l7.Reset | l7.ConnectFailure},
		{model.RetryRetriableStatusCodes, l7.RetriableStatusCodes},
		{model.RetryUnavailable, l7.Unavailable},
	} {
		if on&m.from != 0 {
			r |= m.to
		}
	}
	return r
}

func sameOutlier(a, b *model.OutlierDetection) bool {
	return a == b || a != nil && b != nil && *a == *b
}

func outlierOf(o *model.OutlierDetection) balance.Outlier {
	if o == nil {
		return balance.Outlier{}
	}
	return balance.Outlier{Consecutive: int(o.Consecutive5xx), BaseEjection: o.BaseEjectionTime, MaxEjection: o.MaxEjectionTime,
		MaxEjectionPercent: int(o.MaxEjectionPercent), Interval: o.Interval}
}

// budgetOf is a cluster's retry budget; none is l7's default (Envoy's
// budget: 20 %, at least 3).
func budgetOf(b *model.RetryBudget) l7.Budget {
	if b == nil {
		return l7.DefaultBudget
	}
	return l7.Budget{Percent: b.BudgetPercent, MinConcurrent: int(b.MinRetryConcurrency)}
}

// newMeshCluster makes the state of cluster cl; from an older one it
// keeps the transport (its pooled connections) but not the balancer.
func (e *l7Engine) newMeshCluster(cl *model.Cluster, old *meshCluster) *meshCluster {
	mc := &meshCluster{}
	if old != nil {
		mc.meshConns = old.meshConns
	} else {
		conns := &meshConns{}
		conns.model.Store(cl)
		conns.tr = l7.MeshTransport(func(ctx context.Context, _, addr string) (*tls.Conn, error) {
			return e.p.dialMesh(ctx, conns.model.Load(), addr, []string{"h2"})
		})
		mc.meshConns = conns
	}
	name := cl.Name
	b := balance.New(balance.Config{Outlier: outlierOf(cl.Outlier), Clock: e.p.cfg.Clock,
		OnEject: func(addr netip.AddrPort, d time.Duration) {
			e.metrics.Ejected(name)
			e.p.log.Info("endpoint ejected", "cluster", name, "endpoint", addr.String(), "ejected_for", d)
		}})
	conns := mc.meshConns
	mc.c = &l7.Cluster{Name: cl.Name, Balancer: b, Transport: mc.tr, Scheme: "https", Budget: budgetOf(cl.RetryBudget),
		// A request that switches protocols (WebSocket) goes on an mTLS
		// connection of its own without ALPN h2: the server sidecar takes
		// it on the port's L4 chain and copies bytes to the app.
		DialTunnel: func(ctx context.Context, addr string) (net.Conn, error) {
			return e.p.dialMesh(ctx, conns.model.Load(), addr, nil)
		}}
	return mc
}

// endpoints are the addresses requests to cl may go to: its healthy
// endpoints, less the sidecar's own listeners.
func (e *l7Engine) endpoints(cfg *model.Config, cl *model.Cluster) []netip.AddrPort {
	eps := cl.StaticEndpoints
	if cl.Kind == model.KindEDS {
		eps = cfg.Endpoints[cl.Name]
	}
	var out []netip.AddrPort
	for _, ep := range eps {
		if ep.Health == model.Healthy && !e.p.selfDial(ep.Addr) {
			out = append(out, ep.Addr)
		}
	}
	return out
}

// route finds a request's route: the virtual host of its Host in the
// route configuration of its connection's chain, then the first route of
// it that matches; nil (404) when none does.
func (e *l7Engine) route(r *http.Request) *l7.Route {
	name := connOf(r).routeConfig
	s := e.current()
	if s.cfg == nil {
		return nil
	}
	rc := s.cfg.Routes[name]
	if rc == nil {
		return nil
	}
	vh := rc.Match(r.Host)
	if vh == nil {
		return nil
	}
	mr := vh.Route(model.RequestHead{Method: r.Method, Path: l7.Target(r), Header: r.Header})
	if mr == nil {
		return nil
	}
	return s.routes[mr]
}

// dialMesh connects to the server sidecar at addr, an endpoint of cl, and
// does the mTLS handshake as the L4 path does, offering ALPN alpn only (h2
// for the pooled HTTP/2 connections; none for a tunnel, which the server
// sidecar then takes on the port's L4 chain as it takes an L4 client
// sidecar's). Any failure is a connect failure: nothing was sent.
func (p *Proxy) dialMesh(ctx context.Context, cl *model.Cluster, addr string, alpn []string) (*tls.Conn, error) {
	a, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, &l7.ConnectError{Err: err}
	}
	if p.selfDial(a) {
		return nil, &l7.ConnectError{Err: fmt.Errorf("proxy: cluster %s would dial %s, the sidecar's own listener", cl.Name, a)}
	}
	timeout := cl.ConnectTimeout
	if timeout <= 0 {
		timeout = p.cfg.ConnectTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	up, err := p.dial(dctx, cl, a)
	cancel()
	if err != nil {
		return nil, &l7.ConnectError{Err: fmt.Errorf("proxy: cluster %s: %w", cl.Name, err)}
	}
	u := *cl.UpstreamTLS
	u.ALPN = alpn
	tc, _, r := p.handshakeUpstream(ctx, cl, &u, up, a, nil)
	if r != nil {
		p.m.hsFailures.With(outbound, r.reason).Inc()
		p.log.Info("mesh connection refused", "cluster", cl.Name, "endpoint", a.String(), "reason", r.reason, "err", r.err)
		return nil, &l7.ConnectError{Err: r}
	}
	return tc, nil
}

// app returns the state of inbound cluster cl, made on first use.
func (e *l7Engine) app(cl *model.Cluster) *appCluster {
	e.mu.Lock()
	defer e.mu.Unlock()
	ac := e.in[cl.Name]
	if ac == nil {
		ac = &appCluster{}
		dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
			a, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			c := ac.model.Load()
			timeout := cmp.Or(c.ConnectTimeout, e.p.cfg.ConnectTimeout)
			dctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return e.p.dial(dctx, c, a)
		}
		// The h2c app's connections are written by weft's HTTP/2 client
		// (a request it has whole in one Write), each Write bounded by
		// the write timeout.
		dialH2C := func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return boundedConn{Conn: c, d: max(e.p.cfg.WriteTimeout, 0),
				timedOut: func() { e.p.m.timeouts.With(inbound, timeoutWrite).Inc() }}, nil
		}
		ac.tr = [2]idleCloser{l7.NewAppH1(dial), l7.AppH2C(dialH2C)}
		ac.in = &l7.Inbound{HTTP1: ac.tr[0], H2C: ac.tr[1], Limits: e.limits, Metrics: e.metrics, Logger: e.p.log.With("l7", inbound),
			Authorize: e.p.authorizeRequest}
		if !e.closed {
			e.in[cl.Name] = ac
		}
	}
	ac.model.Store(cl)
	return ac
}

// outboundL7 serves a connection on an in-mesh HTTP chain: its requests
// are routed by fc's route configuration, one by one (l7Engine.route).
// h2c says the app's first bytes were HTTP/2's preface: weft's own HTTP/2
// server (l7/h2) then serves it, HTTP/1.1 net/http's server; either
// writes to the app through the meter, each Write bounded by the write
// timeout and counted as sent.
func (p *Proxy) outboundL7(fc *model.FilterChain, dst netip.AddrPort, down *prefixConn, h2c bool, cn *conn) (*forwarding, error) {
	if err := p.authorize(outbound, fc, "", dst.Port()); err != nil {
		return nil, p.refuse(outbound, cn, refused(reasonAuthzDenied, "%w", err))
	}
	p.l7.current() // a configuration that removed clusters closes them now
	cn.cluster = fc.Target.RouteConfig
	m := p.meter(down, cn)
	lc := l7Conn{routeConfig: fc.Target.RouteConfig, dst: dst}
	serve := p.l7.server.ServeConnWith
	if h2c {
		serve = p.l7.server.ServeH2CWith
	}
	return &forwarding{down: down, release: func() {}, meter: m, serve: func() { _ = serve(m, lc) }}, nil
}

// l7Conn is what the requests of an app's connection are served with:
// the route configuration of its chain, and where it was going (a request
// routed to a cluster with dst as an endpoint goes to dst).
type l7Conn struct {
	routeConfig string
	dst         netip.AddrPort
}

func connOf(r *http.Request) l7Conn {
	c, _ := l7.ConnValue(r).(l7Conn)
	return c
}

// inboundL7 serves an mTLS connection from peer on an inbound HTTP chain
// (its handshake and connection-level RBAC passed): its requests go to the
// app through the cluster of fc's route configuration.
func (p *Proxy) inboundL7(cfg *model.Config, fc *model.FilterChain, dst netip.AddrPort, tc *tls.Conn, peer spiffeid.ID,
	m *meteredConn, cn *conn) (*forwarding, error) {
	cl, r := inboundRouteCluster(cfg, fc)
	if r != nil {
		return nil, p.refuse(inbound, cn, r)
	}
	cn.cluster = cl.Name
	addrs, r := p.inboundUpstreams(cfg, cl, dst)
	if r != nil {
		return nil, p.refuse(inbound, cn, r)
	}
	p.l7.current()
	ac := p.l7.app(cl)
	// The Inbound is the cluster's, shared by the chains that deliver to
	// it; each connection carries its own chain's request rules.
	pr := l7.Peer{ID: peer, Dst: addrs[0], H2C: cl.HTTP == model.HTTP2, Value: newRequestAuthz(cfg, fc, dst.Port())}
	return &forwarding{down: tc, addr: addrs[0], release: func() {}, meter: m, serve: func() { _ = ac.in.ServeConn(tc, pr) }}, nil
}

// requestAuthz is what an inbound HTTP connection's requests are
// authorized by: the request rules (HTTPRBAC) of the chain that accepted
// it, as the current configuration has them — connections between
// sidecars are pooled and live long, so a policy change applies to the
// next request, not the next connection — and its destination port.
type requestAuthz struct {
	name string
	port uint16
	cur  atomic.Pointer[authzSnap]
}

type authzSnap struct {
	cfg *model.Config
	fc  *model.FilterChain
}

func newRequestAuthz(cfg *model.Config, fc *model.FilterChain, port uint16) *requestAuthz {
	a := &requestAuthz{name: fc.Name, port: port}
	a.cur.Store(&authzSnap{cfg: cfg, fc: fc})
	return a
}

// chain is the connection's chain in cfg, found by name; when cfg no
// longer has it as an HTTP chain, the connection keeps the rules it had.
func (a *requestAuthz) chain(cfg *model.Config) *model.FilterChain {
	s := a.cur.Load()
	if cfg == nil || s.cfg == cfg {
		return s.fc
	}
	fc := s.fc
	if cfg.Inbound != nil {
		if i := slices.IndexFunc(cfg.Inbound.Chains, func(c *model.FilterChain) bool { return c.Name == a.name && c.Target.RouteConfig != "" }); i >= 0 {
			fc = cfg.Inbound.Chains[i]
		}
	}
	a.cur.Store(&authzSnap{cfg: cfg, fc: fc})
	return fc
}

// authorizeRequest is the l7.Inbound's Authorize: the request rules of the
// chain that accepted the connection (l7.Peer.Value, requestAuthz), its
// DENY filters first, then its ALLOW filters, as the network filters are
// run. With rules, a path that cannot be compared as the app will see it
// is refused first (l7.CheckPath, 400); paths are compared decoded,
// without the query. A denial is counted in
// weft_sidecar_authz_denials_total as a connection's is.
func (p *Proxy) authorizeRequest(r *http.Request, peer l7.Peer) error {
	az, ok := peer.Value.(*requestAuthz)
	if !ok {
		return &l7.Denied{Policy: "no filter chain"} // never: every inbound connection carries one
	}
	fc := az.chain(p.cfg.Config())
	if len(fc.HTTPRBAC) > 0 {
		if err := l7.CheckPath(r); err != nil {
			p.log.Debug("request refused", "direction", inbound, "chain", fc.Name, "spiffe_id", peer.ID.String(), "path", r.RequestURI, "err", err)
			return err
		}
	}
	id := ""
	if !peer.ID.IsZero() {
		id = peer.ID.String()
	}
	// The chain's connection-level filters (on an h2 chain, the fail-closed
	// DENY-all of a rejected policy) as the current configuration has them:
	// a pooled connection outlives pushes, and its next request must not
	// pass a filter that would refuse the connection now.
	for _, action := range []model.RBACAction{model.RBACDeny, model.RBACAllow} {
		for _, f := range fc.RBAC {
			if f.Shadow || f.Action != action {
				continue
			}
			if ok, policy := f.Allows(id, az.port); !ok {
				p.m.denials.With(inbound, policy).Inc()
				p.log.Debug("request denied", "direction", inbound, "chain", fc.Name, "spiffe_id", id, "port", az.port,
					"action", action.String(), "policy", policy, "filter", "network")
				return &l7.Denied{Policy: policy}
			}
		}
	}
	for _, action := range []model.RBACAction{model.RBACDeny, model.RBACAllow} {
		for _, f := range fc.HTTPRBAC {
			if f.Action != action {
				continue
			}
			if ok, policy := f.AllowsRequest(id, az.port, r.Method, r.URL.Path); !ok {
				p.m.denials.With(inbound, policy).Inc()
				p.log.Debug("request denied", "direction", inbound, "chain", fc.Name, "spiffe_id", id, "port", az.port,
					"method", r.Method, "path", r.URL.Path, "action", action.String(), "policy", policy)
				return &l7.Denied{Policy: policy}
			}
		}
	}
	return nil
}

// inboundRouteCluster is the cluster an inbound HTTP chain delivers to:
// the one of the first route that takes every request ("/", no headers)
// in its route configuration (the contract's inbound|<port> has exactly
// that route, to inbound|<port>).
func inboundRouteCluster(cfg *model.Config, fc *model.FilterChain) (*model.Cluster, *refusal) {
	rc := cfg.Routes[fc.Target.RouteConfig]
	if rc == nil {
		return nil, refused("no_route", "proxy: chain %s: no route configuration %q", fc.Name, fc.Target.RouteConfig)
	}
	for _, vh := range rc.VirtualHosts {
		mr := vh.Route(model.RequestHead{Path: "/", Header: http.Header{}})
		if mr == nil || len(mr.Clusters) == 0 {
			continue
		}
		name := mr.Clusters[0].Name
		cl := cfg.Clusters[name]
		if cl == nil {
			return nil, refused("no_cluster", "proxy: chain %s: no cluster %q", fc.Name, name)
		}
		// A cluster that declares no HTTP protocol is sent HTTP/1.1,
		// Envoy's default (while a port turns HTTP, the chain may come
		// before its cluster's protocol: sidecar/xds crossCheck).
		return cl, nil
	}
	return nil, refused("no_route", "proxy: chain %s: route configuration %s has no route for every request", fc.Name, rc.Name)
}

// meteredConn is the downstream side of an HTTP connection served by the
// l7 engine, accounted as a byte-copied one is: bytes (the connection's
// and weft_sidecar_bytes_total; for an inbound connection, its TLS
// records), progress against IdleTimeout, and every write bounded by
// WriteTimeout.
type meteredConn struct {
	net.Conn
	cn       *conn
	in, out  *wm.Counter
	watch    atomic.Pointer[idleWatch] // set once established
	wt       time.Duration
	timedOut func()
}

func (p *Proxy) meter(c net.Conn, cn *conn) *meteredConn {
	i := dirIndex(cn.direction)
	return &meteredConn{Conn: c, cn: cn, in: p.m.bytesIn[i], out: p.m.bytesOut[i], wt: max(p.cfg.WriteTimeout, 0),
		timedOut: func() { p.m.timeouts.With(cn.direction, timeoutWrite).Inc() }}
}

// NetConn is the connection m accounts for (a tunnel's half-close shuts
// its sending half: sidecar/l7's closeWrite).
func (m *meteredConn) NetConn() net.Conn { return m.Conn }

func (m *meteredConn) Read(b []byte) (int, error) {
	n, err := m.Conn.Read(b)
	if n > 0 {
		m.cn.toUp.Add(int64(n))
		m.in.Add(uint64(n))
		m.watch.Load().touch()
	}
	return n, err
}

func (m *meteredConn) Write(b []byte) (int, error) {
	n, err := writeBounded(m.Conn, b, m.wt, m.watch.Load(), m.timedOut)
	if n > 0 {
		m.cn.toDown.Add(int64(n))
		m.out.Add(uint64(n))
	}
	return n, err
}
