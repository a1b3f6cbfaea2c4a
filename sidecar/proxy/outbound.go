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
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/sidecar/egress"
	"github.com/weftmesh/weft/sidecar/xds"
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
	l := cfg.Outbound
	dst, err := p.originalDst(c, l)
	if err != nil {
		return nil, p.refuse(outbound, cn, refused("original_dst", "%w", err))
	}
	cn.dst = dst.String()
	sn, err := sniff(c, l.InspectTLS && needsSniff(l, dst), l.InspectHTTP && needsSniff(l, dst), p.cfg.SniffTimeout, p.cfg.HandshakeTimeout)
	if err != nil {
		return nil, p.refuse(outbound, cn, refused(reasonPeerClosed, "proxy: sniff: %w", err))
	}
	fc := l.Match(dst, sn.transport, sn.sni, sn.appProtos)
	if fc == nil {
		return nil, p.refuse(outbound, cn, refused("no_chain", "proxy: no outbound filter chain for %s (%s, sni %q)", dst, sn.transport, sn.sni))
	}
	cn.chain = fc.Name
	down := &prefixConn{TCPConn: c, prefix: sn.prefix}
	// weft egress audit hook (sidecar/audit): one event per egress
	// connection, when it is refused or, once forwarded, when it ends.
	au := p.egressAudit(cfg, fc, dst, sn, down, cn)
	defer au.refused()
	if err := p.authorize(outbound, fc, "", dst.Port()); err != nil {
		return nil, p.refuse(outbound, cn, refused(reasonAuthzDenied, "%w", err))
	}

	clusterName := fc.Target.Cluster
	var vh *xds.VirtualHost
	name := sn.sni
	if rcName := fc.Target.RouteConfig; rcName != "" {
		var r *refusal
		clusterName, vh, name, r = p.routeHTTP(cfg, rcName, fc.Target.StripAnyHostPort, down, sn)
		if r != nil {
			return nil, p.refuse(outbound, cn, r)
		}
	}
	if r := p.nameUnknown(cfg, fc, dst, sn, cn); r != nil {
		return nil, p.refuse(outbound, cn, r)
	}
	if r := p.bindName(ctx, cfg, fc, vh, name, dst, clusterName, down, cn); r != nil {
		return nil, p.refuse(outbound, cn, r)
	}
	cl := cfg.Clusters[clusterName]
	if cl == nil {
		return nil, p.refuse(outbound, cn, refused("no_cluster", "proxy: chain %s: no cluster %q", fc.Name, clusterName))
	}
	cn.cluster = cl.Name
	addrs, r := p.upstreams(cfg, cl, dst)
	if r != nil {
		return nil, p.refuse(outbound, cn, r)
	}
	up, addr, err := p.dialUpstream(ctx, cl, addrs)
	if err != nil {
		return nil, p.refuse(outbound, cn, refused("upstream_connect", "%w", err))
	}
	release := au.onEnd(p.lb.acquire(addr)) // egress audit hook
	if cl.UpstreamTLS != nil {
		var peer spiffeid.ID
		tc := tls.Client(up, p.clientTLS(cl.UpstreamTLS, &peer))
		cn.track(tc)
		hctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			up.Close()
			release()
			return nil, p.refuse(outbound, cn, &refusal{reason: failureReason(err), handshake: true,
				err: fmt.Errorf("proxy: outbound handshake with %s (cluster %s, peer %v): %w", addr, cl.Name, peer, err)})
		}
		p.m.handshakes.With(outbound).Inc()
		cn.tls = newTLSInfo(tc.ConnectionState(), peer.String())
		up = tc
	}
	return &forwarding{down: down, up: up, addr: addr, release: release}, nil
}

// maxRequestHead bounds the HTTP/1 request head an egress HTTP chain reads.
const maxRequestHead = 64 << 10

// routeHTTP reads the request head of a plaintext HTTP/1 connection on an
// HTTP egress chain and looks its Host up in route configuration rcName:
// the cluster to forward to, or a refusal after answering the client (403
// with the route's body for a denied host). The head stays buffered in
// down, to be forwarded unchanged. Only the connection's first request is
// routed; later requests on it follow the first.
func (p *Proxy) routeHTTP(cfg *xds.Config, rcName string, stripPort bool, down *prefixConn, sn sniffed) (string, *xds.VirtualHost, string, *refusal) {
	rc := cfg.Routes[rcName]
	if rc == nil {
		return "", nil, "", refused("no_cluster", "proxy: no route configuration %q", rcName)
	}
	if len(sn.appProtos) == 0 || !strings.HasPrefix(sn.appProtos[0], "http/1") {
		return "", nil, "", refused("unsupported", "proxy: route configuration %s: only HTTP/1 requests are routed (got %v)", rcName, sn.appProtos)
	}
	head := down.prefix
	_ = down.SetReadDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	for headEnd(head) < 0 {
		if len(head) >= maxRequestHead {
			writeHTTPError(down, http.StatusRequestHeaderFieldsTooLarge, "weft: request head too large\n")
			return "", nil, "", refused("bad_request", "proxy: request head over %d bytes", maxRequestHead)
		}
		buf := make([]byte, 4096)
		n, err := down.TCPConn.Read(buf)
		head = append(head, buf[:n]...)
		if err != nil && headEnd(head) < 0 {
			return "", nil, "", refused("bad_request", "proxy: reading request head: %w", err)
		}
	}
	_ = down.SetReadDeadline(time.Time{})
	down.prefix = head
	rh, err := parseRequestHead(head)
	switch {
	case err != nil:
		writeHTTPError(down, http.StatusBadRequest, "weft: malformed request head\n")
		return "", nil, "", refused("bad_request", "proxy: request head: %w", err)
	case rh.suspect != "":
		writeHTTPError(down, http.StatusBadRequest, "weft: ambiguous request head: "+rh.suspect+"\n")
		return "", nil, "", refused("bad_request", "proxy: request head: %s", rh.suspect)
	}
	host := rh.host
	if host == "" {
		writeHTTPError(down, http.StatusBadRequest, "weft: request without Host\n")
		return "", nil, "", refused("bad_request", "proxy: request without Host")
	}
	// Virtual hosts are matched on the normalised name, as the audit
	// decision is: lower case, no trailing dot, and — when the connection
	// manager says strip_any_host_port — no ":port".
	if stripPort {
		host = egress.HostName(host)
	} else {
		host = egress.Name(host)
	}
	vh := rc.Match(host)
	switch {
	case vh == nil:
		writeHTTPError(down, http.StatusNotFound, fmt.Sprintf("weft: no route to %s\n", host))
		return "", nil, "", refused("http_denied", "proxy: route configuration %s has no virtual host for %q", rcName, host)
	case vh.Deny != nil:
		writeHTTPError(down, vh.Deny.Status, vh.Deny.Body)
		return "", nil, "", refused("http_denied", "proxy: host %q denied by virtual host %s (%d)", host, vh.Name, vh.Deny.Status)
	}
	return vh.Cluster, vh, egress.HostName(host), nil
}

// Results of an egress name binding (weft_sidecar_egress_name_bindings_total).
const (
	bindMismatchDenied  = "mismatch_denied"  // Enforce: the connection is refused
	bindMismatchFlagged = "mismatch_flagged" // Audit: forwarded, and its audit event says why
)

// reasonNameMismatch is the refusal reason (and the audit Reason's prefix)
// of a connection whose allowed name does not resolve to its destination.
const reasonNameMismatch = "name_mismatch"

// bindName holds a connection that an EgressPolicy rule allowed by name
// (a TLS chain matched on server_names, or an HTTP virtual host of named
// domains) to an address the name resolves to for this pod
// (Config.Names): otherwise refused under Enforce, flagged under Audit.
// Connections decided without a name (by address, by the default verdict,
// or denied anyway) are not checked.
func (p *Proxy) bindName(ctx context.Context, cfg *xds.Config, fc *xds.FilterChain, vh *xds.VirtualHost, name string, dst netip.AddrPort,
	clusterName string, down *prefixConn, cn *conn) *refusal {
	meta, named := fc.Egress, len(fc.Match.ServerNames) > 0
	if vh != nil {
		if vh.Egress != nil {
			meta = vh.Egress
		}
		named = !slices.Contains(vh.Domains, "*")
	}
	if p.cfg.Names == nil || meta == nil || !named || meta.Decision != "allow" {
		return nil
	}
	if cl := cfg.Clusters[clusterName]; cl == nil || cl.Kind != xds.KindOriginalDst {
		return nil // not forwarded to the address the app chose
	}
	b := p.cfg.Names.Bind(ctx, name, dst.Addr())
	if b.Bound {
		p.m.bindings.With(string(b.Source)).Inc()
		return nil
	}
	why := fmt.Sprintf("%s does not resolve to %s for this pod", name, dst.Addr())
	switch {
	case len(b.Known) > 0:
		why += fmt.Sprintf(" (it resolves to %v)", b.Known)
	case b.Err != nil:
		why += fmt.Sprintf(" (%v)", b.Err)
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
	if vh != nil {
		writeHTTPError(down, http.StatusForbidden, "weft: egress to "+name+" denied: "+why+"\n")
	}
	return refused(reasonNameMismatch, "proxy: egress allowed for %s by %s rule %s, but %s", name, meta.Policy, meta.Rule, why)
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
func (p *Proxy) egressAudit(cfg *xds.Config, fc *xds.FilterChain, dst netip.AddrPort, sn sniffed, down *prefixConn, cn *conn) *egressAuditor {
	if fc.Egress == nil || p.cfg.Audit == nil {
		return nil
	}
	return &egressAuditor{down: down, emit: func(host string) {
		p.cfg.Audit(egressEvent(cfg, fc, dst, sn, host, cn, p.cfg.Clock.Since(cn.start)))
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

// egressEvent describes an egress connection: the decision is read off the
// chain and, for HTTP chains, the virtual host of the request's Host.
func egressEvent(cfg *xds.Config, fc *xds.FilterChain, dst netip.AddrPort, sn sniffed, host string, cn *conn, d time.Duration) audit.Event {
	e := audit.Event{Time: cn.start, DstIP: dst.Addr().Unmap(), DstPort: dst.Port(), SNI: sn.sni, Protocol: audit.ProtocolTCP,
		Chain: fc.Name, BytesSent: cn.toUp.Load(), BytesReceived: cn.toDown.Load(), Duration: d}
	switch {
	case sn.transport == transportTLS:
		e.Protocol = audit.ProtocolTLS
	case len(sn.appProtos) > 0:
		e.Protocol, e.Host = audit.ProtocolHTTP, host
	}
	dec := egress.ForChain(cfg, fc, e.Host)
	e.DstHost = cmp.Or(egress.Name(e.SNI), egress.HostName(e.Host))
	e.Decision, e.Policy, e.Rule, e.Outbound = dec.Action.String(), dec.Policy, dec.Rule, dec.Outbound
	cn.mu.Lock()
	e.Reason = cn.egressReason
	cn.mu.Unlock()
	if e.Reason != "" && dec.Action == egress.Allow { // the name did not bind (bindName)
		e.Decision = egress.Deny.String()
		if mode := egressMode(cfg, fc, e.Host); mode == "Audit" {
			e.Decision = egress.Audit.String()
		}
	}
	applyNameUnknown(&e, cn)
	return e
}

// egressMode is the mode of the rule that decided a connection on chain fc
// (for an HTTP chain, host's virtual host): "Enforce", "Audit" or "".
func egressMode(cfg *xds.Config, fc *xds.FilterChain, host string) string {
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
