package weftctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/html"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/internal/testutil/browser"
)

// The dashboard's page (dashboard.html) in headless Chromium, against
// fixed answers of its API: what the page drew is read back from the DOM
// Chromium dumps once the scripts ran (browser_test.go).

// dashboardAPI answers the page's fetches as weftctl dashboard would.
type dashboardAPI struct {
	graph   graphView
	egress  egressView
	health  healthView
	suggest map[string]suggestView // by "namespace/workload"; others are 404
	fail    map[string]string      // path: the text it answers with a 500 instead
	// inject is HTML added to the page after its script: a test's own.
	inject string
}

// serveDashboard serves the page at / and api at /api/ on 127.0.0.1 until
// t ends, and returns the base URL.
func serveDashboard(t *testing.T, api dashboardAPI) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(bytes.Replace(dashboardPage, []byte("</body>"), []byte(api.inject+"</body>"), 1))
	})
	// For holdLoad: /hold answers once the page fetched /release (or
	// gives up).
	release := make(chan struct{})
	var once sync.Once
	mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /release", func(http.ResponseWriter, *http.Request) { once.Do(func() { close(release) }) })
	answer := func(path string, body func(*http.Request) (any, bool)) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			if msg, ok := api.fail[path]; ok {
				http.Error(w, msg, http.StatusInternalServerError)
				return
			}
			v, ok := body(r)
			if !ok {
				http.Error(w, fmt.Sprintf("no egress recorded for %s/%s", r.FormValue("namespace"), r.FormValue("workload")), http.StatusNotFound)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			if err := json.NewEncoder(w).Encode(v); err != nil {
				t.Errorf("%s: %v", path, err)
			}
		})
	}
	answer("/api/graph", func(*http.Request) (any, bool) { return api.graph, true })
	answer("/api/egress", func(*http.Request) (any, bool) { return api.egress, true })
	answer("/api/health", func(*http.Request) (any, bool) { return api.health, true })
	answer("/api/egress/suggest", func(r *http.Request) (any, bool) {
		s, ok := api.suggest[r.FormValue("namespace")+"/"+r.FormValue("workload")]
		return s, ok
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// holdLoad holds the page's load event (with an image still loading)
// until the page has drawn: browser.DOMAtLoad then dumps it drawn, in real
// time, where its data-render-ms means something.
const holdLoad = `<script>
(() => {
  const img = document.createElement('img');
  img.hidden = true;
  img.onload = img.onerror = () => img.remove();
  img.src = 'hold';
  document.body.append(img);
  new MutationObserver((_, o) => {
    if (document.body.dataset.loaded !== '0') {
      o.disconnect();
      fetch('release');
    }
  }).observe(document.body, {attributes: true, attributeFilter: ['data-loaded']});
})();
</script>`

// The SPIFFE IDs of the small mesh.
const (
	dashFrontendID = "spiffe://cluster.local/ns/shop/sa/frontend"
	dashAPIID      = "spiffe://cluster.local/ns/payments/sa/api"
	dashBatchID    = "spiffe://cluster.local/ns/payments/sa/batch"
)

// dashboardSmallMesh: shop/frontend calls payments/api (two of three pods
// meshed) over mTLS, with HTTP figures, and has some connections refused;
// an identity no pod runs as calls api too; an address outside the mesh
// reaches frontend in plaintext. Its egress is allowed, audit-flagged and
// denied; one sidecar NACKed, one pod has none.
func dashboardSmallMesh() dashboardAPI {
	now := time.Now()
	cert := now.Add(23 * time.Hour)
	return dashboardAPI{
		graph: graphView{
			Generated:     now,
			WindowSeconds: 10,
			Namespaces:    []string{"payments", "shop"},
			Nodes: []graphNode{
				{ID: "shop/frontend", Kind: nodeWorkload, Namespace: "shop", Name: "frontend", Identities: []string{dashFrontendID}, Pods: 2, Meshed: 2},
				{ID: "payments/api", Kind: nodeWorkload, Namespace: "payments", Name: "api", Identities: []string{dashAPIID}, Pods: 3, Meshed: 2},
				{ID: dashBatchID, Kind: nodeIdentity, Namespace: "payments", Name: dashBatchID},
				{ID: "ip:198.18.0.7", Kind: nodeAddress, Name: "198.18.0.7"},
			},
			Edges: []graphEdge{
				{From: "shop/frontend", To: "payments/api", Outcome: outcomeMTLS, Connections: 1200, Rate: 3.5, Peers: []string{dashFrontendID},
					HTTP: &edgeHTTP{RPS: 12.5, Success: ptr.To(0.992), P99ms: ptr.To(48.3)}},
				{From: "shop/frontend", To: "payments/api", Outcome: outcomeRefused, Connections: 3, Rate: 0.1, Peers: []string{"198.18.0.12"}},
				{From: "ip:198.18.0.7", To: "shop/frontend", Outcome: outcomePlaintext, Connections: 40, Rate: 0.2, Peers: []string{"198.18.0.7"}},
				{From: dashBatchID, To: "payments/api", Outcome: outcomeMTLS, Connections: 10, Peers: []string{dashBatchID}},
			},
		},
		egress: egressView{
			Since: now.Add(-time.Hour), Until: now, Replicas: "2/2",
			Rows: []egressRow{
				{Workload: dashFrontendID, WorkloadRef: "shop/frontend", Destination: "api.payments.example:443", Decision: "allow",
					Decisions: map[string]int{"allow": 120}, Connections: 120, BytesSent: 1572864, BytesReceived: 20480, LastSeen: now.Add(-2 * time.Minute)},
				{Workload: dashFrontendID, WorkloadRef: "shop/frontend", Destination: "paste.example:443", Decision: "audit",
					Decisions: map[string]int{"allow": 1, "audit": 4}, Connections: 5, BytesSent: 900, BytesReceived: 300, LastSeen: now.Add(-time.Minute),
					Policies: []string{"shop/egress-allowlist"}},
				{Workload: dashFrontendID, WorkloadRef: "shop/frontend", Destination: "198.18.5.9:5432", Decision: "deny",
					Decisions: map[string]int{"deny": 7}, Connections: 7, LastSeen: now.Add(-3 * time.Hour), Policies: []string{"shop/egress-allowlist"}},
				// No one workload runs as api: no name, no suggestion.
				{Workload: dashAPIID, Destination: "hooks.chat.example:443", Decision: "allow",
					Decisions: map[string]int{"allow": 2}, Connections: 2, BytesSent: 2048, BytesReceived: 1024, LastSeen: now.Add(-5 * time.Minute)},
			},
		},
		suggest: map[string]suggestView{
			"shop/frontend": {Namespace: "shop", Workload: "frontend",
				YAML: "apiVersion: weft.io/v1alpha1\nkind: EgressPolicy\nmetadata:\n  name: frontend-egress\n  namespace: shop\n"},
		},
		health: healthView{
			ControlPlanes: []replicaReport{{Pod: "weft-controlplane-0", Version: "v0.9.0", Sidecars: 3}, {Pod: "weft-controlplane-1", Version: "v0.9.0", Sidecars: 2}},
			Sidecars: []sidecarHealth{
				{Namespace: "shop", Pod: "frontend-7d9f8-abcde", Workload: "frontend", SPIFFEID: dashFrontendID, State: "SYNCED", CertNotAfter: &cert},
				{Namespace: "payments", Pod: "api-5c6d7-xyz12", Workload: "api", SPIFFEID: dashAPIID, State: "NACKED",
					NACK: "listener inbound|8080: invalid filter chain", CertNotAfter: &cert},
				{Namespace: "payments", Pod: "api-5c6d7-qwert", Workload: "api", SPIFFEID: dashAPIID, State: "STALE", CertError: "metrics: connection refused"},
			},
			Uninjected: []uninjectedPod{{Namespace: "payments", Pod: "api-5c6d7-nosc1", Workload: "api", Reason: "created before the namespace was labelled for injection"}},
			Counts:     map[string]int{"SYNCED": 1, "STALE": 1, "NACKED": 1, "DISCONNECTED": 0},
		},
	}
}

func TestDashboardPageRendersMesh(t *testing.T) {
	base := serveDashboard(t, dashboardSmallMesh())
	doc := loadDashboard(t, base+"/?refresh=0&suggest=shop/frontend")

	body := doc.must(t, domTag("body"))
	for k, want := range map[string]string{"data-loaded": "1", "data-nodes": "4", "data-edges": "4", "data-egress-rows": "4"} {
		if got := body.attr(k); got != want {
			t.Errorf("body %s=%q, want %q", k, got, want)
		}
	}
	if h := doc.must(t, domTag("h1")).text(); h != "weft — mesh dashboard" {
		t.Errorf("header %q", h)
	}
	if errs := doc.all(domClass("error")); len(errs) > 0 {
		t.Errorf("errors shown: %q", domTexts(errs))
	}

	// Nodes: kind, partly meshed, label and badge.
	nodes := map[string]domNode{}
	for _, n := range doc.all(domClass("node")) {
		nodes[n.attr("data-id")] = n
	}
	for _, want := range []struct{ id, class, name, ns, badge string }{
		{"shop/frontend", "node workload", "frontend", "shop", "2/2"},
		{"payments/api", "node workload partial", "api", "payments", "2/3"},
		{dashBatchID, "node identity", "sa/batch", "payments", "no pod"}, // the tail of a long name
		{"ip:198.18.0.7", "node address", "198.18.0.7", "outside the mesh", "ip"},
	} {
		n, ok := nodes[want.id]
		if !ok {
			t.Errorf("no node %s", want.id)
			continue
		}
		if n.Data != "g" || n.attr("class") != want.class {
			t.Errorf("node %s: <%s class=%q>, want <g class=%q>", want.id, n.Data, n.attr("class"), want.class)
		}
		if got := n.first(domClass("name")).text(); !strings.HasSuffix(got, want.name) {
			t.Errorf("node %s: name %q, want %q", want.id, got, want.name)
		}
		if got := n.first(domClass("ns")).text(); got != want.ns {
			t.Errorf("node %s: namespace %q, want %q", want.id, got, want.ns)
		}
		if got := n.first(domClass("badge")).text(); got != want.badge {
			t.Errorf("node %s: badge %q, want %q", want.id, got, want.badge)
		}
	}
	if len(nodes) != 4 {
		t.Errorf("%d nodes, want 4", len(nodes))
	}

	// Edges: one path each, classed by outcome, with its figures in its
	// title; two outcomes between the same nodes drawn apart.
	type edgeKey struct{ from, to, outcome string }
	edges := map[edgeKey]domNode{}
	for _, e := range doc.all(domTag("path"), domClass("edge")) {
		k := edgeKey{e.attr("data-from"), e.attr("data-to"), e.attr("data-outcome")}
		if _, dup := edges[k]; dup {
			t.Errorf("edge %v drawn twice", k)
		}
		edges[k] = e
		if c := e.attr("class"); c != "edge "+k.outcome {
			t.Errorf("edge %v: class %q", k, c)
		}
	}
	for k, title := range map[edgeKey][]string{
		{"shop/frontend", "payments/api", "mtls"}: {"frontend (shop) → api (payments)", "mTLS: 1,200 connections, 3.50/s",
			"HTTP: 12.5 rps · 99.2% success · p99 48 ms", "peers: " + dashFrontendID},
		{"shop/frontend", "payments/api", "refused"}:    {"refused: 3 connections, 0.10/s", "peers: 198.18.0.12"},
		{"ip:198.18.0.7", "shop/frontend", "plaintext"}: {"198.18.0.7 → frontend (shop)", "plaintext: 40 connections", "peers: 198.18.0.7"},
		{dashBatchID, "payments/api", "mtls"}:           {"mTLS: 10 connections, 0/s", "peers: " + dashBatchID},
	} {
		e, ok := edges[k]
		if !ok {
			t.Errorf("no edge %v", k)
			continue
		}
		got := e.first(domTag("title")).text()
		for _, w := range title {
			if !strings.Contains(got, w) {
				t.Errorf("edge %v: title %q lacks %q", k, got, w)
			}
		}
		if hasHTTP := strings.Contains(got, "HTTP"); hasHTTP != (k == edgeKey{"shop/frontend", "payments/api", "mtls"}) {
			t.Errorf("edge %v: title %q: HTTP figures %v", k, got, hasHTTP)
		}
	}
	if len(edges) != 4 {
		t.Errorf("%d edges, want 4", len(edges))
	}
	mtls, refused := edges[edgeKey{"shop/frontend", "payments/api", "mtls"}], edges[edgeKey{"shop/frontend", "payments/api", "refused"}]
	if mtls.attr("d") == refused.attr("d") {
		t.Errorf("the mTLS and the refused edge between the same nodes lie on each other: %q", mtls.attr("d"))
	}
	if labels := domTexts(doc.all(domClass("edge-label"))); !slices.Equal(labels, []string{"12.5 rps · 99.2% · 48 ms"}) {
		t.Errorf("edge labels %q, want the HTTP edge's", labels)
	}
	if got := domTexts(doc.byID(t, "ns-filter").all(domTag("option"))); !slices.Equal(got, []string{"All", "payments", "shop"}) {
		t.Errorf("namespace filter %q", got)
	}

	// Egress: grouped by workload, by destination within.
	rows := doc.all(domTag("tr"), domClass("egress-row"))
	var got [][3]string
	for _, r := range rows {
		got = append(got, [3]string{r.attr("data-workload"), r.attr("data-destination"), r.attr("data-decision")})
	}
	want := [][3]string{
		{dashFrontendID, "198.18.5.9:5432", "deny"},
		{dashFrontendID, "api.payments.example:443", "allow"},
		{dashFrontendID, "paste.example:443", "audit"},
		{dashAPIID, "hooks.chat.example:443", "allow"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("egress rows\n%q\nwant\n%q", got, want)
	}
	for i, pill := range []string{"deny", "allow", "audit-flagged", "allow"} {
		p := rows[i].first(domClass("pill"))
		if p.text() != pill || p.attr("class") != "pill "+want[i][2] {
			t.Errorf("egress row %d: pill %q class %q, want %q", i, p.text(), p.attr("class"), pill)
		}
	}
	for i, texts := range [][]string{
		{"shop/frontend", dashFrontendID, "198.18.5.9:5432", "3h ago", "shop/egress-allowlist"},
		{"api.payments.example:443", "120", "1.5 MiB", "20 KiB", "2m ago"},
		{"paste.example:443", "900 B", "300 B", "1m ago", "shop/egress-allowlist"},
		{dashAPIID, "hooks.chat.example:443", "2.0 KiB", "1.0 KiB", "5m ago"},
	} {
		for _, w := range texts {
			if !strings.Contains(rows[i].text(), w) {
				t.Errorf("egress row %d: %q lacks %q", i, rows[i].text(), w)
			}
		}
	}
	buttons := doc.all(domTag("button"), domClass("suggest"))
	if len(buttons) != 1 || buttons[0].attr("data-namespace") != "shop" || buttons[0].attr("data-workload") != "frontend" ||
		buttons[0].text() != "Suggest allow-list" {
		t.Errorf("suggest buttons %q, want frontend's", domTexts(buttons))
	}
	if got := doc.byID(t, "suggestion").text(); got != dashboardSmallMesh().suggest["shop/frontend"].YAML {
		t.Errorf("suggestion %q", got)
	}
	doc.byID(t, "copy-suggestion")

	// Health.
	sidecars := map[string]domNode{}
	for _, r := range doc.all(domTag("tr"), domClass("sidecar")) {
		sidecars[r.attr("data-pod")] = r
	}
	for pod, w := range map[string][]string{
		"shop/frontend-7d9f8-abcde": {"SYNCED", "in 23h"},
		"payments/api-5c6d7-xyz12":  {"NACKED", "listener inbound|8080: invalid filter chain", "in 23h"},
		"payments/api-5c6d7-qwert":  {"STALE", "metrics: connection refused"},
	} {
		r, ok := sidecars[pod]
		if !ok {
			t.Errorf("no sidecar row %s", pod)
			continue
		}
		if pill := r.first(domClass("pill")).text(); r.attr("data-state") != w[0] || pill != w[0] {
			t.Errorf("sidecar %s: data-state %q pill %q, want %s", pod, r.attr("data-state"), pill, w[0])
		}
		for _, s := range w[1:] {
			if !strings.Contains(r.text(), s) {
				t.Errorf("sidecar %s: %q lacks %q", pod, r.text(), s)
			}
		}
	}
	if len(sidecars) != 3 {
		t.Errorf("%d sidecar rows, want 3", len(sidecars))
	}
	un := doc.all(domTag("tr"), domClass("uninjected"))
	if len(un) != 1 || un[0].attr("data-pod") != "payments/api-5c6d7-nosc1" || !un[0].is(domClass("warning")) ||
		!strings.Contains(un[0].text(), "created before the namespace was labelled for injection") {
		t.Errorf("uninjected rows %q", domTexts(un))
	}
	if cp := doc.byID(t, "cp-line").text(); !strings.Contains(cp, "2 replicas") || !strings.Contains(cp, "weft-controlplane-1") {
		t.Errorf("control plane line %q", cp)
	}
	if c := doc.byID(t, "health-summary").first(domAttr("data-state", "NACKED")).text(); c != "NACKED 1" {
		t.Errorf("NACKED count %q", c)
	}

	if dir := os.Getenv("WEFT_ARTIFACTS"); dir != "" {
		path := filepath.Join(dir, "dashboard-unit.png")
		browser.Screenshot(t, base+"/?refresh=0", path)
		t.Logf("screenshot: %s", path)
	}
}

// The filters select a namespace's nodes matching a name, and draw the
// nodes those connect to, faded; they come from (and are kept in) the
// URL. A suggestion the server refuses shows the server's error.
func TestDashboardPageRendersFilters(t *testing.T) {
	doc := loadDashboard(t, serveDashboard(t, dashboardSmallMesh())+"/?refresh=0&ns=payments&filter=API&suggest=payments/api")
	body := doc.must(t, domTag("body"))
	if body.attr("data-nodes") != "3" || body.attr("data-edges") != "3" {
		t.Errorf("drawn %s nodes, %s edges; want 3, 3", body.attr("data-nodes"), body.attr("data-edges"))
	}
	var drawn []string
	for _, n := range doc.all(domClass("node")) {
		drawn = append(drawn, n.attr("data-id")+": "+n.attr("class"))
	}
	want := []string{"payments/api: node workload partial", "shop/frontend: node workload neighbor", dashBatchID + ": node identity neighbor"}
	slices.Sort(drawn)
	slices.Sort(want)
	if !slices.Equal(drawn, want) {
		t.Errorf("nodes %q, want %q", drawn, want)
	}
	if sel := doc.byID(t, "ns-filter").first(domAttr("selected", "")); sel.attr("value") != "payments" {
		t.Errorf("namespace filter shows %q, want payments", sel.text())
	}
	e := doc.byID(t, "suggest-panel").first(domClass("error")).text()
	if !strings.Contains(e, "404") || !strings.Contains(e, "no egress recorded for payments/api") {
		t.Errorf("suggestion error %q", e)
	}
}

// dashboardScenario plays a user on the page once it has drawn: it
// hovers and clicks nodes, types in the filters, refreshes, asks for a
// suggestion, and writes what the page showed after each step into
// body[data-scenario] (JSON), or why it stopped.
const dashboardScenario = `<script>
(async () => {
  const b = document.body.dataset, out = {};
  const until = (what, f) => new Promise((ok, fail) => {
    const end = Date.now() + 5000;
    const tick = () => f() ? ok() : Date.now() > end ? fail(new Error('waiting for ' + what)) : setTimeout(tick, 20);
    tick();
  });
  const node = (id) => [...document.querySelectorAll('g.node')].find((g) => g.dataset.id === id);
  const lit = () => ({
    focus: document.querySelector('#graph-view svg').classList.contains('focus'),
    nodes: [...document.querySelectorAll('g.node.on')].map((g) => g.dataset.id).sort(),
    edges: [...document.querySelectorAll('path.edge.on')].map((p) => p.dataset.from + ' ' + p.dataset.outcome + ' ' + p.dataset.to).sort(),
    labels: document.querySelectorAll('text.edge-label.on').length,
  });
  const drawn = () => ({nodes: b.nodes, edges: b.edges});
  try {
    await until('the first refresh', () => b.loaded === '1');
    node('payments/api').dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
    out.hover = lit();
    document.getElementById('graph-view').dispatchEvent(new MouseEvent('mouseleave'));
    out.left = lit();
    node('shop/frontend').dispatchEvent(new MouseEvent('click', {bubbles: true}));
    out.clicked = lit();

    const filter = document.getElementById('filter');
    filter.value = 'FRONT';
    filter.dispatchEvent(new Event('input'));
    await until('the filtered draw', () => b.nodes === '3');
    out.filtered = {...drawn(), search: location.search};

    document.getElementById('refresh-now').click();
    await until('the second refresh', () => b.loaded === '2');
    out.refreshed = {drawn: drawn(), filter: filter.value, pinned: node('shop/frontend').classList.contains('pinned'), lit: lit()};

    const ns = document.getElementById('ns-filter');
    ns.value = 'payments';
    ns.dispatchEvent(new Event('change'));
    await until('the namespace draw', () => b.nodes === '0');
    out.namespace = {...drawn(), search: location.search, empty: document.querySelector('#graph-view .empty').textContent};

    const decision = document.getElementById('egress-decision');
    decision.value = 'deny';
    decision.dispatchEvent(new Event('change'));
    out.deny = b.egressRows;

    document.querySelector('button.suggest').click();
    const panel = document.getElementById('suggest-panel');
    await until('the suggestion', () => panel.dataset.state === 'ready');
    out.suggestion = {hidden: panel.hidden, yaml: document.getElementById('suggestion').textContent};

    const problems = document.getElementById('health-problems');
    problems.checked = true;
    problems.dispatchEvent(new Event('change'));
    out.problems = [...document.querySelectorAll('tr.sidecar')].map((r) => r.dataset.pod);
  } catch (e) {
    out.error = String(e);
  }
  b.scenario = JSON.stringify(out);
})();
</script>`

// The page answers a user: hovering and clicking a node lights its edges
// and neighbours; the filters redraw at once and survive a refresh; the
// egress filter, the suggestion button and "only problems" work.
func TestDashboardPageRendersInteractions(t *testing.T) {
	api := dashboardSmallMesh()
	api.inject = dashboardScenario
	doc := loadDashboard(t, serveDashboard(t, api)+"/?refresh=0")
	type lit struct {
		Focus  bool
		Nodes  []string
		Edges  []string
		Labels int
	}
	var got struct {
		Error                string
		Hover, Left, Clicked lit
		Filtered             struct{ Nodes, Edges, Search string }
		Refreshed            struct {
			Drawn  struct{ Nodes, Edges string }
			Filter string
			Pinned bool
			Lit    lit
		}
		Namespace  struct{ Nodes, Edges, Search, Empty string }
		Deny       string
		Suggestion struct {
			Hidden bool
			YAML   string
		}
		Problems []string
	}
	raw := doc.must(t, domTag("body")).attr("data-scenario")
	if err := json.Unmarshal([]byte(raw), &got); err != nil {
		t.Fatalf("data-scenario %q: %v", raw, err)
	}
	if got.Error != "" {
		t.Fatalf("scenario: %s\n%s", got.Error, raw)
	}

	apiLit := lit{Focus: true, Nodes: []string{"payments/api", "shop/frontend", dashBatchID}, Labels: 1,
		Edges: []string{"shop/frontend mtls payments/api", "shop/frontend refused payments/api", dashBatchID + " mtls payments/api"}}
	slices.Sort(apiLit.Nodes)
	slices.Sort(apiLit.Edges)
	frontendLit := lit{Focus: true, Nodes: []string{"ip:198.18.0.7", "payments/api", "shop/frontend"}, Labels: 1,
		Edges: []string{"ip:198.18.0.7 plaintext shop/frontend", "shop/frontend mtls payments/api", "shop/frontend refused payments/api"}}
	for _, c := range []struct {
		step      string
		got, want lit
	}{
		{"hovering api", got.Hover, apiLit},
		{"leaving the graph", got.Left, lit{Nodes: []string{}, Edges: []string{}}},
		{"clicking frontend", got.Clicked, frontendLit},
		{"refreshing", got.Refreshed.Lit, frontendLit},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s lights %+v, want %+v", c.step, c.got, c.want)
		}
	}
	// "front": frontend, and the nodes it connects to.
	if f := got.Filtered; f.Nodes != "3" || f.Edges != "3" || f.Search != "?refresh=0&filter=FRONT" {
		t.Errorf("filtered: %+v", f)
	}
	if r := got.Refreshed; r.Drawn.Nodes != "3" || r.Drawn.Edges != "3" || r.Filter != "FRONT" || !r.Pinned {
		t.Errorf("after a refresh: %+v", r)
	}
	// No workload of payments is named like "front".
	if n := got.Namespace; n.Nodes != "0" || n.Edges != "0" || n.Search != "?refresh=0&filter=FRONT&ns=payments" || n.Empty != "No workload matches the filter." {
		t.Errorf("namespace filtered: %+v", n)
	}
	if got.Deny != "1" {
		t.Errorf("%s egress rows denied, want 1", got.Deny)
	}
	if s := got.Suggestion; s.Hidden || s.YAML != api.suggest["shop/frontend"].YAML {
		t.Errorf("suggestion %+v", s)
	}
	if want := []string{"payments/api-5c6d7-xyz12", "payments/api-5c6d7-qwert"}; !slices.Equal(got.Problems, want) {
		t.Errorf("only problems: %q, want %q", got.Problems, want)
	}
}

// Every string from the API is text on the page: a workload, namespace,
// host, pod or error that carries markup shows it and runs none of it.
func TestDashboardPageRendersHostileDataAsText(t *testing.T) {
	const (
		img    = `<img src=x onerror="document.body.dataset.pwned='img'">`
		script = `<script>document.body.dataset.pwned='script'</script>`
		quote  = `"><img src=x onerror=document.body.dataset.pwned=attr>`
		single = `'><svg onload=document.body.dataset.pwned=svg>` // no "/": a namespace
	)
	api := dashboardSmallMesh()
	evil := single + "/" + img
	api.graph.Namespaces = append(api.graph.Namespaces, single)
	api.graph.Nodes = append(api.graph.Nodes,
		graphNode{ID: evil, Kind: nodeWorkload, Namespace: single, Name: img, Identities: []string{quote}, Pods: 1, Meshed: 1},
		graphNode{ID: "ip:" + script, Kind: nodeAddress, Name: script})
	api.graph.Edges = append(api.graph.Edges,
		graphEdge{From: evil, To: "payments/api", Outcome: outcomeMTLS, Connections: 1, Peers: []string{quote}},
		graphEdge{From: "ip:" + script, To: evil, Outcome: quote, Connections: 1, Peers: []string{script}})
	api.graph.Errors = []string{"sidecar " + img + ": " + script}
	api.egress.Rows = append(api.egress.Rows,
		egressRow{Workload: quote, WorkloadRef: single + "/" + quote, Destination: quote + ":443", Decision: "deny", LastSeen: time.Now()},
		egressRow{Workload: quote, WorkloadRef: single + "/" + quote, Destination: img + ":443", Decision: script, LastSeen: time.Now()})
	api.egress.Replicas = img
	api.health.ControlPlanes = append(api.health.ControlPlanes, replicaReport{Pod: script, Error: img})
	api.health.Sidecars = append(api.health.Sidecars, sidecarHealth{Namespace: single, Pod: img, Workload: quote, SPIFFEID: script, State: quote, NACK: script, CertError: img})
	api.health.Uninjected = append(api.health.Uninjected, uninjectedPod{Namespace: single, Pod: quote, Workload: img, Reason: script})
	api.suggest[single+"/"+quote] = suggestView{YAML: "# " + script + "\n" + img}

	doc := loadDashboard(t, serveDashboard(t, api)+"/?refresh=0&suggest="+url.QueryEscape(single+"/"+quote))
	if p := doc.must(t, domTag("body")).attr("data-pwned"); p != "" {
		t.Fatalf("injected script ran (%s)", p)
	}
	if n := len(doc.all(domTag("script"))); n != 1 {
		t.Errorf("%d script elements, want the page's own", n)
	}
	if n := len(doc.all(domTag("img"))); n != 0 {
		t.Errorf("%d img elements, want none", n)
	}
	for _, n := range doc.all() {
		for _, a := range n.Attr {
			if strings.HasPrefix(a.Key, "on") {
				t.Errorf("<%s %s=%q>: an injected handler", n.Data, a.Key, a.Val)
			}
		}
	}

	// Each string is where it belongs, whole.
	node := doc.must(t, domAttr("data-id", evil))
	if title := node.first(domTag("title")).text(); !strings.Contains(title, evil) || !strings.Contains(title, quote) {
		t.Errorf("hostile node's title %q", title)
	}
	if ns := node.first(domClass("ns")).text(); !strings.HasPrefix(single, strings.TrimSuffix(ns, "…")) {
		t.Errorf("hostile node's namespace %q", ns)
	}
	edge := doc.must(t, domAttr("data-outcome", quote))
	if edge.attr("data-from") != "ip:"+script || edge.attr("data-to") != evil || edge.attr("class") != "edge other" ||
		!strings.Contains(edge.text(), "peers: "+script) {
		t.Errorf("hostile edge: %v %q", edge.Attr, edge.text())
	}
	if opts := domTexts(doc.byID(t, "ns-filter").all(domTag("option"))); !slices.Contains(opts, single) {
		t.Errorf("namespace options %q lack %q", opts, single)
	}
	row := doc.must(t, domAttr("data-destination", img+":443"))
	if row.attr("data-decision") != script || !strings.Contains(row.text(), img+":443") || row.first(domClass("pill")).text() != script {
		t.Errorf("hostile egress row: %v %q", row.Attr, row.text())
	}
	btn := doc.must(t, domTag("button"), domAttr("data-workload", quote))
	if btn.attr("data-namespace") != single {
		t.Errorf("hostile suggest button: %v", btn.Attr)
	}
	if got := doc.byID(t, "suggestion").text(); got != api.suggest[single+"/"+quote].YAML {
		t.Errorf("suggestion %q", got)
	}
	sc := doc.must(t, domAttr("data-pod", single+"/"+img))
	if sc.attr("data-state") != quote || sc.first(domClass("nack")).text() != script || !strings.Contains(sc.text(), img) {
		t.Errorf("hostile sidecar: %v %q", sc.Attr, sc.text())
	}
	if un := doc.must(t, domTag("tr"), domAttr("data-pod", single+"/"+quote)).text(); !strings.Contains(un, script) || !strings.Contains(un, img) {
		t.Errorf("hostile uninjected pod: %q", un)
	}
	if errs := domTexts(doc.byID(t, "graph-errors").all(domClass("error"))); len(errs) != 1 || !strings.Contains(errs[0], "sidecar "+img+": "+script) {
		t.Errorf("graph errors %q", errs)
	}
	if cp := doc.byID(t, "cp-line").text(); !strings.Contains(cp, script+" — "+img) {
		t.Errorf("control plane line %q", cp)
	}
	if s := doc.byID(t, "egress-summary").text(); !strings.Contains(s, img) {
		t.Errorf("egress summary %q", s)
	}
}

// An endpoint that answers an error shows it; the others draw.
func TestDashboardPageRendersEndpointErrors(t *testing.T) {
	api := dashboardSmallMesh()
	api.fail = map[string]string{"/api/egress": "audit trail: no control-plane replica answered"}
	doc := loadDashboard(t, serveDashboard(t, api)+"/?refresh=0")
	body := doc.must(t, domTag("body"))
	if body.attr("data-nodes") != "4" || body.attr("data-egress-rows") != "0" {
		t.Errorf("drawn %s nodes, %s egress rows; want 4, 0", body.attr("data-nodes"), body.attr("data-egress-rows"))
	}
	errs := domTexts(doc.all(domClass("error")))
	if len(errs) != 1 || !strings.Contains(errs[0], "500") || !strings.Contains(errs[0], "audit trail: no control-plane replica answered") {
		t.Errorf("errors shown %q, want the egress endpoint's", errs)
	}
	if doc.byID(t, "egress-errors").first(domClass("error")).Node == nil {
		t.Error("the egress error is not in the egress section")
	}
	if n := len(doc.all(domTag("tr"), domClass("sidecar"))); n != 3 {
		t.Errorf("%d sidecar rows, want 3", n)
	}
}

// ?refresh=2 re-fetches every 2 s (of the 20 s of virtual time Chromium
// gives the page), keeping the filters.
func TestDashboardPageRendersPolling(t *testing.T) {
	doc := loadDashboard(t, serveDashboard(t, dashboardSmallMesh())+"/?refresh=2&ns=shop")
	body := doc.must(t, domTag("body"))
	if n, err := strconv.Atoi(body.attr("data-loaded")); err != nil || n < 5 {
		t.Errorf("data-loaded=%q after 20 s, want refreshes every 2 s", body.attr("data-loaded"))
	}
	if body.attr("data-nodes") != "3" || body.attr("data-edges") != "3" {
		t.Errorf("drawn %s nodes, %s edges; want shop's 3, 3", body.attr("data-nodes"), body.attr("data-edges"))
	}
	if s := doc.byID(t, "status").text(); !strings.Contains(s, "every 2 s") {
		t.Errorf("status %q", s)
	}
}

// 500 workloads in 20 namespaces with 1000 edges: every one is drawn.
func TestDashboardPageRendersLargeMesh(t *testing.T) {
	const namespaces, perNS, edges = 20, 25, 1000
	api := dashboardSmallMesh()
	g := &api.graph
	g.Namespaces, g.Nodes, g.Edges = nil, nil, nil
	for i := range namespaces {
		ns := fmt.Sprintf("team-%02d", i)
		g.Namespaces = append(g.Namespaces, ns)
		for j := range perNS {
			name := fmt.Sprintf("svc-%03d", i*perNS+j)
			g.Nodes = append(g.Nodes, graphNode{ID: ns + "/" + name, Kind: nodeWorkload, Namespace: ns, Name: name,
				Identities: []string{"spiffe://cluster.local/ns/" + ns + "/sa/" + name}, Pods: 3, Meshed: 3 - j%7/6})
		}
	}
	outcomes := []string{outcomeMTLS, outcomeMTLS, outcomePlaintext, outcomeMTLS, outcomeRefused}
	n := len(g.Nodes)
	for i := range edges {
		// Each node to the next and to the 98th after it: no two alike.
		from, to := g.Nodes[i%n], g.Nodes[(i%n+1+i/n*97)%n]
		e := graphEdge{From: from.ID, To: to.ID, Outcome: outcomes[i%len(outcomes)], Connections: float64(i * 10), Rate: float64(i%50) / 10,
			Peers: from.Identities}
		if e.Outcome == outcomeMTLS && i%3 == 0 {
			e.HTTP = &edgeHTTP{RPS: float64(i % 40), Success: ptr.To(1 - float64(i%9)/100), P99ms: ptr.To(float64(5 + i%200))}
		}
		g.Edges = append(g.Edges, e)
	}

	// In real time, for a real data-render-ms.
	api.inject = holdLoad
	base := serveDashboard(t, api)
	doc := parseDashboard(t, browser.DOMAtLoad(t, base+"/?refresh=0"))
	body := doc.must(t, domTag("body"))
	if got := len(doc.all(domTag("g"), domClass("node"))); got != n {
		t.Errorf("%d nodes drawn, want %d", got, n)
	}
	if got := len(doc.all(domTag("path"), domClass("edge"))); got != edges {
		t.Errorf("%d edges drawn, want %d", got, edges)
	}
	if body.attr("data-nodes") != strconv.Itoa(n) || body.attr("data-edges") != strconv.Itoa(edges) {
		t.Errorf("body counts %s nodes, %s edges", body.attr("data-nodes"), body.attr("data-edges"))
	}
	if got := len(doc.byID(t, "ns-filter").all(domTag("option"))); got != namespaces+1 {
		t.Errorf("%d namespace options, want %d", got, namespaces+1)
	}
	if got := len(doc.all(domTag("g"), domClass("partial"))); got != namespaces*3 { // j = 6, 13, 20
		t.Errorf("%d partly meshed nodes, want %d", got, namespaces*3)
	}
	t.Logf("graph of %d nodes and %d edges drawn in %s ms", n, edges, body.attr("data-render-ms"))
	if dir := os.Getenv("WEFT_ARTIFACTS"); dir != "" {
		browser.Screenshot(t, base+"/?refresh=0", filepath.Join(dir, "dashboard-large.png"))
	}
}

// loadDashboard renders page in Chromium and parses what it drew.
func loadDashboard(t *testing.T, page string) domNode {
	t.Helper()
	return parseDashboard(t, browser.DOM(t, page))
}

// parseDashboard parses the page's DOM, which must show a refresh done.
func parseDashboard(t *testing.T, dump string) domNode {
	t.Helper()
	root, err := html.Parse(strings.NewReader(dump))
	if err != nil {
		t.Fatal(err)
	}
	doc := domNode{root}
	if l := doc.must(t, domTag("body")).attr("data-loaded"); l == "" || l == "0" {
		t.Fatalf("the page never finished a refresh (data-loaded=%q)", l)
	}
	return doc
}

// domNode is an element of a rendered page (Node nil: none) with the few
// queries the tests make of it.
type domNode struct{ *html.Node }

// domMatch is a condition on an element.
type domMatch func(*html.Node) bool

func domTag(tag string) domMatch { return func(n *html.Node) bool { return n.Data == tag } }

// domAttr: the element has the attribute, with the value val unless val
// is "".
func domAttr(key, val string) domMatch {
	return func(n *html.Node) bool {
		return slices.ContainsFunc(n.Attr, func(a html.Attribute) bool { return a.Key == key && (val == "" || a.Val == val) })
	}
}

func domClass(c string) domMatch {
	return func(n *html.Node) bool { return slices.Contains(strings.Fields(domNode{n}.attr("class")), c) }
}

// all lists the elements under n (and n), in document order, that meet
// every condition.
func (n domNode) all(ms ...domMatch) []domNode {
	var out []domNode
	var walk func(*html.Node)
	walk = func(e *html.Node) {
		if e.Type == html.ElementNode && (domNode{e}).is(ms...) {
			out = append(out, domNode{e})
		}
		for c := e.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	if n.Node != nil {
		walk(n.Node)
	}
	return out
}

func (n domNode) is(ms ...domMatch) bool {
	return !slices.ContainsFunc(ms, func(m domMatch) bool { return !m(n.Node) })
}

// first is the first of n.all(ms...), or none.
func (n domNode) first(ms ...domMatch) domNode {
	if all := n.all(ms...); len(all) > 0 {
		return all[0]
	}
	return domNode{}
}

// must is n.first(ms...); t fails without one.
func (n domNode) must(t *testing.T, ms ...domMatch) domNode {
	t.Helper()
	e := n.first(ms...)
	if e.Node == nil {
		t.Fatal("no such element in the page")
	}
	return e
}

func (n domNode) byID(t *testing.T, id string) domNode {
	t.Helper()
	e := n.first(domAttr("id", id))
	if e.Node == nil {
		t.Fatalf("no #%s in the page", id)
	}
	return e
}

func (n domNode) attr(key string) string {
	if n.Node == nil {
		return ""
	}
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// text is the text under n, as its textContent.
func (n domNode) text() string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(e *html.Node) {
		if e.Type == html.TextNode {
			b.WriteString(e.Data)
		}
		for c := e.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	if n.Node != nil {
		walk(n.Node)
	}
	return b.String()
}

func domTexts(ns []domNode) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.text()
	}
	return out
}
