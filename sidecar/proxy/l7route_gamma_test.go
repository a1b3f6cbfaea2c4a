package proxy

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// The Gateway API's routes ([gamma] #20) through real sidecars: the app's
// client pod routes by method, path-separated prefix and query parameter,
// edits the request and the response, rewrites the path and the Host, and
// answers redirects itself; the server pod's app sees what the route made
// of the request. The routes are the model the translator's GAMMA goldens
// build into (sidecar/xds TestGAMMAGoldenModel).
func TestL7GatewayAPIRoutes(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	v1, v2 := startHTTPBackend(t, ca, "v1"), startHTTPBackend(t, ca, "v2")
	v1.set(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Server", "app/1.0")
		fmt.Fprintf(w, "v1 %s %s host=%s x-set=%q x-add=%q x-remove=%q", r.Method, r.RequestURI, r.Host,
			r.Header.Values("X-Set"), r.Header.Values("X-Add"), r.Header.Values("X-Remove"))
	})
	c1, c2 := "outbound|80|web-v1.demo", "outbound|80|web-v2.demo"
	to := func(c string) []model.WeightedCluster { return []model.WeightedCluster{{Name: c, Weight: 1}} }
	routes := []*model.Route{
		{Name: "redirect", Match: model.RouteMatch{Path: "/moved"},
			Redirect: &model.Redirect{Status: 301, Scheme: "https", Host: "example.org", Port: 8443, Path: "/new"}},
		{Name: "port", Match: model.RouteMatch{PathSeparatedPrefix: "/port"}, Redirect: &model.Redirect{Status: 302, Port: 8083}},
		{Name: "post", Match: model.RouteMatch{Prefix: "/", Headers: []model.HeaderMatch{{Name: ":method", Exact: "POST"}}}, Clusters: to(c2)},
		{Name: "v2-query", Match: model.RouteMatch{PathSeparatedPrefix: "/api", Query: []model.QueryMatch{{Name: "version", Exact: "2"}}}, Clusters: to(c2)},
		{Name: "api", Match: model.RouteMatch{PathSeparatedPrefix: "/api"}, Clusters: to(c1),
			PathRewrite: &model.PathRewrite{Matched: "/api", Prefix: "/v1"}, HostRewrite: "internal.example",
			RequestHeaders: model.HeaderMutation{Remove: []string{"x-remove"}, Add: []model.HeaderValue{
				{Name: "x-set", Value: "1", Action: model.OverwriteIfExistsOrAdd}, {Name: "x-add", Value: "b", Action: model.AppendIfExistsOrAdd}}},
			ResponseHeaders: model.HeaderMutation{Remove: []string{"server"}, Add: []model.HeaderValue{
				{Name: "x-header-set", Value: "v1", Action: model.OverwriteIfExistsOrAdd}}}},
		// A backendRef that did not resolve: a cluster the configuration
		// does not have, its requests answered 500.
		{Name: "gone", Match: model.RouteMatch{PathSeparatedPrefix: "/gone"}, Clusters: to("unresolved|80|missing.demo"), ClusterNotFound: 500},
		// A cluster absent without cluster_not_found_response_code (a
		// route that arrived before its cluster) takes no share.
		{Name: "early", Match: model.RouteMatch{PathSeparatedPrefix: "/early"}, Clusters: to("outbound|80|later.demo")},
		{Name: "full", Match: model.RouteMatch{PathSeparatedPrefix: "/full"}, Clusters: to(c1),
			PathRewrite: &model.PathRewrite{Matched: "/full", Regex: regexp.MustCompile(`^/.*$`), Substitution: "/one"}},
	}
	a := startL7Client(t, ca, l7ClientConfig(routes, map[string][]model.Endpoint{c1: {v1.endpoint()}, c2: {v2.endpoint()}}))
	c := httpClient(t, a)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	do := func(method, host, path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+host+path, strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		return testutil.Do(t, c, req)
	}

	for _, tc := range []struct {
		method, path string
		hdr          []string
		code         int
		body         string // its prefix
	}{
		{"GET", "/api/users?version=2", nil, 200, "v2 HTTP/1.1 GET web.demo /api/users?version=2 "}, // the query chooses v2
		{"POST", "/api/users", nil, 200, "v2 HTTP/1.1 POST web.demo /api/users "},                   // the method chooses v2
		{"GET", "/api/users?version=1", []string{"X-Set", "old", "X-Add", "a", "X-Remove", "x"}, 200,
			`v1 GET /v1/users?version=1 host=internal.example x-set=["1"] x-add=["a" "b"] x-remove=[]`},
		{"GET", "/api", nil, 200, `v1 GET /v1 host=internal.example`},
		{"GET", "/apiv2", nil, 404, "weft: route not found"}, // not path-separated
		{"GET", "/gone/a", nil, 500, "weft: cluster not found"},
		{"GET", "/early", nil, 503, "weft: no backend"},
		{"GET", "/full/a/b?q=1", nil, 200, `v1 GET /one?q=1 host=web.demo`},
	} {
		resp, body := do(tc.method, "web.demo", tc.path, tc.hdr...)
		if resp.StatusCode != tc.code || !strings.HasPrefix(body, tc.body) {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, body, tc.code, tc.body)
		}
		if tc.code == 200 && strings.HasPrefix(tc.path, "/api/users?version=1") &&
			(resp.Header.Get("Server") != "" || resp.Header.Get("X-Header-Set") != "v1") {
			t.Errorf("%s %s: the app got %v, want X-Header-Set and no Server", tc.method, tc.path, resp.Header)
		}
	}

	// Redirects come from the client pod: no server pod sees them.
	hits := v1.hits.Load() + v2.hits.Load()
	for _, tc := range []struct {
		host, path string
		code       int
		location   string
	}{
		{"web.demo", "/moved?x=1", 301, "https://example.org:8443/new?x=1"},
		{"echo", "/port/a", 302, "http://echo:8083/port/a"},
		{"echo:80", "/port", 302, "http://echo:8083/port"},
	} {
		resp, body := do("GET", tc.host, tc.path)
		if resp.StatusCode != tc.code || resp.Header.Get("Location") != tc.location || body != "" {
			t.Errorf("GET %s (Host %s): %d Location %q %q, want %d Location %q", tc.path, tc.host, resp.StatusCode, resp.Header.Get("Location"), body, tc.code, tc.location)
		}
	}
	if got := v1.hits.Load() + v2.hits.Load(); got != hits {
		t.Errorf("the server pods saw %d redirected requests", got-hits)
	}
	if got := a.value("weft_sidecar_http_requests_total", outbound, "redirect", "", "", "3xx", ""); got != 1 {
		t.Errorf("A counted %v redirects of route redirect, want 1", got)
	}
}
