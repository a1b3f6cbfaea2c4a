package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// inbound serves a connection redirected to 15006: pick the filter chain by
// original destination and transport protocol, terminate mTLS (STRICT) or
// take plaintext (PERMISSIVE's raw_buffer chain), authorize, then forward to
// the app where the chain's cluster says: the original destination (the
// pod's own address and the port) from 127.0.0.6 or ::6, or, for a port the
// pod opted into loopback delivery, 127.0.0.1 (delivery.go).
func (p *Proxy) inbound(ctx context.Context, c *net.TCPConn, cn *conn) (*forwarding, error) {
	cfg := p.cfg.Config()
	if cfg == nil || cfg.Inbound == nil {
		return nil, p.refuse(inbound, cn, refused("no_config", "proxy: no inbound listener configured yet"))
	}
	l := cfg.Inbound
	dst, err := p.originalDst(c, l)
	if err != nil {
		return nil, p.refuse(inbound, cn, refused("original_dst", "%w", err))
	}
	cn.dst = dst.String()
	sn, err := sniffUntil(c, l.InspectTLS && needsSniff(l, dst), l.InspectHTTP && needsSniff(l, dst), p.cfg.SniffTimeout, cn.by)
	if err != nil {
		return nil, p.refuse(inbound, cn, refused(reasonPeerClosed, "proxy: sniff: %w", err))
	}
	fc := l.Match(dst, sn.transport, sn.sni, sn.appProtos)
	if fc == nil {
		if sn.transport == transportRaw && l.Match(dst, transportTLS, "", nil) != nil {
			return nil, p.refuse(inbound, cn, &refusal{reason: reasonNotTLS, handshake: true,
				err: fmt.Errorf("proxy: plaintext to %s, which takes mTLS only", dst)})
		}
		return nil, p.refuse(inbound, cn, refused("no_chain", "proxy: no inbound filter chain for %s (%s)", dst, sn.transport))
	}
	cn.chain = fc.Name
	var down net.Conn = newPrefixConn(c, sn.prefix)
	var m *meteredConn
	if fc.Target.RouteConfig != "" {
		if fc.TLS == nil {
			return nil, p.refuse(inbound, cn, refused("unsupported", "proxy: chain %s routes HTTP without TLS", fc.Name))
		}
		m = p.meter(down, cn) // the l7 engine serves it: accounted below TLS
		down = m
	}
	if fc.TLS != nil {
		if sn.transport != transportTLS {
			return nil, p.refuse(inbound, cn, &refusal{reason: reasonNotTLS, handshake: true,
				err: fmt.Errorf("proxy: chain %s takes TLS, got %s", fc.Name, sn.transport)})
		}
		tc, peer, err := p.terminate(ctx, fc, dst, down, cn)
		if err != nil {
			return nil, err
		}
		down = tc
		if m != nil {
			return p.inboundL7(cfg, fc, dst, tc, peer, m, cn)
		}
	} else if err := p.authorize(inbound, fc, "", dst.Port()); err != nil {
		return nil, p.refuse(inbound, cn, refused(reasonAuthzDenied, "%w", err))
	} else {
		p.m.peers.byAddress(peerPlaintext, cn.src)
	}

	cl := cfg.Clusters[fc.Target.Cluster]
	if cl == nil {
		return nil, p.refuse(inbound, cn, refused("no_cluster", "proxy: chain %s: no cluster %q (target %+v)", fc.Name, fc.Target.Cluster, fc.Target))
	}
	cn.cluster = cl.Name
	addrs, r := p.inboundUpstreams(cfg, cl, dst)
	if r != nil {
		return nil, p.refuse(inbound, cn, r)
	}
	up, addr, err := p.dialUpstream(ctx, cl, addrs)
	if err != nil {
		return nil, p.refuse(inbound, cn, refused("upstream_connect", "%w", err))
	}
	return &forwarding{down: down, up: up, addr: addr, release: p.lb.acquire(addr)}, nil
}

// terminate completes the mTLS handshake of an inbound connection taken
// by chain fc, within HandshakeTimeout, and notes its peer: the verified
// SPIFFE ID, or the source address of a client without a certificate. Its
// own function: the handshake's state (tls.ConnectionState is large) stays
// off inbound's frame, so a connection still being sniffed keeps the
// smallest goroutine stack (BenchmarkConnMemory/stalled_hello).
func (p *Proxy) terminate(ctx context.Context, fc *model.FilterChain, dst netip.AddrPort, down net.Conn, cn *conn) (*tls.Conn, spiffeid.ID, error) {
	var peer spiffeid.ID
	tc := tls.Server(newCoalescer(down), p.serverTLS(fc, dst.Port(), &peer))
	cn.track(tc)
	hctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		return nil, peer, p.refuse(inbound, cn, &refusal{reason: failureReason(err), handshake: true,
			err: fmt.Errorf("proxy: inbound handshake (peer %v): %w", peer, err)})
	}
	p.m.handshakes.With(inbound).Inc()
	st := tc.ConnectionState()
	peerID := ""
	if len(st.PeerCertificates) > 0 {
		peerID = peer.String()
		p.m.peers.verified(peerID)
	} else {
		p.m.peers.byAddress(peerTLS, cn.src)
	}
	cn.tls = newTLSInfo(st, peerID)
	return tc, peer, nil
}

// originalDst is where the connection was going: SO_ORIGINAL_DST when the
// listener asks for it, the listener's own address otherwise.
func (p *Proxy) originalDst(c *net.TCPConn, l *model.Listener) (netip.AddrPort, error) {
	if l.UseOriginalDst {
		return p.cfg.OriginalDst(c)
	}
	a, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, errors.New("proxy: connection has no local TCP address")
	}
	return a.AddrPort(), nil
}

// inboundUpstreams is where an inbound connection to dst is delivered
// through cluster cl: its upstreams, refused unless inboundTarget allows
// them (the L4 and the HTTP chains alike).
func (p *Proxy) inboundUpstreams(cfg *model.Config, cl *model.Cluster, dst netip.AddrPort) ([]netip.AddrPort, *refusal) {
	addrs, r := p.upstreams(cfg, cl, dst)
	if r == nil {
		r = p.inboundTarget(cl, dst)
	}
	return addrs, r
}

// upstreams lists the addresses to try for cluster cl, in order, for a
// connection to dst: dst alone when it is one of cl's healthy endpoints (a
// connection addressed to a pod goes to that pod), else the endpoints in
// the balancer's order.
func (p *Proxy) upstreams(cfg *model.Config, cl *model.Cluster, dst netip.AddrPort) ([]netip.AddrPort, *refusal) {
	switch cl.Kind {
	case model.KindOriginalDst:
		if p.selfDial(dst) {
			return nil, refused(reasonLoop, "proxy: cluster %s would dial %s, the sidecar's own listener", cl.Name, dst)
		}
		return []netip.AddrPort{dst}, nil
	case model.KindStatic, model.KindEDS:
		eps := cl.StaticEndpoints
		if cl.Kind == model.KindEDS {
			eps = cfg.Endpoints[cl.Name]
		}
		addrs := p.lb.order(cl.Name, cl.LB, eps)
		if len(addrs) == 0 {
			return nil, refused("no_endpoint", "proxy: cluster %s has no healthy endpoint (%d endpoints)", cl.Name, len(eps))
		}
		if slices.ContainsFunc(addrs, p.selfDial) {
			addrs = slices.DeleteFunc(slices.Clone(addrs), p.selfDial)
			if len(addrs) == 0 {
				return nil, refused(reasonLoop, "proxy: cluster %s: every endpoint is the sidecar's own listener", cl.Name)
			}
		}
		if slices.Contains(addrs, dst) {
			// Addressed to one endpoint (a pod IP, not the Service's):
			// that endpoint, and no other.
			return []netip.AddrPort{dst}, nil
		}
		return addrs, nil
	case model.KindBlackhole:
		return nil, refused("blackhole", "proxy: cluster %s drops connections", cl.Name)
	}
	return nil, refused("unsupported", "proxy: cluster %s of kind %s cannot take proxied connections", cl.Name, cl.Kind)
}

// forwarding is an established connection, ready to be forwarded.
type forwarding struct {
	down, up net.Conn
	addr     netip.AddrPort // the dialled upstream
	release  func()         // ends the balancer's count of the connection to addr
	http     *httpStart     // an HTTP egress connection: forwarded request by request
	// serve, when set, serves the connection with the l7 engine (l7.go)
	// instead of copying bytes, and returns when it is done; up is nil.
	serve func()
	meter *meteredConn // serve's accounting of the downstream side
}

// httpStart is an HTTP egress connection whose first request is decided
// and whose upstream is dialled; its head is still to be sent.
type httpStart struct {
	st    *httpEgress
	first *httpExchange
	head  []byte
	rh    requestHead
}

// forward publishes the connection and copies bytes both ways on two
// goroutines started with env.run; once both sides are done, it releases
// the upstream and calls finish.
func (p *Proxy) forward(cn *conn, fw *forwarding, env pipeEnv, finish func()) {
	if fw.serve != nil {
		cn.mu.Lock()
		if fw.addr.IsValid() {
			cn.upstream = fw.addr.String()
		}
		cn.established = true
		cn.mu.Unlock()
		fw.meter.watch.Store(env.watch)
		env.run.Go(func() {
			fw.serve()
			p.log.Debug("connection closed", "direction", cn.direction, "src", cn.src, "dst", cn.dst, "chain", cn.chain,
				"bytes_in", cn.toUp.Load(), "bytes_out", cn.toDown.Load())
			fw.release()
			finish()
		})
		return
	}
	cn.track(fw.up)
	cn.mu.Lock()
	cn.upstream = fw.addr.String()
	cn.established = true
	cn.mu.Unlock()
	if h := fw.http; h != nil {
		h.st.serve(h.first, h.head, h.rh, fw.up, func() {
			fw.release()
			finish()
		})
		return
	}
	i := dirIndex(cn.direction)
	in, out := p.m.bytesIn[i], p.m.bytesOut[i]
	onChunk := func(toUp bool, n int) {
		if toUp {
			in.Add(uint64(n))
		} else {
			out.Add(uint64(n))
		}
	}
	kick := pipe(fw.down, fw.up, &cn.toUp, &cn.toDown, onChunk, env, func() {
		p.log.Debug("connection closed", "direction", cn.direction, "src", cn.src, "dst", cn.dst, "upstream", cn.upstream,
			"chain", cn.chain, "bytes_in", cn.toUp.Load(), "bytes_out", cn.toDown.Load())
		fw.release()
		finish()
	})
	cn.mu.Lock()
	cn.kick = kick
	cn.mu.Unlock()
}
