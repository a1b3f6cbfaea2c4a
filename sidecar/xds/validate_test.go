package xds

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func TestBuildAcceptsTheContract(t *testing.T) {
	cfg, err := Build(td, mesh{services: []string{"server.demo"}, httpEgress: true}.set(t))
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.Missing(); len(m) != 0 {
		t.Fatalf("Missing() = %v", m)
	}
	in := cfg.Inbound.Chains[0]
	if !in.TLS.RequireClientCert || in.Match.DestPort != 8080 || in.Target.Cluster != "inbound|8080" {
		t.Errorf("inbound chain = %+v", in)
	}
	if len(in.RBAC) != 1 || in.RBAC[0].Action != model.RBACAllow || in.RBAC[0].Policies[0].Principals[0].Exact != "spiffe://cluster.local/ns/demo/sa/client" {
		t.Errorf("inbound RBAC = %+v", in.RBAC)
	}
	if ok, _ := in.RBAC[0].Allows("spiffe://cluster.local/ns/demo/sa/client", 8080); !ok {
		t.Error("client denied")
	}
	if ok, _ := in.RBAC[0].Allows("spiffe://cluster.local/ns/demo/sa/other", 8080); ok {
		t.Error("other allowed")
	}
	eds := cfg.Clusters["outbound|80|server.demo"]
	if eds.Kind != model.KindEDS || eds.UpstreamTLS.SANs[0].String() != "spiffe://cluster.local/ns/demo/sa/server" || eds.UpstreamTLS.SNI != "server.demo.svc.cluster.local" {
		t.Errorf("EDS cluster = %+v", eds)
	}
	if got := cfg.Endpoints["outbound|80|server.demo"]; len(got) != 1 || got[0].Addr != netip.MustParseAddrPort("198.18.1.11:8080") {
		t.Errorf("endpoints = %v", got)
	}
	if c := cfg.Clusters["InboundPassthroughCluster"]; c.Kind != model.KindOriginalDst || len(c.SourceAddrs) != 2 {
		t.Errorf("InboundPassthroughCluster = %+v", c)
	}
	if c := cfg.Clusters["BlackHoleCluster"]; c.Kind != model.KindBlackhole {
		t.Errorf("BlackHoleCluster = %+v", c)
	}
	if d := cfg.Outbound.Default; d.Target.Cluster != "PassthroughCluster" || !d.AccessLog || d.Egress.Decision != "allow" {
		t.Errorf("default chain = %+v", d)
	}
	rc := cfg.Routes["egress|80"]
	if vh := rc.Match("evil.example.com:80"); vh == nil || vh.Deny == nil || vh.Deny.Status != 403 {
		t.Errorf("evil.example.com:80 -> %+v", vh)
	}
	if vh := rc.Match("api.example.com"); vh == nil || vh.Cluster != "PassthroughCluster" {
		t.Errorf("api.example.com -> %+v", vh)
	}
}

// TestBuildRejects: everything outside the contract is an error naming the
// resource and the field.
func TestBuildRejects(t *testing.T) {
	listener := func(r envoySet, name string) *listenerv3.Listener {
		return r[model.ListenerType][name].(*listenerv3.Listener)
	}
	cluster := func(r envoySet, name string) *clusterv3.Cluster {
		return r[model.ClusterType][name].(*clusterv3.Cluster)
	}
	// typedConfig replaces the typed_config of filter i of the inbound chain.
	typedConfig := func(r envoySet, i int, m proto.Message) {
		listener(r, "inbound").FilterChains[0].Filters[i].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, m)}
	}
	inboundRBAC := func(r envoySet) *netrbacv3.RBAC {
		var rb netrbacv3.RBAC
		if err := listener(r, "inbound").FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&rb); err != nil {
			t.Fatal(err)
		}
		return &rb
	}
	cases := []struct {
		name   string
		mesh   mesh
		mutate func(envoySet)
		want   string
	}{
		{"unknown filter", mesh{services: []string{"server.demo"}, extraFilter: "envoy.filters.network.redis_proxy"}, nil,
			`xds: listener "outbound": filter chain 0 "outbound|80|server.demo": filter "envoy.filters.network.redis_proxy" is not supported`},
		{"unknown cluster type", mesh{}, func(r envoySet) {
			cluster(r, "inbound|8080").ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}
		}, `xds: cluster "inbound|8080": type LOGICAL_DNS is not supported for this cluster (want STATIC)`},
		{"cluster outside the contract", mesh{}, func(r envoySet) {
			r[model.ClusterType]["redis"] = staticCluster("redis", "198.18.200.1", 6379)
		}, `xds: cluster "redis": name is not in the contract`},
		{"field not implemented", mesh{}, func(r envoySet) {
			cluster(r, "inbound|8080").CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
		}, `xds: cluster "inbound|8080": field 27 of envoy.config.cluster.v3.Cluster is not supported`},
		{"secret other than default", mesh{services: []string{"server.demo"}}, func(r envoySet) {
			c := cluster(r, "outbound|80|server.demo")
			u := &tlsv3.UpstreamTlsContext{CommonTlsContext: commonTLS("spiffe://cluster.local/ns/demo/sa/server")}
			u.CommonTlsContext.TlsCertificateSdsSecretConfigs[0].Name = "someone-else"
			c.TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, u)}
		}, `xds: cluster "outbound|80|server.demo": transport_socket: common_tls_context: tls_certificate_sds_secret_configs: only {name: "default"} without sds_config is supported`},
		{"SAN outside the trust domain", mesh{services: []string{"server.demo"}}, func(r envoySet) {
			c := cluster(r, "outbound|80|server.demo")
			u := &tlsv3.UpstreamTlsContext{CommonTlsContext: commonTLS("spiffe://evil.org/ns/demo/sa/server")}
			c.TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, u)}
		}, `is not in trust domain "cluster.local"`},
		{"other listener", mesh{}, func(r envoySet) {
			l := proto.Clone(listener(r, "outbound")).(*listenerv3.Listener)
			l.Name = "admin"
			r[model.ListenerType]["admin"] = l
		}, `xds: listener "admin": only listeners "inbound", "outbound" and those of destinations`},
		{"other address", mesh{}, func(r envoySet) {
			listener(r, "outbound").Address = sockAddr("0.0.0.0", 15001)
		}, `xds: listener "outbound": address 0.0.0.0:15001 is not supported (want 127.0.0.1:15001)`},
		{"unknown typed_config", mesh{}, func(r envoySet) {
			listener(r, "inbound").FilterChains[0].Filters[1].GetTypedConfig().TypeUrl = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v4.TcpProxy"
		}, `filter "envoy.filters.network.tcp_proxy" is not supported (typed_config envoy.extensions.filters.network.tcp_proxy.v4.TcpProxy)`},
		{"chain to the control plane", mesh{}, func(r envoySet) {
			l := r[model.ListenerType]["inbound"].(*listenerv3.Listener)
			l.FilterChains[0].Filters[1] = tcpProxy(t, "weft-controlplane", false)
		}, `xds: listener "inbound" filter chain 0 "inbound|8080|tls": tcp_proxy cluster "weft-controlplane" is the control plane`},
		{"endpoints for unknown cluster", mesh{}, func(r envoySet) {
			r[model.EndpointType] = map[string]proto.Message{"outbound|80|ghost.demo": &endpointv3.ClusterLoadAssignment{ClusterName: "outbound|80|ghost.demo"}}
		}, `xds: endpoints "outbound|80|ghost.demo": no EDS cluster "outbound|80|ghost.demo"`},
		{"routes nobody references", mesh{}, func(r envoySet) {
			r[model.RouteType] = map[string]proto.Message{"egress|81": &routev3.RouteConfiguration{Name: "egress|81"}}
		}, `xds: route configuration "egress|81": no http_connection_manager references it`},
		{"duplicate matches", mesh{services: []string{"server.demo"}}, func(r envoySet) {
			l := listener(r, "outbound")
			dup := proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain)
			dup.Name = "dup"
			l.FilterChains = append(l.FilterChains, dup)
		}, `xds: listener "outbound": filter chains 0 and 1 have the same match`},
		{"Envoy's constraint", mesh{}, func(r envoySet) {
			listener(r, "inbound").FilterChains[0].FilterChainMatch.DestinationPort = wrapperspb.UInt32(70000)
		}, `xds: listener "inbound": filter_chains[0].filter_chain_match.destination_port: 70000 is not in [1, 65535]`},
		{"source match", mesh{}, func(r envoySet) {
			listener(r, "inbound").FilterChains[0].FilterChainMatch.SourcePorts = []uint32{1}
		}, `xds: listener "inbound": filter_chains[0].filter_chain_match: field 7 of envoy.config.listener.v3.FilterChainMatch is not supported`},
		{"undefined enum value", mesh{}, func(r envoySet) {
			cluster(r, "inbound|8080").LbPolicy = 42
		}, `xds: cluster "inbound|8080": lb_policy: 42 is not a value of envoy.config.cluster.v3.Cluster.LbPolicy`},
		{"invalid duration", mesh{}, func(r envoySet) {
			cluster(r, "inbound|8080").ConnectTimeout = &durationpb.Duration{Seconds: 1, Nanos: -1}
		}, `xds: cluster "inbound|8080": connect_timeout: invalid duration`},
		{"typed_config field outside the subset", mesh{}, func(r envoySet) {
			typedConfig(r, 1, &tcpproxyv3.TcpProxy{StatPrefix: "in", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "inbound|8080"},
				IdleTimeout: durationpb.New(time.Minute)})
		}, `filter "envoy.filters.network.tcp_proxy": typed_config envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy: ` +
			`field 8 of envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy is not supported`},
		{"Envoy's constraint in a typed_config", mesh{}, func(r envoySet) {
			typedConfig(r, 1, &tcpproxyv3.TcpProxy{ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "inbound|8080"}})
		}, `typed_config envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy: stat_prefix: must not be empty`},
		{"policy without principals", mesh{}, func(r envoySet) {
			rb := inboundRBAC(r)
			rb.Rules.Policies["demo/allow-client"].Principals = nil
			typedConfig(r, 0, rb)
		}, `typed_config envoy.extensions.filters.network.rbac.v3.RBAC: rules.policies["demo/allow-client"].principals: must not be empty`},
		{"permission any: false", mesh{}, func(r envoySet) {
			rb := inboundRBAC(r)
			rb.Rules.Policies["demo/allow-client"].Permissions = []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: false}}}
			typedConfig(r, 0, rb)
		}, `rules.policies["demo/allow-client"].permissions[0].any: must be true`},
		{"principal outside the subset", mesh{}, func(r envoySet) {
			rb := inboundRBAC(r)
			rb.Rules.Policies["demo/allow-client"].Principals = []*rbacv3.Principal{{Identifier: &rbacv3.Principal_RemoteIp{
				RemoteIp: &corev3.CidrRange{AddressPrefix: "198.18.0.0", PrefixLen: wrapperspb.UInt32(15)}}}}
			typedConfig(r, 0, rb)
		}, `rules.policies["demo/allow-client"].principals[0]: field 11 of envoy.config.rbac.v3.Principal is not supported`},
		{"direct response status", mesh{httpEgress: true}, func(r envoySet) {
			rc := r[model.RouteType]["egress|80"].(*routev3.RouteConfiguration)
			rc.VirtualHosts[0].Routes[0].GetDirectResponse().Status = 700
		}, `xds: route configuration "egress|80": virtual_hosts[0].routes[0].direct_response.status: 700 is not in [200, 599]`},
		{"virtual host without domains", mesh{httpEgress: true}, func(r envoySet) {
			r[model.RouteType]["egress|80"].(*routev3.RouteConfiguration).VirtualHosts[1].Domains = nil
		}, `xds: route configuration "egress|80": virtual_hosts[1].domains: must not be empty`},
		{"control plane port", mesh{}, func(r envoySet) {
			sa := cluster(r, "weft-controlplane").LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress()
			sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: 70000}
		}, `xds: cluster "weft-controlplane": load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: 70000 is not in [0, 65535]`},
		{"control plane transport socket", mesh{}, func(r envoySet) {
			cluster(r, "weft-controlplane").TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
				TypedConfig: anyOf(t, &tlsv3.UpstreamTlsContext{Sni: strings.Repeat("x", 256)})}}
		}, `xds: cluster "weft-controlplane": transport_socket: typed_config envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext: sni: 256 bytes, at most 255 allowed`},
		{"secret name", mesh{}, func(r envoySet) {
			r[model.SecretType]["default"] = &tlsv3.Secret{Name: "default"}
		}, `xds: secret "default": only secret "trust_bundle" is supported`},
		{"resource type", mesh{}, func(r envoySet) {
			r["type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"] = map[string]proto.Message{}
		}, `resource type "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig" is not supported`},
		{"name mismatch", mesh{}, func(r envoySet) {
			r[model.ClusterType]["other"] = r[model.ClusterType]["BlackHoleCluster"]
		}, `xds: cluster "other": resource is named "BlackHoleCluster"`},
		{"listener filter", mesh{}, func(r envoySet) {
			l := listener(r, "inbound")
			l.ListenerFilters = append(l.ListenerFilters, &listenerv3.ListenerFilter{Name: "envoy.filters.listener.proxy_protocol",
				ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"}}})
		}, `listener filter 2: listener filter "envoy.filters.listener.proxy_protocol" is not supported`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.mesh.envoy(t)
			if tc.mutate != nil {
				tc.mutate(r)
			}
			_, err := buildEnvoy(r)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build() error = %v\nwant it to contain %s", err, tc.want)
			}
		})
	}
}

// TestBuildWaitsForReferences: names not delivered yet are not errors.
func TestBuildWaitsForReferences(t *testing.T) {
	r := mesh{services: []string{"server.demo"}, httpEgress: true}.set(t)
	delete(r, model.RouteType)
	delete(r, model.EndpointType)
	delete(r, model.SecretType)
	delete(r[model.ClusterType], "PassthroughCluster")
	cfg, err := Build(td, r)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(cfg.Missing(), ", ")
	if want := "endpoints outbound|80|server.demo, routes egress|80, cluster PassthroughCluster, secret trust_bundle"; got != want {
		t.Errorf("Missing() = %s, want %s", got, want)
	}
}
