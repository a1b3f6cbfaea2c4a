package model

import (
	"net/http"
	"testing"
)

func TestVirtualHostRoute(t *testing.T) {
	vh := &VirtualHost{Name: "reviews.demo:8080", Domains: []string{"*"}, Routes: []*Route{
		{Name: "exact", Match: RouteMatch{Path: "/api/v1/health"}},
		{Name: "canary", Match: RouteMatch{Prefix: "/api/", Headers: []HeaderMatch{{Name: "x-canary", Exact: "yes"}}}},
		{Name: "not-beta", Match: RouteMatch{Prefix: "/api/", Headers: []HeaderMatch{
			{Name: "x-user", Prefix: "beta-", Invert: true}, {Name: "x-user", Present: true}}}},
		{Name: "no-debug", Match: RouteMatch{Prefix: "/api/", Headers: []HeaderMatch{{Name: "x-debug", Present: true, Invert: true}}}},
		{Name: "multi", Match: RouteMatch{Prefix: "/multi", Headers: []HeaderMatch{{Name: "x-tag", Exact: "a,b"}}}},
		{Name: "rest", Match: RouteMatch{Prefix: "/"}},
	}}
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	cases := []struct {
		path string
		h    http.Header
		want string
	}{
		{"/api/v1/health", nil, "exact"},
		{"/api/v1/health?verbose=1", nil, "exact"}, // an exact path ignores the query
		{"/api/v1/healthz", hdr("x-debug", "1"), "rest"},
		{"/api/v1/x", hdr("X-Canary", "yes"), "canary"}, // names are case-insensitive
		{"/api/v1/x", hdr("x-canary", "YES", "x-debug", "1"), "rest"},
		{"/api/v1/x", hdr("x-user", "alice", "x-debug", "1"), "not-beta"},
		{"/api/v1/x", hdr("x-user", "beta-bob", "x-debug", "1"), "rest"},
		{"/api/v1/x", nil, "no-debug"},                       // absent: an inverted presence matcher matches
		{"/multi", hdr("x-tag", "a", "x-tag", "b"), "multi"}, // values joined by ","
		{"/multi", hdr("x-tag", "a"), "rest"},
		{"/other?x=/api/", nil, "rest"},
	}
	for _, c := range cases {
		r := vh.Route(RequestHead{Method: "GET", Path: c.path, Header: c.h})
		got := "<nil>"
		if r != nil {
			got = r.Name
		}
		if got != c.want {
			t.Errorf("Route(%q, %v) = %s, want %s", c.path, c.h, got, c.want)
		}
	}
	if r := (&VirtualHost{Routes: []*Route{{Match: RouteMatch{Prefix: "/a"}}}}).Route(RequestHead{Method: "GET", Path: "/b"}); r != nil {
		t.Errorf("no route matches /b, got %+v", r)
	}
	// An absent header fails exact and prefix matchers, inverted or not.
	for _, hm := range []HeaderMatch{{Name: "x", Exact: "v"}, {Name: "x", Exact: "v", Invert: true},
		{Name: "x", Prefix: "v"}, {Name: "x", Prefix: "v", Invert: true}, {Name: "x", Present: true}} {
		if hm.Matches(RequestHead{Method: "GET", Path: "/", Header: http.Header{}}) {
			t.Errorf("%+v matches a request without the header", hm)
		}
	}
}
