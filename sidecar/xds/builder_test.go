package xds

import (
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	grpclogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// mesh describes a test sidecar's configuration, built per the contract.
type mesh struct {
	services    []string // "<svc>.<ns>" with an EDS cluster on port 80 each
	httpEgress  bool     // an HTTP egress chain with RDS egress|80
	extraFilter string   // a network filter name put before tcp_proxy (e.g. redis_proxy)
	// l7: every service port is HTTP (docs/l7.md, "The contract additions"):
	// the outbound chains are http_connection_managers with routes
	// outbound|80|<svc>, the EDS clusters HTTP/2 ones, and inbound port 8080
	// has an h2 chain with route inbound|8080 to the HTTP/1.1 app.
	l7 bool
}

func anyOf(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}
}

func commonTLS(sans ...string) *tlsv3.CommonTlsContext {
	c := &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
	}
	bundle := &tlsv3.SdsSecretConfig{Name: "trust_bundle", SdsConfig: ads()}
	if len(sans) == 0 {
		c.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: bundle}
		return c
	}
	var ms []*tlsv3.SubjectAltNameMatcher
	for _, s := range sans {
		ms = append(ms, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}})
	}
	c.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
		DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: ms},
		ValidationContextSdsSecretConfig: bundle,
	}}
	return c
}

func tcpProxy(t testing.TB, cluster string, log bool) *listenerv3.Filter {
	tp := &tcpproxyv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}}
	if log {
		tp.AccessLog = []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.tcp_grpc", ConfigType: &accesslogv3.AccessLog_TypedConfig{
			TypedConfig: anyOf(t, &grpclogv3.TcpGrpcAccessLogConfig{CommonConfig: alsCommon()})}}}
	}
	return &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, tp)}}
}

func alsCommon() *grpclogv3.CommonGrpcAccessLogConfig {
	return &grpclogv3.CommonGrpcAccessLogConfig{LogName: "weft-egress", TransportApiVersion: corev3.ApiVersion_V3,
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "weft-controlplane"}}}}
}

func egressMetadata(decision string) *corev3.Metadata {
	s, _ := structpb.NewStruct(map[string]any{"policy": "demo/egress", "rule": "0", "decision": decision})
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"weft.egress": s}}
}

func staticCluster(name, ip string, port uint32) *clusterv3.Cluster {
	c := &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}
	if ip != "" {
		c.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(ip, port)}}}}}}}
	}
	return c
}

// inboundBind is the contract's upstream_bind_config of inbound
// clusters: from 127.0.0.6, and ::6 for IPv6.
func inboundBind() *corev3.BindConfig {
	return &corev3.BindConfig{
		SourceAddress: &corev3.SocketAddress{Address: "127.0.0.6", PortSpecifier: &corev3.SocketAddress_PortValue{}},
		ExtraSourceAddresses: []*corev3.ExtraSourceAddress{{
			Address: &corev3.SocketAddress{Address: "::6", PortSpecifier: &corev3.SocketAddress_PortValue{}}}},
	}
}

// resources builds every resource of m, by type.
func (m mesh) resources(t testing.TB) map[resource.Type][]types.Resource {
	t.Helper()
	res := map[resource.Type][]types.Resource{}
	add := func(typ resource.Type, r types.Resource) { res[typ] = append(res[typ], r) }

	add(resource.SecretType, &tlsv3.Secret{Name: "trust_bundle", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: testRootPEM(t)}}}}})

	inCluster := staticCluster("inbound|8080", "127.0.0.1", 8080)
	if m.l7 {
		inCluster.TypedExtensionProtocolOptions = httpOptions(t, false)
	}
	add(resource.ClusterType, inCluster)
	add(resource.ClusterType, staticCluster("BlackHoleCluster", "", 0))
	for _, n := range []string{"PassthroughCluster", "InboundPassthroughCluster"} {
		c := &clusterv3.Cluster{Name: n, ConnectTimeout: durationpb.New(5 * time.Second), LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}}
		if n == "InboundPassthroughCluster" {
			c.UpstreamBindConfig = inboundBind()
		}
		add(resource.ClusterType, c)
	}
	cp := staticCluster("weft-controlplane", "weft-controlplane.weft-system.svc", 15012)
	cp.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	cp.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{}
	add(resource.ClusterType, cp)

	var outChains []*listenerv3.FilterChain
	for i, svc := range m.services {
		name := "outbound|80|" + svc
		utls := &tlsv3.UpstreamTlsContext{CommonTlsContext: commonTLS("spiffe://cluster.local/ns/demo/sa/server"), Sni: svc + ".svc.cluster.local"}
		c := &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()}}
		if m.l7 {
			utls.CommonTlsContext.AlpnProtocols = []string{"h2"}
			withL7(t, c)
			add(resource.RouteType, outboundRoutes(t, svc))
		}
		c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
			TypedConfig: anyOf(t, utls)}}
		add(resource.ClusterType, c)
		add(resource.EndpointType, &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr("198.18.1.11", 8080)}},
				HealthStatus: corev3.HealthStatus_HEALTHY}}}}})
		outChains = append(outChains, &listenerv3.FilterChain{Name: name, FilterChainMatch: &listenerv3.FilterChainMatch{
			DestinationPort: wrapperspb.UInt32(80),
			PrefixRanges:    []*corev3.CidrRange{{AddressPrefix: "198.19.96." + string(rune('1'+i)), PrefixLen: wrapperspb.UInt32(32)}}},
			Filters: []*listenerv3.Filter{tcpProxy(t, name, false)}})
		if m.l7 {
			outChains[len(outChains)-1].Filters = []*listenerv3.Filter{hcmFilter(t, name)}
		}
	}
	if m.extraFilter != "" {
		outChains[0].Filters = append([]*listenerv3.Filter{{Name: m.extraFilter,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &structpb.Struct{})}}}, outChains[0].Filters...)
	}
	if m.httpEgress {
		hcm := &hcmv3.HttpConnectionManager{StatPrefix: "egress_http",
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "egress|80", ConfigSource: ads()}},
			HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})}}},
			AccessLog: []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.http_grpc", ConfigType: &accesslogv3.AccessLog_TypedConfig{
				TypedConfig: anyOf(t, &grpclogv3.HttpGrpcAccessLogConfig{CommonConfig: alsCommon()})}}}}
		outChains = append(outChains, &listenerv3.FilterChain{Name: "egress|80|http", Metadata: egressMetadata("allow"),
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80), TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"http/1.1", "h2c"}},
			Filters:          []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}}}})
		add(resource.RouteType, &routev3.RouteConfiguration{Name: "egress|80", VirtualHosts: []*routev3.VirtualHost{
			{Name: "denied", Domains: []string{"evil.example.com", "evil.example.com:80"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 403, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "weft: egress to evil.example.com denied by demo/egress"}}}}}}},
			{Name: "*", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "PassthroughCluster"}}}}}},
		}})
	}
	lf := func(name string, m proto.Message) *listenerv3.ListenerFilter {
		return &listenerv3.ListenerFilter{Name: name, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: anyOf(t, m)}}
	}
	rbac := &netrbacv3.RBAC{StatPrefix: "inbound|8080", Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"demo/allow-client": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8080}}},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
				PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://cluster.local/ns/demo/sa/client"}}}}}},
		}}}}
	inChains := []*listenerv3.FilterChain{{
		Name:             "inbound|8080|tls",
		FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(8080), TransportProtocol: "tls"},
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
			TypedConfig: anyOf(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: commonTLS(), RequireClientCertificate: wrapperspb.Bool(true)})}},
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, rbac)}}, tcpProxy(t, "inbound|8080", false)},
	}}
	if m.l7 {
		h2 := proto.Clone(inChains[0]).(*listenerv3.FilterChain)
		h2.Name = "inbound|8080|h2"
		h2.FilterChainMatch.ApplicationProtocols = []string{"h2"}
		dtls := &tlsv3.DownstreamTlsContext{CommonTlsContext: commonTLS(), RequireClientCertificate: wrapperspb.Bool(true)}
		dtls.CommonTlsContext.AlpnProtocols = []string{"h2"}
		h2.TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, dtls)}
		h2.Filters[1] = hcmFilter(t, "inbound|8080")
		inChains = append([]*listenerv3.FilterChain{h2}, inChains...)
		add(resource.RouteType, inboundRoutes())
	}
	add(resource.ListenerType, &listenerv3.Listener{Name: "inbound", Address: sockAddr("0.0.0.0", 15006),
		ListenerFilters: []*listenerv3.ListenerFilter{lf("envoy.filters.listener.original_dst", &origdstv3.OriginalDst{}), lf("envoy.filters.listener.tls_inspector", &tlsinspectorv3.TlsInspector{})},
		FilterChains:    inChains})
	add(resource.ListenerType, &listenerv3.Listener{Name: "outbound", Address: sockAddr("127.0.0.1", 15001), UseOriginalDst: wrapperspb.Bool(true),
		ListenerFilters: []*listenerv3.ListenerFilter{lf("envoy.filters.listener.original_dst", &origdstv3.OriginalDst{}),
			lf("envoy.filters.listener.tls_inspector", &tlsinspectorv3.TlsInspector{}), lf("envoy.filters.listener.http_inspector", &httpinspectorv3.HttpInspector{})},
		FilterChains:       outChains,
		DefaultFilterChain: &listenerv3.FilterChain{Name: "egress|default", Metadata: egressMetadata("allow"), Filters: []*listenerv3.Filter{tcpProxy(t, "PassthroughCluster", true)}},
	})
	return res
}

// snapshot builds m as a consistent go-control-plane snapshot.
func (m mesh) snapshot(t testing.TB, version string) *cachev3.Snapshot {
	t.Helper()
	s, err := cachev3.NewSnapshot(version, m.resources(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Consistent(); err != nil {
		t.Fatal(err)
	}
	return s
}

// envoy builds m with go-control-plane's types, by type and name.
func (m mesh) envoy(t testing.TB) envoySet {
	t.Helper()
	out := envoySet{}
	for typ, rs := range m.resources(t) {
		out[typ] = map[string]proto.Message{}
		for _, r := range rs {
			out[typ][resourceName(r)] = r
		}
	}
	return out
}

// set builds m as the sidecar's Resources: decoded as the client decodes.
func (m mesh) set(t testing.TB) Resources {
	t.Helper()
	return m.envoy(t).mustSubset(t)
}
