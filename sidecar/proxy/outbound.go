package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/sidecar/xds"
)

// outbound serves a connection redirected to 15001: the original
// destination and the sniffed SNI / HTTP pick the chain; in-mesh chains get
// mTLS to a peer sidecar, egress chains go to the original destination, or
// nowhere.
func (p *Proxy) outbound(ctx context.Context, c *net.TCPConn, cn *conn) error {
	cfg := p.cfg.Config()
	if cfg == nil || cfg.Outbound == nil {
		return p.refuse(outbound, cn, refused("no_config", "proxy: no outbound listener configured yet"))
	}
	l := cfg.Outbound
	dst, err := p.originalDst(c, l)
	if err != nil {
		return p.refuse(outbound, cn, refused("original_dst", "%w", err))
	}
	cn.dst = dst.String()
	sn, err := sniff(c, l.InspectTLS && needsSniff(l, dst), l.InspectHTTP && needsSniff(l, dst), p.cfg.SniffTimeout, p.cfg.HandshakeTimeout)
	if err != nil {
		return p.refuse(outbound, cn, refused(reasonPeerClosed, "proxy: sniff: %w", err))
	}
	fc := l.Match(dst, sn.transport, sn.sni, sn.appProtos)
	if fc == nil {
		return p.refuse(outbound, cn, refused("no_chain", "proxy: no outbound filter chain for %s (%s, sni %q)", dst, sn.transport, sn.sni))
	}
	cn.chain = fc.Name
	if err := p.authorize(outbound, fc, "", dst.Port()); err != nil {
		return p.refuse(outbound, cn, refused(reasonAuthzDenied, "%w", err))
	}
	down := &prefixConn{TCPConn: c, prefix: sn.prefix}

	clusterName := fc.Target.Cluster
	if rcName := fc.Target.RouteConfig; rcName != "" {
		var r *refusal
		clusterName, r = p.routeHTTP(cfg, rcName, down, sn)
		if r != nil {
			return p.refuse(outbound, cn, r)
		}
	}
	cl := cfg.Clusters[clusterName]
	if cl == nil {
		return p.refuse(outbound, cn, refused("no_cluster", "proxy: chain %s: no cluster %q", fc.Name, clusterName))
	}
	cn.cluster = cl.Name
	addrs, r := p.upstreams(cfg, cl, dst)
	if r != nil {
		return p.refuse(outbound, cn, r)
	}
	up, addr, err := p.dialUpstream(ctx, cl, addrs)
	if err != nil {
		return p.refuse(outbound, cn, refused("upstream_connect", "%w", err))
	}
	defer p.lb.acquire(addr)()
	if cl.UpstreamTLS != nil {
		var peer spiffeid.ID
		tc := tls.Client(up, p.clientTLS(cl.UpstreamTLS, &peer))
		cn.track(tc)
		hctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			up.Close()
			return p.refuse(outbound, cn, &refusal{reason: failureReason(err), handshake: true,
				err: fmt.Errorf("proxy: outbound handshake with %s (cluster %s, peer %v): %w", addr, cl.Name, peer, err)})
		}
		p.m.handshakes.WithLabelValues(outbound).Inc()
		cn.tls = newTLSInfo(tc.ConnectionState(), peer.String())
		up = tc
	}
	p.forward(cn, down, up, addr)
	return nil
}

// maxRequestHead bounds the HTTP/1 request head an egress HTTP chain reads.
const maxRequestHead = 64 << 10

// routeHTTP reads the request head of a plaintext HTTP/1 connection on an
// HTTP egress chain and looks its Host up in route configuration rcName:
// the cluster to forward to, or a refusal after answering the client (403
// with the route's body for a denied host). The head stays buffered in
// down, to be forwarded unchanged. Only the connection's first request is
// routed; later requests on it follow the first.
func (p *Proxy) routeHTTP(cfg *xds.Config, rcName string, down *prefixConn, sn sniffed) (string, *refusal) {
	rc := cfg.Routes[rcName]
	if rc == nil {
		return "", refused("no_cluster", "proxy: no route configuration %q", rcName)
	}
	if len(sn.appProtos) == 0 || !strings.HasPrefix(sn.appProtos[0], "http/1") {
		return "", refused("unsupported", "proxy: route configuration %s: only HTTP/1 requests are routed (got %v)", rcName, sn.appProtos)
	}
	head := down.prefix
	_ = down.SetReadDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	for bytes.Index(head, []byte("\r\n\r\n")) < 0 {
		if len(head) >= maxRequestHead {
			writeHTTPError(down, http.StatusRequestHeaderFieldsTooLarge, "weft: request head too large\n")
			return "", refused("bad_request", "proxy: request head over %d bytes", maxRequestHead)
		}
		buf := make([]byte, 4096)
		n, err := down.TCPConn.Read(buf)
		head = append(head, buf[:n]...)
		if err != nil && bytes.Index(head, []byte("\r\n\r\n")) < 0 {
			return "", refused("bad_request", "proxy: reading request head: %w", err)
		}
	}
	_ = down.SetReadDeadline(time.Time{})
	down.prefix = head
	host, ok := requestHost(head)
	if !ok {
		writeHTTPError(down, http.StatusBadRequest, "weft: request without Host\n")
		return "", refused("bad_request", "proxy: request without Host")
	}
	vh := rc.Match(host)
	switch {
	case vh == nil:
		writeHTTPError(down, http.StatusNotFound, fmt.Sprintf("weft: no route to %s\n", host))
		return "", refused("http_denied", "proxy: route configuration %s has no virtual host for %q", rcName, host)
	case vh.Deny != nil:
		writeHTTPError(down, vh.Deny.Status, vh.Deny.Body)
		return "", refused("http_denied", "proxy: host %q denied by virtual host %s (%d)", host, vh.Name, vh.Deny.Status)
	}
	return vh.Cluster, nil
}

// requestHost returns the Host header of an HTTP/1 request head (the
// request-target's authority for absolute-form requests).
func requestHost(head []byte) (string, bool) {
	lines := strings.Split(string(head[:bytes.Index(head, []byte("\r\n\r\n"))]), "\r\n")
	if f := strings.Fields(lines[0]); len(f) == 3 && strings.Contains(f[1], "://") {
		rest := f[1][strings.Index(f[1], "://")+3:]
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			rest = rest[:i]
		}
		if rest != "" {
			return rest, true
		}
	}
	for _, line := range lines[1:] {
		name, value, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(name, "host") {
			if v := strings.TrimSpace(value); v != "" {
				return v, true
			}
		}
	}
	return "", false
}

func writeHTTPError(c net.Conn, status int, body string) {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}
