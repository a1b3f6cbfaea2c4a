package l7

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

// routeFuzzSeeds are requests for FuzzRouteActions, the first byte of the
// path choosing the route.
var routeFuzzSeeds = []string{
	"GET /r/a?b=1 HTTP/1.1\r\nHost: echo:80\r\nX-Forwarded-Proto: https\r\n\r\n",
	"GET /r HTTP/1.1\r\nHost: [fd00::1]:8080\r\n\r\n",
	"GET http://other:443/r?x HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST /m/users/ann?x=%41 HTTP/1.1\r\nHost: a\r\nX-Set: 1\r\nX-Set: 2\r\nX-Remove: r\r\nContent-Length: 3\r\n\r\nabc",
	"GET /m/%2e%2e/%zz HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /p HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /pé?q#f HTTP/1.1\r\nHost: \r\n\r\n",
}

// FuzzRouteActions sends every request net/http's parser makes of
// arbitrary bytes through routes that redirect, edit headers and rewrite
// path and Host, to a real backend: the handler never panics and answers
// with a status the sidecar can stand behind (a redirect's, the backend's
// 200, or the sidecar's errors).
func FuzzRouteActions(f *testing.F) {
	for _, s := range routeFuzzSeeds {
		f.Add([]byte(s))
	}
	backend := rtBackend(f, nil)
	edit := HeaderMutation{Remove: []string{"x-remove"}, Add: []HeaderOption{
		{Name: "x-set", Value: "1", Action: OverwriteOrAdd}, {Name: "x-add", Value: "2", Action: AppendOrAdd},
		{Name: "x-absent", Value: "a", Action: AddIfAbsent}, {Name: "x-only", Value: "o", Action: OverwriteIfExists},
		{Name: "x-empty", KeepEmpty: true}}}
	routes := map[byte]*Route{
		'r': {Name: "redirect", Redirect: &Redirect{Status: 302, Port: 8083, PathRewrite: &PathRewrite{Matched: "/r", Prefix: "/new"}, StripQuery: true},
			ResponseHeaders: edit},
		'h': {Name: "redirect-all", Redirect: &Redirect{Status: 301, Scheme: "https", Host: "example.org", Path: "/x?y"}},
		'm': {Name: "mutate", Timeout: 5 * time.Second, Backends: []Backend{{Cluster: backend, Weight: 1}}, RequestHeaders: edit, ResponseHeaders: edit,
			HostRewrite: "internal.example", PathRewrite: &PathRewrite{Regex: regexp.MustCompile(`^/m/([^/]*)/?(.*)$`), Substitution: `/\2/\1`}},
		'p': {Name: "prefix", Timeout: 5 * time.Second, Backends: []Backend{{Cluster: backend, Weight: 1}},
			PathRewrite: &PathRewrite{Matched: "/p", Prefix: "/"}},
	}
	h := &Handler{Forwarder: &Forwarder{}, Route: func(r *http.Request) *Route {
		if t := Target(r); len(t) > 1 {
			if rt := routes[t[1]]; rt != nil {
				return rt
			}
		}
		return routes['m']
	}}
	f.Fuzz(func(t *testing.T, in []byte) {
		eachRequest(t, in, h, nil, func(rec *httptest.ResponseRecorder) {
			switch c := rec.Code; {
			case c == 301 || c == 302:
				if loc := rec.Header().Get("Location"); !strings.HasPrefix(loc, "http://") && !strings.HasPrefix(loc, "https://") {
					t.Fatalf("redirect to %q for %q", loc, in)
				}
			case c == 200 || c == 101 || c >= 400 && c <= 599:
			default:
				t.Fatalf("status %d for %q", c, in)
			}
		})
	})
}
