package sidecar

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"

	wm "github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/sidecar/capture"
	"github.com/weftmesh/weft/sidecar/dnsproxy"
)

// dnsConn is one socket of the DNS proxy.
type dnsConn struct {
	pc net.PacketConn // UDP, or
	l  net.Listener   // TCP
}

func (c dnsConn) serve(ctx context.Context, s *dnsproxy.Server) error {
	if c.pc != nil {
		return s.ServeUDP(ctx, c.pc)
	}
	return s.ServeTCP(ctx, c.l)
}

// listenDNS opens the DNS proxy's sockets, UDP and TCP on each of
// cfg.DNSAddrs, before the pod's app starts (the sidecar is a native
// sidecar: the app waits for its readiness), and reads the pod's
// nameservers from cfg.ResolvConf. An IPv6 address the pod lacks is
// skipped; the IPv4 one must listen.
func listenDNS(cfg Config, names *dnsproxy.Names, reg *wm.Registry, log *slog.Logger) (*dnsproxy.Server, []dnsConn, error) {
	srv := &dnsproxy.Server{Names: names, Logger: log}
	if err := srv.Register(reg); err != nil {
		return nil, nil, err
	}
	if len(cfg.DNSAddrs) == 1 && cfg.DNSAddrs[0] == "-" {
		log.Warn("DNS proxy off: egress names are bound by the sidecar's own lookups only")
		return srv, nil, nil
	}
	if f, err := os.Open(cfg.ResolvConf); err != nil {
		log.Warn("no nameservers for the DNS proxy: the pod's DNS is not redirected to it either", "err", err)
	} else {
		servers, err := capture.ParseResolvConf(f)
		f.Close()
		if err != nil {
			log.Warn("no nameservers for the DNS proxy", "resolv_conf", cfg.ResolvConf, "err", err)
		}
		for _, a := range servers {
			srv.Upstreams = append(srv.Upstreams, netip.AddrPortFrom(a, 53))
		}
	}
	var conns []dnsConn
	closeAll := func() {
		for _, c := range conns {
			if c.pc != nil {
				c.pc.Close()
			} else {
				c.l.Close()
			}
		}
	}
	for i, addr := range cfg.DNSAddrs {
		pc, l, err := dnsproxy.Listen(addr)
		if err == nil {
			conns = append(conns, dnsConn{pc: pc}, dnsConn{l: l})
			continue
		}
		if i > 0 {
			log.Info("DNS proxy not listening on an optional address", "addr", addr, "err", err)
			continue
		}
		closeAll()
		return nil, nil, fmt.Errorf("sidecar: DNS proxy: listen %s: %w", addr, err)
	}
	log.Info("DNS proxy listening", "addrs", cfg.DNSAddrs, "nameservers", srv.Upstreams)
	return srv, conns, nil
}
