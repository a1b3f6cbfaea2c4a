package translate

import (
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/controlplane/mesh"
)

// The HTTP-aware data plane (docs/l7.md, "The contract additions"): the
// requests of a Service port that declares HTTP are routed one by one by
// the client sidecar and carried between sidecars over HTTP/2 on mTLS.

// httpProtocolOptionsName is the typed_extension_protocol_options key of
// envoy.extensions.upstreams.http.v3.HttpProtocolOptions.
const httpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// alpnH2 is the one protocol client and server sidecars negotiate for
// requests.
const alpnH2 = "h2"

// Defaults of an in-mesh HTTP route and cluster. Timeout none: a mesh-wide
// default must not cut gRPC streams or long polls (Istio's default too);
// retries: Istio's default policy less "cancelled", two retries on other
// endpoints; outlier detection and retry budget: Envoy's documented values
// but 50 % of endpoints ejectable (Istio's default max_ejection_percent
// is 100 with its default detection off; weft keeps half the endpoints
// serving).
var (
	httpRouteTimeout   = durationpb.New(0)
	httpRetryOn        = "connect-failure,refused-stream,unavailable,retriable-status-codes"
	httpRetries        = wrapperspb.UInt32(2)
	httpRetriableCodes = []uint32{503}
)

// isHTTP reports whether a Service port's requests are routed by the
// sidecars: it declares http, http2 or grpc (mesh.AppProtocol).
func isHTTP(p mesh.AppProtocol) bool {
	switch p {
	case mesh.AppProtocolHTTP, mesh.AppProtocolHTTP2, mesh.AppProtocolGRPC:
		return true
	}
	return false
}

// appSpeaksH2 reports whether the app is sent HTTP/2 (h2c) on a port of
// protocol p, else HTTP/1.1.
func appSpeaksH2(p mesh.AppProtocol) bool {
	return p == mesh.AppProtocolHTTP2 || p == mesh.AppProtocolGRPC
}

// hcmFilter is the http_connection_manager of an in-mesh chain: requests
// routed by route configuration routes (RDS), no access log; filters (the
// inbound chain's http rbac filters) come before the router.
func hcmFilter(statPrefix, routes string, filters ...*hcmv3.HttpFilter) *listenerv3.Filter {
	return networkFilter(wellknown.HTTPConnectionManager, &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routes,
			ConfigSource:    adsSource(),
		}},
		HttpFilters: append(filters, &hcmv3.HttpFilter{
			Name:       wellknown.Router,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
		}),
	})
}

// outboundHTTPRoutes is route configuration name of an HTTP Service port
// without routes attached: every request to cluster, with the mesh's
// default timeout and retries. The chain already chose the Service by
// address, so the one virtual host takes any Host.
func outboundHTTPRoutes(name, cluster string, svc *mesh.Service, port uint16) *routev3.RouteConfiguration {
	rc := everyRequestTo(name, vhostName(svc, port), defaultRetryPolicy())
	rc.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: cluster}
	return rc
}

// defaultRetryPolicy is the retry policy of every outbound HTTP route.
func defaultRetryPolicy() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:    httpRetryOn,
		NumRetries: httpRetries,
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})},
		}},
		RetriableStatusCodes: httpRetriableCodes,
	}
}

// inboundHTTPRoutes is route configuration inbound|<port>: every request
// to the app's port, no timeout and no retries of its own (the client
// sidecar's route has them).
func inboundHTTPRoutes(port uint16) *routev3.RouteConfiguration {
	name := "inbound|" + strconv.Itoa(int(port))
	return everyRequestTo(name, name, nil)
}

// everyRequestTo is route configuration name (and the cluster of the same
// name): one virtual host vhost taking any Host, one route "default" for
// every path, without timeout, with retry (nil: none).
func everyRequestTo(name, vhost string, retry *routev3.RetryPolicy) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    vhost,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:  "default",
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name},
					Timeout:          httpRouteTimeout,
					RetryPolicy:      retry,
				}},
			}},
		}},
	}
}

// httpProtocolOptions says in which protocol a cluster's endpoints are
// sent requests: HTTP/2 (between sidecars; h2c to an app) or HTTP/1.1.
func httpProtocolOptions(h2 bool) map[string]*anypb.Any {
	explicit := &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
	}
	if h2 {
		explicit.ProtocolConfig = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}
	}
	return map[string]*anypb.Any{httpProtocolOptionsName: mustAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: explicit},
	})}
}

// withHTTP makes an in-mesh EDS cluster carry requests: least request
// (the sidecar's peak-EWMA power of two choices), HTTP/2 over its mTLS
// with ALPN h2, outlier detection and a retry budget.
func withHTTP(c *clusterv3.Cluster) *clusterv3.Cluster {
	c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	c.TypedExtensionProtocolOptions = httpProtocolOptions(true)
	c.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(5),
		Interval:           durationpb.New(10e9),
		BaseEjectionTime:   durationpb.New(30e9),
		MaxEjectionTime:    durationpb.New(300e9),
		MaxEjectionPercent: wrapperspb.UInt32(50),
	}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: 20},
			MinRetryConcurrency: wrapperspb.UInt32(3),
		},
	}}}
	return c
}
