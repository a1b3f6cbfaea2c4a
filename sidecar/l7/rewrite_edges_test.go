package l7

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// sentTo forwards one request of the app through h's route and returns the
// request-target and header fields the endpoint's transport was given
// (what http.Transport writes on the wire).
func sentTo(t *testing.T, route *Route, target string, hdr http.Header) (string, http.Header) {
	t.Helper()
	var uri string
	var got http.Header
	route.Backends = []Backend{{Cluster: scriptedCluster("c", 1, func(r *http.Request) (*http.Response, error) {
		uri, got = r.URL.RequestURI(), r.Header.Clone()
		return reply(200), nil
	}), Weight: 1}}
	req := httptest.NewRequest("GET", "http://svc.demo"+target, nil)
	for k, vv := range hdr {
		req.Header[k] = vv
	}
	w := httptest.NewRecorder()
	(&Handler{Route: static(route), Forwarder: &Forwarder{}}).ServeHTTP(w, req)
	if w.Code != 200 {
		t.Fatalf("%s: %d %q", target, w.Code, w.Body)
	}
	return uri, got
}

// A regex rewrite's substitution, at its edges: a backslash at its end is
// written as it is (escaped on the wire as net/http escapes one), and a group the regex does not have (\9 with none,
// \2 with one) is written as nothing, as an unmatched group is.
func TestRegexRewriteSubstitutionEdges(t *testing.T) {
	for _, tc := range []struct{ re, sub, target, want string }{
		{`b`, `x\`, "/abc?q", `/ax%5Cc?q`},
		{`b`, `[\9]`, "/abc", "/a[]c"},
		{`(b)`, `[\1\2]`, "/abc", "/a[b]c"},
		{`(b)`, `[\0]`, "/abc", "/a[b]c"},
	} {
		route := &Route{Name: "r", PathRewrite: &PathRewrite{Regex: regexp.MustCompile(tc.re), Substitution: tc.sub}}
		if uri, _ := sentTo(t, route, tc.target, nil); uri != tc.want {
			t.Errorf("%s with %q on %s: the endpoint got %q, want %q", tc.re, tc.sub, tc.target, uri, tc.want)
		}
	}
}

// A route that only removes request header fields, or only adds them,
// still edits the request.
func TestRequestHeaderMutationAlone(t *testing.T) {
	in := http.Header{"X-Drop": {"secret"}, "X-Keep": {"1"}}
	_, got := sentTo(t, &Route{Name: "r", RequestHeaders: HeaderMutation{Remove: []string{"x-drop"}}}, "/", in)
	if got.Get("X-Drop") != "" || got.Get("X-Keep") != "1" {
		t.Errorf("remove only: the endpoint got %v, want X-Keep and no X-Drop", got)
	}
	_, got = sentTo(t, &Route{Name: "r", RequestHeaders: HeaderMutation{Add: []HeaderOption{{Name: "X-Added", Value: "v"}}}}, "/", in)
	if got.Get("X-Added") != "v" || got.Get("X-Drop") != "secret" {
		t.Errorf("add only: the endpoint got %v, want X-Added: v besides the app's fields", got)
	}
}

// A route that only removes response header fields, or only adds them,
// edits the 101 of an upgrade too.
func TestUpgradeResponseHeaderMutationAlone(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mutation HeaderMutation
		check    func(http.Header) bool
	}{
		{"remove only", HeaderMutation{Remove: []string{"x-internal"}}, func(h http.Header) bool { return h.Get("X-Internal") == "" && h.Get("X-Other") == "1" }},
		{"add only", HeaderMutation{Add: []HeaderOption{{Name: "X-Added", Value: "v"}}}, func(h http.Header) bool {
			return h.Get("X-Added") == "v" && h.Get("X-Internal") == "1"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := tunnelEndpoint(t, func(c net.Conn, br *bufio.Reader, _ string) {
				c.Write([]byte(strings.Replace(switched, "\r\n\r\n", "\r\nX-Internal: 1\r\nX-Other: 1\r\n\r\n", 1)))
				br.WriteTo(c)
			})
			route := &Route{Name: "r", ResponseHeaders: tc.mutation, Backends: []Backend{{Cluster: tunnelCluster(ep), Weight: 1}}}
			a := dialApp(t, serveApp(t, &Handler{Route: static(route), Forwarder: &Forwarder{}}))
			resp, _ := a.roundTrip(t, upgradeGET)
			if resp.StatusCode != 101 || !tc.check(resp.Header) {
				t.Fatalf("the app got %d %v", resp.StatusCode, resp.Header)
			}
		})
	}
}

// A regex rewrites the path, never what follows a '?' or '#': a target
// that is an absolute URI with an opaque part and no path ("foo:#x", whose
// :path is "#x") is left as it is by a rewrite of "x".
func TestRegexRewriteOfATargetWithoutPath(t *testing.T) {
	route := &Route{Name: "r", PathRewrite: &PathRewrite{Regex: regexp.MustCompile(`x`), Substitution: "y"}}
	var uri string
	route.Backends = []Backend{{Cluster: scriptedCluster("c", 1, func(r *http.Request) (*http.Response, error) {
		uri = r.URL.RequestURI()
		return reply(200), nil
	}), Weight: 1}}
	w := httptest.NewRecorder()
	(&Handler{Route: static(route), Forwarder: &Forwarder{}}).ServeHTTP(w, httptest.NewRequest("GET", "foo:#x", nil))
	if w.Code != 200 || uri != "#x" {
		t.Fatalf("target foo:#x: %d, the endpoint got %q, want it unchanged (#x)", w.Code, uri)
	}
}

// A rewritten path goes on the wire as a path the app sent unrewritten
// would: escaped where net/http escapes one ("{" as %7B), its escapes
// kept, even when it begins with "//"; and the query is kept, an empty one
// ("?" alone) included.
func TestRewrittenPathOnTheWire(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rewrite *PathRewrite
		target  string
		want    string
	}{
		{"no rewrite", nil, "/old/{x}", "/old/%7Bx%7D"},
		{"a character net/http escapes", &PathRewrite{Matched: "/old", Prefix: "/new"}, "/old/{x}", "/new/%7Bx%7D"},
		{"a path beginning with //", &PathRewrite{Matched: "/x", Prefix: "/"}, "/x/a%20b", "//a%20b"},
		{"an empty query", &PathRewrite{Matched: "/old", Prefix: "/new"}, "/old/a?", "/new/a?"},
		{"a query", &PathRewrite{Matched: "/old", Prefix: "/new"}, "/old/a?b=1", "/new/a?b=1"},
	} {
		if uri, _ := sentTo(t, &Route{Name: "r", PathRewrite: tc.rewrite}, tc.target, nil); uri != tc.want {
			t.Errorf("%s: %s went as %q, want %q", tc.name, tc.target, uri, tc.want)
		}
	}
}

// A redirect that sets a port replaces the request's, even in a Host
// without a name (":8080").
func TestRedirectPortOfANamelessHost(t *testing.T) {
	route := &Route{Name: "r", Redirect: &Redirect{Status: 301, Port: 9090}}
	req := httptest.NewRequest("GET", "http://svc.demo/p", nil)
	req.Host = ":8080"
	w := httptest.NewRecorder()
	(&Handler{Route: static(route), Forwarder: &Forwarder{}}).ServeHTTP(w, req)
	if loc := w.Header().Get("Location"); w.Code != 301 || loc != "http://:9090/p" {
		t.Fatalf("%d Location %q, want 301 http://:9090/p", w.Code, loc)
	}
}
