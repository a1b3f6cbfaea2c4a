package model

import (
	"net/http"
	"testing"
)

// TestGatewayAPIMatches: the matches the Gateway API's HTTPRoute and
// GRPCRoute translate into, as Envoy decides them: a path-separated
// prefix (PathPrefix), query parameters, the method by ":method".
func TestGatewayAPIMatches(t *testing.T) {
	vh := &VirtualHost{Routes: []*Route{
		{Name: "psp", Match: RouteMatch{PathSeparatedPrefix: "/api/v1"}},
		{Name: "post", Match: RouteMatch{Prefix: "/", Headers: []HeaderMatch{{Name: ":method", Exact: "POST"}}}},
		{Name: "not-get", Match: RouteMatch{Prefix: "/m/", Headers: []HeaderMatch{{Name: ":method", Exact: "GET", Invert: true}}}},
		{Name: "grpc-prefix", Match: RouteMatch{Prefix: "/p", Headers: []HeaderMatch{{Name: ":method", Prefix: "PU"}}}},
		{Name: "query", Match: RouteMatch{Prefix: "/", Query: []QueryMatch{{Name: "v", Exact: "2"}, {Name: "debug", Present: true}}}},
		{Name: "query-prefix", Match: RouteMatch{Prefix: "/", Query: []QueryMatch{{Name: "tag", Prefix: "a"}}}},
		{Name: "rest", Match: RouteMatch{Prefix: "/"}},
	}}
	cases := []struct {
		method, path, want string
	}{
		{"GET", "/api/v1", "psp"},
		{"GET", "/api/v1/", "psp"},
		{"GET", "/api/v1/users", "psp"},
		{"GET", "/api/v1?x=1", "psp"},        // the query is not part of the path
		{"GET", "/api/v1?x=/y", "psp"},       // nor of the separator
		{"GET", "/api/v1x", "rest"},          // not separated
		{"GET", "/api/v12/users", "rest"},    // not separated
		{"GET", "/api", "rest"},              // shorter
		{"GET", "/API/v1", "rest"},           // case-sensitive
		{"POST", "/x", "post"},               // :method is the request's method
		{"post", "/x", "rest"},               // exact, case-sensitive
		{"PUT", "/m/x", "not-get"},           // inverted
		{"GET", "/m/x", "rest"},              // inverted: GET fails
		{"PUT", "/p", "grpc-prefix"},         // prefix of the method
		{"PATCH", "/p", "rest"},              // fails the prefix
		{"GET", "/q?v=2&debug", "query"},     // both present, "debug" without "="
		{"GET", "/q?debug=&v=2", "query"},    // order does not matter
		{"GET", "/q?v=2", "rest"},            // debug absent
		{"GET", "/q?v=2&v=3&debug", "query"}, // the first value decides
		{"GET", "/q?v=3&v=2&debug", "rest"},  // the first value decides
		{"GET", "/q?v=%32&debug", "rest"},    // not decoded: %32 is not 2
		{"GET", "/q?V=2&debug", "rest"},      // names are case-sensitive
		{"GET", "/q?v=2&&debug=1", "query"},  // an empty parameter is skipped
		{"GET", "/q?tag=abc", "query-prefix"},
		{"GET", "/q?tag=ba", "rest"},
		{"GET", "/q?tag", "rest"}, // "" has no prefix "a"
	}
	for _, c := range cases {
		r := vh.Route(RequestHead{Method: c.method, Path: c.path, Header: http.Header{}})
		got := "<nil>"
		if r != nil {
			got = r.Name
		}
		if got != c.want {
			t.Errorf("%s %s -> %s, want %s", c.method, c.path, got, c.want)
		}
	}
	// The method is always present: a presence matcher on it always
	// matches, an inverted one never.
	req := RequestHead{Method: "DELETE", Path: "/"}
	if !(&HeaderMatch{Name: ":method", Present: true}).Matches(req) || (&HeaderMatch{Name: ":method", Present: true, Invert: true}).Matches(req) {
		t.Error(":method presence")
	}
	// An absent query parameter fails every matcher.
	for _, q := range []QueryMatch{{Name: "a", Exact: ""}, {Name: "a", Present: true}, {Name: "a", Prefix: "x"}} {
		if q.Matches("b=1") || q.Matches("") {
			t.Errorf("%+v matches without the parameter", q)
		}
	}
	if !(&QueryMatch{Name: "a", Exact: ""}).Matches("a") || !(&QueryMatch{Name: "a", Exact: ""}).Matches("a=") {
		t.Error(`"a" and "a=" have the value ""`)
	}
	if !(&QueryMatch{Name: "a", Exact: "x=y"}).Matches("a=x=y") {
		t.Error("a value holds what follows the first =")
	}
}
