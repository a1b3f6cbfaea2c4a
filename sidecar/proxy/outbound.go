package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/sidecar/egress"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// outbound serves a connection redirected to 15001: the original
// destination and the sniffed SNI / HTTP pick the chain; in-mesh chains get
// mTLS to a peer sidecar, egress chains go to the original destination, or
// nowhere.
func (p *Proxy) outbound(ctx context.Context, c *net.TCPConn, cn *conn) (*forwarding, error) {
	cfg := p.cfg.Config()
	if cfg == nil || cfg.Outbound == nil {
		return nil, p.refuse(outbound, cn, refused("no_config", "proxy: no outbound listener configured yet"))
	}
	dst, err := p.originalDst(c, cfg.Outbound)
	if err != nil {
		return nil, p.refuse(outbound, cn, refused("original_dst", "%w", err))
	}
	cn.dst = dst.String()
	if cfg.LookUp {
		next, r := p.lookUp(ctx, dst)
		if r != nil {
			return nil, p.refuse(outbound, cn, r)
		}
		cfg = next
	}
	// A destination's listener, if dst has one, is handed the connection.
	l := cfg.OutboundFor(dst)
	sn, err := sniffUntil(c, l.InspectTLS && needsSniff(l, dst), l.InspectHTTP && needsSniff(l, dst), p.cfg.SniffTimeout, cn.by)
	if err != nil {
		return nil, p.refuse(outbound, cn, refused(reasonPeerClosed, "proxy: sniff: %w", err))
	}
	fc := l.Match(dst, sn.transport, sn.sni, sn.appProtos)
	if fc == nil {
		return nil, p.refuse(outbound, cn, refused("no_chain", "proxy: no outbound filter chain for %s (%s, sni %q)", dst, sn.transport, sn.sni))
	}
	cn.chain = fc.Name
	down := newPrefixConn(c, sn.prefix)
	if fc.Target.RouteConfig != "" && fc.Egress == nil {
		// An in-mesh HTTP service port: request by request (l7.go).
		return p.outboundL7(fc, dst, down, slices.Contains(sn.appProtos, "h2c"), cn)
	}
	if fc.Target.RouteConfig != "" {
		return p.outboundHTTP(ctx, cfg, fc, dst, sn, down, cn)
	}
	// weft egress audit hook (sidecar/audit): one event per egress
	// connection, when it is refused or, once forwarded, when it ends.
	au := p.egressAudit(cfg, fc, dst, sn, down, cn)
	defer au.refused()
	if err := p.authorize(outbound, fc, "", dst.Port()); err != nil {
		return nil, p.refuse(outbound, cn, refused(reasonAuthzDenied, "%w", err))
	}
	if r := p.nameUnknown(cfg, fc, dst, sn, cn); r != nil {
		return nil, p.refuse(outbound, cn, r)
	}
	cfg, done, r := p.demand(ctx, cfg, fc, func(c *model.Config) *model.FilterChain {
		if l := c.OutboundFor(dst); l != nil {
			return l.Match(dst, sn.transport, sn.sni, sn.appProtos)
		}
		return nil
	})
	if r != nil {
		return nil, p.refuse(outbound, cn, r)
	}
	defer func() { done() }() // unless forwarded: then when the connection ends
	if r := p.bindName(ctx, cfg, fc, sn.sni, dst, fc.Target.Cluster, cn); r != nil {
		return nil, p.refuse(outbound, cn, r)
	}
	up, addr, r := p.connectUpstream(ctx, cfg, fc, fc.Target.Cluster, dst, cn)
	if r != nil {
		return nil, p.refuse(outbound, cn, r)
	}
	release := chain(au.onEnd(p.lb.acquire(addr)), done) // egress audit hook; the demanded cluster
	done = func() {}
	return &forwarding{down: down, up: up, addr: addr, release: release}, nil
}

// demand returns the configuration to connect through chain fc with: cfg,
// or, for an in-mesh chain whose cluster is learnt on demand and not in
// cfg, a newer one that holds it (Config.Demand), waited for at most
// DemandTimeout. done releases the cluster; call it when the connection
// ends. A cluster that does not come refuses the connection, and so does
// a newer configuration that matches the connection (match) to another
// chain than fc: what was decided on fc would not hold.
func (p *Proxy) demand(ctx context.Context, cfg *model.Config, fc *model.FilterChain, match func(*model.Config) *model.FilterChain) (_ *model.Config, done func(), _ *refusal) {
	if !cfg.OnDemand || !model.OnDemandChain(fc) || p.cfg.Demand == nil {
		return cfg, func() {}, nil
	}
	dctx, cancel := context.WithTimeout(ctx, p.cfg.DemandTimeout)
	defer cancel()
	start := p.cfg.Clock.Now()
	next, release, err := p.cfg.Demand(dctx, fc.Target.Cluster)
	if err != nil {
		// Its timeout, or the control plane's answer that it has no such
		// cluster (err says which).
		waited := p.cfg.Clock.Since(start).Round(time.Millisecond)
		p.log.Warn("outbound: cluster learnt on demand not obtained", "chain", fc.Name, "cluster", fc.Target.Cluster,
			"waited", waited, "err", err)
		return nil, nil, refused("on_demand", "proxy: chain %s: cluster %q not obtained after %v (at most %v): %w", fc.Name, fc.Target.Cluster,
			waited, p.cfg.DemandTimeout, err)
	}
	if next.Outbound != cfg.Outbound || !maps.Equal(next.Destinations, cfg.Destinations) {
		if !reflect.DeepEqual(match(next), fc) {
			release()
			return nil, nil, refused("on_demand", "proxy: chain %s changed while its cluster %q was learnt; the connection is refused, the next one takes the new chain",
				fc.Name, fc.Target.Cluster)
		}
	}
	return next, release, nil
}

// lookUp returns a configuration that decides a connection to dst, whose
// destination listener is looked up on demand (Config.Destination): the
// connection waits at most DemandTimeout, then is refused. Whatever
// decided it, the destination is released at once: the chain chosen
// holds what the connection uses (its cluster, demanded on its own).
func (p *Proxy) lookUp(ctx context.Context, dst netip.AddrPort) (*model.Config, *refusal) {
	if p.cfg.Destination == nil {
		return nil, refused("on_demand", "proxy: destination %s is looked up on demand and nothing looks it up", dst)
	}
	dctx, cancel := context.WithTimeout(ctx, p.cfg.DemandTimeout)
	defer cancel()
	start := p.cfg.Clock.Now()
	cfg, release, err := p.cfg.Destination(dctx, dst)
	if err != nil {
		waited := p.cfg.Clock.Since(start).Round(time.Millisecond)
		p.log.Warn("outbound: destination not looked up", "dst", dst, "waited", waited, "err", err)
		return nil, refused("on_demand", "proxy: destination %s not looked up after %v (at most %v): %w", dst, waited, p.cfg.DemandTimeout, err)
	}
	release()
	if cfg == nil || cfg.Outbound == nil {
		return nil, refused("no_config", "proxy: no outbound listener configured yet")
	}
	return cfg, nil
}

// chain returns a function that calls f, then g.
func chain(f, g func()) func() { return func() { f(); g() } }

// connectUpstream dials cluster clusterName for a connection to dst, and
// for a cluster with upstream TLS does the mTLS handshake with the peer
// sidecar.
func (p *Proxy) connectUpstream(ctx context.Context, cfg *model.Config, fc *model.FilterChain, clusterName string, dst netip.AddrPort, cn *conn) (net.Conn, netip.AddrPort, *refusal) {
	cl := cfg.Clusters[clusterName]
	if cl == nil {
		return nil, netip.AddrPort{}, refused("no_cluster", "proxy: chain %s: no cluster %q", fc.Name, clusterName)
	}
	cn.cluster = cl.Name
	addrs, r := p.upstreams(cfg, cl, dst)
	if r != nil {
		return nil, netip.AddrPort{}, r
	}
	up, addr, err := p.dialUpstream(ctx, cl, addrs)
	if err != nil {
		return nil, netip.AddrPort{}, refused("upstream_connect", "%w", err)
	}
	if cl.UpstreamTLS == nil {
		return up, addr, nil
	}
	tc, peer, r := p.handshakeUpstream(ctx, cl, bytesOnly(cl.UpstreamTLS), up, addr, cn.track)
	if r != nil {
		return nil, netip.AddrPort{}, r
	}
	cn.tls = newTLSInfo(tc.ConnectionState(), peer.String())
	return tc, addr, nil
}

// bytesOnly is u for a connection whose bytes are copied (tcp_proxy):
// without ALPN h2, so that the peer sidecar takes its L4 chain. A
// tcp_proxy chain meets an HTTP cluster while a Service port turns HTTP:
// its new cluster may arrive before the listener that routes its requests
// (sidecar/xds crossCheck).
func bytesOnly(u *model.UpstreamTLS) *model.UpstreamTLS {
	if !slices.Contains(u.ALPN, "h2") {
		return u
	}
	c := *u
	c.ALPN = slices.DeleteFunc(slices.Clone(u.ALPN), func(p string) bool { return p == "h2" })
	return &c
}

// handshakeUpstream originates mTLS as u says on up, a connection to the
// peer sidecar at addr of cluster cl (closed if the handshake fails):
// clientTLS, within HandshakeTimeout. track, if set, is given the TLS
// connection before the handshake starts (what drain closes).
func (p *Proxy) handshakeUpstream(ctx context.Context, cl *model.Cluster, u *model.UpstreamTLS, up net.Conn, addr netip.AddrPort,
	track func(net.Conn)) (*tls.Conn, spiffeid.ID, *refusal) {
	var peer spiffeid.ID
	tc := tls.Client(newCoalescer(up), p.clientTLS(u, &peer))
	if track != nil {
		track(tc)
	}
	hctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		up.Close()
		return nil, peer, &refusal{reason: failureReason(err), handshake: true,
			err: fmt.Errorf("proxy: outbound handshake with %s (cluster %s, peer %v): %w", addr, cl.Name, peer, err)}
	}
	p.m.handshakes.With(outbound).Inc()
	return tc, peer, nil
}

// maxRequestHead bounds the HTTP/1 request head an egress HTTP chain reads.
const maxRequestHead = 64 << 10

// outboundHTTP serves a plaintext HTTP/1 connection on an HTTP egress
// chain (httpegress.go): its first request is read and decided here, and
// the upstream dialled for it; the rest are decided one by one as they
// come (httpEgress.serve).
func (p *Proxy) outboundHTTP(ctx context.Context, cfg *model.Config, fc *model.FilterChain, dst netip.AddrPort, sn sniffed, down *prefixConn, cn *conn) (*forwarding, error) {
	st := &httpEgress{p: p, cfg: cfg, fc: fc, dst: dst, sn: sn, cn: cn, down: down, in: &headReader{r: down}}
	if len(sn.appProtos) == 0 || !strings.HasPrefix(sn.appProtos[0], "http/1") {
		ex := &httpExchange{start: cn.start, deny: &httpDenial{reason: "unsupported",
			err: fmt.Errorf("proxy: route configuration %s: only HTTP/1 requests are routed (got %v)", fc.Target.RouteConfig, sn.appProtos)}}
		st.emit(ex)
		return nil, p.refuse(outbound, cn, &refusal{reason: ex.deny.reason, err: ex.deny.err})
	}
	if err := p.authorize(outbound, fc, "", dst.Port()); err != nil {
		ex := &httpExchange{start: cn.start, deny: &httpDenial{reason: reasonAuthzDenied, err: err}}
		st.emit(ex)
		return nil, p.refuse(outbound, cn, refused(reasonAuthzDenied, "%w", err))
	}
	_ = down.SetReadDeadline(cn.by)
	head, rh, d := st.in.head()
	_ = down.SetReadDeadline(time.Time{})
	if d != nil {
		if d.status != 0 {
			writeHTTPError(down, d.status, d.body)
		} else {
			d.reason = "bad_request"
		}
		st.emit(&httpExchange{start: cn.start, host: rh.host, deny: d})
		return nil, p.refuse(outbound, cn, &refusal{reason: d.reason, err: d.err})
	}
	ex := st.decide(ctx, rh)
	ex.start = cn.start
	if ex.deny != nil {
		return nil, p.refuse(outbound, cn, st.refuseFirst(ex))
	}
	st.cluster = ex.cluster
	up, addr, r := p.connectUpstream(ctx, cfg, fc, ex.cluster, dst, cn)
	if r != nil {
		ex.deny = &httpDenial{status: http.StatusBadGateway, body: "weft: upstream connect failed\n", reason: r.reason, err: r.err}
		writeHTTPError(down, ex.deny.status, ex.deny.body)
		st.emit(ex)
		return nil, p.refuse(outbound, cn, r)
	}
	return &forwarding{down: down, up: up, addr: addr, release: p.lb.acquire(addr),
		http: &httpStart{st: st, first: ex, head: head, rh: rh}}, nil
}

// Results of an egress name binding (weft_sidecar_egress_name_bindings_total).
const (
	bindMismatchDenied  = "mismatch_denied"  // Enforce: the connection is refused
	bindMismatchFlagged = "mismatch_flagged" // Audit: forwarded, and its audit event says why
)

// reasonNameMismatch is the refusal reason (and the audit Reason's prefix)
// of a connection whose allowed name does not resolve to its destination.
const reasonNameMismatch = "name_mismatch"

// bindName holds a TLS connection that an EgressPolicy rule allowed by
// name (a chain matched on server_names) to an address the name resolves
// to for this pod (bindCheck): otherwise refused under Enforce, flagged
// under Audit. HTTP requests are bound one by one (httpEgress.decide).
func (p *Proxy) bindName(ctx context.Context, cfg *model.Config, fc *model.FilterChain, name string, dst netip.AddrPort, clusterName string, cn *conn) *refusal {
	why, meta := p.bindCheck(ctx, cfg, fc, nil, egress.Name(name), dst, clusterName)
	if why == "" {
		return nil
	}
	cn.mu.Lock()
	cn.egressReason = reasonNameMismatch + ": " + why
	cn.mu.Unlock()
	if meta.Mode == "Audit" {
		p.m.bindings.With(bindMismatchFlagged).Inc()
		p.log.Warn("egress name does not match the destination (Audit: forwarded)", "src", cn.src, "dst", cn.dst, "name", name, "policy", meta.Policy, "reason", why)
		return nil
	}
	p.m.bindings.With(bindMismatchDenied).Inc()
	return refused(reasonNameMismatch, "proxy: egress allowed for %s by %s rule %s, but %s", name, meta.Policy, meta.Rule, why)
}

// bindCheck checks a connection (or request) that an EgressPolicy rule
// allowed by name — a TLS chain matched on server_names, or the HTTP
// virtual host vh of named domains — against the addresses the name
// resolves to for this pod (Config.Names). It returns "" when the name
// binds to dst's address or nothing is to check (decided without a name,
// by address, by the default verdict, denied anyway, or not forwarded to
// the address the app chose); else why not, and the deciding rule's
// metadata.
func (p *Proxy) bindCheck(ctx context.Context, cfg *model.Config, fc *model.FilterChain, vh *model.VirtualHost, name string, dst netip.AddrPort,
	clusterName string) (string, *model.EgressMeta) {
	meta, named := fc.Egress, len(fc.Match.ServerNames) > 0
	if vh != nil {
		if vh.Egress != nil {
			meta = vh.Egress
		}
		named = !slices.Contains(vh.Domains, "*")
	}
	if p.cfg.Names == nil || meta == nil || !named || meta.Decision != "allow" {
		return "", nil
	}
	if cl := cfg.Clusters[clusterName]; cl == nil || cl.Kind != model.KindOriginalDst {
		return "", nil
	}
	if ns, svc, ok := strings.Cut(meta.Service, "/"); ok {
		// A name of an ExternalName Service, decided as the name it points
		// at: bound to what the cluster DNS answers for the Service (its
		// CNAME, then the target's records), not to what the name sent
		// resolves to (<svc>.<ns> may be a public name anyone can answer).
		name = svc + "." + ns + ".svc." + names.ClusterDomain
	}
	b := p.cfg.Names.Bind(ctx, name, dst.Addr())
	if b.Bound {
		p.m.bindings.With(string(b.Source)).Inc()
		return "", nil
	}
	why := fmt.Sprintf("%s does not resolve to %s for this pod", name, dst.Addr())
	switch {
	case len(b.Known) > 0:
		why += fmt.Sprintf(" (it resolves to %v)", b.Known)
	case b.Err != nil:
		why += fmt.Sprintf(" (%v)", b.Err)
	}
	return why, meta
}

// requestHost returns the Host of an HTTP/1 request head as net/http's
// server has it (parseRequestHead: the request-target's authority for
// absolute-form and CONNECT requests, else the Host header).
func requestHost(head []byte) (string, bool) {
	h, err := parseRequestHead(head)
	if err != nil || h.host == "" {
		return "", false
	}
	return h.host, true
}

func writeHTTPError(c net.Conn, status int, body string) {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}

// egressAuditor emits the audit event of one egress connection exactly
// once (egress audit hook, Config.Audit): refused emits the event of a
// connection refused before forwarding (deferred by outbound); onEnd wraps
// the forwarding's release, which runs when both directions are done.
type egressAuditor struct {
	once      sync.Once
	emit      func(host string)
	down      *prefixConn // its prefix holds the HTTP request head until forwarding replays it
	forwarded bool
}

// egressAudit returns nil (a no-op auditor) unless fc is an egress chain
// and Config.Audit is set.
func (p *Proxy) egressAudit(cfg *model.Config, fc *model.FilterChain, dst netip.AddrPort, sn sniffed, down *prefixConn, cn *conn) *egressAuditor {
	if fc.Egress == nil || p.cfg.Audit == nil {
		return nil
	}
	return &egressAuditor{down: down, emit: func(host string) {
		cn.mu.Lock()
		f := egressFacts{start: cn.start, reason: cn.egressReason, override: cn.nameUnknown}
		cn.mu.Unlock()
		f.sent, f.received = cn.toUp.Load(), cn.toDown.Load()
		p.cfg.Audit(egressEvent(cfg, fc, dst, sn, host, f, p.cfg.Clock.Since(cn.start)))
	}}
}

func (a *egressAuditor) refused() {
	if a != nil && !a.forwarded {
		host := headHost(a.down.prefix)
		a.once.Do(func() { a.emit(host) })
	}
}

func (a *egressAuditor) onEnd(release func()) func() {
	if a == nil {
		return release
	}
	a.forwarded = true
	host := headHost(a.down.prefix) // before forwarding consumes the head
	return func() {
		release()
		a.once.Do(func() { a.emit(host) })
	}
}

// headHost is the Host of a complete HTTP/1 request head, or "".
func headHost(head []byte) string {
	h, _ := requestHost(head)
	return h
}

// egressFacts is what an egress event records beyond the chain: when it
// started, why a rule's decision was overridden (reason: name_mismatch,
// name_unknown; override: the decision that holds instead), and its bytes.
type egressFacts struct {
	start          time.Time
	reason         string
	override       *egress.Decision
	sent, received int64
}

// egressEvent describes an egress connection (or, on an HTTP chain, one
// request): the decision is read off the chain and, for HTTP chains, the
// virtual host of the request's Host.
func egressEvent(cfg *model.Config, fc *model.FilterChain, dst netip.AddrPort, sn sniffed, host string, f egressFacts, d time.Duration) audit.Event {
	e := audit.Event{Time: f.start, DstIP: dst.Addr().Unmap(), DstPort: dst.Port(), SNI: sn.sni, Protocol: audit.ProtocolTCP,
		Chain: fc.Name, BytesSent: f.sent, BytesReceived: f.received, Duration: d}
	switch {
	case sn.transport == transportTLS:
		e.Protocol = audit.ProtocolTLS
	case len(sn.appProtos) > 0:
		e.Protocol, e.Host = audit.ProtocolHTTP, host
	}
	dec := egress.ForChain(cfg, fc, e.Host)
	e.DstHost = cmp.Or(dec.Host, egress.Name(e.SNI), egress.HostName(e.Host))
	e.Service = dec.Service
	e.Decision, e.Policy, e.Rule, e.Outbound = dec.Action.String(), dec.Policy, dec.Rule, dec.Outbound
	e.Reason = f.reason
	if e.Reason != "" && f.override == nil && dec.Action == egress.Allow { // the name did not bind (bindName)
		e.Decision = egress.Deny.String()
		if mode := egressMode(cfg, fc, e.Host); mode == "Audit" {
			e.Decision = egress.Audit.String()
		}
	}
	if o := f.override; o != nil {
		e.Decision, e.Policy, e.Rule, e.Outbound = o.Action.String(), o.Policy, o.Rule, o.Outbound
	}
	return e
}

// egressMode is the mode of the rule that decided a connection on chain fc
// (for an HTTP chain, host's virtual host): "Enforce", "Audit" or "".
func egressMode(cfg *model.Config, fc *model.FilterChain, host string) string {
	meta := fc.Egress
	if rc := cfg.Routes[fc.Target.RouteConfig]; rc != nil {
		if vh := rc.Match(egress.HostName(host)); vh != nil && vh.Egress != nil {
			meta = vh.Egress
		}
	}
	if meta == nil {
		return ""
	}
	return meta.Mode
}
