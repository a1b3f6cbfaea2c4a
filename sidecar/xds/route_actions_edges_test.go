package xds

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Edges of the route actions' validation (header values, hosts, paths,
// regex rewrites, redirects) that the mutation run of sidecar/xds
// (docs/mutation.md) showed no test checked. Each goes through Build on
// gammaSet: route 0 "api" (prefix_rewrite, headers_to_add), route 1
// "users" (regex_rewrite), route 2 "moved" (a redirect).

func gammaRoute(r envoySet, i int) *routev3.Route {
	return r[model.RouteType]["outbound|80|server.demo"].(*routev3.RouteConfiguration).VirtualHosts[0].Routes[i]
}

// buildGamma builds gammaSet changed by mutate and returns route i of the
// model, or Build's error.
func buildGamma(t *testing.T, mutate func(envoySet), i int) (*model.Route, error) {
	t.Helper()
	r := gammaSet(t)
	mutate(r)
	cfg, err := buildEnvoy(r)
	if err != nil {
		return nil, err
	}
	return cfg.Routes["outbound|80|server.demo"].VirtualHosts[0].Routes[i], nil
}

// A header value may hold a space and a tab; any other control character,
// and DEL, is refused.
func TestHeaderValueSpaceAndTab(t *testing.T) {
	set := func(v string) func(envoySet) {
		return func(r envoySet) { gammaRoute(r, 0).RequestHeadersToAdd[0].Header.Value = v }
	}
	rt, err := buildGamma(t, set("a b\tc!~"), 0)
	if err != nil {
		t.Fatalf("header value with a space and a tab: %v", err)
	}
	if got := rt.RequestHeaders.Add[0].Value; got != "a b\tc!~" {
		t.Errorf("value = %q, want %q", got, "a b\tc!~")
	}
	for _, v := range []string{"a\x1fb", "a\x7fb", "a\x01"} {
		if _, err := buildGamma(t, set(v), 0); err == nil || !strings.Contains(err.Error(), "a control character is not allowed") {
			t.Errorf("header value %q: Build() error = %v, want it refused", v, err)
		}
	}
}

// A host (host_rewrite_literal, redirect.host_redirect) holds no space; a
// "!" (the first byte after it) is the host's.
func TestHostRewriteSpace(t *testing.T) {
	host := func(h string) func(envoySet) {
		return func(r envoySet) {
			gammaRoute(r, 0).GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: h}
		}
	}
	if _, err := buildGamma(t, host("a b.example"), 0); err == nil || !strings.Contains(err.Error(), `route.host_rewrite_literal: "a b.example" is not a host`) {
		t.Errorf("host_rewrite_literal with a space: Build() error = %v, want it refused", err)
	}
	if rt, err := buildGamma(t, host("a!b.example:8080"), 0); err != nil || rt.HostRewrite != "a!b.example:8080" {
		t.Errorf("host_rewrite_literal a!b.example:8080: route %+v, %v", rt, err)
	}
	redirect := func(r envoySet) { gammaRoute(r, 2).GetRedirect().HostRedirect = "a b.example" }
	if _, err := buildGamma(t, redirect, 2); err == nil || !strings.Contains(err.Error(), `redirect.host_redirect: "a b.example" is not a host`) {
		t.Errorf("host_redirect with a space: Build() error = %v, want it refused", err)
	}
}

// What prefix_rewrite accepts as a path: every "%" followed by two hex
// digits (each range's ends included), wherever it stands; refused, a
// space, a control character, DEL, "?" and "#", a "%" too near the end,
// and a "%" before a byte just outside each hex range.
func TestPrefixRewritePath(t *testing.T) {
	prefix := func(p string) func(envoySet) {
		return func(r envoySet) { gammaRoute(r, 0).GetRoute().PrefixRewrite = p }
	}
	for _, p := range []string{"/v1", "/x%41", "//%41", "/ab%41", "%41", "/%09%90%af%fa%AF%FA", "/!$&'()*+,;=:@~-._"} {
		rt, err := buildGamma(t, prefix(p), 0)
		if err != nil {
			t.Errorf("prefix_rewrite %q: %v", p, err)
			continue
		}
		if rt.PathRewrite == nil || rt.PathRewrite.Prefix != p {
			t.Errorf("prefix_rewrite %q: PathRewrite = %+v", p, rt.PathRewrite)
		}
	}
	for _, p := range []string{"/a b", "/a\x1f", "/a\x7f", "/a?b", "/a#b"} {
		if _, err := buildGamma(t, prefix(p), 0); err == nil || !strings.Contains(err.Error(), "is not allowed in a path") {
			t.Errorf("prefix_rewrite %q: Build() error = %v, want it refused", p, err)
		}
	}
	for _, p := range []string{"/a%", "/a%4", "/ab%4", "/ab%g1", "/ab%4g", "/%/0", "/%:0", "/%`0", "/%g0", "/%@0", "/%G0", "/%0/", "/%0:", "/%0`", "/%0g", "/%0@", "/%0G"} {
		if _, err := buildGamma(t, prefix(p), 0); err == nil || !strings.Contains(err.Error(), "% must start an escape (%XX)") {
			t.Errorf("prefix_rewrite %q: Build() error = %v, want it refused", p, err)
		}
	}
	// No rewrite at all: no PathRewrite.
	if rt, err := buildGamma(t, prefix(""), 0); err != nil || rt.PathRewrite != nil {
		t.Errorf("no prefix_rewrite: PathRewrite = %+v, %v; want nil", rt.PathRewrite, err)
	}
}

// A regex whose program has exactly maxRegexProgram (100) instructions is
// accepted; one more is refused. ("^/" and 96 literals compile to 100.)
func TestRegexRewriteProgramSizeBound(t *testing.T) {
	regex := func(expr string) func(envoySet) {
		return func(r envoySet) {
			gammaRoute(r, 1).GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: expr}, Substitution: "/x"}
		}
	}
	if _, err := buildGamma(t, regex("^/"+strings.Repeat("a", 96)), 1); err != nil {
		t.Errorf("regex of 100 instructions: %v", err)
	}
	if _, err := buildGamma(t, regex("^/"+strings.Repeat("a", 97)), 1); err == nil || !strings.Contains(err.Error(), "its program has 101 instructions, more than 100") {
		t.Errorf("regex of 101 instructions: Build() error = %v, want it refused", err)
	}
}

// A substitution may name group \0 (the whole match) to \9.
func TestRegexRewriteGroupBounds(t *testing.T) {
	const expr = `^/(a)(b)(c)(d)(e)(f)(g)(h)(i)$`
	rt, err := buildGamma(t, func(r envoySet) {
		gammaRoute(r, 1).GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: expr}, Substitution: `/\0/\9/\5`}
	}, 1)
	if err != nil {
		t.Fatalf("substitution \\0 and \\9: %v", err)
	}
	if rt.PathRewrite == nil || rt.PathRewrite.Substitution != `/\0/\9/\5` {
		t.Errorf("PathRewrite = %+v", rt.PathRewrite)
	}
}

// redirect.port_redirect 65535 is a port, 65536 is not.
func TestRedirectPortBound(t *testing.T) {
	port := func(p uint32) func(envoySet) {
		return func(r envoySet) { gammaRoute(r, 2).GetRedirect().PortRedirect = p }
	}
	if rt, err := buildGamma(t, port(65535), 2); err != nil || rt.Redirect.Port != 65535 {
		t.Errorf("port_redirect 65535: route %+v, %v", rt, err)
	}
	if _, err := buildGamma(t, port(65536), 2); err == nil || !strings.Contains(err.Error(), "redirect.port_redirect 65536 is not a port") {
		t.Errorf("port_redirect 65536: Build() error = %v, want it refused", err)
	}
}

// redirect.scheme_redirect is an RFC 3986 scheme: a letter (each range's
// ends included), then letters, digits, "+", "-" and ".".
func TestRedirectSchemeBounds(t *testing.T) {
	scheme := func(s string) func(envoySet) {
		return func(r envoySet) {
			gammaRoute(r, 2).GetRedirect().SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: s}
		}
	}
	for _, s := range []string{"a", "z", "A", "Z", "a0", "a9", "a5", "za+-.", "Zz09"} {
		if rt, err := buildGamma(t, scheme(s), 2); err != nil || rt.Redirect.Scheme != s {
			t.Errorf("scheme_redirect %q: route %+v, %v; want it accepted", s, rt, err)
		}
	}
	for _, s := range []string{"0a", "9", "+a", "@", "[", "`", "{", "a/", "a:", "a@", "a_"} {
		if _, err := buildGamma(t, scheme(s), 2); err == nil || !strings.Contains(err.Error(), "is not a URI scheme") {
			t.Errorf("scheme_redirect %q: Build() error = %v, want it refused", s, err)
		}
	}
}
