package xds

// L7 authorization (docs/l7.md, "Authorization at L7 (contract)"): the
// envoy.filters.http.rbac filters of the inbound h2 chain's HCM.

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Permissions as go-control-plane builds them (the contract's shape).
func permPort(p uint32) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: p}}
}

func permAny() *rbacv3.Permission { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }

func permOr(ps ...*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func permAnd(ps ...*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func permHeader(h *routev3.HeaderMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
}

func permMethod(m string) *rbacv3.Permission {
	return permHeader(&routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m}}}})
}

func permPathMatcher(sm *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: sm}}}}
}

func permPath(exact string) *rbacv3.Permission {
	return permPathMatcher(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: exact}})
}

func permPrefix(prefix string) *rbacv3.Permission {
	return permPathMatcher(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix}})
}

// httpRBAC is an envoy.filters.http.rbac filter.
func httpRBAC(t testing.TB, action rbacv3.RBAC_Action, policies map[string]*rbacv3.Policy) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.rbac", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t,
		&httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: action, Policies: policies}})}}
}

func routerFilter(t testing.TB) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})}}
}

// setHTTPFilters replaces the http_filters of the HCM of chain i of the
// listener.
func setHTTPFilters(t testing.TB, l *listenerv3.Listener, i int, fs ...*hcmv3.HttpFilter) {
	t.Helper()
	f := l.FilterChains[i].Filters[len(l.FilterChains[i].Filters)-1]
	var h hcmv3.HttpConnectionManager
	if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
		t.Fatal(err)
	}
	h.HttpFilters = fs
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &h)}
}

// contractAuthz is docs/l7.md's example: on the inbound h2 chain, a DENY
// filter then an ALLOW filter before the router, the policies' permissions
// or_rules of to entries, each an and_rules of ports, methods and paths.
func contractAuthz(t testing.TB) []*hcmv3.HttpFilter {
	client := []*rbacv3.Principal{envoyExactID(clientID)}
	deny := httpRBAC(t, rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
		"demo/no-admin#0": {Principals: []*rbacv3.Principal{envoyAnyID()}, Permissions: []*rbacv3.Permission{
			permOr(permAnd(permOr(permPrefix("/admin/"), permPath("/admin"))))}},
	})
	allow := httpRBAC(t, rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
		"demo/api#0": {Principals: client, Permissions: []*rbacv3.Permission{permOr(
			permAnd(permPort(8080), permOr(permMethod("GET"), permMethod("HEAD")), permOr(permPrefix("/api/"), permPath("/healthz"))),
			permAnd(permMethod("POST"), permPath("/api/orders")),
		)}},
		"demo/ns#0": {Principals: []*rbacv3.Principal{envoyPrefixID(opsNS)}, Permissions: []*rbacv3.Permission{permAny()}},
	})
	return []*hcmv3.HttpFilter{deny, allow, routerFilter(t)}
}

const opsNS = "spiffe://cluster.local/ns/ops/sa/"

func authzSet(t testing.TB) envoySet {
	r := l7Set(t)
	setHTTPFilters(t, inboundListener(r), 0, contractAuthz(t)...)
	return r
}

// TestHTTPRBACRoundTrip: the contract's example, built with Envoy's own
// types, arrives in the model as the contract says and decides requests.
func TestHTTPRBACRoundTrip(t *testing.T) {
	c, err := buildEnvoy(authzSet(t))
	if err != nil {
		t.Fatal(err)
	}
	fc := c.Inbound.Chains[0]
	if fc.Name != "inbound|8080|h2" {
		t.Fatalf("chain 0 is %q", fc.Name)
	}
	any := []model.Principal{{Any: true}}
	want := []model.RBACFilter{
		{Action: model.RBACDeny, Policies: []model.RBACPolicy{{Name: "demo/no-admin#0", Principals: any,
			Permissions: []model.Permission{{Paths: []model.PathMatch{{Prefix: "/admin/"}, {Exact: "/admin"}}}}}}},
		{Action: model.RBACAllow, Policies: []model.RBACPolicy{
			{Name: "demo/api#0", Principals: []model.Principal{{Exact: clientID}}, Permissions: []model.Permission{
				{Ports: []uint16{8080}, Methods: []string{"GET", "HEAD"}, Paths: []model.PathMatch{{Prefix: "/api/"}, {Exact: "/healthz"}}},
				{Methods: []string{"POST"}, Paths: []model.PathMatch{{Exact: "/api/orders"}}},
			}},
			{Name: "demo/ns#0", Principals: []model.Principal{{Prefix: opsNS}}, Permissions: []model.Permission{{}}},
		}},
	}
	deepEqual(t, "HTTPRBAC", fc.HTTPRBAC, want)
	// The network RBAC filter of the chain stays as it was.
	if len(fc.RBAC) != 1 || fc.RBAC[0].Policies[0].Name != "demo/allow-client" || len(fc.RBAC[0].Policies[0].Permissions) != 0 {
		t.Errorf("network RBAC = %+v", fc.RBAC)
	}
	if fc.Target.RouteConfig != "inbound|8080" {
		t.Errorf("target = %+v", fc.Target)
	}

	other := "spiffe://cluster.local/ns/other/sa/x"
	for _, tc := range []struct {
		peer         string
		port         uint16
		method, path string
		allowed      bool
		policy       string
	}{
		{clientID, 8080, "GET", "/api/x", true, "demo/api#0"},
		{clientID, 8080, "HEAD", "/healthz", true, "demo/api#0"},
		{clientID, 8080, "POST", "/api/x", false, ""},
		{clientID, 8080, "POST", "/api/orders", true, "demo/api#0"},
		{clientID, 9090, "GET", "/api/x", false, ""},
		{clientID, 8080, "GET", "/API/x", false, ""},
		{clientID, 8080, "GET", "/healthz/x", false, ""},
		{clientID, 8080, "GET", "/admin", false, "demo/no-admin#0"},
		{other, 8080, "GET", "/api/x", false, ""},
		{opsNS + "x", 8080, "DELETE", "/anything", true, "demo/ns#0"},
		{opsNS + "x", 8080, "GET", "/admin/x", false, "demo/no-admin#0"},
	} {
		allowed, policy := true, ""
		for _, action := range []model.RBACAction{model.RBACDeny, model.RBACAllow} {
			for _, f := range fc.HTTPRBAC {
				if f.Action != action || !allowed {
					continue
				}
				if ok, p := f.AllowsRequest(tc.peer, tc.port, tc.method, tc.path); !ok {
					allowed, policy = false, p
				} else if action == model.RBACAllow {
					policy = p
				}
			}
		}
		if allowed != tc.allowed || policy != tc.policy {
			t.Errorf("%s %d %s %s: allowed %v by %q, want %v by %q", tc.peer, tc.port, tc.method, tc.path, allowed, policy, tc.allowed, tc.policy)
		}
	}
}

// TestHTTPRBACAccepts: shapes within the contract besides its example.
func TestHTTPRBACAccepts(t *testing.T) {
	cases := []struct {
		name string
		perm []*rbacv3.Permission
		want []model.Permission
	}{
		{"any", []*rbacv3.Permission{permAny()}, []model.Permission{{}}},
		{"a port alone", []*rbacv3.Permission{permPort(8080)}, []model.Permission{{Ports: []uint16{8080}}}},
		{"a method alone", []*rbacv3.Permission{permMethod("GET")}, []model.Permission{{Methods: []string{"GET"}}}},
		{"a path alone", []*rbacv3.Permission{permPrefix("/a")}, []model.Permission{{Paths: []model.PathMatch{{Prefix: "/a"}}}}},
		{"several permissions are alternatives", []*rbacv3.Permission{permPath("/a"), permOr(permPort(1), permPort(2))},
			[]model.Permission{{Paths: []model.PathMatch{{Exact: "/a"}}}, {Ports: []uint16{1}}, {Ports: []uint16{2}}}},
		{"and_rules with any", []*rbacv3.Permission{permAnd(permAny(), permOr(permPort(1), permPort(2)))},
			[]model.Permission{{Ports: []uint16{1, 2}}}},
		{"and_rules of any only", []*rbacv3.Permission{permAnd(permAny())}, []model.Permission{{}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := l7Set(t)
			setHTTPFilters(t, inboundListener(r), 0, httpRBAC(t, rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
				"p": {Principals: []*rbacv3.Principal{envoyAnyID()}, Permissions: tc.perm}}), routerFilter(t))
			c, err := buildEnvoy(r)
			if err != nil {
				t.Fatal(err)
			}
			deepEqual(t, "permissions", c.Inbound.Chains[0].HTTPRBAC[0].Policies[0].Permissions, tc.want)
		})
	}
	t.Run("no rules: nothing enforced", func(t *testing.T) {
		r := l7Set(t)
		setHTTPFilters(t, inboundListener(r), 0, &hcmv3.HttpFilter{Name: "envoy.filters.http.rbac",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &httprbacv3.RBAC{})}}, routerFilter(t))
		c, err := buildEnvoy(r)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(c.Inbound.Chains[0].HTTPRBAC); n != 0 {
			t.Errorf("%d HTTP RBAC filters, want none", n)
		}
	})
}

// TestHTTPRBACRefused: whatever the model cannot honour is NACKed, named.
func TestHTTPRBACRefused(t *testing.T) {
	perm := func(p ...*rbacv3.Permission) func(envoySet) {
		return func(r envoySet) {
			setHTTPFilters(t, inboundListener(r), 0, httpRBAC(t, rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
				"p": {Principals: []*rbacv3.Principal{envoyAnyID()}, Permissions: p}}), routerFilter(t))
		}
	}
	exact := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
	}
	const h2 = `xds: listener "inbound": filter chain 0 "inbound|8080|h2": filter "envoy.filters.network.http_connection_manager": `
	const pol = h2 + `http_filters 0 "envoy.filters.http.rbac": rules: policy "p": permissions 0: `
	cases := []refusal{
		{"another header", perm(permHeader(&routev3.HeaderMatcher{Name: "x-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("a")}})),
			pol + `header: name "x-user" is not supported (only ":method")`},
		{"method by prefix", perm(permHeader(&routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "G"}}}})),
			pol + `header: string_match: only a non-empty exact method is supported`},
		{"method present", perm(permHeader(&routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}})),
			pol + `header: field present_match is not supported`},
		{"method inverted", perm(permHeader(&routev3.HeaderMatcher{Name: ":method", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("GET")}})),
			pol + `header: field invert_match is not supported`},
		{"path ignoring case", perm(permPathMatcher(&matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/a"}})),
			`field 6 of envoy.type.matcher.v3.StringMatcher is not supported`},
		{"path by suffix", perm(permPathMatcher(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".php"}})),
			`field 3 of envoy.type.matcher.v3.StringMatcher is not supported`},
		{"path by regex", perm(permPathMatcher(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}})),
			`field 5 of envoy.type.matcher.v3.StringMatcher is not supported`},
		{"relative path", perm(permPath("api")), pol + `url_path: path "api": must start with "/"`},
		{"and_rules in and_rules", perm(permAnd(permAnd(permPort(1)))),
			pol + `and_rules 0: rule and_rules is not supported inside and_rules`},
		{"and_rules in or_rules in and_rules", perm(permAnd(permOr(permAnd(permPort(1))))),
			pol + `and_rules 0: or_rules 0: rule and_rules is not supported here (only destination_port, header, url_path)`},
		{"two path conditions in and_rules", perm(permAnd(permPath("/a"), permPrefix("/b"))),
			pol + `and_rules 1: a second url_path condition is not supported`},
		{"or_rules of two kinds in and_rules", perm(permAnd(permOr(permPath("/a"), permMethod("GET")))),
			pol + `and_rules 0: or_rules 1: header after url_path: inside and_rules an or_rules holds conditions of one kind`},
		{"or_rules nested too deep", perm(permOr(permOr(permOr(permOr(permOr(permOr(permOr(permOr(permOr(permAny())))))))))),
			`or_rules: permission sets nested more than 8 deep are not supported`},
		{"shadow rules", func(r envoySet) {
			setHTTPFilters(t, inboundListener(r), 0, &hcmv3.HttpFilter{Name: "envoy.filters.http.rbac", ConfigType: &hcmv3.HttpFilter_TypedConfig{
				TypedConfig: anyOf(t, &httprbacv3.RBAC{ShadowRules: &rbacv3.RBAC{}})}}, routerFilter(t))
		}, `field 2 of envoy.extensions.filters.http.rbac.v3.RBAC is not supported`},
		{"rbac after the router", func(r envoySet) {
			fs := contractAuthz(t)
			setHTTPFilters(t, inboundListener(r), 0, fs[2], fs[0])
		}, h2 + `http_filters: filter 0 "envoy.filters.http.router" is not supported here: only [envoy.filters.http.rbac ..., envoy.filters.http.router] is supported on the inbound listener`},
		{"rbac without router", func(r envoySet) {
			setHTTPFilters(t, inboundListener(r), 0, contractAuthz(t)[0])
		}, `filter 0 "envoy.filters.http.rbac" is not supported here`},
		{"rbac without typed_config", func(r envoySet) {
			setHTTPFilters(t, inboundListener(r), 0, &hcmv3.HttpFilter{Name: "envoy.filters.http.rbac"}, routerFilter(t))
		}, h2 + `http_filters 0 "envoy.filters.http.rbac": typed_config is required`},
		{"another http filter", func(r envoySet) {
			setHTTPFilters(t, inboundListener(r), 0, &hcmv3.HttpFilter{Name: "envoy.filters.http.fault",
				ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &structpb.Struct{})}}, routerFilter(t))
		}, `http_filters: filter 0 "envoy.filters.http.fault" is not supported here`},
		{"rbac on the outbound listener", func(r envoySet) {
			setHTTPFilters(t, r[model.ListenerType]["outbound"].(*listenerv3.Listener), 0, contractAuthz(t)...)
		}, `xds: listener "outbound": filter chain 0 "outbound|80|server.demo": filter "envoy.filters.network.http_connection_manager": http_filters: filter 0 "envoy.filters.http.rbac" is not supported here: only [envoy.filters.http.router] is supported on the outbound listener`},
		{"HTTP fields in a network RBAC filter", func(r envoySet) {
			f := inboundListener(r).FilterChains[1].Filters[0]
			var rb netrbacv3.RBAC
			if err := f.GetTypedConfig().UnmarshalTo(&rb); err != nil {
				t.Fatal(err)
			}
			rb.Rules.Policies["demo/allow-client"].Permissions = []*rbacv3.Permission{permAnd(permPort(8080), permMethod("GET"))}
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &rb)}
		}, `xds: listener "inbound": filter chain 1 "inbound|8080|tls": filter "envoy.filters.network.rbac": rules: policy "demo/allow-client": permissions 0: rule and_rules is not supported (only any, destination_port, or_rules)`},
	}
	checkRefusals(t, l7Set, cases)
}

func inboundListener(r envoySet) *listenerv3.Listener {
	return r[model.ListenerType]["inbound"].(*listenerv3.Listener)
}
