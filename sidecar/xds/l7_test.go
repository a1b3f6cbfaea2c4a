package xds

// The [l7] contract additions (docs/l7.md, "The contract additions"):
// in-mesh route configurations, HTTP clusters, the inbound h2 chain.

import (
	"encoding/json"
	"math"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// hcmFilter is the http_connection_manager of an in-mesh chain: RDS routes,
// the router, no access log.
func hcmFilter(t testing.TB, routes string) *listenerv3.Filter {
	hcm := &hcmv3.HttpConnectionManager{StatPrefix: routes, CodecType: hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: routes, ConfigSource: ads()}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})}}}}
	return &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}}
}

// httpOptions is typed_extension_protocol_options with explicit HTTP/2 or
// HTTP/1.1.
func httpOptions(t testing.TB, h2 bool) map[string]*anypb.Any {
	explicit := &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
		HttpProtocolOptions: &corev3.Http1ProtocolOptions{}}}
	if h2 {
		explicit.ProtocolConfig = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}
	}
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": anyOf(t, &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: explicit}})}
}

// withL7 makes an outbound EDS cluster the contract's HTTP one (its TLS
// context's ALPN aside).
func withL7(t testing.TB, c *clusterv3.Cluster) {
	c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	c.TypedExtensionProtocolOptions = httpOptions(t, true)
	c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(5), Interval: durationpb.New(10 * time.Second),
		BaseEjectionTime: durationpb.New(30 * time.Second), MaxEjectionTime: durationpb.New(300 * time.Second), MaxEjectionPercent: wrapperspb.UInt32(50)}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 20}, MinRetryConcurrency: wrapperspb.UInt32(3)}}}}
}

func prefixMatch(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func toCluster(c string) *routev3.RouteAction {
	return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: c}}
}

// outboundRoutes is the contract's route configuration of an in-mesh HTTP
// service port, as the translator emits it today.
func outboundRoutes(t testing.TB, svc string) *routev3.RouteConfiguration {
	name := "outbound|80|" + svc
	ra := toCluster(name)
	ra.Timeout = durationpb.New(0)
	ra.RetryPolicy = &routev3.RetryPolicy{
		RetryOn:    "connect-failure,refused-stream,unavailable,retriable-status-codes",
		NumRetries: wrapperspb.UInt32(2),
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: anyOf(t, &previoushostsv3.PreviousHostsPredicate{})}}},
		RetriableStatusCodes: []uint32{503},
	}
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: svc + ":80", Domains: []string{"*"},
		Routes: []*routev3.Route{{Name: "default", Match: prefixMatch("/"), Action: &routev3.Route_Route{Route: ra}}}}}}
}

// inboundRoutes is route configuration inbound|8080: every request to the
// app, no timeout, no retries.
func inboundRoutes() *routev3.RouteConfiguration {
	ra := toCluster("inbound|8080")
	ra.Timeout = durationpb.New(0)
	return &routev3.RouteConfiguration{Name: "inbound|8080", VirtualHosts: []*routev3.VirtualHost{{Name: "inbound|8080", Domains: []string{"*"},
		Routes: []*routev3.Route{{Name: "default", Match: prefixMatch("/"), Action: &routev3.Route_Route{Route: ra}}}}}}
}

// gammaRoutes is what [gamma] will emit: every match and action the
// sidecar honours.
func gammaRoutes(t testing.TB) *routev3.RouteConfiguration {
	rc := outboundRoutes(t, "server.demo")
	header := func(name string, sm *matcherv3.StringMatcher, invert bool) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: name, InvertMatch: invert,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
	}
	canary := &routev3.RouteAction{Timeout: durationpb.New(3 * time.Second),
		ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: "outbound|80|server.demo", Weight: wrapperspb.UInt32(90)},
			{Name: "outbound|80|other.demo", Weight: wrapperspb.UInt32(10)},
			{Name: "outbound|80|third.demo"}, // weight 0: never chosen
		}}},
		RetryPolicy: &routev3.RetryPolicy{RetryOn: " 5xx, ,reset,gateway-error", PerTryTimeout: durationpb.New(time.Second),
			RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}}}}
	rc.VirtualHosts[0].Routes = append([]*routev3.Route{
		{Name: "canary", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/api/v1/orders"}, Headers: []*routev3.HeaderMatcher{
			header("X-Canary", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "yes"}}, false),
			header("user-agent", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "curl/"}}, true),
			{Name: "x-debug", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
			{Name: "x-internal", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}},
			{Name: "x-trace"},
		}}, Action: &routev3.Route_Route{Route: canary}},
		{Match: prefixMatch("/static/"), Action: &routev3.Route_Route{Route: toCluster("outbound|80|other.demo")}},
	}, rc.VirtualHosts[0].Routes...)
	return rc
}

// TestBuildL7Contract builds the whole [l7] example of docs/l7.md (client
// and server side in one sidecar, plus the routes [gamma] will emit) from
// go-control-plane's types and checks the model field by field.
func TestBuildL7Contract(t *testing.T) {
	r := mesh{services: []string{"server.demo", "other.demo", "third.demo"}, l7: true}.envoy(t)
	r[model.RouteType]["outbound|80|server.demo"] = gammaRoutes(t)
	for typ, rs := range r {
		for name, m := range rs {
			if err := envoyValid(m); err != nil {
				t.Fatalf("%s %q: Envoy refuses it: %v", kindName(typ), name, err)
			}
		}
	}
	cfg, err := buildEnvoy(r)
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.Missing(); len(m) != 0 {
		t.Fatalf("Missing() = %v", m)
	}

	retry := &model.RetryPolicy{On: model.RetryConnectFailure | model.RetryRefusedStream | model.RetryUnavailable | model.RetryRetriableStatusCodes,
		NumRetries: 2, PreviousHosts: true, StatusCodes: []int{503}}
	wantRoutes := map[string]*model.RouteConfig{
		"outbound|80|server.demo": {Name: "outbound|80|server.demo", VirtualHosts: []*model.VirtualHost{{Name: "server.demo:80", Domains: []string{"*"}, Routes: []*model.Route{
			{Name: "canary", Match: model.RouteMatch{Path: "/api/v1/orders", Headers: []model.HeaderMatch{
				{Name: "x-canary", Exact: "yes"},
				{Name: "user-agent", Prefix: "curl/", Invert: true},
				{Name: "x-debug", Present: true},
				{Name: "x-internal", Present: true, Invert: true},
				{Name: "x-trace", Present: true},
			}}, Clusters: []model.WeightedCluster{{Name: "outbound|80|server.demo", Weight: 90}, {Name: "outbound|80|other.demo", Weight: 10}},
				Timeout: 3 * time.Second,
				Retry:   &model.RetryPolicy{On: model.Retry5xx | model.RetryReset | model.RetryGatewayError, NumRetries: 1, PerTryTimeout: time.Second, PreviousHosts: true}},
			{Match: model.RouteMatch{Prefix: "/static/"}, Clusters: []model.WeightedCluster{{Name: "outbound|80|other.demo", Weight: 1}}, Timeout: 15 * time.Second},
			{Name: "default", Match: model.RouteMatch{Prefix: "/"}, Clusters: []model.WeightedCluster{{Name: "outbound|80|server.demo", Weight: 1}}, Retry: retry},
		}}}},
		"outbound|80|other.demo": {Name: "outbound|80|other.demo", VirtualHosts: []*model.VirtualHost{{Name: "other.demo:80", Domains: []string{"*"}, Routes: []*model.Route{
			{Name: "default", Match: model.RouteMatch{Prefix: "/"}, Clusters: []model.WeightedCluster{{Name: "outbound|80|other.demo", Weight: 1}}, Retry: retry},
		}}}},
		"inbound|8080": {Name: "inbound|8080", VirtualHosts: []*model.VirtualHost{{Name: "inbound|8080", Domains: []string{"*"}, Routes: []*model.Route{
			{Name: "default", Match: model.RouteMatch{Prefix: "/"}, Clusters: []model.WeightedCluster{{Name: "inbound|8080", Weight: 1}}},
		}}}},
	}
	for name, want := range wantRoutes {
		deepEqual(t, "route configuration "+name, cfg.Routes[name], want)
	}

	c := cfg.Clusters["outbound|80|server.demo"]
	deepEqual(t, "outbound cluster HTTP", c.HTTP, model.HTTP2)
	deepEqual(t, "outbound cluster LB", c.LB, model.LeastRequest)
	deepEqual(t, "outbound cluster ALPN", c.UpstreamTLS.ALPN, []string{"h2"})
	deepEqual(t, "outbound cluster outlier detection", c.Outlier, &model.OutlierDetection{Consecutive5xx: 5, Interval: 10 * time.Second,
		BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 50})
	deepEqual(t, "outbound cluster retry budget", c.RetryBudget, &model.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3})
	in := cfg.Clusters["inbound|8080"]
	deepEqual(t, "inbound cluster HTTP", in.HTTP, model.HTTP1)
	if in.Outlier != nil || in.RetryBudget != nil {
		t.Errorf("inbound cluster = %+v", in)
	}

	h2 := cfg.Inbound.Chains[0]
	deepEqual(t, "inbound h2 chain match", h2.Match, model.ChainMatch{DestPort: 8080, TransportProtocol: "tls", AppProtocols: []string{"h2"}})
	deepEqual(t, "inbound h2 chain TLS", h2.TLS, &model.DownstreamTLS{RequireClientCert: true, ALPN: []string{"h2"}})
	deepEqual(t, "inbound h2 chain target", h2.Target, model.Target{RouteConfig: "inbound|8080"})
	if len(h2.RBAC) != 1 || h2.Egress != nil || h2.AccessLog {
		t.Errorf("inbound h2 chain = %+v", h2)
	}
	if l4 := cfg.Inbound.Chains[1]; l4.Target.Cluster != "inbound|8080" || l4.TLS.ALPN != nil {
		t.Errorf("inbound L4 chain = %+v", l4)
	}
	out := cfg.Outbound.Chains[0]
	deepEqual(t, "outbound chain target", out.Target, model.Target{RouteConfig: "outbound|80|server.demo"})
	if out.Egress != nil || out.AccessLog {
		t.Errorf("outbound chain = %+v", out)
	}

	// Routing: the first matching route wins.
	vh := cfg.Routes["outbound|80|server.demo"].VirtualHosts[0]
	h := http.Header{"X-Canary": {"yes"}, "User-Agent": {"Go-http-client/1.1"}, "X-Debug": {""}, "X-Trace": {"1"}}
	get := func(path string, h http.Header) model.RequestHead {
		return model.RequestHead{Method: "GET", Path: path, Header: h}
	}
	if r := vh.Route(get("/api/v1/orders?page=2", h)); r == nil || r.Name != "canary" {
		t.Errorf("canary request -> %+v", r)
	}
	h["X-Internal"] = []string{"1"}
	if r := vh.Route(get("/api/v1/orders", h)); r == nil || r.Name != "default" {
		t.Errorf("internal request -> %+v", r)
	}
	if r := vh.Route(get("/static/app.js", nil)); r == nil || r.Clusters[0].Name != "outbound|80|other.demo" {
		t.Errorf("static request -> %+v", r)
	}
}

// TestGoldenL7Model: the translator's golden HTTP sidecars build into the
// model the contract describes.
func TestGoldenL7Model(t *testing.T) {
	for _, dir := range []string{"client-http", "server-v1-http"} {
		t.Run(dir, func(t *testing.T) {
			cfg, err := buildEnvoy(loadGolden(t, goldenDir+"/"+dir))
			if err != nil {
				t.Fatal(err)
			}
			var routes int
			for name, rc := range cfg.Routes {
				if strings.HasPrefix(name, "egress|") {
					continue
				}
				routes++
				if len(rc.VirtualHosts) != 1 || len(rc.VirtualHosts[0].Routes) != 1 {
					t.Fatalf("route configuration %s = %s", name, dump(rc))
				}
				r := rc.VirtualHosts[0].Routes[0]
				if r.Match.Prefix != "/" || r.Timeout != 0 || len(r.Clusters) != 1 || r.Clusters[0].Name != name {
					t.Errorf("route configuration %s: route %s", name, dump(r))
				}
				c := cfg.Clusters[name]
				switch {
				case strings.HasPrefix(name, "outbound|"):
					want := &model.RetryPolicy{On: model.RetryConnectFailure | model.RetryRefusedStream | model.RetryUnavailable | model.RetryRetriableStatusCodes,
						NumRetries: 2, PreviousHosts: true, StatusCodes: []int{503}}
					deepEqual(t, name+" retry policy", r.Retry, want)
					if c.HTTP != model.HTTP2 || c.Outlier == nil || c.RetryBudget == nil || c.LB != model.LeastRequest {
						t.Errorf("cluster %s = %s", name, dump(c))
					}
				case strings.HasPrefix(name, "inbound|"):
					if r.Retry != nil || c.HTTP == model.HTTPNone {
						t.Errorf("route configuration %s: retry %+v, cluster HTTP %s", name, r.Retry, c.HTTP)
					}
				}
			}
			if routes == 0 {
				t.Errorf("no in-mesh route configuration in %s", dir)
			}
		})
	}
}

func deepEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s =\n%s\nwant\n%s", what, dump(got), dump(want))
	}
}

func dump(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// l7Set is the [l7] example the table tests mutate: services server.demo
// (HTTP) and plain.demo (L4), HTTP egress.
func l7Set(t testing.TB) envoySet {
	r := mesh{services: []string{"server.demo", "plain.demo"}, httpEgress: true, l7: true}.envoy(t)
	// plain.demo stays a TCP port: tcp_proxy to an L4 cluster.
	c := r[model.ClusterType]["outbound|80|plain.demo"].(*clusterv3.Cluster)
	c.LbPolicy, c.TypedExtensionProtocolOptions, c.OutlierDetection, c.CircuitBreakers = 0, nil, nil, nil
	c.TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, &tlsv3.UpstreamTlsContext{
		CommonTlsContext: commonTLS("spiffe://cluster.local/ns/demo/sa/server"), Sni: "plain.demo.svc.cluster.local"})}
	l := r[model.ListenerType]["outbound"].(*listenerv3.Listener)
	l.FilterChains[1].Filters = []*listenerv3.Filter{tcpProxy(t, "outbound|80|plain.demo", false)}
	delete(r[model.RouteType], "outbound|80|plain.demo")
	return r
}

// Accessors of l7Set's resources.
func meshRouteAction(r envoySet) *routev3.RouteAction {
	return meshRouteOf(r).GetRoute()
}

func meshRouteOf(r envoySet) *routev3.Route {
	return r[model.RouteType]["outbound|80|server.demo"].(*routev3.RouteConfiguration).VirtualHosts[0].Routes[0]
}

func l7Cluster(r envoySet, name string) *clusterv3.Cluster {
	return r[model.ClusterType][name].(*clusterv3.Cluster)
}

func upstreamALPN(t testing.TB, r envoySet, name string, alpn ...string) {
	c := l7Cluster(r, name)
	u := &tlsv3.UpstreamTlsContext{CommonTlsContext: commonTLS("spiffe://cluster.local/ns/demo/sa/server"), Sni: "x.demo.svc.cluster.local"}
	u.CommonTlsContext.AlpnProtocols = alpn
	c.TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, u)}
}

// TestL7Accepts: each new field's accepted values and what the model makes
// of them (Envoy's defaults for what is unset).
func TestL7Accepts(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(envoySet)
		check  func(*testing.T, *model.Config)
	}{
		{"path match", func(r envoySet) {
			meshRouteOf(r).Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/healthz"}}
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "match", meshRoute0(c).Match, model.RouteMatch{Path: "/healthz"})
		}},
		{"empty prefix is every path", func(r envoySet) {
			meshRouteOf(r).Match = prefixMatch("")
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "match", meshRoute0(c).Match, model.RouteMatch{Prefix: "/"})
		}},
		{"timeout unset: Envoy's 15 s", func(r envoySet) {
			meshRouteAction(r).Timeout = nil
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "timeout", meshRoute0(c).Timeout, 15*time.Second)
		}},
		{"timeout", func(r envoySet) {
			meshRouteAction(r).Timeout = durationpb.New(2500 * time.Millisecond)
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "timeout", meshRoute0(c).Timeout, 2500*time.Millisecond)
		}},
		{"retry defaults", func(r envoySet) {
			meshRouteAction(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx"}
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "retry", meshRoute0(c).Retry, &model.RetryPolicy{On: model.Retry5xx, NumRetries: 1})
		}},
		{"every retry_on condition", func(r envoySet) {
			meshRouteAction(r).RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure,refused-stream,reset,5xx,gateway-error,retriable-status-codes,unavailable",
				NumRetries: wrapperspb.UInt32(0), RetriableStatusCodes: []uint32{502, 503}}
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "retry", meshRoute0(c).Retry, &model.RetryPolicy{On: model.RetryConnectFailure | model.RetryRefusedStream | model.RetryReset |
				model.Retry5xx | model.RetryGatewayError | model.RetryRetriableStatusCodes | model.RetryUnavailable, StatusCodes: []int{502, 503}})
		}},
		{"no retry policy", func(r envoySet) {
			meshRouteAction(r).RetryPolicy = nil
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "retry", meshRoute0(c).Retry, (*model.RetryPolicy)(nil))
		}},
		{"no routes in a virtual host", func(r envoySet) {
			r[model.RouteType]["outbound|80|server.demo"].(*routev3.RouteConfiguration).VirtualHosts[0].Routes = nil
		}, func(t *testing.T, c *model.Config) {
			if vh := c.Routes["outbound|80|server.demo"].VirtualHosts[0]; vh.Routes != nil || vh.Route(model.RequestHead{Path: "/"}) != nil {
				t.Errorf("virtual host = %s", dump(vh))
			}
		}},
		{"weighted clusters", func(r envoySet) {
			meshRouteAction(r).ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
				{Name: "outbound|80|server.demo", Weight: wrapperspb.UInt32(0)}, {Name: "outbound|80|server.demo", Weight: wrapperspb.UInt32(math.MaxUint32)}}}}
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "clusters", meshRoute0(c).Clusters, []model.WeightedCluster{{Name: "outbound|80|server.demo", Weight: math.MaxUint32}})
		}},
		{"outlier detection defaults", func(r envoySet) {
			l7Cluster(r, "outbound|80|server.demo").OutlierDetection = &clusterv3.OutlierDetection{}
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "outlier", c.Clusters["outbound|80|server.demo"].Outlier, &model.OutlierDetection{Consecutive5xx: 5, Interval: 10 * time.Second,
				BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 10})
		}},
		{"retry budget defaults", func(r envoySet) {
			l7Cluster(r, "outbound|80|server.demo").CircuitBreakers.Thresholds[0].RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "budget", c.Clusters["outbound|80|server.demo"].RetryBudget, &model.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3})
		}},
		{"threshold without a budget", func(r envoySet) {
			l7Cluster(r, "outbound|80|server.demo").CircuitBreakers.Thresholds[0].RetryBudget = nil
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "budget", c.Clusters["outbound|80|server.demo"].RetryBudget, (*model.RetryBudget)(nil))
		}},
		{"no thresholds", func(r envoySet) {
			l7Cluster(r, "outbound|80|server.demo").CircuitBreakers.Thresholds = nil
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "budget", c.Clusters["outbound|80|server.demo"].RetryBudget, (*model.RetryBudget)(nil))
		}},
		{"inbound HTTP/2 app", func(r envoySet) {
			l7Cluster(r, "inbound|8080").TypedExtensionProtocolOptions = httpOptions(t, true)
		}, func(t *testing.T, c *model.Config) {
			deepEqual(t, "HTTP", c.Clusters["inbound|8080"].HTTP, model.HTTP2)
		}},
		{"inbound ORIGINAL_DST HTTP/1.1 app", func(r envoySet) {
			c := l7Cluster(r, "inbound|8080")
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
			c.LoadAssignment, c.LbPolicy, c.UpstreamBindConfig = nil, clusterv3.Cluster_CLUSTER_PROVIDED, inboundBind()
		}, func(t *testing.T, c *model.Config) {
			if in := c.Clusters["inbound|8080"]; in.Kind != model.KindOriginalDst || in.HTTP != model.HTTP1 {
				t.Errorf("inbound cluster = %s", dump(in))
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := l7Set(t)
			tc.mutate(r)
			cfg, err := buildEnvoy(r)
			if err != nil {
				t.Fatal(err)
			}
			for typ, rs := range r {
				for name, m := range rs {
					if err := envoyValid(m); err != nil {
						t.Errorf("%s %q: Envoy refuses it: %v", kindName(typ), name, err)
					}
				}
			}
			tc.check(t, cfg)
		})
	}
}

func meshRoute0(c *model.Config) *model.Route {
	return c.Routes["outbound|80|server.demo"].VirtualHosts[0].Routes[0]
}

// TestL7Rejects: everything of the additions the sidecar cannot honour is
// NACKed with an error naming the resource and the field.
func TestL7Rejects(t *testing.T) {
	const (
		rc   = `xds: route configuration "outbound|80|server.demo": `
		vh   = rc + `virtual host 0 "server.demo:80": route 0 "default": `
		cl   = `xds: cluster "outbound|80|server.demo": `
		in   = `xds: cluster "inbound|8080": `
		hdrs = vh + "match: headers 0: "
	)
	header := func(r envoySet, h *routev3.HeaderMatcher) {
		meshRouteOf(r).Match.Headers = []*routev3.HeaderMatcher{h}
	}
	stringMatch := func(sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
	}
	retry := func(r envoySet) *routev3.RetryPolicy { return meshRouteAction(r).RetryPolicy }
	weighted := func(r envoySet, ws ...*routev3.WeightedCluster_ClusterWeight) {
		meshRouteAction(r).ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: ws}}
	}
	outlier := func(r envoySet) *clusterv3.OutlierDetection {
		return l7Cluster(r, "outbound|80|server.demo").OutlierDetection
	}
	thresholds := func(r envoySet) []*clusterv3.CircuitBreakers_Thresholds {
		return l7Cluster(r, "outbound|80|server.demo").CircuitBreakers.Thresholds
	}
	inboundListener := func(r envoySet) *listenerv3.Listener { return r[model.ListenerType]["inbound"].(*listenerv3.Listener) }
	cases := []refusal{
		// Route matches.
		{"regex path", func(r envoySet) {
			meshRouteOf(r).Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/.*"}}}
		}, `xds: route configuration "outbound|80|server.demo": virtual_hosts[0].routes[0].match: field 10 of envoy.config.route.v3.RouteMatch is not supported`},
		{"query parameter regex", func(r envoySet) {
			meshRouteOf(r).Match.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "q", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a.*"}}}}}}
		}, `virtual_hosts[0].routes[0].match.query_parameters[0].string_match: field 5 of envoy.type.matcher.v3.StringMatcher is not supported`},
		{"relative path", func(r envoySet) {
			meshRouteOf(r).Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "healthz"}}
		}, vh + `match: path "healthz" does not start with "/"`},
		{"header regex", func(r envoySet) {
			header(r, stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a.*"}}}))
		}, `virtual_hosts[0].routes[0].match.headers[0].string_match: field 5 of envoy.type.matcher.v3.StringMatcher is not supported`},
		{"header suffix", func(r envoySet) {
			header(r, stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "a"}}))
		}, `string_match: field 3 of envoy.type.matcher.v3.StringMatcher is not supported`},
		{"header ignore_case", func(r envoySet) {
			header(r, stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "a"}, IgnoreCase: true}))
		}, `string_match: field 6 of envoy.type.matcher.v3.StringMatcher is not supported`},
		{"header range", func(r envoySet) {
			header(r, &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 1, End: 2}}})
		}, `headers[0]: field 6 of envoy.config.route.v3.HeaderMatcher is not supported`},
		{"header without a name", func(r envoySet) {
			header(r, &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}})
		}, `virtual_hosts[0].routes[0].match.headers[0].name: must not be empty`},
		{"header name with a newline", func(r envoySet) {
			header(r, &routev3.HeaderMatcher{Name: "x-a\nb"})
		}, `match.headers[0].name: "x-a\nb" contains NUL, CR or LF`},
		{"pseudo-header", func(r envoySet) {
			header(r, stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "/x"}}))
			meshRouteOf(r).Match.Headers[0].Name = ":path"
		}, hdrs + `name ":path": pseudo-headers other than :method, and host, are not supported (virtual host domains match the authority)`},
		{"host header", func(r envoySet) {
			header(r, stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "a.example"}}))
			meshRouteOf(r).Match.Headers[0].Name = "Host"
		}, hdrs + `name "Host": pseudo-headers other than :method, and host, are not supported`},
		// Route actions.
		{"direct response", func(r envoySet) {
			meshRouteOf(r).Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 404}}
		}, vh + `only a route action {cluster | weighted_clusters} or a redirect is supported (no direct_response in an in-mesh route)`},
		{"route metadata", func(r envoySet) {
			meshRouteOf(r).Metadata = egressMetadata("allow")
		}, vh + `field metadata is not supported`},
		{"cluster header", func(r envoySet) {
			meshRouteAction(r).ClusterSpecifier = &routev3.RouteAction_ClusterHeader{ClusterHeader: "x-cluster"}
		}, `virtual_hosts[0].routes[0].route: field 2 of envoy.config.route.v3.RouteAction is not supported`},
		{"path rewrite template", func(r envoySet) {
			meshRouteAction(r).PathRewrite = "/v2%REQ(:path)%"
		}, `virtual_hosts[0].routes[0].route: field 45 of envoy.config.route.v3.RouteAction is not supported`},
		{"negative timeout", func(r envoySet) {
			meshRouteAction(r).Timeout = durationpb.New(-time.Second)
		}, vh + `route.timeout: must not be negative`},
		{"weights all 0", func(r envoySet) {
			weighted(r, &routev3.WeightedCluster_ClusterWeight{Name: "outbound|80|server.demo"})
		}, vh + `route.weighted_clusters: the sum of the weights must be greater than 0`},
		{"weights over 32 bits", func(r envoySet) {
			weighted(r, &routev3.WeightedCluster_ClusterWeight{Name: "outbound|80|server.demo", Weight: wrapperspb.UInt32(math.MaxUint32)},
				&routev3.WeightedCluster_ClusterWeight{Name: "outbound|80|server.demo", Weight: wrapperspb.UInt32(1)})
		}, vh + `route.weighted_clusters: the sum of the weights 4294967296 exceeds 4294967295`},
		{"weighted cluster without a name", func(r envoySet) {
			weighted(r, &routev3.WeightedCluster_ClusterWeight{Weight: wrapperspb.UInt32(1)})
		}, vh + `route.weighted_clusters: clusters 0: name is required`},
		{"no weighted clusters", func(r envoySet) { weighted(r) },
			`virtual_hosts[0].routes[0].route.weighted_clusters.clusters: must not be empty`},
		{"weighted cluster header", func(r envoySet) {
			weighted(r, &routev3.WeightedCluster_ClusterWeight{Name: "outbound|80|server.demo", Weight: wrapperspb.UInt32(1), ClusterHeader: "x-c"})
		}, `weighted_clusters.clusters[0]: field 12 of envoy.config.route.v3.WeightedCluster.ClusterWeight is not supported`},
		// Retry policies.
		{"retry_on cancelled", func(r envoySet) { retry(r).RetryOn = "connect-failure,cancelled" },
			vh + `route.retry_policy: retry_on: "cancelled" is not supported (only 5xx, connect-failure, gateway-error, refused-stream, reset, retriable-status-codes, unavailable)`},
		{"retry_on retriable-4xx", func(r envoySet) { retry(r).RetryOn = "retriable-4xx" },
			`retry_on: "retriable-4xx" is not supported`},
		{"other retry host predicate", func(r envoySet) {
			retry(r).RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.omit_canary_hosts"}}
		}, vh + `route.retry_policy: retry_host_predicate 0: "envoy.retry_host_predicates.omit_canary_hosts" is not supported (only envoy.retry_host_predicates.previous_hosts)`},
		{"retry host predicate of another type", func(r envoySet) {
			retry(r).RetryHostPredicate[0].ConfigType = &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: anyOf(t, &structpb.Struct{})}
		}, `retry_host_predicate 0: "envoy.retry_host_predicates.previous_hosts" is not supported`},
		{"retry priority", func(r envoySet) {
			retry(r).RetryPriority = &routev3.RetryPolicy_RetryPriority{Name: "envoy.retry_priorities.previous_priorities"}
		}, `route.retry_policy: field 4 of envoy.config.route.v3.RetryPolicy is not supported`},
		{"retry back-off", func(r envoySet) {
			retry(r).RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Second)}
		}, `route.retry_policy: field 8 of envoy.config.route.v3.RetryPolicy is not supported`},
		{"retriable status code", func(r envoySet) { retry(r).RetriableStatusCodes = []uint32{503, 42} },
			vh + `route.retry_policy: retriable_status_codes: 42 is not an HTTP status`},
		{"negative per-try timeout", func(r envoySet) { retry(r).PerTryTimeout = durationpb.New(-time.Second) },
			vh + `route.retry_policy: per_try_timeout: must not be negative`},
		// Route clusters.
		{"route to PassthroughCluster", func(r envoySet) {
			meshRouteAction(r).ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "PassthroughCluster"}
		}, `xds: route configuration "outbound|80|server.demo" virtual host "server.demo:80" route 0 "default": cluster "PassthroughCluster" is not supported in a route of the outbound listener (only outbound|... clusters)`},
		{"route to the control plane", func(r envoySet) {
			meshRouteAction(r).ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "weft-controlplane"}
		}, `cluster "weft-controlplane" is not supported in a route of the outbound listener`},
		{"inbound route to an outbound cluster", func(r envoySet) {
			ra := r[model.RouteType]["inbound|8080"].(*routev3.RouteConfiguration).VirtualHosts[0].Routes[0].GetRoute()
			ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "outbound|80|server.demo"}
		}, `xds: route configuration "inbound|8080" virtual host "inbound|8080" route 0 "default": cluster "outbound|80|server.demo" is not supported in a route of the inbound listener (only inbound|... clusters)`},
		// Which kind of route configuration.
		{"egress route shape kept", func(r envoySet) {
			rc := r[model.RouteType]["egress|80"].(*routev3.RouteConfiguration)
			rc.VirtualHosts[1].Routes[0].GetRoute().Timeout = durationpb.New(time.Second)
		}, `xds: route configuration "egress|80": virtual host 1 "*": route: only route {cluster} is supported`},
		{"egress and in-mesh chain share routes", func(r envoySet) {
			l := r[model.ListenerType]["outbound"].(*listenerv3.Listener)
			l.FilterChains[0].Filters = []*listenerv3.Filter{hcmFilter(t, "egress|80")}
		}, `xds: route configuration "egress|80": referenced by the in-mesh listener "outbound" filter chain 0 "outbound|80|server.demo" and the egress listener "outbound" filter chain 2 "egress|80|http"`},
		{"in-mesh chain to egress routes", func(r envoySet) {
			l := r[model.ListenerType]["outbound"].(*listenerv3.Listener)
			l.FilterChains[2].Metadata = nil
		}, `xds: route configuration "egress|80": virtual host 0 "denied": route 0: only a route action {cluster | weighted_clusters} or a redirect is supported (no direct_response in an in-mesh route)`},
		// Clusters.
		{"HTTP/2 without ALPN h2", func(r envoySet) { upstreamALPN(t, r, "outbound|80|server.demo") },
			cl + `transport_socket: common_tls_context.alpn_protocols []: an HTTP/2 cluster must offer exactly ["h2"]`},
		{"HTTP/2 with ALPN h2 and http/1.1", func(r envoySet) { upstreamALPN(t, r, "outbound|80|server.demo", "h2", "http/1.1") },
			`alpn_protocols ["h2" "http/1.1"]: an HTTP/2 cluster must offer exactly ["h2"]`},
		{"ALPN h2 on an L4 cluster", func(r envoySet) { upstreamALPN(t, r, "outbound|80|plain.demo", "h2") },
			`xds: cluster "outbound|80|plain.demo": transport_socket: common_tls_context.alpn_protocols ["h2"]: "h2" needs typed_extension_protocol_options explicit http2_protocol_options`},
		{"outbound HTTP/1.1", func(r envoySet) {
			l7Cluster(r, "outbound|80|server.demo").TypedExtensionProtocolOptions = httpOptions(t, false)
		}, cl + `typed_extension_protocol_options "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http/1.1 is not supported for this cluster`},
		{"HTTP/3", func(r envoySet) {
			l7Cluster(r, "outbound|80|server.demo").TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": anyOf(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http3ProtocolOptions{Http3ProtocolOptions: &corev3.Http3ProtocolOptions{}}}}})}
		}, `explicit_http_config: field 3 of envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig is not supported`},
		{"HTTP/2 settings", func(r envoySet) {
			l7Cluster(r, "outbound|80|server.demo").TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": anyOf(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(10)}}}}})}
		}, `http2_protocol_options: field 2 of envoy.config.core.v3.Http2ProtocolOptions is not supported`},
		{"other protocol options", func(r envoySet) {
			l7Cluster(r, "outbound|80|server.demo").TypedExtensionProtocolOptions["envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"] = anyOf(t, &structpb.Struct{})
		}, cl + `typed_extension_protocol_options "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions" is not supported`},
		{"outlier detection on an L4 cluster", func(r envoySet) {
			l7Cluster(r, "outbound|80|plain.demo").OutlierDetection = &clusterv3.OutlierDetection{}
		}, `xds: cluster "outbound|80|plain.demo": outlier_detection is supported on HTTP clusters only (typed_extension_protocol_options)`},
		{"circuit breakers on an L4 cluster", func(r envoySet) {
			l7Cluster(r, "outbound|80|plain.demo").CircuitBreakers = &clusterv3.CircuitBreakers{}
		}, `xds: cluster "outbound|80|plain.demo": circuit_breakers is supported on HTTP clusters only`},
		{"outlier detection inbound", func(r envoySet) {
			l7Cluster(r, "inbound|8080").OutlierDetection = &clusterv3.OutlierDetection{}
		}, in + `field outlier_detection is not supported`},
		{"protocol options on PassthroughCluster", func(r envoySet) {
			l7Cluster(r, "PassthroughCluster").TypedExtensionProtocolOptions = httpOptions(t, false)
		}, `xds: cluster "PassthroughCluster": field typed_extension_protocol_options is not supported`},
		{"HTTP/1.1 to the control plane", func(r envoySet) {
			l7Cluster(r, "weft-controlplane").TypedExtensionProtocolOptions = httpOptions(t, false)
		}, `xds: cluster "weft-controlplane": typed_extension_protocol_options "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http/1.1 is not supported for this cluster`},
		{"consecutive_5xx 0", func(r envoySet) { outlier(r).Consecutive_5Xx = wrapperspb.UInt32(0) },
			cl + `outlier_detection: consecutive_5xx must be at least 1`},
		{"max_ejection_percent 101", func(r envoySet) { outlier(r).MaxEjectionPercent = wrapperspb.UInt32(101) },
			`outlier_detection.max_ejection_percent: 101 is not in [0, 100]`},
		{"interval 0", func(r envoySet) { outlier(r).Interval = durationpb.New(0) },
			`outlier_detection.interval: must be positive`},
		{"max_ejection_time below base", func(r envoySet) { outlier(r).MaxEjectionTime = durationpb.New(time.Second) },
			cl + `outlier_detection: max_ejection_time 1s is less than base_ejection_time 30s`},
		{"gateway failure detection", func(r envoySet) { outlier(r).ConsecutiveGatewayFailure = wrapperspb.UInt32(3) },
			`outlier_detection: field 10 of envoy.config.cluster.v3.OutlierDetection is not supported`},
		{"two thresholds", func(r envoySet) {
			c := l7Cluster(r, "outbound|80|server.demo")
			c.CircuitBreakers.Thresholds = append(c.CircuitBreakers.Thresholds, &clusterv3.CircuitBreakers_Thresholds{})
		}, cl + `circuit_breakers: thresholds: 2 thresholds, at most one (the default priority's) is supported`},
		{"high priority", func(r envoySet) { thresholds(r)[0].Priority = corev3.RoutingPriority_HIGH },
			`circuit_breakers.thresholds[0]: field 1 of envoy.config.cluster.v3.CircuitBreakers.Thresholds is not supported`},
		{"max_retries", func(r envoySet) { thresholds(r)[0].MaxRetries = wrapperspb.UInt32(3) },
			`circuit_breakers.thresholds[0]: field 5 of envoy.config.cluster.v3.CircuitBreakers.Thresholds is not supported`},
		{"per-host thresholds", func(r envoySet) {
			l7Cluster(r, "outbound|80|server.demo").CircuitBreakers.PerHostThresholds = []*clusterv3.CircuitBreakers_Thresholds{{}}
		}, `circuit_breakers: field 2 of envoy.config.cluster.v3.CircuitBreakers is not supported`},
		{"budget over 100 %", func(r envoySet) { thresholds(r)[0].RetryBudget.BudgetPercent.Value = 100.5 },
			`circuit_breakers.thresholds[0].retry_budget.budget_percent.value: 100.5 is not in [0, 100]`},
		{"budget NaN", func(r envoySet) { thresholds(r)[0].RetryBudget.BudgetPercent.Value = math.NaN() },
			`retry_budget.budget_percent.value: NaN is not in [0, 100]`},
		{"budget interval", func(r envoySet) { thresholds(r)[0].RetryBudget.BudgetInterval = durationpb.New(time.Second) },
			`retry_budget: field 3 of envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget is not supported`},
		// Chains.
		{"inbound HCM without ALPN match", func(r envoySet) {
			inboundListener(r).FilterChains[0].FilterChainMatch.ApplicationProtocols = nil
		}, `xds: listener "inbound": filter chain 0 "inbound|8080|h2": http_connection_manager on the inbound listener needs filter_chain_match {transport_protocol: "tls", application_protocols: ["h2"]} and a transport_socket with alpn_protocols ["h2"]`},
		{"inbound HCM without h2 negotiated", func(r envoySet) {
			inboundListener(r).FilterChains[0].TransportSocket = inboundListener(r).FilterChains[1].TransportSocket
		}, `filter chain 0 "inbound|8080|h2": http_connection_manager on the inbound listener needs`},
		{"inbound HCM in plaintext", func(r envoySet) {
			fc := inboundListener(r).FilterChains[0]
			fc.TransportSocket, fc.FilterChainMatch.TransportProtocol = nil, "raw_buffer"
		}, `filter chain 0 "inbound|8080|h2": http_connection_manager on the inbound listener needs`},
		{"inbound tcp_proxy negotiating h2", func(r envoySet) {
			inboundListener(r).FilterChains[1].TransportSocket = inboundListener(r).FilterChains[0].TransportSocket
		}, `xds: listener "inbound": filter chain 1 "inbound|8080|tls": transport_socket: alpn_protocols ["h2"]: "h2" is only for an http_connection_manager chain`},
	}
	checkRefusals(t, l7Set, cases)
}

// TestL7TransitionsAccepted: while a Service port turns HTTP, or stops
// being HTTP, its cluster and the chains and routes that use it arrive in
// separate responses, in either order. Every mix of the two is accepted
// (as Envoy accepts it): a check across them would refuse each response in
// turn and the sidecar would never leave the old configuration
// (crossCheck). The proxy copes with each mix at runtime.
func TestL7TransitionsAccepted(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(envoySet)
	}{
		{"L4 chain, HTTP cluster (clusters first)", func(r envoySet) {
			l := r[model.ListenerType]["outbound"].(*listenerv3.Listener)
			l.FilterChains[0].Filters = []*listenerv3.Filter{tcpProxy(t, "outbound|80|server.demo", false)}
			delete(r[model.RouteType], "outbound|80|server.demo")
		}},
		{"HTTP chain and route, L4 cluster (listeners first)", func(r envoySet) {
			c := l7Cluster(r, "outbound|80|server.demo")
			c.TypedExtensionProtocolOptions, c.OutlierDetection, c.CircuitBreakers = nil, nil, nil
			c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
			upstreamALPN(t, r, "outbound|80|server.demo")
		}},
		{"inbound h2 chain, app cluster without protocol", func(r envoySet) {
			l7Cluster(r, "inbound|8080").TypedExtensionProtocolOptions = nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := l7Set(t)
			tc.mutate(r)
			if _, err := buildEnvoy(r); err != nil {
				t.Fatalf("Build() = %v, want the mix accepted", err)
			}
		})
	}
}

// TestL7SetAccepted: the table tests' base is accepted as it is, by the
// sidecar and by Envoy.
func TestL7SetAccepted(t *testing.T) {
	r := l7Set(t)
	if _, err := buildEnvoy(r); err != nil {
		t.Fatal(err)
	}
}
