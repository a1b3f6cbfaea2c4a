package main

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// The sidecars' configurations, shaped as the control plane's translator
// emits them for a Service port of the registry's protocol (docs/l7.md):
// "tcp" gives today's L4 pair (tcp_proxy chains), "http" and "grpc" (or
// "http2") give the L7 pair of --http-routing. config_test.go holds the
// L7 shapes against the translator's golden output.

// serviceCluster is the service port's chain, route configuration and EDS
// cluster on the client side (outbound|<port>|<service>.<namespace>).
const serviceCluster = "outbound|80|server.bench"

// appProtocol is the service port's protocol as the registry classifies
// it: model.HTTPNone for an L4 port, otherwise what the server sidecar
// speaks to the app (HTTP/1.1, or h2c for http2 and grpc).
func appProtocol(s string) (model.HTTPProtocol, error) {
	switch s {
	case "", "tcp":
		return model.HTTPNone, nil
	case "http":
		return model.HTTP1, nil
	case "http2", "grpc":
		return model.HTTP2, nil
	}
	return 0, fmt.Errorf("-app-protocol %q: want tcp, http, http2 or grpc", s)
}

// sidecarConfig is the configuration of side mode ("client" or "server")
// for a port of protocol proto; to is the server sidecar (client side) or
// the app (server side).
func sidecarConfig(mode string, to netip.AddrPort, proto model.HTTPProtocol) *model.Config {
	switch {
	case mode == "client" && proto == model.HTTPNone:
		return clientConfig(to)
	case mode == "client":
		return l7ClientConfig(to)
	case proto == model.HTTPNone:
		return serverConfig(to)
	default:
		return l7ServerConfig(to, proto)
	}
}

// clientConfig is the client pod's outbound listener: the service on
// serviceIP:80 goes to the server sidecar at peer over mTLS; egress chains
// (matched by SNI) sit beside it as in a real configuration, so sniffing
// runs as it does there.
func clientConfig(peer netip.AddrPort) *model.Config {
	const svc = serviceCluster
	return &model.Config{
		Version: map[string]string{model.ListenerType: "1", model.ClusterType: "1"},
		Outbound: &model.Listener{Name: model.OutboundListener, UseOriginalDst: true, InspectTLS: true, InspectHTTP: true,
			Chains: []*model.FilterChain{
				{Name: svc, Match: model.ChainMatch{DestPort: 80, Prefixes: []netip.Prefix{netip.PrefixFrom(serviceIP, 32)}},
					Target: model.Target{Cluster: svc}},
				{Name: "egress-allowed", Match: model.ChainMatch{TransportProtocol: "tls", ServerNames: []string{"allowed.example.com"}},
					Target: model.Target{Cluster: model.PassthroughCluster}, Egress: &model.EgressMeta{Decision: "allow"}},
			},
			Default: &model.FilterChain{Name: "default", Target: model.Target{Cluster: model.PassthroughCluster}}},
		Clusters: map[string]*model.Cluster{
			svc: {Name: svc, Kind: model.KindEDS, ConnectTimeout: time.Second,
				UpstreamTLS: &model.UpstreamTLS{SANs: []spiffeid.ID{serverID}, SNI: "server.bench.svc.cluster.local"}},
			model.PassthroughCluster: {Name: model.PassthroughCluster, Kind: model.KindOriginalDst, ConnectTimeout: time.Second},
		},
		Endpoints: map[string][]model.Endpoint{svc: {{Addr: peer}}},
	}
}

// serverConfig is the server pod's inbound listener: STRICT mTLS on the
// app's port, clients authorized by trust domain, forwarded to app.
func serverConfig(app netip.AddrPort) *model.Config {
	name := fmt.Sprintf("inbound|%d", app.Port())
	return &model.Config{
		Version: map[string]string{model.ListenerType: "1", model.ClusterType: "1"},
		Inbound: &model.Listener{Name: model.InboundListener, UseOriginalDst: true, InspectTLS: true,
			Chains: []*model.FilterChain{{Name: name + "|tls", Match: model.ChainMatch{DestPort: app.Port(), TransportProtocol: "tls"},
				TLS: &model.DownstreamTLS{RequireClientCert: true}, Target: model.Target{Cluster: name}}}},
		Clusters: map[string]*model.Cluster{name: {Name: name, Kind: model.KindStatic, ConnectTimeout: time.Second,
			StaticEndpoints: []model.Endpoint{{Addr: app}}}},
	}
}

// l7ClientConfig is clientConfig with the service port HTTP (docs/l7.md,
// client side, as sidecar/proxy's l7ClientConfig): the chain is an HCM
// routed by route configuration serviceCluster, whose one route "default"
// sends every request to the cluster without timeout and with the
// translator's retry policy; the EDS cluster is HTTP/2 over the same mTLS
// (ALPN h2), least request, with the contract's outlier detection and
// retry budget.
func l7ClientConfig(peer netip.AddrPort) *model.Config {
	const svc = serviceCluster
	c := clientConfig(peer)
	c.Version[model.RouteType] = "1"
	c.Outbound.Chains[0].Target = model.Target{RouteConfig: svc}
	c.Routes = map[string]*model.RouteConfig{svc: {Name: svc, VirtualHosts: []*model.VirtualHost{{
		Name: "server.bench:80", Domains: []string{"*"},
		Routes: []*model.Route{{Name: "default", Match: model.RouteMatch{Prefix: "/"},
			Clusters: []model.WeightedCluster{{Name: svc, Weight: 1}},
			Timeout:  0, // none: streams and long polls are not cut
			Retry: &model.RetryPolicy{
				On:         model.RetryConnectFailure | model.RetryRefusedStream | model.RetryUnavailable | model.RetryRetriableStatusCodes,
				NumRetries: 2, PreviousHosts: true, StatusCodes: []int{503}}}},
	}}}}
	cl := c.Clusters[svc]
	cl.LB = model.LeastRequest
	cl.UpstreamTLS.ALPN = []string{"h2"}
	cl.HTTP = model.HTTP2
	cl.Outlier = &model.OutlierDetection{Consecutive5xx: 5, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second,
		MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 50}
	cl.RetryBudget = &model.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}
	return c
}

// l7ServerConfig is serverConfig with the app's port HTTP (docs/l7.md,
// server side, as sidecar/proxy's l7ServerConfig): the chain
// inbound|<port>|h2 (TLS with ALPN h2, STRICT) before the port's L4 TLS
// chain, route configuration inbound|<port> (every request to cluster
// inbound|<port>, no timeout, no retries), and the cluster delivering in
// proto from the inbound source address (127.0.0.6), as the translator's
// inbound cluster does.
func l7ServerConfig(app netip.AddrPort, proto model.HTTPProtocol) *model.Config {
	name := fmt.Sprintf("inbound|%d", app.Port())
	c := serverConfig(app)
	c.Version[model.RouteType] = "1"
	h2 := &model.FilterChain{Name: name + "|h2",
		Match: model.ChainMatch{DestPort: app.Port(), TransportProtocol: "tls", AppProtocols: []string{"h2"}},
		TLS:   &model.DownstreamTLS{RequireClientCert: true, ALPN: []string{"h2"}}, Target: model.Target{RouteConfig: name},
		Inbound: &model.InboundMeta{Mode: "STRICT"}}
	c.Inbound.Chains = append([]*model.FilterChain{h2}, c.Inbound.Chains...)
	c.Routes = map[string]*model.RouteConfig{name: {Name: name, VirtualHosts: []*model.VirtualHost{{
		Name: name, Domains: []string{"*"},
		Routes: []*model.Route{{Name: "default", Match: model.RouteMatch{Prefix: "/"},
			Clusters: []model.WeightedCluster{{Name: name, Weight: 1}}}},
	}}}}
	cl := c.Clusters[name]
	cl.HTTP = proto
	cl.SourceAddrs = []netip.Addr{model.InboundSourceIPv4, model.InboundSourceIPv6}
	return c
}
