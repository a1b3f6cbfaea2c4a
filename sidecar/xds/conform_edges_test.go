package xds

import (
	"slices"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	grpclogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	subsetcluster "github.com/weftmesh/weft/sidecar/internal/envoy/config/cluster/v3"
	subsetcore "github.com/weftmesh/weft/sidecar/internal/envoy/config/core/v3"
	subsetendpoint "github.com/weftmesh/weft/sidecar/internal/envoy/config/endpoint/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Tests of edges the mutation run of 2026-12-03 found unpinned
// ([test-honesty] #24, docs/mutation.md).

// TestMapKeyRules: a map's keys are checked against its key rule, every
// key: filter_metadata's keys must not be empty (Envoy's min_len 1), here
// beside a valid one.
func TestMapKeyRules(t *testing.T) {
	r := mesh{services: []string{"a.demo"}}.envoy(t)
	l := r[model.ListenerType]["outbound"].(*listenerv3.Listener)
	md := l.DefaultFilterChain.Metadata.FilterMetadata
	if md["weft.egress"] == nil {
		t.Fatal("the fixture's default chain has no weft.egress metadata")
	}
	md[""] = &structpb.Struct{}
	_, err := r.subset()
	if err == nil || !strings.Contains(err.Error(), `filter_metadata key ""`) {
		t.Fatalf("an empty filter_metadata key: %v", err)
	}
}

// TestMaxItemsIsInclusive: a list of exactly its rule's max_items is
// accepted, one more refused (a route's request_headers_to_add: 1000).
func TestMaxItemsIsInclusive(t *testing.T) {
	const field = "envoy.config.route.v3.Route.request_headers_to_add"
	c, ok := envoyRules[field]
	if !ok || c.maxItems != 1000 {
		t.Fatalf("rule of %s: %+v", field, c)
	}
	for _, n := range []int{1000, 1001} {
		r := &routev3.Route{}
		for range n {
			r.RequestHeadersToAdd = append(r.RequestHeadersToAdd, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x", Value: "y"}})
		}
		m := r.ProtoReflect()
		err := c.check(m, m.Descriptor().Fields().ByName("request_headers_to_add"), "route")
		if (err == nil) != (n == 1000) {
			t.Errorf("%d headers: %v", n, err)
		}
	}
}

// TestPercentBoundsAreInclusive: a Percent of exactly 0 or 100 is
// accepted (Envoy's double gte 0, lte 100), just outside refused.
func TestPercentBoundsAreInclusive(t *testing.T) {
	c := envoyRules["envoy.type.v3.Percent.value"]
	for _, tc := range []struct {
		v  float64
		ok bool
	}{{0, true}, {100, true}, {50, true}, {-0.001, false}, {100.001, false}} {
		m := (&typev3.Percent{Value: tc.v}).ProtoReflect()
		err := c.check(m, m.Descriptor().Fields().ByName("value"), "percent")
		if (err == nil) != tc.ok {
			t.Errorf("Percent %v: %v", tc.v, err)
		}
	}
}

// TestRefusedEnumNamed: an enum value a rule refuses is named in the error
// (SubjectAltNameMatcher.san_type SAN_TYPE_UNSPECIFIED).
func TestRefusedEnumNamed(t *testing.T) {
	c := envoyRules["envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher.san_type"]
	m := (&tlsv3.SubjectAltNameMatcher{}).ProtoReflect()
	err := c.check(m, m.Descriptor().Fields().ByName("san_type"), "san_type")
	if err == nil || err.Error() != "san_type: SAN_TYPE_UNSPECIFIED is not allowed" {
		t.Fatalf("got %v", err)
	}
}

// TestMaxBytesIsInclusive: a string of exactly its rule's max_bytes is
// accepted, one byte more refused (a header value: 16384).
func TestMaxBytesIsInclusive(t *testing.T) {
	c := envoyRules["envoy.config.core.v3.HeaderValue.value"]
	if c.maxBytes != 16384 {
		t.Fatalf("rule: %+v", c)
	}
	fd := (&corev3.HeaderValue{}).ProtoReflect().Descriptor().Fields().ByName("value")
	for _, n := range []int{16384, 16385} {
		err := c.value(fd, protoreflect.ValueOfString(strings.Repeat("v", n)), "value")
		if (err == nil) != (n == 16384) {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}

// TestADSSourceVersions: a ConfigSource over ADS may leave
// resource_api_version unset (AUTO) or say V3; V2 is refused.
func TestADSSourceVersions(t *testing.T) {
	for _, tc := range []struct {
		v  subsetcore.ApiVersion
		ok bool
	}{{subsetcore.ApiVersion_AUTO, true}, {subsetcore.ApiVersion_V3, true}, {subsetcore.ApiVersion_V2, false}} {
		cs := &subsetcore.ConfigSource{ResourceApiVersion: tc.v,
			ConfigSourceSpecifier: &subsetcore.ConfigSource_Ads{Ads: &subsetcore.AggregatedConfigSource{}}}
		if err := adsSource(cs); (err == nil) != tc.ok {
			t.Errorf("resource_api_version %s: %v", tc.v, err)
		}
	}
}

// TestClusterConnectTimeout: a cluster without connect_timeout gets
// Envoy's default, 5s; one given is kept; zero or less is refused.
func TestClusterConnectTimeout(t *testing.T) {
	for _, tc := range []struct {
		d    *durationpb.Duration
		want time.Duration // 0: refused
	}{
		{nil, 5 * time.Second},
		{durationpb.New(2 * time.Second), 2 * time.Second},
		{durationpb.New(0), 0},
		{durationpb.New(-time.Second), 0},
	} {
		c := &subsetcluster.Cluster{Name: model.BlackHoleCluster, ConnectTimeout: tc.d,
			ClusterDiscoveryType: &subsetcluster.Cluster_Type{Type: subsetcluster.Cluster_STATIC}}
		out, err := builder{}.cluster(c)
		switch {
		case tc.want == 0 && err == nil:
			t.Errorf("connect_timeout %v accepted", tc.d.AsDuration())
		case tc.want != 0 && err != nil:
			t.Errorf("connect_timeout %v: %v", tc.d, err)
		case tc.want != 0 && out.ConnectTimeout != tc.want:
			t.Errorf("connect_timeout %v gave %v, want %v", tc.d, out.ConnectTimeout, tc.want)
		}
	}
}

// TestBlackHoleClusterHasNoEndpoints: BlackHoleCluster may carry a
// load_assignment, but one with an endpoint is refused.
func TestBlackHoleClusterHasNoEndpoints(t *testing.T) {
	ep := &subsetendpoint.LbEndpoint{HostIdentifier: &subsetendpoint.LbEndpoint_Endpoint{Endpoint: &subsetendpoint.Endpoint{
		Address: &subsetcore.Address{Address: &subsetcore.Address_SocketAddress{SocketAddress: &subsetcore.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &subsetcore.SocketAddress_PortValue{PortValue: 9}}}}}}}
	for _, tc := range []struct {
		name string
		la   *subsetendpoint.ClusterLoadAssignment
		ok   bool
	}{
		{"none", nil, true},
		{"empty", &subsetendpoint.ClusterLoadAssignment{ClusterName: model.BlackHoleCluster}, true},
		{"an endpoint", &subsetendpoint.ClusterLoadAssignment{ClusterName: model.BlackHoleCluster,
			Endpoints: []*subsetendpoint.LocalityLbEndpoints{{LbEndpoints: []*subsetendpoint.LbEndpoint{ep}}}}, false},
	} {
		c := &subsetcluster.Cluster{Name: model.BlackHoleCluster, LoadAssignment: tc.la,
			ClusterDiscoveryType: &subsetcluster.Cluster_Type{Type: subsetcluster.Cluster_STATIC}}
		if _, err := (builder{}).cluster(c); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestEDSServiceName: an EDS cluster's eds_cluster_config.service_name may
// be empty or the cluster's own name (what the sidecar asks EDS for);
// another name is refused.
func TestEDSServiceName(t *testing.T) {
	const name = "outbound|80|server.demo"
	for _, tc := range []struct {
		sn string
		ok bool
	}{{"", true}, {name, true}, {"outbound|80|other.demo", false}} {
		r := mesh{services: []string{"server.demo"}}.envoy(t)
		c, ok := r[model.ClusterType][name].(*clusterv3.Cluster)
		if !ok || c.GetEdsClusterConfig() == nil {
			t.Fatalf("fixture: no EDS cluster %s", name)
		}
		c.EdsClusterConfig.ServiceName = tc.sn
		if _, err := buildEnvoy(r); (err == nil) != tc.ok {
			t.Errorf("service_name %q: %v", tc.sn, err)
		}
	}
}

// TestOutlierEjectionTimes: max_ejection_time may equal base_ejection_time
// (Envoy ejects for exactly that long), not be less.
func TestOutlierEjectionTimes(t *testing.T) {
	for _, tc := range []struct {
		base, max time.Duration
		ok        bool
	}{{30 * time.Second, 30 * time.Second, true}, {30 * time.Second, 31 * time.Second, true}, {30 * time.Second, 29 * time.Second, false}} {
		od := &subsetcluster.OutlierDetection{BaseEjectionTime: durationpb.New(tc.base), MaxEjectionTime: durationpb.New(tc.max)}
		if _, err := outlierDetection(od); (err == nil) != tc.ok {
			t.Errorf("base %v, max %v: %v", tc.base, tc.max, err)
		}
	}
}

// TestValidPort: a port in a resource name is 1 to 65535, decimal.
func TestValidPort(t *testing.T) {
	for s, want := range map[string]bool{"1": true, "80": true, "65535": true, "0": false, "65536": false, "-1": false, "x": false, "": false} {
		if got := validPort(s); got != want {
			t.Errorf("validPort(%q) = %t, want %t", s, got, want)
		}
	}
}

// TestSocketAddressPorts: an endpoint's port_value is 1 to 65535.
func TestSocketAddressPorts(t *testing.T) {
	for port, ok := range map[uint32]bool{1: true, 65535: true, 0: false, 65536: false} {
		a := &subsetcore.Address{Address: &subsetcore.Address_SocketAddress{SocketAddress: &subsetcore.SocketAddress{
			Address: "198.18.0.1", PortSpecifier: &subsetcore.SocketAddress_PortValue{PortValue: port}}}}
		if _, err := socketAddress(a); (err == nil) != ok {
			t.Errorf("port_value %d: %v", port, err)
		}
	}
}

// TestHTTPFiltersRouterByName: the router may be named without a
// typed_config (Envoy's default for that name); another filter without
// typed_config is refused.
func TestHTTPFiltersRouterByName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{{"envoy.filters.http.router", true}, {"envoy.filters.http.cors", false}} {
		r := l7Set(t)
		setHTTPFilters(t, inboundListener(r), 0, &hcmv3.HttpFilter{Name: tc.name})
		if _, err := buildEnvoy(r); (err == nil) != tc.ok {
			t.Errorf("%s without typed_config: %v", tc.name, err)
		}
	}
}

// TestHTTPRBACPrincipalsRefused: an HTTP RBAC policy's principals are
// checked as a network one's: a SPIFFE ID of another trust domain, and
// sets nested too deep, are refused.
func TestHTTPRBACPrincipalsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		pr   *rbacv3.Principal
		want string
	}{
		{"another trust domain", envoyExactID("spiffe://evil.org/ns/demo/sa/client"), "principals 0: authenticated.principal_name.exact"},
		{"nested too deep", nestedSets(maxPrincipalSetDepth+1, envoyAndIDs), "principals 0: and_ids"},
	} {
		r := l7Set(t)
		setHTTPFilters(t, inboundListener(r), 0, httpRBAC(t, rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
			"p": {Principals: []*rbacv3.Principal{tc.pr}, Permissions: []*rbacv3.Permission{permAny()}}}), routerFilter(t))
		if _, err := buildEnvoy(r); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

// TestHTTPRBACPortBounds: an HTTP RBAC destination_port is 1 to 65535.
func TestHTTPRBACPortBounds(t *testing.T) {
	for port, ok := range map[uint32]bool{65535: true, 1: true, 65536: false} {
		r := l7Set(t)
		setHTTPFilters(t, inboundListener(r), 0, httpRBAC(t, rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
			"p": {Principals: []*rbacv3.Principal{envoyAnyID()}, Permissions: []*rbacv3.Permission{permPort(port)}}}), routerFilter(t))
		if _, err := buildEnvoy(r); (err == nil) != ok {
			t.Errorf("destination_port %d: %v", port, err)
		}
	}
}

// TestTCPAccessLogCommonConfigChecked: a tcp_grpc access log's
// common_config is checked: a log to a cluster other than the control
// plane's is refused.
func TestTCPAccessLogCommonConfigChecked(t *testing.T) {
	r := mesh{services: []string{"server.demo"}}.envoy(t)
	l := r[model.ListenerType]["outbound"].(*listenerv3.Listener)
	f := l.DefaultFilterChain.Filters[len(l.DefaultFilterChain.Filters)-1]
	var tp tcpproxyv3.TcpProxy
	if err := f.GetTypedConfig().UnmarshalTo(&tp); err != nil || len(tp.AccessLog) == 0 {
		t.Fatalf("the outbound default chain has no logged tcp_proxy: %v", err)
	}
	common := alsCommon()
	common.GrpcService.GetEnvoyGrpc().ClusterName = "elsewhere"
	tp.AccessLog[0].ConfigType = &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &grpclogv3.TcpGrpcAccessLogConfig{CommonConfig: common})}
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &tp)}
	if _, err := buildEnvoy(r); err == nil || !strings.Contains(err.Error(), `cluster_name "elsewhere"`) {
		t.Fatalf("an access log to another cluster: %v", err)
	}
}

// TestHTTPAccessLogCommonConfigChecked: as the TCP one, an http_grpc
// access log's common_config is checked.
func TestHTTPAccessLogCommonConfigChecked(t *testing.T) {
	r := mesh{services: []string{"server.demo"}, httpEgress: true}.envoy(t)
	l := r[model.ListenerType]["outbound"].(*listenerv3.Listener)
	var f *listenerv3.Filter
	for _, c := range l.FilterChains {
		if c.GetName() == "egress|80|http" {
			f = c.Filters[len(c.Filters)-1]
		}
	}
	var h hcmv3.HttpConnectionManager
	if f == nil || f.GetTypedConfig().UnmarshalTo(&h) != nil || len(h.AccessLog) == 0 {
		t.Fatal("no logged egress|80|http chain")
	}
	common := alsCommon()
	common.GrpcService.GetEnvoyGrpc().ClusterName = "elsewhere"
	h.AccessLog[0].ConfigType = &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &grpclogv3.HttpGrpcAccessLogConfig{CommonConfig: common})}
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &h)}
	if _, err := buildEnvoy(r); err == nil || !strings.Contains(err.Error(), `cluster_name "elsewhere"`) {
		t.Fatalf("an access log to another cluster: %v", err)
	}
}

// TestNetworkRBACPermissionPorts: a network RBAC permission's
// destination_port is 1 to 65535, inside or_rules too, whose errors are
// the permission's.
func TestNetworkRBACPermissionPorts(t *testing.T) {
	for _, tc := range []struct {
		name string
		perm *rbacv3.Permission
		ok   bool
	}{
		{"65535", permPort(65535), true},
		{"65536", permPort(65536), false},
		{"65535 in or_rules", permOr(permPort(8080), permPort(65535)), true},
		{"65536 in or_rules", permOr(permPort(8080), permPort(65536)), false},
	} {
		r := mesh{}.envoy(t)
		f := r[model.ListenerType]["inbound"].(*listenerv3.Listener).FilterChains[0].Filters[0]
		var rb netrbacv3.RBAC
		if err := f.GetTypedConfig().UnmarshalTo(&rb); err != nil {
			t.Fatal(err)
		}
		rb.Rules.Policies["demo/allow-client"].Permissions = []*rbacv3.Permission{tc.perm}
		f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &rb)}
		if _, err := buildEnvoy(r); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestOutboundListenerNeedsOriginalDst: the outbound listener with neither
// use_original_dst nor the original_dst listener filter is refused (it
// could not tell where a connection was going).
func TestOutboundListenerNeedsOriginalDst(t *testing.T) {
	r := mesh{services: []string{"server.demo"}}.envoy(t)
	l := r[model.ListenerType]["outbound"].(*listenerv3.Listener)
	n := len(l.ListenerFilters)
	l.ListenerFilters = slices.DeleteFunc(l.ListenerFilters, func(f *listenerv3.ListenerFilter) bool {
		return f.GetName() == "envoy.filters.listener.original_dst"
	})
	if len(l.ListenerFilters) == n || !l.GetUseOriginalDst().GetValue() {
		t.Fatal("the fixture's outbound listener has no original_dst filter or use_original_dst")
	}
	l.UseOriginalDst = nil
	if _, err := buildEnvoy(r); err == nil || !strings.Contains(err.Error(), "use_original_dst must be true") {
		t.Fatalf("outbound without original_dst: %v", err)
	}
}

// TestListenerFilterKnownByType: a listener filter is known by its
// typed_config's type, whatever its name.
func TestListenerFilterKnownByType(t *testing.T) {
	r := mesh{services: []string{"server.demo"}}.envoy(t)
	for _, f := range r[model.ListenerType]["outbound"].(*listenerv3.Listener).ListenerFilters {
		f.Name = "custom." + f.Name
	}
	if _, err := buildEnvoy(r); err != nil {
		t.Fatalf("listener filters renamed: %v", err)
	}
}

// TestChainMatchNeedsItsInspectors: what a filter chain matches on needs
// the listener filter that learns it: transport_protocol and server_names
// the tls_inspector, application_protocols the tls_inspector or the
// http_inspector; a chain matching on none of them needs neither. And a
// destination_port is any port 1-65535 (the mutation run's survivors at
// validate_listener.go 197, 222 and 225).
func TestChainMatchNeedsItsInspectors(t *testing.T) {
	build := func(keep []string, edit func(*listenerv3.FilterChainMatch)) error {
		r := mesh{services: []string{"server.demo"}}.envoy(t)
		l := r[model.ListenerType]["outbound"].(*listenerv3.Listener)
		l.ListenerFilters = slices.DeleteFunc(l.ListenerFilters, func(f *listenerv3.ListenerFilter) bool {
			return f.GetName() != "envoy.filters.listener.original_dst" && !slices.Contains(keep, f.GetName())
		})
		// One in-mesh chain, matched by port and address only.
		var plain *listenerv3.FilterChain
		for _, fc := range l.FilterChains {
			if m := fc.GetFilterChainMatch(); m.GetTransportProtocol() == "" && len(m.GetServerNames()) == 0 && len(m.GetApplicationProtocols()) == 0 && len(m.GetPrefixRanges()) > 0 {
				plain = fc
				break
			}
		}
		if plain == nil {
			t.Fatal("the fixture's outbound listener has no chain matched by port and address only")
		}
		l.FilterChains = []*listenerv3.FilterChain{plain}
		l.DefaultFilterChain = nil
		edit(plain.FilterChainMatch)
		_, err := buildEnvoy(r)
		return err
	}
	const (
		tlsInspector  = "envoy.filters.listener.tls_inspector"
		httpInspector = "envoy.filters.listener.http_inspector"
	)
	for _, tc := range []struct {
		name string
		keep []string
		edit func(*listenerv3.FilterChainMatch)
		err  string // "" accepted
	}{
		{"no inspector, no protocol match", nil, func(*listenerv3.FilterChainMatch) {}, ""},
		{"transport_protocol without tls_inspector", []string{httpInspector}, func(m *listenerv3.FilterChainMatch) { m.TransportProtocol = "tls" },
			"transport_protocol and server_names need listener filter envoy.filters.listener.tls_inspector"},
		{"server_names without tls_inspector", []string{httpInspector}, func(m *listenerv3.FilterChainMatch) { m.ServerNames = []string{"api.example.com"} },
			"transport_protocol and server_names need listener filter envoy.filters.listener.tls_inspector"},
		{"server_names with tls_inspector", []string{tlsInspector}, func(m *listenerv3.FilterChainMatch) { m.ServerNames = []string{"api.example.com"} }, ""},
		{"application_protocols without an inspector", nil, func(m *listenerv3.FilterChainMatch) { m.ApplicationProtocols = []string{"http/1.1"} },
			"application_protocols need listener filter tls_inspector or http_inspector"},
		{"application_protocols with http_inspector", []string{httpInspector}, func(m *listenerv3.FilterChainMatch) { m.ApplicationProtocols = []string{"http/1.1"} }, ""},
		{"application_protocols with tls_inspector", []string{tlsInspector}, func(m *listenerv3.FilterChainMatch) { m.ApplicationProtocols = []string{"h2"} }, ""},
		{"destination_port 65535", nil, func(m *listenerv3.FilterChainMatch) { m.DestinationPort = wrapperspb.UInt32(65535) }, ""},
		{"destination_port 65536", nil, func(m *listenerv3.FilterChainMatch) { m.DestinationPort = wrapperspb.UInt32(65536) }, "65536 is not"},
	} {
		err := build(tc.keep, tc.edit)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}

// TestInboundMetadataMode: a chain's "weft.inbound" mode is STRICT or
// PERMISSIVE, anything else refused (validate_listener.go 307).
func TestInboundMetadataMode(t *testing.T) {
	for mode, want := range map[string]string{"STRICT": "", "PERMISSIVE": "", "strict": `mode "strict" is not STRICT or PERMISSIVE`, "DISABLE": `mode "DISABLE" is not STRICT or PERMISSIVE`} {
		r := mesh{services: []string{"server.demo"}}.envoy(t)
		l := r[model.ListenerType]["inbound"].(*listenerv3.Listener)
		fc := l.FilterChains[len(l.FilterChains)-1]
		fc.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"weft.inbound": {Fields: map[string]*structpb.Value{
			"mode": structpb.NewStringValue(mode)}}}}
		_, err := buildEnvoy(r)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("weft.inbound mode %q: %v, want %q", mode, err, want)
		}
	}
}

// TestVirtualHostDomainWildcards: a domain's "*" is the whole domain, its
// first or its last character, and there is one at most
// (validate_route.go 128).
func TestVirtualHostDomainWildcards(t *testing.T) {
	for domain, ok := range map[string]bool{
		"*.example.com": true, "*example.com": true, "api.example.*": true, "api.example.com": true,
		"api.*.com": false, "a*b": false, "*.example.*": false, "**": false, "*a*": false,
	} {
		r := mesh{services: []string{"server.demo"}, httpEgress: true}.envoy(t)
		rc := r[model.RouteType]["egress|80"].(*routev3.RouteConfiguration)
		rc.VirtualHosts[0].Domains = []string{domain}
		_, err := buildEnvoy(r)
		if ok != (err == nil) || !ok && !strings.Contains(err.Error(), "a wildcard must be the first or last character") {
			t.Errorf("domain %q: %v, want accepted %v", domain, err, ok)
		}
	}
}
