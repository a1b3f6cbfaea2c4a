package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/certs"
	wm "github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// Addresses of the fake cluster (never routed: only the fake NAT sees them).
var (
	podBIP    = netip.MustParseAddr("198.18.0.2")
	serviceIP = netip.MustParseAddr("198.19.0.10")
)

// swapSVID is an x509svid.Source whose SVID the test replaces (renewal).
type swapSVID struct{ p atomic.Pointer[x509svid.SVID] }

func newSwap(s *x509svid.SVID) *swapSVID {
	w := &swapSVID{}
	w.p.Store(s)
	return w
}

func (s *swapSVID) GetX509SVID() (*x509svid.SVID, error) { return s.p.Load(), nil }

func workloadID(ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", ns, "sa", sa)
}

// fakeNAT stands in for SO_ORIGINAL_DST: a connection's original
// destination is what the test registered for the client's address, or
// the default.
type fakeNAT struct {
	mu    sync.Mutex
	bySrc map[string]netip.AddrPort
	def   netip.AddrPort
}

func (n *fakeNAT) set(src net.Addr, dst netip.AddrPort) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.bySrc == nil {
		n.bySrc = map[string]netip.AddrPort{}
	}
	n.bySrc[src.String()] = dst
}

func (n *fakeNAT) setDefault(dst netip.AddrPort) {
	n.mu.Lock()
	n.def = dst
	n.mu.Unlock()
}

func (n *fakeNAT) originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		n.mu.Lock()
		dst, ok := n.bySrc[c.RemoteAddr().String()]
		def := n.def
		n.mu.Unlock()
		switch {
		case ok:
			return dst, nil
		case def.IsValid():
			return def, nil
		case time.Now().After(deadline):
			return netip.AddrPort{}, errors.New("fakeNAT: no original destination")
		}
		time.Sleep(time.Millisecond)
	}
}

// pod is one sidecar under test.
type pod struct {
	t     testing.TB
	id    spiffeid.ID
	svid  *swapSVID
	cfg   atomic.Pointer[model.Config]
	nat   *fakeNAT
	reg   *wm.Registry
	p     *Proxy
	stop  context.CancelFunc
	done  chan error
	extra func(*Config)
}

func startPod(t testing.TB, ca *certs.CA, id spiffeid.ID, mod ...func(*Config)) *pod {
	t.Helper()
	pd := &pod{t: t, id: id, svid: newSwap(testutil.SVID(t, ca, id, time.Hour)), nat: &fakeNAT{}, reg: wm.NewRegistry()}
	cfg := Config{
		SVID: pd.svid, Bundle: ca.Bundle(), TrustDomain: td,
		Config:      pd.cfg.Load,
		InboundAddr: "127.0.0.1:0", OutboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		OriginalDst: pd.nat.originalDst, Metrics: pd.reg,
		DrainTimeout: 5 * time.Second, SniffTimeout: 50 * time.Millisecond, HandshakeTimeout: 5 * time.Second,
	}
	for _, m := range mod {
		m(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pd.p = p
	ctx, cancel := context.WithCancel(context.Background())
	pd.stop, pd.done = cancel, make(chan error, 1)
	go func() { pd.done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-pd.done:
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-pd.done:
		case <-time.After(10 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	return pd
}

func (pd *pod) inboundAddr() netip.AddrPort  { return pd.p.InboundAddr().(*net.TCPAddr).AddrPort() }
func (pd *pod) outboundAddr() netip.AddrPort { return pd.p.OutboundAddr().(*net.TCPAddr).AddrPort() }

// dialOutbound connects the "app" to the pod's outbound listener as if it
// had dialled dst and been redirected.
func (pd *pod) dialOutbound(dst netip.AddrPort) *net.TCPConn {
	pd.t.Helper()
	c, err := net.Dial("tcp", pd.outboundAddr().String())
	if err != nil {
		pd.t.Fatal(err)
	}
	pd.nat.set(c.LocalAddr(), dst)
	pd.t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func (pd *pod) counter(name string, labels ...string) float64 {
	pd.t.Helper()
	m := pd.p.m
	var vec *wm.CounterVec
	switch name {
	case "handshake_failures":
		vec = m.hsFailures
	case "connection_failures":
		vec = m.connFailures
	case "handshakes":
		vec = m.handshakes
	case "authz_denials":
		vec = m.denials
	case "shadow_denies", "shadow_denials":
		vec = m.shadowDenies
	case "egress_name_bindings":
		vec = m.bindings
	case "egress_name_unknown":
		vec = m.nameUnknown
	case "egress_http_requests":
		vec = m.httpRequests
	case "connections_total":
		vec = m.total
	case "accept_errors":
		vec = m.acceptErrors
	case "bytes":
		vec = m.bytes
	case "timeouts":
		vec = m.timeouts
	case "inbound_peer_connections":
		vec = m.peers.vec
	case "connections":
		return float64(m.active.With(labels...).Value())
	default:
		pd.t.Fatalf("unknown metric %s", name)
	}
	return float64(vec.With(labels...).Value())
}

// waitCounter waits until counter reaches want (metrics are counted as the
// proxy closes a connection, which can trail the client's view).
func (pd *pod) waitCounter(want float64, name string, labels ...string) {
	pd.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := pd.counter(name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			pd.t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (pd *pod) connections() []ConnInfo {
	pd.t.Helper()
	resp, err := http.Get("http://" + pd.p.AdminAddr().String() + "/connections")
	if err != nil {
		pd.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Connections []ConnInfo }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		pd.t.Fatal(err)
	}
	return body.Connections
}

// app is a TCP server on loopback standing in for a workload.
type app struct {
	l        net.Listener
	accepted atomic.Int64
	received atomic.Int64
}

// startApp serves handle (default: echo, then half-close) on 127.0.0.1.
func startApp(t testing.TB, handle func(c *net.TCPConn, a *app)) *app {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &app{l: l}
	if handle == nil {
		handle = echo
	}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			a.accepted.Add(1)
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn), a)
			})
		}
	}()
	t.Cleanup(func() { l.Close() })
	return a
}

func echo(c *net.TCPConn, a *app) {
	n, _ := io.Copy(c, c)
	a.received.Add(n)
	c.CloseWrite()
}

func (a *app) port() uint16 { return a.l.Addr().(*net.TCPAddr).AddrPort().Port() }
func (a *app) addr() netip.AddrPort {
	return a.l.Addr().(*net.TCPAddr).AddrPort()
}

// Mesh configurations, written as the control plane would send them.

func inboundCluster(port uint16) *model.Cluster {
	return &model.Cluster{Name: "inbound|" + strconv.Itoa(int(port)), Kind: model.KindStatic, ConnectTimeout: time.Second,
		StaticEndpoints: []model.Endpoint{{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}}}
}

// inboundChains: STRICT (TLS only) or PERMISSIVE (TLS and plaintext) for
// port, with rbac.
func inboundChains(port uint16, permissive bool, rbac []model.RBACFilter) []*model.FilterChain {
	name := "inbound|" + strconv.Itoa(int(port))
	out := []*model.FilterChain{{Name: name + "|tls", Match: model.ChainMatch{DestPort: port, TransportProtocol: "tls"},
		TLS: &model.DownstreamTLS{RequireClientCert: true}, RBAC: rbac, Target: model.Target{Cluster: name}}}
	if permissive {
		out = append(out, &model.FilterChain{Name: name + "|plain", Match: model.ChainMatch{DestPort: port, TransportProtocol: "raw_buffer"},
			RBAC: rbac, Target: model.Target{Cluster: name}})
	}
	return out
}

const svcCluster = "outbound|80|echo.demo"

// meshConfig is a pod's whole configuration: inbound chains for the given
// app ports (STRICT, with a TLS catch-all to InboundPassthroughCluster),
// and outbound: serviceIP:80 to the EDS cluster of echo.demo whose
// endpoints are eps and whose peers must be sans, egress chains for SNI
// allowed.example.com (passthrough) and denied.example.com (blackhole),
// plain HTTP on port 8080 routed by Host, and the default chain
// (passthrough, or blackhole when registryOnly).
func meshConfig(sans []spiffeid.ID, eps []model.Endpoint, inbound []*model.FilterChain, registryOnly bool) *model.Config {
	c := &model.Config{
		Version: map[string]string{model.ListenerType: "1", model.ClusterType: "1"},
		Inbound: &model.Listener{Name: model.InboundListener, UseOriginalDst: true, InspectTLS: true,
			Chains: append(inbound, &model.FilterChain{Name: "inbound-passthrough", Match: model.ChainMatch{TransportProtocol: "tls"},
				TLS: &model.DownstreamTLS{RequireClientCert: true}, Target: model.Target{Cluster: "InboundPassthroughCluster"}})},
		Outbound: &model.Listener{Name: model.OutboundListener, UseOriginalDst: true, InspectTLS: true, InspectHTTP: true,
			Chains: []*model.FilterChain{
				{Name: svcCluster, Match: model.ChainMatch{DestPort: 80, Prefixes: []netip.Prefix{netip.PrefixFrom(serviceIP, 32)}},
					Target: model.Target{Cluster: svcCluster}},
				{Name: "egress-allowed", Match: model.ChainMatch{TransportProtocol: "tls", ServerNames: []string{"allowed.example.com"}},
					Target: model.Target{Cluster: "PassthroughCluster"}, Egress: &model.EgressMeta{Decision: "allow"}},
				{Name: "egress-denied", Match: model.ChainMatch{TransportProtocol: "tls", ServerNames: []string{"denied.example.com"}},
					Target: model.Target{Cluster: "BlackHoleCluster"}, Egress: &model.EgressMeta{Decision: "deny"}},
				// An egress chain carries weft.egress (the contract): the
				// catch-all's verdict, which the default virtual host says.
				{Name: "egress-http", Match: model.ChainMatch{DestPort: 8080, TransportProtocol: "raw_buffer", AppProtocols: []string{"http/1.1", "h2c"}},
					Target: model.Target{RouteConfig: "egress|8080"}, Egress: &model.EgressMeta{Decision: "deny", Outbound: "REGISTRY_ONLY"}},
			}},
		Clusters: map[string]*model.Cluster{
			svcCluster: {Name: svcCluster, Kind: model.KindEDS, ConnectTimeout: time.Second,
				UpstreamTLS: &model.UpstreamTLS{SANs: sans, SNI: "echo.demo.svc.cluster.local"}},
			"PassthroughCluster":        {Name: "PassthroughCluster", Kind: model.KindOriginalDst, ConnectTimeout: time.Second},
			"InboundPassthroughCluster": {Name: "InboundPassthroughCluster", Kind: model.KindOriginalDst, SourceAddrs: inboundSources},
			"BlackHoleCluster":          {Name: "BlackHoleCluster", Kind: model.KindBlackhole},
		},
		Endpoints: map[string][]model.Endpoint{svcCluster: eps},
		Routes: map[string]*model.RouteConfig{"egress|8080": {Name: "egress|8080", VirtualHosts: []*model.VirtualHost{
			{Name: "allowed", Domains: []string{"api.example.com"}, Cluster: "PassthroughCluster"},
			{Name: "denied", Domains: []string{"evil.example.com"}, Deny: &model.DirectResponse{Status: 403, Body: "weft: egress to evil.example.com denied by demo/deny-evil\n"}},
			{Name: "default", Domains: []string{"*"}, Deny: &model.DirectResponse{Status: 403, Body: "weft: REGISTRY_ONLY\n"}},
		}}},
	}
	for _, fc := range inbound {
		if fc.Target.Cluster != "" {
			port, _ := strconv.Atoi(fc.Target.Cluster[len("inbound|"):])
			c.Clusters[fc.Target.Cluster] = inboundCluster(uint16(port))
		}
	}
	def := "PassthroughCluster"
	if registryOnly {
		def = "BlackHoleCluster"
	}
	c.Outbound.Default = &model.FilterChain{Name: "default", Target: model.Target{Cluster: def}}
	return c
}

// meshPair is client pod A and server pod B with B's app behind STRICT
// mTLS, A configured to reach it as serviceIP:80.
type meshPair struct {
	ca   *certs.CA
	a, b *pod
	app  *app
}

func newMeshPair(t testing.TB, handle func(*net.TCPConn, *app), rbac []model.RBACFilter, bMods ...func(*Config)) *meshPair {
	t.Helper()
	mp := &meshPair{ca: testutil.NewCA(t, td, nil)}
	mp.app = startApp(t, handle)
	mp.a = startPod(t, mp.ca, workloadID("shop", "frontend"))
	mp.b = startPod(t, mp.ca, workloadID("demo", "echo"), bMods...)
	mp.b.nat.setDefault(netip.AddrPortFrom(podBIP, mp.app.port()))
	mp.b.cfg.Store(meshConfig(nil, nil, inboundChains(mp.app.port(), false, rbac), false))
	mp.a.cfg.Store(meshConfig([]spiffeid.ID{mp.b.id}, []model.Endpoint{{Addr: mp.b.inboundAddr()}}, nil, false))
	return mp
}

// dial connects A's app to the service through the pair.
func (mp *meshPair) dial() *net.TCPConn {
	return mp.a.dialOutbound(netip.AddrPortFrom(serviceIP, 80))
}
