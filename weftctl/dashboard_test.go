package weftctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/api/audit"
)

const (
	clientID = "spiffe://cluster.local/ns/weft-demo/sa/client"
	probeID  = "spiffe://cluster.local/ns/lab/sa/probe"
)

// serverMetrics is the server sidecar's /metrics at reading n (0, 1): in
// between, 10 more mTLS connections from the client and 100 more requests
// of which 10 failed, 50 under 5 ms, 90 under 10 ms, all under 25 ms.
func serverMetrics(n int, expiry string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# TYPE weft_sidecar_svid_expiry_timestamp_seconds gauge\nweft_sidecar_svid_expiry_timestamp_seconds %s\n", expiry)
	b.WriteString("# TYPE weft_sidecar_inbound_peer_connections_total counter\n")
	peer := func(outcome, peer string, v int) {
		fmt.Fprintf(&b, "weft_sidecar_inbound_peer_connections_total{outcome=%q,peer=%q} %d\n", outcome, peer, v)
	}
	peer("mtls", clientID, 10+10*n)
	peer("plaintext", "198.18.0.12", 3)                    // plain-5c4b, opted out, on a PERMISSIVE port
	peer("refused", "198.18.0.13", 1)                      // old-6d7e, slipped through injection
	peer("refused", "198.18.7.7", 2)                       // no known pod
	peer("refused", probeID, 1)                            // an ID no pod here runs as
	peer("refused", "spiffe://other.example/ns/x/sa/y", 0) // a series with nothing yet
	peer("mtls", "other", 4)                               // past the sidecar's budget
	req := func(class string, v int) {
		fmt.Fprintf(&b, "weft_sidecar_http_requests_total{direction=\"inbound\",route=\"inbound|8080\",dst=\"\",peer=%q,class=%q,grpc_status=\"\"} %d\n", clientID, class, v)
	}
	b.WriteString("# TYPE weft_sidecar_http_requests_total counter\n")
	req("2xx", 100+90*n)
	req("5xx", 10*n)
	// An outbound request is the client side of another edge: not counted.
	fmt.Fprintf(&b, "weft_sidecar_http_requests_total{direction=\"outbound\",route=\"r\",dst=\"c\",peer=%q,class=\"5xx\",grpc_status=\"\"} 99\n", clientID)
	b.WriteString("# TYPE weft_sidecar_http_request_duration_seconds histogram\n")
	for _, bk := range []struct {
		le string
		v  int
	}{{"0.005", 50 + 50*n}, {"0.01", 90 + 90*n}, {"0.025", 100 + 100*n}, {"+Inf", 100 + 100*n}} {
		fmt.Fprintf(&b, "weft_sidecar_http_request_duration_seconds_bucket{direction=\"inbound\",route=\"inbound|8080\",dst=\"\",peer=%q,class=\"2xx\",le=%q} %d\n", clientID, bk.le, bk.v)
	}
	return b.String()
}

// dashboardFixture is the weftctl fixture (mesh_test.go) with service
// accounts on the meshed pods and a server sidecar whose metrics move
// between readings; the clock moves 5 s per reading.
func dashboardFixture(t *testing.T) (*dashboardServer, *atomic.Int32) {
	t.Helper()
	f := newFixture(t)
	ctx := context.Background()
	for name, sa := range map[string]string{"client-8f6d": "client", "server-v1-9a7c": "server"} {
		p, err := f.kube.CoreV1().Pods("weft-demo").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Spec.ServiceAccountName = sa
		if _, err := f.kube.CoreV1().Pods("weft-demo").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var reading atomic.Int32
	expiry := strconv.FormatInt(now.Add(23*time.Hour).Unix(), 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/pod/weft-demo/server-v1-9a7c/15020/metrics" {
			io.WriteString(w, serverMetrics(int(reading.Load()), expiry))
			return
		}
		f.mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	clock := now
	e := &env{kube: f.kube, admin: httpAdmin{srv.URL}, weftNS: "weft-system",
		now: func() time.Time { clock = clock.Add(5 * time.Second); return clock }}
	// The replicas' events, and one denied connection from web to the
	// host it is otherwise allowed: its row's decision is the strictest.
	events := map[string][]audit.Event{}
	for r, evs := range egressReplicaEvents {
		events[r] = slices.Clone(evs)
	}
	events["weft-controlplane-1"] = append(events["weft-controlplane-1"],
		egressEvent("x1", 2*time.Minute, "shop", "web-1", "web", "tls", "api.example.com", "93.184.216.34:443", "deny", "shop/web-egress"))
	ee, _ := egressCluster(t, events)
	d, err := newDashboardServer(e, ee, dashboardOptions{refresh: time.Hour, since: time.Hour, workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	return d, &reading
}

// readTwice takes the two readings the rates come from.
func readTwice(t *testing.T, d *dashboardServer, reading *atomic.Int32) {
	t.Helper()
	for i := range 2 {
		reading.Store(int32(i))
		r, err := d.read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		d.prev, d.cur = d.cur, r
	}
	close(d.readOnce)
}

// get is a GET from the dashboard's own page: with its token cookie.
func (d *dashboardServer) get(target string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:15080"+target, nil)
	r.AddCookie(&http.Cookie{Name: tokenCookie, Value: d.token})
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	return r
}

func getJSON(t *testing.T, d *dashboardServer, path string, v any) {
	t.Helper()
	rec := httptest.NewRecorder()
	d.handler().ServeHTTP(rec, d.get(path))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

func TestDashboardGraph(t *testing.T) {
	d, reading := dashboardFixture(t)
	readTwice(t, d, reading)
	var g graphView
	getJSON(t, d, "/api/graph", &g)

	if g.WindowSeconds != 5 {
		t.Errorf("window %v, want 5", g.WindowSeconds)
	}
	nodes := map[string]graphNode{}
	for _, n := range g.Nodes {
		nodes[n.ID] = n
	}
	// The injected namespace's workloads, meshed or not; the weft
	// namespace's pods are not of the mesh; the sources no pod explains.
	want := map[string]string{
		"weft-demo/pod/client-8f6d":        nodeWorkload,
		"weft-demo/pod/server-v1-9a7c":     nodeWorkload,
		"weft-demo/pod/plain-5c4b":         nodeWorkload,
		"weft-demo/pod/old-6d7e":           nodeWorkload,
		"ip:198.18.7.7":                    nodeAddress,
		probeID:                            nodeIdentity,
		"spiffe://other.example/ns/x/sa/y": nodeIdentity,
		"other":                            nodeAddress,
	}
	if len(nodes) != len(want) {
		t.Errorf("nodes %+v, want %v", g.Nodes, want)
	}
	for id, kind := range want {
		if nodes[id].Kind != kind {
			t.Errorf("node %s: %+v, want kind %s", id, nodes[id], kind)
		}
	}
	if n := nodes["weft-demo/pod/client-8f6d"]; n.Pods != 1 || n.Meshed != 1 || len(n.Identities) != 1 || n.Identities[0] != clientID {
		t.Errorf("client node %+v", n)
	}
	if n := nodes["weft-demo/pod/old-6d7e"]; n.Pods != 1 || n.Meshed != 0 || n.Identities != nil {
		t.Errorf("unmeshed node %+v", n)
	}

	type key struct{ from, to, outcome string }
	edges := map[key]graphEdge{}
	for _, e := range g.Edges {
		edges[key{e.From, e.To, e.Outcome}] = e
	}
	server := "weft-demo/pod/server-v1-9a7c"
	mtls := edges[key{"weft-demo/pod/client-8f6d", server, outcomeMTLS}]
	if mtls.Connections != 20 || mtls.Rate != 2 || len(mtls.Peers) != 1 || mtls.Peers[0] != clientID {
		t.Errorf("mTLS edge %+v", mtls)
	}
	if h := mtls.HTTP; h == nil || h.RPS != 20 || h.Success == nil || *h.Success != 0.9 || h.P99ms == nil || math.Abs(*h.P99ms-23.5) > 1e-9 {
		t.Errorf("mTLS edge's HTTP %+v", mtls.HTTP)
	}
	for k, conns := range map[key]float64{
		{"weft-demo/pod/plain-5c4b", server, outcomePlaintext}:       3,
		{"weft-demo/pod/old-6d7e", server, outcomeRefused}:           1,
		{"ip:198.18.7.7", server, outcomeRefused}:                    2,
		{probeID, server, outcomeRefused}:                            1,
		{"spiffe://other.example/ns/x/sa/y", server, outcomeRefused}: 0,
		{"other", server, outcomeMTLS}:                               4,
	} {
		e, ok := edges[k]
		if !ok || e.Connections != conns || e.Rate != 0 || e.HTTP != nil {
			t.Errorf("edge %v: %+v (present %v), want %v connections, no rate, no HTTP", k, e, ok, conns)
		}
	}
	if len(g.Edges) != 7 {
		t.Errorf("%d edges, want 7: %+v", len(g.Edges), g.Edges)
	}
	if len(g.Errors) != 0 {
		t.Errorf("errors %v", g.Errors)
	}
}

// The first reading has no rates yet; an unreadable sidecar is an error of
// the graph, not of the page.
func TestDashboardGraphFirstReadingAndErrors(t *testing.T) {
	d, _ := dashboardFixture(t)
	r, err := d.read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r.sidecars["weft-demo/client-8f6d"].err = fmt.Errorf("pods \"client-8f6d\" is forbidden")
	g := buildGraph(nil, r)
	if g.WindowSeconds != 0 || len(g.Errors) != 1 || !strings.Contains(g.Errors[0], "weft-demo/client-8f6d: pods") {
		t.Errorf("window %v errors %v", g.WindowSeconds, g.Errors)
	}
	for _, e := range g.Edges {
		if e.Rate != 0 || e.HTTP != nil && (e.HTTP.RPS != 0 || e.HTTP.Success != nil) {
			t.Errorf("a rate from one reading: %+v %+v", e, e.HTTP)
		}
	}
}

func TestDashboardHealth(t *testing.T) {
	d, reading := dashboardFixture(t)
	readTwice(t, d, reading)
	var h healthView
	getJSON(t, d, "/api/health", &h)
	if len(h.ControlPlanes) != 2 || h.ControlPlanes[0].Pod != "weft-controlplane-a1" || h.ControlPlanes[0].Sidecars != 1 {
		t.Errorf("control planes %+v", h.ControlPlanes)
	}
	if len(h.Sidecars) != 2 || h.Counts["SYNCED"] != 2 {
		t.Fatalf("sidecars %+v counts %v", h.Sidecars, h.Counts)
	}
	srv := h.Sidecars[1]
	if srv.Pod != "server-v1-9a7c" || srv.Workload != "pod/server-v1-9a7c" || srv.State != "SYNCED" ||
		srv.CertNotAfter == nil || !srv.CertNotAfter.Equal(now.Add(23*time.Hour).Truncate(time.Second)) {
		t.Errorf("server sidecar %+v", srv)
	}
	// plain-5c4b opted out; old-6d7e did not and has no sidecar.
	if len(h.Uninjected) != 1 || h.Uninjected[0].Pod != "old-6d7e" || !strings.HasPrefix(h.Uninjected[0].Reason, "no sidecar. ") {
		t.Errorf("uninjected %+v", h.Uninjected)
	}
}

func TestDashboardHealthNACKedAndDisconnected(t *testing.T) {
	d, reading := dashboardFixture(t)
	readTwice(t, d, reading)
	// A third meshed pod no replica streams with; the server's listener
	// NACKed.
	p := pod("weft-demo", "lost-1", "198.18.0.14", -time.Minute, true)
	d.cur.pods = append(d.cur.pods, *p)
	d.cur.sidecars["weft-demo/lost-1"] = &sidecarReading{err: fmt.Errorf("connection refused")}
	cps, err := controlPlanes(context.Background(), d.e)
	if err != nil || len(cps) != 2 {
		t.Fatal(cps, err)
	}
	var h healthView
	getJSON(t, d, "/api/health", &h)
	byPod := map[string]sidecarHealth{}
	for _, s := range h.Sidecars {
		byPod[s.Pod] = s
	}
	if s := byPod["lost-1"]; s.State != "DISCONNECTED" || s.CertError != "connection refused" {
		t.Errorf("lost sidecar %+v", s)
	}
	if h.Counts["DISCONNECTED"] != 1 || h.Counts["SYNCED"] != 2 {
		t.Errorf("counts %v", h.Counts)
	}
}

func TestDashboardEgress(t *testing.T) {
	d, reading := dashboardFixture(t)
	readTwice(t, d, reading)
	// shop/web runs as one Deployment here.
	web := *pod("shop", "web-7d9f8-x2x1q", "198.18.0.20", -time.Hour, true)
	web.Spec.ServiceAccountName = "web"
	web.Labels["pod-template-hash"] = "7d9f8"
	web.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-7d9f8", Controller: ptrTrue()}}
	d.cur.pods = append(d.cur.pods, web)
	var v egressView
	getJSON(t, d, "/api/egress", &v)
	if v.Replicas != "2/3" || len(v.Errors) != 1 {
		t.Errorf("replicas %s errors %v", v.Replicas, v.Errors)
	}
	rows := map[string]egressRow{}
	for _, r := range v.Rows {
		rows[r.Workload+" "+r.Destination] = r
	}
	const webID, workerID = "spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/shop/sa/worker"
	// From both replicas, in the hour: a1, a2, a3 (web-2, the same
	// identity) and a4 allowed, x1 denied; "old" is 3 h old.
	api := rows[webID+" api.example.com:443"]
	if api.Connections != 5 || api.Decision != "deny" || api.Decisions["allow"] != 4 || api.WorkloadRef != "shop/deploy/web" || api.BytesSent == 0 {
		t.Errorf("web -> api.example.com %+v", api)
	}
	for dest, decision := range map[string]string{"evil.example.net:443": "deny", "hooks.example.org:443": "audit", "cdn.example.com:443": "allow"} {
		if r := rows[webID+" "+dest]; r.Decision != decision || r.Connections != 1 {
			t.Errorf("web -> %s: %+v, want %s", dest, r, decision)
		}
	}
	if r := rows[workerID+" bad.example.com:443"]; r.Decision != "deny" || r.WorkloadRef != "" {
		t.Errorf("worker -> bad.example.com %+v (no pod runs as worker here)", r)
	}
	if _, mixed := rows[workerID+" api.example.com:443"]; mixed {
		t.Error("worker credited with web's egress")
	}
}

func ptrTrue() *bool { b := true; return &b }

func TestDashboardSuggest(t *testing.T) {
	d, reading := dashboardFixture(t)
	readTwice(t, d, reading)
	var s suggestView
	getJSON(t, d, "/api/egress/suggest?namespace=shop&workload=web-1", &s)
	for _, want := range []string{"kind: EgressPolicy", "api.example.com", "defaultAction: Deny", "mode: Audit"} {
		if !strings.Contains(s.YAML, want) {
			t.Errorf("suggestion lacks %q:\n%s", want, s.YAML)
		}
	}
	if strings.Contains(s.YAML, "evil.example.net") {
		t.Errorf("suggestion allows what was denied:\n%s", s.YAML)
	}
	rec := httptest.NewRecorder()
	d.handler().ServeHTTP(rec, d.get("/api/egress/suggest?namespace=shop"))
	if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "needs namespace and workload") {
		t.Errorf("suggest without a workload: %d %s", rec.Code, rec.Body)
	}
}

// The page's server answers only at loopback names (a page elsewhere that
// rebinds its name to 127.0.0.1 reads nothing), only with its token, never
// to another site, only GET, and sends the page with a policy that runs
// its own scripts alone.
func TestDashboardServesOnlyItsOwnPage(t *testing.T) {
	d, reading := dashboardFixture(t)
	readTwice(t, d, reading)
	h := d.handler()
	for host, want := range map[string]int{
		"127.0.0.1:15080": 200, "localhost:15080": 200, "[::1]:15080": 200, "127.0.0.1": 200,
		"evil.example.com:15080": http.StatusMisdirectedRequest, "198.18.0.1:15080": http.StatusMisdirectedRequest,
		"localhost.evil.example:15080": http.StatusMisdirectedRequest,
	} {
		req := d.get("/api/graph")
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %s: %d, want %d", host, rec.Code, want)
		}
	}
	// Without the token (another user of the machine, another site's
	// page), with a wrong one, or from another site even with the cookie
	// (a page elsewhere making the browser send it): nothing is read.
	for name, mod := range map[string]func(*http.Request){
		"no token": func(r *http.Request) { r.Header.Del("Cookie") },
		"wrong token": func(r *http.Request) {
			r.Header.Del("Cookie")
			r.AddCookie(&http.Cookie{Name: tokenCookie, Value: d.token[:len(d.token)-1] + "x"})
		},
		"wrong token in the URL": func(r *http.Request) { r.URL.RawQuery = "token=" + strings.ToUpper(d.token) },
		"cross-site":             func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") },
		"same-site":              func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-site") },
	} {
		req := d.get("/api/health")
		mod(req)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized && rec.Code != http.StatusForbidden {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
		}
	}
	// The printed URL: the token in the query opens the page and sets the
	// cookie its fetches carry.
	req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:15080/?token="+d.token, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	cookies := rec.Result().Cookies()
	if rec.Code != 200 || len(cookies) != 1 || cookies[0].Value != d.token || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode {
		t.Errorf("page with the token: %d, cookies %+v", rec.Code, cookies)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "http://127.0.0.1:15080/api/graph?token="+d.token, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, d.get("/"))
	csp := rec.Header().Get("Content-Security-Policy")
	if rec.Code != 200 || !strings.Contains(csp, "script-src 'sha256-") || strings.Contains(csp, "script-src 'unsafe-inline'") ||
		!strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("page: %d, CSP %q", rec.Code, csp)
	}
}

func TestPageCSPHashesEachScript(t *testing.T) {
	got := pageCSP([]byte("<p>x</p><script>alert(1)</script><script>b()</script>"))
	// sha256("alert(1)") and sha256("b()"), base64.
	for _, want := range []string{"'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='", "script-src 'sha256-"} {
		if !strings.Contains(got, want) {
			t.Errorf("CSP %q lacks %s", got, want)
		}
	}
	if strings.Count(got, "'sha256-") != 2 {
		t.Errorf("CSP %q: want two hashes", got)
	}
}

func TestListenLoopbackRefusesOtherAddresses(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "198.18.0.1:0", "[::]:0", "example.com:0"} {
		if ln, err := listenLoopback(addr); err == nil {
			ln.Close()
			t.Errorf("listened on %s", addr)
		}
	}
	ln, err := listenLoopback("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

// meshOf500 is a reading of 500 workloads in 20 namespaces, each called
// over mTLS by the next two, with HTTP figures, and refused once from an
// address outside the mesh.
func meshOf500(n int) *meshReading {
	r := &meshReading{at: now, injected: map[string]map[string]string{}, sidecars: map[string]*sidecarReading{}}
	for i := range n {
		ns := fmt.Sprintf("team-%02d", i%20)
		r.injected[ns] = nil
		p := pod(ns, fmt.Sprintf("w%03d-0", i), fmt.Sprintf("198.18.%d.%d", 1+i/250, 1+i%250), -time.Hour, true)
		p.Spec.ServiceAccountName = fmt.Sprintf("w%03d", i)
		r.pods = append(r.pods, *p)
	}
	for i := range n {
		sr := &sidecarReading{conns: map[[2]string]float64{}, requests: map[string]float64{}, failed: map[string]float64{},
			buckets: map[string]map[float64]float64{}}
		for _, j := range []int{(i + 1) % n, (i + 2) % n} {
			id := podSPIFFEID(&r.pods[j])
			sr.conns[[2]string{outcomeMTLS, id}] = float64(10 * (i + 1))
			sr.requests[id] = float64(100 * (i + 1))
			sr.buckets[id] = map[float64]float64{0.005: 50, 0.01: 90, 0.025: 100, math.Inf(1): 100}
		}
		sr.conns[[2]string{outcomeRefused, "198.18.200.1"}] = 1
		r.sidecars[r.pods[i].Namespace+"/"+r.pods[i].Name] = sr
	}
	return r
}

func TestDashboardGraphAt500Workloads(t *testing.T) {
	prev, cur := meshOf500(500), meshOf500(500)
	cur.at = prev.at.Add(5 * time.Second)
	g := buildGraph(prev, cur)
	if len(g.Nodes) != 501 || len(g.Edges) != 1500 || len(g.Namespaces) != 20 {
		t.Fatalf("%d nodes, %d edges, %d namespaces; want 501 (500 and the outside address), 1500, 20", len(g.Nodes), len(g.Edges), len(g.Namespaces))
	}
	b, _ := json.Marshal(g)
	t.Logf("/api/graph at 500 workloads: %d KiB", len(b)/1024)
}

// BenchmarkDashboardGraph500 builds and encodes /api/graph for 500
// workloads and 1,500 edges; a baseline in the same run: encoding alone.
func BenchmarkDashboardGraph500(b *testing.B) {
	prev, cur := meshOf500(500), meshOf500(500)
	cur.at = prev.at.Add(5 * time.Second)
	g := buildGraph(prev, cur)
	b.Run("build+encode", func(b *testing.B) {
		for b.Loop() {
			json.Marshal(buildGraph(prev, cur))
		}
	})
	b.Run("encode-only", func(b *testing.B) {
		for b.Loop() {
			json.Marshal(g)
		}
	})
}

// Two workloads that run as one SPIFFE ID cannot be told apart by the
// sidecar that verified it: the edge starts at the identity, not at
// either of them.
func TestDashboardSharedIdentity(t *testing.T) {
	d, reading := dashboardFixture(t)
	readTwice(t, d, reading)
	twin := pod("weft-demo", "twin-1", "198.18.0.15", -time.Minute, true)
	twin.Spec.ServiceAccountName = "client"
	d.cur.pods = append(d.cur.pods, *twin)
	g := buildGraph(d.prev, d.cur)
	var from []string
	for _, e := range g.Edges {
		if e.Outcome == outcomeMTLS && e.To == "weft-demo/pod/server-v1-9a7c" {
			from = append(from, e.From)
		}
	}
	if !slices.Contains(from, clientID) || slices.Contains(from, "weft-demo/pod/client-8f6d") || slices.Contains(from, "weft-demo/pod/twin-1") {
		t.Errorf("mTLS edges from %v, want from the identity %s alone", from, clientID)
	}
}
