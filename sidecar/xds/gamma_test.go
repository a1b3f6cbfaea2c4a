package xds

// The route fields the Gateway API's HTTPRoute and GRPCRoute ([gamma] #20)
// translate into: path-separated prefixes, query parameter and :method
// matches, header mutations, redirects, path and host rewrites. What the
// sidecar honours is read into the model as Envoy reads it; what it cannot
// honour is NACKed, naming the field.

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

func exactString(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func headerOption(key, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, Value: value}, AppendAction: action}
}

func redirectRoute(name string, m *routev3.RouteMatch, rd *routev3.RedirectAction) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Redirect{Redirect: rd}}
}

// gammaAllFields is route configuration outbound|80|server.demo with every
// field of the additions set, some beyond what the translator emits (a
// query prefix, ADD_IF_ABSENT, keep_empty_value, https_redirect,
// strip_query, regex groups).
func gammaAllFields(t testing.TB) *routev3.RouteConfiguration {
	rc := outboundRoutes(t, "server.demo")
	def := rc.VirtualHosts[0].Routes[0]
	psp := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api/v1"},
		Headers: []*routev3.HeaderMatcher{{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactString("GET")}}},
		QueryParameters: []*routev3.QueryParameterMatcher{
			{Name: "debug", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exactString("1")}},
			{Name: "tag", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "v"}}}},
			{Name: "trace", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}},
			{Name: "any"},
		}}
	api := toCluster("outbound|80|server.demo")
	api.PrefixRewrite = "/v1"
	api.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "internal.example"}
	full := toCluster("outbound|80|server.demo")
	full.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: `^/users/([^/]+)$`}, Substitution: `/u/\1`}
	rc.VirtualHosts[0].Routes = []*routev3.Route{
		{Name: "api", Match: psp, Action: &routev3.Route_Route{Route: api},
			RequestHeadersToAdd: []*corev3.HeaderValueOption{
				headerOption("x-set", "1", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
				headerOption("x-add", "100%%", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
				headerOption("x-absent", "a", corev3.HeaderValueOption_ADD_IF_ABSENT),
				headerOption("x-only", "o", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
				{Header: &corev3.HeaderValue{Key: "X-Empty"}, KeepEmptyValue: true},
			},
			RequestHeadersToRemove:  []string{"x-remove"},
			ResponseHeadersToAdd:    []*corev3.HeaderValueOption{headerOption("x-header-set", "v1", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)},
			ResponseHeadersToRemove: []string{"Server"}},
		{Name: "users", Match: prefixMatch("/users/"), Action: &routev3.Route_Route{Route: full}},
		redirectRoute("moved", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/moved"}}, &routev3.RedirectAction{
			SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"}, HostRedirect: "example.org", PortRedirect: 8443,
			PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new?x=1"}, ResponseCode: routev3.RedirectAction_PERMANENT_REDIRECT}),
		redirectRoute("old", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/old"}}, &routev3.RedirectAction{
			SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
			PathRewriteSpecifier:   &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new"}, StripQuery: true}),
		def,
	}
	rc.VirtualHosts[0].Routes[2].ResponseHeadersToAdd = []*corev3.HeaderValueOption{headerOption("x-moved", "yes", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)}
	// No effect, as in Envoy; a Gateway API rule may hold a
	// RequestHeaderModifier and a RequestRedirect.
	rc.VirtualHosts[0].Routes[2].RequestHeadersToRemove = []string{"x-a"}
	return rc
}

// gammaSet is the l7 example with gammaAllFields.
func gammaSet(t testing.TB) envoySet {
	r := l7Set(t)
	r[model.RouteType]["outbound|80|server.demo"] = gammaAllFields(t)
	return r
}

// TestGAMMAAccepts: every field of the additions set at once, accepted by
// Envoy and by the sidecar, and what the model makes of it.
func TestGAMMAAccepts(t *testing.T) {
	r := gammaSet(t)
	if err := envoyValid(r[model.RouteType]["outbound|80|server.demo"]); err != nil {
		t.Fatalf("Envoy refuses it: %v", err)
	}
	cfg, err := buildEnvoy(r)
	if err != nil {
		t.Fatal(err)
	}
	routes := cfg.Routes["outbound|80|server.demo"].VirtualHosts[0].Routes
	if len(routes) != 5 {
		t.Fatalf("%d routes", len(routes))
	}
	// The regex is compared by its expression.
	users := routes[1]
	if users.PathRewrite == nil || users.PathRewrite.Regex.String() != `^/users/([^/]+)$` {
		t.Fatalf("users route rewrite = %+v", users.PathRewrite)
	}
	users.PathRewrite.Regex = nil
	want := []*model.Route{
		{Name: "api", Match: model.RouteMatch{PathSeparatedPrefix: "/api/v1",
			Headers: []model.HeaderMatch{{Name: ":method", Exact: "GET"}},
			Query:   []model.QueryMatch{{Name: "debug", Exact: "1"}, {Name: "tag", Prefix: "v"}, {Name: "trace", Present: true}, {Name: "any", Present: true}}},
			Clusters: []model.WeightedCluster{{Name: "outbound|80|server.demo", Weight: 1}}, Timeout: 15 * time.Second,
			RequestHeaders: model.HeaderMutation{Remove: []string{"x-remove"}, Add: []model.HeaderValue{
				{Name: "x-set", Value: "1", Action: model.OverwriteIfExistsOrAdd},
				{Name: "x-add", Value: "100%", Action: model.AppendIfExistsOrAdd},
				{Name: "x-absent", Value: "a", Action: model.AddIfAbsent},
				{Name: "x-only", Value: "o", Action: model.OverwriteIfExists},
				{Name: "x-empty", KeepEmpty: true},
			}},
			ResponseHeaders: model.HeaderMutation{Remove: []string{"server"}, Add: []model.HeaderValue{{Name: "x-header-set", Value: "v1", Action: model.OverwriteIfExistsOrAdd}}},
			PathRewrite:     &model.PathRewrite{Matched: "/api/v1", Prefix: "/v1"}, HostRewrite: "internal.example"},
		{Name: "users", Match: model.RouteMatch{Prefix: "/users/"}, Clusters: []model.WeightedCluster{{Name: "outbound|80|server.demo", Weight: 1}},
			Timeout: 15 * time.Second, PathRewrite: &model.PathRewrite{Matched: "/users/", Substitution: `/u/\1`}},
		{Name: "moved", Match: model.RouteMatch{Path: "/moved"},
			Redirect:        &model.Redirect{Status: 308, Scheme: "https", Host: "example.org", Port: 8443, Path: "/new?x=1"},
			RequestHeaders:  model.HeaderMutation{Remove: []string{"x-a"}},
			ResponseHeaders: model.HeaderMutation{Add: []model.HeaderValue{{Name: "x-moved", Value: "yes"}}}},
		{Name: "old", Match: model.RouteMatch{PathSeparatedPrefix: "/old"},
			Redirect: &model.Redirect{Status: 301, Scheme: "https", PathRewrite: &model.PathRewrite{Matched: "/old", Prefix: "/new"}, StripQuery: true}},
	}
	for i, w := range want {
		deepEqual(t, "route "+w.Name, routes[i], w)
	}
}

// TestGAMMARejects: what the sidecar cannot honour as Envoy does is NACKed,
// naming the route and the field.
func TestGAMMARejects(t *testing.T) {
	const (
		rc  = `xds: route configuration "outbound|80|server.demo": `
		api = rc + `virtual host 0 "server.demo:80": route 0 "api": `
	)
	route := func(r envoySet, i int) *routev3.Route {
		return r[model.RouteType]["outbound|80|server.demo"].(*routev3.RouteConfiguration).VirtualHosts[0].Routes[i]
	}
	addReq := func(r envoySet, o *corev3.HeaderValueOption) {
		route(r, 0).RequestHeadersToAdd = append(route(r, 0).RequestHeadersToAdd, o)
	}
	redirect := func(r envoySet) *routev3.RedirectAction { return route(r, 2).GetRedirect() }
	checkRefusals(t, gammaSet, []refusal{
		// Matches.
		{"path-separated prefix ending in /", func(r envoySet) {
			route(r, 0).Match.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api/"}
		}, `virtual_hosts[0].routes[0].match.path_separated_prefix: "/api/" does not match ^[^?#]+[^?#/]$`},
		{"path-separated prefix with a query", func(r envoySet) {
			route(r, 0).Match.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api?x"}
		}, `match.path_separated_prefix: "/api?x" does not match`},
		{"path-separated prefix /", func(r envoySet) {
			route(r, 0).Match.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/"}
		}, `match.path_separated_prefix: "/" does not match`},
		{"relative path-separated prefix", func(r envoySet) {
			route(r, 0).Match.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "api"}
		}, api + `match: path_separated_prefix "api" does not start with "/"`},
		{"case-insensitive match", func(r envoySet) { route(r, 0).Match.CaseSensitive = wrapperspb.Bool(false) },
			`virtual_hosts[0].routes[0].match: field 4 of envoy.config.route.v3.RouteMatch is not supported`},
		{"query present_match false", func(r envoySet) {
			route(r, 0).Match.QueryParameters[2].QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: false}
		}, api + `match: query_parameters 2: present_match false: Envoy matches it as present_match true (not as absence); send true`},
		{"query ignore_case", func(r envoySet) {
			route(r, 0).Match.QueryParameters[0].GetStringMatch().IgnoreCase = true
		}, `match.query_parameters[0].string_match: field 6 of envoy.type.matcher.v3.StringMatcher is not supported`},
		{"query without a name", func(r envoySet) { route(r, 0).Match.QueryParameters[0].Name = "" },
			`match.query_parameters[0].name: must not be empty`},
		{"query string_match without a matcher", func(r envoySet) {
			route(r, 0).Match.QueryParameters[0].GetStringMatch().MatchPattern = nil
		}, `match.query_parameters[0].string_match: one of exact, prefix is required`},
		{":authority", func(r envoySet) { route(r, 0).Match.Headers[0].Name = ":authority" },
			api + `match: headers 0: name ":authority": pseudo-headers other than :method, and host, are not supported`},
		{":scheme", func(r envoySet) { route(r, 0).Match.Headers[0].Name = ":scheme" },
			`name ":scheme": pseudo-headers other than :method`},
		// Header mutations.
		{"add a pseudo-header", func(r envoySet) { addReq(r, headerOption(":path", "/x", 0)) },
			api + `request_headers_to_add 5: header.key ":path": pseudo-headers and host may not be modified (as in Envoy; host_rewrite_literal rewrites the host)`},
		{"add host", func(r envoySet) { addReq(r, headerOption("Host", "a", 0)) },
			`request_headers_to_add 5: header.key "Host": pseudo-headers and host may not be modified`},
		{"remove host", func(r envoySet) { route(r, 0).RequestHeadersToRemove = []string{"host"} },
			api + `request_headers_to_remove 0: "host": pseudo-headers and host may not be modified`},
		{"remove a pseudo-header from the response", func(r envoySet) { route(r, 0).ResponseHeadersToRemove = []string{":status"} },
			api + `response_headers_to_remove 0: ":status": pseudo-headers and host may not be modified`},
		{"add connection", func(r envoySet) { addReq(r, headerOption("Connection", "close", 0)) },
			`request_headers_to_add 5: header.key "Connection" is a header field of the connection or of the message's framing, which the sidecar sets itself`},
		{"remove transfer-encoding", func(r envoySet) { route(r, 0).RequestHeadersToRemove = []string{"transfer-encoding"} },
			`request_headers_to_remove 0: "transfer-encoding" is a header field of the connection`},
		{"set content-length on the response", func(r envoySet) {
			route(r, 0).ResponseHeadersToAdd = []*corev3.HeaderValueOption{headerOption("content-length", "1", 2)}
		}, `response_headers_to_add 0: header.key "content-length" is a header field of the connection`},
		{"add upgrade", func(r envoySet) { addReq(r, headerOption("upgrade", "h2c", 0)) }, `header.key "upgrade" is a header field of the connection`},
		{"not a token", func(r envoySet) { addReq(r, headerOption("x a", "1", 0)) }, `request_headers_to_add 5: header.key "x a" is not a header field name`},
		{"header name with a newline", func(r envoySet) { addReq(r, headerOption("x\na", "1", 0)) },
			`request_headers_to_add[5].header.key: "x\na" contains NUL, CR or LF`},
		{"header value with a newline", func(r envoySet) { addReq(r, headerOption("x-a", "1\r\nx-b: 2", 0)) },
			`request_headers_to_add[5].header.value: "1\r\nx-b: 2" contains NUL, CR or LF`},
		{"header value with a control character", func(r envoySet) { addReq(r, headerOption("x-a", "1\x01", 0)) },
			`request_headers_to_add 5: header.value "1\x01": a control character is not allowed in a header field`},
		{"a command operator", func(r envoySet) { addReq(r, headerOption("x-a", "%DOWNSTREAM_REMOTE_ADDRESS%", 0)) },
			api + `request_headers_to_add 5: header.value "%DOWNSTREAM_REMOTE_ADDRESS%": %COMMAND% operators are not supported (a literal % is written "%%")`},
		{"a lone %", func(r envoySet) { addReq(r, headerOption("x-a", "100%", 0)) }, `header.value "100%": %COMMAND% operators are not supported`},
		{"the deprecated append", func(r envoySet) {
			addReq(r, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-a", Value: "1"}, Append: wrapperspb.Bool(true)})
		}, `request_headers_to_add[5]: field 2 of envoy.config.core.v3.HeaderValueOption is not supported`},
		{"raw_value", func(r envoySet) {
			addReq(r, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-a", RawValue: []byte("1")}})
		}, `request_headers_to_add[5].header: field 3 of envoy.config.core.v3.HeaderValue is not supported`},
		{"append_action undefined", func(r envoySet) { addReq(r, headerOption("x-a", "1", 4)) },
			`request_headers_to_add[5].append_action: 4 is not a value of envoy.config.core.v3.HeaderValueOption.HeaderAppendAction`},
		{"request headers on a redirect, checked though without effect", func(r envoySet) { route(r, 2).RequestHeadersToRemove = []string{"host"} },
			rc + `virtual host 0 "server.demo:80": route 2 "moved": request_headers_to_remove 0: "host": pseudo-headers and host may not be modified`},
		// Rewrites.
		{"prefix and regex rewrite", func(r envoySet) {
			route(r, 0).GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: ".*"}, Substitution: "/x"}
		}, api + `route.prefix_rewrite and regex_rewrite: only one may be set (as in Envoy)`},
		{"prefix rewrite with a query", func(r envoySet) { route(r, 0).GetRoute().PrefixRewrite = "/v1?x=1" },
			api + `route.prefix_rewrite: "/v1?x=1": '?' is not allowed in a path`},
		{"prefix rewrite with a bad escape", func(r envoySet) { route(r, 0).GetRoute().PrefixRewrite = "/v%zz" },
			`route.prefix_rewrite: "/v%zz": % must start an escape (%XX)`},
		{"path rewrite template", func(r envoySet) { route(r, 1).GetRoute().PathRewrite = "/x" },
			`virtual_hosts[0].routes[1].route: field 45 of envoy.config.route.v3.RouteAction is not supported`},
		{"regex that is not RE2", func(r envoySet) { route(r, 1).GetRoute().RegexRewrite.Pattern.Regex = `^/(?=x)` },
			rc + `virtual host 0 "server.demo:80": route 1 "users": route.regex_rewrite.pattern.regex "^/(?=x)": error parsing regexp: invalid or unsupported Perl syntax: ` + "`(?=`"},
		{"regex over Envoy's program size", func(r envoySet) { route(r, 1).GetRoute().RegexRewrite.Pattern.Regex = strings.Repeat("(a|b)", 40) },
			`route.regex_rewrite.pattern.regex "(a|b)(a|b)`},
		{"google_re2 settings", func(r envoySet) {
			route(r, 1).GetRoute().RegexRewrite.Pattern.EngineType = &matcherv3.RegexMatcher_GoogleRe2{GoogleRe2: &matcherv3.RegexMatcher_GoogleRE2{}}
		}, `route.regex_rewrite.pattern: field 1 of envoy.type.matcher.v3.RegexMatcher is not supported`},
		{"regex without a pattern", func(r envoySet) { route(r, 1).GetRoute().RegexRewrite.Pattern = nil },
			`virtual_hosts[0].routes[1].route.regex_rewrite.pattern: is required`},
		{"empty regex", func(r envoySet) { route(r, 1).GetRoute().RegexRewrite.Pattern.Regex = "" },
			`route.regex_rewrite.pattern.regex: must not be empty`},
		{"substitution of a group the pattern has not", func(r envoySet) { route(r, 1).GetRoute().RegexRewrite.Substitution = `/u/\2` },
			`route.regex_rewrite.substitution "/u/\\2": \2, but the pattern has 1 groups`},
		{"substitution with Go's syntax", func(r envoySet) { route(r, 1).GetRoute().RegexRewrite.Substitution = `/u/\x` },
			`route.regex_rewrite.substitution "/u/\\x": \x is not \0-\9 (a backslash is no path's)`},
		{"substitution with a backslash", func(r envoySet) { route(r, 1).GetRoute().RegexRewrite.Substitution = `/u\\` },
			`\\ is not \0-\9`},
		{"substitution with a lone backslash", func(r envoySet) { route(r, 1).GetRoute().RegexRewrite.Substitution = `/u\` },
			`route.regex_rewrite.substitution "/u\\": ends in a lone \`},
		{"substitution with a query", func(r envoySet) { route(r, 1).GetRoute().RegexRewrite.Substitution = `/u?\1` },
			`route.regex_rewrite.substitution: "/u?": '?' is not allowed in a path`},
		{"host rewrite with a path", func(r envoySet) {
			route(r, 0).GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "a.example/x"}
		}, api + `route.host_rewrite_literal: "a.example/x" is not a host`},
		{"auto host rewrite", func(r envoySet) {
			route(r, 0).GetRoute().HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
		}, `virtual_hosts[0].routes[0].route: field 7 of envoy.config.route.v3.RouteAction is not supported`},
		{"x-forwarded-host", func(r envoySet) { route(r, 0).GetRoute().AppendXForwardedHost = true },
			`virtual_hosts[0].routes[0].route: field 38 of envoy.config.route.v3.RouteAction is not supported`},
		// Redirects.
		{"redirect regex rewrite", func(r envoySet) {
			redirect(r).PathRewriteSpecifier = &routev3.RedirectAction_RegexRewrite{RegexRewrite: &matcherv3.RegexMatchAndSubstitute{
				Pattern: &matcherv3.RegexMatcher{Regex: ".*"}, Substitution: "/x"}}
		}, `virtual_hosts[0].routes[2].redirect: field 9 of envoy.config.route.v3.RedirectAction is not supported`},
		{"scheme that is not one", func(r envoySet) {
			redirect(r).SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "ht tp"}
		}, `route 2 "moved": redirect.scheme_redirect "ht tp" is not a URI scheme`},
		{"host with a path", func(r envoySet) { redirect(r).HostRedirect = "example.org/x" },
			`route 2 "moved": redirect.host_redirect: "example.org/x" is not a host`},
		{"host with user info", func(r envoySet) { redirect(r).HostRedirect = "user@example.org" }, `redirect.host_redirect: "user@example.org" is not a host`},
		{"port over 65535", func(r envoySet) { redirect(r).PortRedirect = 65536 }, `route 2 "moved": redirect.port_redirect 65536 is not a port`},
		{"path with a fragment", func(r envoySet) {
			redirect(r).PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: "/new#top"}
		}, `redirect.path_redirect: "/new#top": '#' is not allowed in a path`},
		{"path with a space in its query", func(r envoySet) {
			redirect(r).PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: "/new?a=b c"}
		}, `redirect.path_redirect "/new?a=b c": the query holds a character a URL cannot`},
		{"redirect prefix rewrite with a space", func(r envoySet) {
			redirect(r).PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/a b"}
		}, `redirect.prefix_rewrite: "/a b": ' ' is not allowed in a path`},
		{"response code undefined", func(r envoySet) { redirect(r).ResponseCode = 5 },
			`virtual_hosts[0].routes[2].redirect.response_code: 5 is not a value of envoy.config.route.v3.RedirectAction.RedirectResponseCode`},
		{"redirect host with a newline", func(r envoySet) { redirect(r).HostRedirect = "a\nb" },
			`virtual_hosts[0].routes[2].redirect.host_redirect: "a\nb" contains NUL, CR or LF`},
		{"too many headers to add", func(r envoySet) {
			for range 1001 {
				addReq(r, headerOption("x-a", "1", 0))
			}
		}, `virtual_hosts[0].routes[0].request_headers_to_add: 1006 items, at most 1000 allowed`},
		// Only the client sidecar applies them.
		{"redirect on the inbound listener", func(r envoySet) {
			in := r[model.RouteType]["inbound|8080"].(*routev3.RouteConfiguration)
			in.VirtualHosts[0].Routes = append([]*routev3.Route{redirectRoute("r", prefixMatch("/x"), &routev3.RedirectAction{HostRedirect: "a"})}, in.VirtualHosts[0].Routes...)
		}, `xds: route configuration "inbound|8080" virtual host "inbound|8080" route 0 "r": redirect is honoured on routes of the outbound listener only (the server sidecar delivers every request of its port to the app as it came)`},
		{"header mutation on the inbound listener", func(r envoySet) {
			r[model.RouteType]["inbound|8080"].(*routev3.RouteConfiguration).VirtualHosts[0].Routes[0].ResponseHeadersToRemove = []string{"server"}
		}, `route configuration "inbound|8080" virtual host "inbound|8080" route 0 "default": response_headers_to_add/remove is honoured on routes of the outbound listener only`},
		{"rewrite on the inbound listener", func(r envoySet) {
			r[model.RouteType]["inbound|8080"].(*routev3.RouteConfiguration).VirtualHosts[0].Routes[0].GetRoute().PrefixRewrite = "/x"
		}, `route 0 "default": route.prefix_rewrite/regex_rewrite is honoured on routes of the outbound listener only`},
		{"host rewrite on the inbound listener", func(r envoySet) {
			r[model.RouteType]["inbound|8080"].(*routev3.RouteConfiguration).VirtualHosts[0].Routes[0].GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "a"}
		}, `route 0 "default": route.host_rewrite_literal is honoured on routes of the outbound listener only`},
		{"cluster_not_found_response_code on the inbound listener", func(r envoySet) {
			r[model.RouteType]["inbound|8080"].(*routev3.RouteConfiguration).VirtualHosts[0].Routes[0].GetRoute().ClusterNotFoundResponseCode = routev3.RouteAction_INTERNAL_SERVER_ERROR
		}, `route 0 "default": cluster_not_found_response_code is honoured on routes of the outbound listener only`},
		{"cluster_not_found_response_code Envoy does not define", func(r envoySet) {
			route(r, 0).GetRoute().ClusterNotFoundResponseCode = 7
		}, rc + `virtual_hosts[0].routes[0].route.cluster_not_found_response_code: 7 is not a value of envoy.config.route.v3.RouteAction.ClusterNotFoundResponseCode`},
		{"an absent cluster that is not outbound, without cluster_not_found_response_code", func(r envoySet) {
			route(r, 0).GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "unresolved|80|missing.demo"}
		}, `cluster "unresolved|80|missing.demo" is not supported in a route of the outbound listener`},
		{"a cluster the configuration has that is not outbound", func(r envoySet) {
			route(r, 0).GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "inbound|8080"}
		}, `cluster "inbound|8080" is not supported in a route of the outbound listener`},
		{"routes the inbound listener serves too", func(r envoySet) {
			l := r[model.ListenerType]["inbound"].(*listenerv3.Listener)
			fs := l.FilterChains[0].Filters
			fs[len(fs)-1] = hcmFilter(t, "outbound|80|server.demo")
			delete(r[model.RouteType], "inbound|8080")
		}, `xds: route configuration "outbound|80|server.demo" virtual host "server.demo:80" route 0 "api": request_headers_to_add/remove is honoured on routes of the outbound listener only`},
		// Egress routes stay what they were.
		{"redirect on an egress route", func(r envoySet) {
			rc := r[model.RouteType]["egress|80"].(*routev3.RouteConfiguration)
			rc.VirtualHosts[1].Routes[0].Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{HostRedirect: "a"}}
		}, `xds: route configuration "egress|80": virtual host 1 "*": route: field redirect is not supported`},
		{"header mutation on an egress route", func(r envoySet) {
			rc := r[model.RouteType]["egress|80"].(*routev3.RouteConfiguration)
			rc.VirtualHosts[1].Routes[0].RequestHeadersToRemove = []string{"x-a"}
		}, `xds: route configuration "egress|80": virtual host 1 "*": route: field request_headers_to_remove is not supported`},
		{"path-separated prefix on an egress route", func(r envoySet) {
			rc := r[model.RouteType]["egress|80"].(*routev3.RouteConfiguration)
			rc.VirtualHosts[1].Routes[0].Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/x"}}
		}, `xds: route configuration "egress|80": virtual host 1 "*": route: only match {prefix: "/"} is supported`},
	})
}

// TestGAMMAGoldenModel: the translator's GAMMA golden routes (every filter)
// build into the model the l7 engine applies.
func TestGAMMAGoldenModel(t *testing.T) {
	var cfg *model.Config
	for _, gs := range goldenSets(t, filepath.Join(goldenDir, "gamma-filters")) {
		if strings.HasSuffix(gs.name, "/outbound|80|server.demo") {
			var err error
			if cfg, err = buildEnvoy(gs.envoy); err != nil {
				t.Fatal(err)
			}
		}
	}
	if cfg == nil {
		t.Fatal("no route configuration outbound|80|server.demo in golden/gamma-filters")
	}
	byName := map[string][]*model.Route{}
	for _, r := range cfg.Routes["outbound|80|server.demo"].VirtualHosts[0].Routes {
		byName[r.Name] = append(byName[r.Name], r)
		if r.PathRewrite != nil && r.PathRewrite.Regex != nil {
			if got := r.PathRewrite.Regex.String(); got != "^/.*$" {
				t.Errorf("route %s: regex %s", r.Name, got)
			}
			r.PathRewrite.Regex = nil
		}
	}
	check := func(name string, i int, what string, got, want any) {
		t.Helper()
		if len(byName[name]) <= i {
			t.Errorf("no route %s #%d", name, i)
			return
		}
		deepEqual(t, name+" "+what, got, want)
	}
	r := func(name string, i int) *model.Route {
		if len(byName[name]) <= i {
			return &model.Route{}
		}
		return byName[name][i]
	}
	check("demo/filters#0", 0, "match", r("demo/filters#0", 0).Match, model.RouteMatch{PathSeparatedPrefix: "/headers"})
	check("demo/filters#0", 0, "request headers", r("demo/filters#0", 0).RequestHeaders, model.HeaderMutation{Remove: []string{"x-remove"},
		Add: []model.HeaderValue{{Name: "x-set", Value: "1", Action: model.OverwriteIfExistsOrAdd}, {Name: "x-add", Value: "2", Action: model.AppendIfExistsOrAdd}}})
	check("demo/filters#0", 0, "response headers", r("demo/filters#0", 0).ResponseHeaders, model.HeaderMutation{Remove: []string{"server"},
		Add: []model.HeaderValue{{Name: "x-header-set", Value: "v1", Action: model.OverwriteIfExistsOrAdd}}})
	check("demo/filters#1", 0, "redirect", r("demo/filters#1", 0).Redirect, &model.Redirect{Status: 301, Scheme: "https", Host: "example.org", Port: 8443, Path: "/new"})
	check("demo/filters#2", 0, "redirect", r("demo/filters#2", 0).Redirect, &model.Redirect{Status: 302, PathRewrite: &model.PathRewrite{Matched: "/old", Prefix: "/new"}})
	// ReplacePrefixMatch "/" is two routes: the exact path, then "<prefix>/".
	check("demo/filters#3", 0, "rewrite", r("demo/filters#3", 0).PathRewrite, &model.PathRewrite{Matched: "/strip", Prefix: "/"})
	check("demo/filters#3", 1, "rewrite", r("demo/filters#3", 1).PathRewrite, &model.PathRewrite{Matched: "/strip/", Prefix: "/"})
	check("demo/filters#3", 0, "host", r("demo/filters#3", 0).HostRewrite, "internal.example")
	check("demo/filters#4", 0, "rewrite", r("demo/filters#4", 0).PathRewrite, &model.PathRewrite{Matched: "/full", Substitution: "/one"})
}

// backendRefs that do not resolve (the translator's golden
// gamma-unresolved): clusters the configuration does not have, with
// cluster_not_found_response_code INTERNAL_SERVER_ERROR, are accepted
// and read as 500.
func TestGAMMAGoldenUnresolved(t *testing.T) {
	var cfg *model.Config
	for _, gs := range goldenSets(t, filepath.Join(goldenDir, "gamma-unresolved")) {
		if strings.HasSuffix(gs.name, "/outbound|80|server.demo") {
			var err error
			if cfg, err = buildEnvoy(gs.envoy); err != nil {
				t.Fatal(err)
			}
		}
	}
	if cfg == nil {
		t.Fatal("no route configuration outbound|80|server.demo in golden/gamma-unresolved")
	}
	got := map[string]*model.Route{}
	for _, r := range cfg.Routes["outbound|80|server.demo"].VirtualHosts[0].Routes {
		got[r.Name] = r
	}
	for name, want := range map[string][]model.WeightedCluster{
		"demo/unresolved#0": {{Name: "outbound|80|server.demo", Weight: 3}, {Name: "unresolved|80|missing.demo", Weight: 1}},
		"demo/unresolved#1": {{Name: "unresolved|8080|api.other", Weight: 1}},
		"demo/unresolved#2": {{Name: "unresolved|none", Weight: 1}},
	} {
		r := got[name]
		if r == nil {
			t.Errorf("no route %s", name)
			continue
		}
		deepEqual(t, name+" clusters", r.Clusters, want)
		if r.ClusterNotFound != 500 {
			t.Errorf("%s: ClusterNotFound %d, want 500", name, r.ClusterNotFound)
		}
		for _, wc := range r.Clusters {
			if _, ok := cfg.Clusters[wc.Name]; ok == strings.HasPrefix(wc.Name, "unresolved|") {
				t.Errorf("%s: cluster %s in the configuration: %v", name, wc.Name, ok)
			}
		}
	}
}

// The translator's golden listeners for a GAMMA producer reference route
// configurations the sidecar builds (gamma-producer has listeners).
func TestGAMMAGoldenListeners(t *testing.T) {
	sets := goldenSets(t, filepath.Join(goldenDir, "gamma-producer"))
	if len(sets) != 1 || sets[0].envoy[model.ListenerType] == nil {
		t.Fatalf("golden/gamma-producer: %d sets", len(sets))
	}
	cfg, err := buildEnvoy(sets[0].envoy)
	if err != nil {
		t.Fatal(err)
	}
	var chains int
	for _, fc := range cfg.Outbound.Chains {
		if fc.Target.RouteConfig != "" && cfg.Routes[fc.Target.RouteConfig] != nil {
			chains++
		}
	}
	if chains == 0 {
		t.Error("no outbound chain names a route configuration the set holds")
	}
}
