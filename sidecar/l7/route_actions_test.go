package l7

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/balance"
)

// What a route does besides choosing a cluster ([gamma] #20: the Envoy
// fields the Gateway API's filters translate into), seen on the wire: a
// real net/http client (HTTP/1.1 and h2c) talks to the client side's
// Handler on loopback, which forwards to a real net/http backend.

// seen is what a backend got, as it answers it in JSON.
type seen struct {
	Method, Host, URI string
	Header            http.Header
}

// rtBackend starts an HTTP/1.1 app on loopback that answers every request
// with what it saw (seen) after extra writes its header fields, and
// returns the one-endpoint cluster that reaches it.
func rtBackend(t testing.TB, extra func(http.Header)) *Cluster {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if extra != nil {
			extra(w.Header())
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(seen{Method: r.Method, Host: r.Host, URI: r.RequestURI, Header: r.Header})
	}))
	t.Cleanup(srv.Close)
	b := balance.New(balance.Config{})
	b.Update([]netip.AddrPort{netip.MustParseAddrPort(srv.Listener.Addr().String())})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &Cluster{Name: "app", Balancer: b, Transport: tr, Scheme: "http"}
}

// rtSidecar serves the app's connections with a Handler whose every
// request gets the route route returns; it returns the address the app
// connects to.
func rtSidecar(t *testing.T, route func(*http.Request) *Route) string {
	t.Helper()
	s := NewConnServer(&Handler{Route: route, Forwarder: &Forwarder{}}, ServerLimits{HeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}, nil)
	t.Cleanup(func() { s.Close() })
	return testutil.ServeTCP(t, func(c net.Conn) { s.ServeConn(c) }).String()
}

// rtClient is the app: HTTP/1.1 or h2c, following no redirect.
func rtClient(t *testing.T, h2c bool) *http.Client {
	t.Helper()
	tr := &http.Transport{Protocols: cleartext(h2c)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var protocols = []struct {
	name string
	h2c  bool
}{{"HTTP/1.1", false}, {"h2c", true}}

// rtSeen sends req and decodes what the backend saw.
func rtSeen(t *testing.T, c *http.Client, req *http.Request) (*http.Response, seen) {
	t.Helper()
	resp, body := testutil.Do(t, c, req)
	var s seen
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &s) != nil {
		t.Fatalf("%s %s: %d %q", req.Method, req.URL, resp.StatusCode, body)
	}
	return resp, s
}

// The request's header fields as the backend gets them: removals first,
// then each addition judged on what the removals left, the overwrites
// done before the appends; empty values dropped unless kept.
func TestRouteRequestHeaders(t *testing.T) {
	route := &Route{Name: "r", Backends: []Backend{{Cluster: rtBackend(t, nil), Weight: 1}},
		RequestHeaders: HeaderMutation{
			Remove: []string{"x-remove", "x-again"},
			Add: []HeaderOption{
				{Name: "x-set", Value: "1", Action: OverwriteOrAdd},
				{Name: "x-add", Value: "2", Action: AppendOrAdd},
				{Name: "x-absent", Value: "a", Action: AddIfAbsent},
				{Name: "x-present", Value: "p", Action: AddIfAbsent},
				{Name: "x-only", Value: "o", Action: OverwriteIfExists},
				{Name: "x-missing", Value: "m", Action: OverwriteIfExists},
				{Name: "x-empty", Value: "", Action: OverwriteOrAdd},
				{Name: "x-keep", Value: "", Action: AppendOrAdd, KeepEmpty: true},
				{Name: "x-again", Value: "new", Action: AddIfAbsent}, // judged after the removal
				{Name: "x-both", Value: "appended", Action: AppendOrAdd},
				{Name: "x-both", Value: "set", Action: OverwriteOrAdd}, // the overwrite first, then the append
				{Name: "x-pct", Value: "100%", Action: AppendOrAdd},
			}}}
	addr := rtSidecar(t, func(*http.Request) *Route { return route })
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+addr+"/h", nil)
			for _, kv := range [][2]string{{"X-Set", "old1"}, {"X-Set", "old2"}, {"X-Add", "1"}, {"X-Remove", "gone"}, {"X-Present", "was"},
				{"X-Only", "before"}, {"X-Again", "old"}, {"X-Empty", "kept"}, {"X-Other", "untouched"}} {
				req.Header.Add(kv[0], kv[1])
			}
			_, s := rtSeen(t, rtClient(t, p.h2c), req)
			want := map[string][]string{
				"X-Set": {"1"}, "X-Add": {"1", "2"}, "X-Absent": {"a"}, "X-Present": {"was"}, "X-Only": {"o"}, "X-Missing": nil,
				"X-Remove": nil, "X-Again": {"new"}, "X-Empty": {"kept"}, "X-Keep": {""}, "X-Both": {"set", "appended"},
				"X-Pct": {"100%"}, "X-Other": {"untouched"},
			}
			for k, v := range want {
				if got := s.Header[k]; !slices.Equal(got, v) {
					t.Errorf("the backend got %s %q, want %q", k, got, v)
				}
			}
		})
	}
}

// A field that an HTTP/1.1 app names in Connection is the app's
// connection's, and goes no further; a field the route sets is the route's
// and reaches the backend whatever the app names (Envoy edits after it
// removes the hop-by-hop fields). The app here is hostile: it names the
// route's own fields in Connection to strip them.
func TestRouteSetFieldsSurviveConnection(t *testing.T) {
	route := &Route{Name: "r", Backends: []Backend{{Cluster: rtBackend(t, nil), Weight: 1}},
		RequestHeaders: HeaderMutation{Add: []HeaderOption{
			{Name: "x-tenant", Value: "blue", Action: OverwriteOrAdd},
			{Name: "x-absent", Value: "route", Action: AddIfAbsent},
			{Name: "x-only", Value: "route", Action: OverwriteIfExists},
		}}}
	addr := rtSidecar(t, func(*http.Request) *Route { return route })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /h HTTP/1.1\r\nHost: echo\r\nConnection: x-tenant, X-Absent, x-only, x-private\r\n"+
		"X-Tenant: red\r\nX-Absent: app\r\nX-Only: app\r\nX-Private: secret\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s seen
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d: %v", resp.StatusCode, err)
	}
	want := map[string][]string{
		"X-Tenant":   {"blue"},  // set by the route, not stripped
		"X-Absent":   {"route"}, // the app's was stripped first: absent, so added
		"X-Only":     nil,       // the app's was stripped first: nothing to overwrite
		"X-Private":  nil,       // the app's hop-by-hop field stays on its connection
		"Connection": nil,
	}
	for k, v := range want {
		if got := s.Header[k]; !slices.Equal(got, v) {
			t.Errorf("the backend got %s %q, want %q", k, got, v)
		}
	}
}

// The response's header fields as the app gets them: the backend's, and
// the sidecar's own answer when the request gets no response.
func TestRouteResponseHeaders(t *testing.T) {
	mutation := HeaderMutation{Remove: []string{"server", "x-drop"}, Add: []HeaderOption{
		{Name: "x-header-set", Value: "v1", Action: OverwriteOrAdd},
		{Name: "x-multi", Value: "b", Action: AppendOrAdd},
		{Name: "x-if-absent", Value: "mine", Action: AddIfAbsent},
	}}
	backend := rtBackend(t, func(h http.Header) {
		h.Set("Server", "app/1.0")
		h.Set("X-Header-Set", "from-app")
		h.Set("X-Multi", "a")
		h.Set("X-If-Absent", "app's")
		h.Set("X-Drop", "1")
	})
	down := &Cluster{Name: "down", Balancer: balance.New(balance.Config{}), Transport: &http.Transport{}, Scheme: "http"} // no endpoint
	routes := map[string]*Route{
		"/up":   {Name: "up", Backends: []Backend{{Cluster: backend, Weight: 1}}, ResponseHeaders: mutation},
		"/down": {Name: "down", Backends: []Backend{{Cluster: down, Weight: 1}}, ResponseHeaders: mutation},
	}
	addr := rtSidecar(t, func(r *http.Request) *Route { return routes[r.URL.Path] })
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := rtClient(t, p.h2c)
			req, _ := http.NewRequest("GET", "http://"+addr+"/up", nil)
			resp, _ := rtSeen(t, c, req)
			for k, v := range map[string][]string{"Server": nil, "X-Drop": nil, "X-Header-Set": {"v1"}, "X-Multi": {"a", "b"}, "X-If-Absent": {"app's"}} {
				if got := resp.Header[k]; !slices.Equal(got, v) {
					t.Errorf("from the backend: the app got %s %q, want %q", k, got, v)
				}
			}
			// The sidecar's own 503 (no endpoint) is the route's response
			// too, as Envoy's local replies are.
			req, _ = http.NewRequest("GET", "http://"+addr+"/down", nil)
			resp, body := testutil.Do(t, c, req)
			if resp.StatusCode != 503 || resp.Header.Get("X-Header-Set") != "v1" || resp.Header.Get("X-If-Absent") != "mine" {
				t.Errorf("the sidecar's answer: %d %v %q, want 503 with the route's header fields", resp.StatusCode, resp.Header, body)
			}
			// And a gRPC one (a trailers-only UNAVAILABLE).
			req, _ = http.NewRequest("POST", "http://"+addr+"/down", strings.NewReader(""))
			req.Header.Set("Content-Type", "application/grpc")
			resp, _ = testutil.Do(t, c, req)
			if p.h2c && (resp.Header.Get("Grpc-Status") != "14" || resp.Header.Get("X-Header-Set") != "v1") {
				t.Errorf("the sidecar's gRPC answer: %d %v, want UNAVAILABLE with the route's header fields", resp.StatusCode, resp.Header)
			}
		})
	}
}

// The path and Host the backend gets: prefix rewrites as the translator
// emits them for the Gateway API's ReplacePrefixMatch, full-path
// replacement by regex_rewrite "^/.*$", general RE2 substitution, and a
// host rewrite; the query stays.
func TestRouteRewrites(t *testing.T) {
	backend := rtBackend(t, nil)
	cases := []struct {
		name     string
		rewrite  *PathRewrite
		host     string
		path     string
		wantURI  string
		wantHost string
	}{
		{"exact path to /", &PathRewrite{Matched: "/strip", Prefix: "/"}, "", "/strip?x=1", "/?x=1", ""},
		{"prefix/ to /", &PathRewrite{Matched: "/strip/", Prefix: "/"}, "", "/strip/a/b?q", "/a/b?q", ""},
		{"path-separated prefix", &PathRewrite{Matched: "/old", Prefix: "/new"}, "", "/old/x", "/new/x", ""},
		{"path-separated prefix alone", &PathRewrite{Matched: "/old", Prefix: "/new"}, "", "/old", "/new", ""},
		{"escapes kept", &PathRewrite{Matched: "/p", Prefix: "/q"}, "", "/p/a%20b/c%2Fd", "/q/a%20b/c%2Fd", ""},
		{"full path", &PathRewrite{Regex: regexp.MustCompile(`^/.*$`), Substitution: "/one"}, "", "/full/a/b?q=1&r=2", "/one?q=1&r=2", ""},
		{"groups", &PathRewrite{Regex: regexp.MustCompile(`^/users/([^/]+)/orders/(\d+)$`), Substitution: `/o/\2/u/\1`}, "", "/users/ann/orders/42", "/o/42/u/ann", ""},
		{"every match", &PathRewrite{Regex: regexp.MustCompile(`o`), Substitution: `0`}, "", "/foo/boo?o=o", "/f00/b00?o=o", ""},
		{"empty result leaves the path", &PathRewrite{Regex: regexp.MustCompile(`.*`), Substitution: ""}, "", "/keep?x", "/keep?x", ""},
		{"host", nil, "internal.example", "/h", "/h", "internal.example"},
		{"host and path", &PathRewrite{Matched: "/a", Prefix: "/b"}, "internal.example:8080", "/a/1", "/b/1", "internal.example:8080"},
	}
	var route *Route
	addr := rtSidecar(t, func(*http.Request) *Route { return route })
	for _, p := range protocols {
		for _, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				route = &Route{Name: "r", Backends: []Backend{{Cluster: backend, Weight: 1}}, PathRewrite: tc.rewrite, HostRewrite: tc.host}
				req, _ := http.NewRequest("GET", "http://"+addr+tc.path, nil)
				req.Host = "web.demo"
				_, s := rtSeen(t, rtClient(t, p.h2c), req)
				wantHost := tc.wantHost
				if wantHost == "" {
					wantHost = "web.demo"
				}
				if s.URI != tc.wantURI || s.Host != wantHost {
					t.Errorf("GET %s: the backend got %s with Host %s, want %s with Host %s", tc.path, s.URI, s.Host, tc.wantURI, wantHost)
				}
			})
		}
	}
}

// A redirect is answered by the client sidecar itself: nothing reaches
// a backend, and the Location is the request's URL rebuilt as Envoy
// rebuilds it.
func TestRouteRedirects(t *testing.T) {
	cases := []struct {
		name       string
		redirect   Redirect
		host, path string
		xfp        string
		status     int
		location   string
	}{
		// The Gateway API's mesh conformance (MeshHTTPRouteRedirectPort,
		// -HostAndStatus, -SchemeRedirect, -RedirectPath).
		{"port", Redirect{Status: 302, Port: 8083}, "echo", "/port", "", 302, "http://echo:8083/port"},
		{"port replaces the request's", Redirect{Status: 302, Port: 8083}, "echo:80", "/port", "", 302, "http://echo:8083/port"},
		{"host and port", Redirect{Status: 302, Host: "example.org", Port: 8083}, "echo", "/port-and-host", "", 302, "http://example.org:8083/port-and-host"},
		{"host drops the request's port", Redirect{Status: 301, Host: "example.org"}, "echo:8080", "/x", "", 301, "http://example.org/x"},
		{"https from :80", Redirect{Status: 302, Scheme: "https"}, "echo:80", "/scheme", "", 302, "https://echo/scheme"},
		{"https keeps another port", Redirect{Status: 302, Scheme: "https"}, "echo:8080", "/scheme", "", 302, "https://echo:8080/scheme"},
		{"https and a port", Redirect{Status: 302, Scheme: "https", Port: 8443}, "echo", "/s", "", 302, "https://echo:8443/s"},
		{"http from https :443", Redirect{Status: 302, Scheme: "http"}, "echo:443", "/s", "https", 302, "http://echo/s"},
		{"the request's scheme is X-Forwarded-Proto", Redirect{Status: 302, Host: "b.example"}, "echo", "/s", "https", 302, "https://b.example/s"},
		{"IPv6 host, new port", Redirect{Status: 302, Port: 9000}, "[fd00::1]:8080", "/v6", "", 302, "http://[fd00::1]:9000/v6"},
		{"IPv6 host kept", Redirect{Status: 302, Scheme: "https"}, "[fd00::1]:8080", "/v6", "", 302, "https://[fd00::1]:8080/v6"},
		{"path keeps the query", Redirect{Status: 302, Path: "/new"}, "echo", "/old?a=1", "", 302, "http://echo/new?a=1"},
		{"path with a query replaces it", Redirect{Status: 302, Path: "/new?b=2", StripQuery: true}, "echo", "/old?a=1", "", 302, "http://echo/new?b=2"},
		{"strip query", Redirect{Status: 302, StripQuery: true}, "echo", "/old?a=1", "", 302, "http://echo/old"},
		{"path without a slash", Redirect{Status: 302, Path: "rel"}, "echo", "/old", "", 302, "http://echo/rel"},
		{"prefix rewrite", Redirect{Status: 302, PathRewrite: &PathRewrite{Matched: "/old", Prefix: "/new"}}, "echo", "/old/x?y", "", 302, "http://echo/new/x?y"},
		{"everything", Redirect{Status: 301, Scheme: "https", Host: "example.org", Port: 8443, Path: "/new"}, "echo", "/redirect", "", 301, "https://example.org:8443/new"},
		{"303", Redirect{Status: 303}, "echo", "/a", "", 303, "http://echo/a"},
		{"307", Redirect{Status: 307}, "echo", "/a", "", 307, "http://echo/a"},
		{"308", Redirect{Status: 308}, "echo", "/a", "", 308, "http://echo/a"},
	}
	var route *Route
	addr := rtSidecar(t, func(*http.Request) *Route { return route })
	for _, p := range protocols {
		for _, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				rd := tc.redirect
				route = &Route{Name: "redirect", Redirect: &rd,
					ResponseHeaders: HeaderMutation{Add: []HeaderOption{{Name: "x-route", Value: "redirect", Action: OverwriteOrAdd}}}}
				for _, method := range []string{"GET", "POST", "HEAD"} {
					req, _ := http.NewRequest(method, "http://"+addr+tc.path, strings.NewReader(""))
					req.Host = tc.host
					if tc.xfp != "" {
						req.Header.Set("X-Forwarded-Proto", tc.xfp)
					}
					resp, body := testutil.Do(t, rtClient(t, p.h2c), req)
					if resp.StatusCode != tc.status || resp.Header.Get("Location") != tc.location || body != "" || resp.Header.Get("X-Route") != "redirect" {
						t.Errorf("%s %s (Host %s): %d Location %q %q, X-Route %q; want %d Location %q, no body, X-Route redirect",
							method, tc.path, tc.host, resp.StatusCode, resp.Header.Get("Location"), body, resp.Header.Get("X-Route"), tc.status, tc.location)
					}
				}
			})
		}
	}
	// A gRPC call gets what Envoy's local reply gives it: HTTP 200 and
	// gRPC status UNKNOWN, the Location kept.
	route = &Route{Name: "redirect", Redirect: &Redirect{Status: 301, Host: "example.org"}}
	req, _ := http.NewRequest("POST", "http://"+addr+"/pkg.Svc/Method", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/grpc")
	resp, _ := testutil.Do(t, rtClient(t, true), req)
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "2" || resp.Header.Get("Location") != "http://example.org/pkg.Svc/Method" {
		t.Errorf("gRPC: %d %v, want 200, grpc-status 2 and the Location", resp.StatusCode, resp.Header)
	}
}

// A request that switches protocols goes on a connection of its own,
// written by the sidecar: with the route's header fields, path and Host;
// the 101 reaches the app with the route's response header fields.
func TestRouteRewritesOnAnUpgrade(t *testing.T) {
	heads := make(chan string, 1)
	up := testutil.ServeTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s Host=%s", req.Method, req.RequestURI, req.Host)
		for _, k := range []string{"X-Set", "X-Remove", "X-App", "Connection", "X-Hop"} {
			fmt.Fprintf(&b, " %s=%q", k, req.Header.Values(k))
		}
		heads <- b.String()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nServer: app\r\n\r\n")
		io.Copy(c, br) // echo
	})
	b := balance.New(balance.Config{})
	b.Update([]netip.AddrPort{up})
	cl := &Cluster{Name: "ws", Balancer: b, Transport: &http.Transport{}, Scheme: "http",
		DialTunnel: func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}}
	route := &Route{Name: "ws", Backends: []Backend{{Cluster: cl, Weight: 1}}, HostRewrite: "internal.example",
		PathRewrite:     &PathRewrite{Matched: "/ws", Prefix: "/socket"},
		RequestHeaders:  HeaderMutation{Remove: []string{"x-remove"}, Add: []HeaderOption{{Name: "x-set", Value: "1", Action: OverwriteOrAdd}}},
		ResponseHeaders: HeaderMutation{Remove: []string{"server"}, Add: []HeaderOption{{Name: "x-route", Value: "ws", Action: OverwriteOrAdd}}}}
	addr := rtSidecar(t, func(*http.Request) *Route { return route })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The app names the route's own field (and one of its own) in
	// Connection: the fields it names go, the route's is set after, and
	// the endpoint gets Connection: Upgrade alone.
	io.WriteString(c, "GET /ws/chat?room=1 HTTP/1.1\r\nHost: web.demo\r\nConnection: Upgrade, x-set, X-Hop\r\nUpgrade: echo\r\nX-Set: old\r\nX-Remove: 1\r\nX-App: a\r\nX-Hop: h\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := testutil.Receive(t, heads, "the request on the tunnel"), `GET /socket/chat?room=1 Host=internal.example X-Set=["1"] X-Remove=[] X-App=["a"] Connection=["Upgrade"] X-Hop=[]`; got != want {
		t.Errorf("the endpoint got %s\nwant %s", got, want)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Server") != "" || resp.Header.Get("X-Route") != "ws" || resp.Header.Get("Upgrade") != "echo" {
		t.Errorf("the app got %d %v, want 101 with X-Route and without Server", resp.StatusCode, resp.Header)
	}
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Errorf("through the tunnel: %q %v", buf, err)
	}
}

// replaceRE2 is RE2's GlobalReplace: the same result as Go's
// ReplaceAllString for the substitutions both syntaxes can say.
func TestReplaceRE2(t *testing.T) {
	for _, tc := range []struct{ re, s, sub, want string }{
		{`^/.*$`, "/a/b", "/one", "/one"},
		{`.*`, "/a", "/x", "/x"}, // the empty match at the end abuts the first: ignored
		{`a*`, "baaac", "-", "-b-c-"},
		{`(a)(b)?`, "ac", `[\1\2\0]`, "[aa]c"}, // an unmatched group is empty
		{`b`, "abc", `\\`, `a\c`},
		{`x`, "abc", "y", "abc"},
		{`é`, "/café", "e", "/cafe"},
	} {
		if got := replaceRE2(regexp.MustCompile(tc.re), tc.s, tc.sub); got != tc.want {
			t.Errorf("replaceRE2(%s, %q, %q) = %q, want %q", tc.re, tc.s, tc.sub, got, tc.want)
		}
	}
}
