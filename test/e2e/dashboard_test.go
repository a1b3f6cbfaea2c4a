//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/weftmesh/weft/internal/testutil/browser"
	"github.com/weftmesh/weft/weftctl"
)

// TestDashboard runs `weftctl dashboard` against the cluster and loads its
// page in headless Chromium. The namespace holds each kind of edge the
// graph marks:
//   - client → server: mTLS through the Service, HTTP (routing on), so
//     the edge carries requests per second, success rate and p99;
//   - outsider (not injected) → server: plaintext to a STRICT port,
//     refused;
//   - outsider → legacy: plaintext to a PERMISSIVE port, accepted;
//
// and the client's egress: api.example.test allowed, other.example.test
// denied by the allow-list's default. The JSON is checked against what the
// test did, then the rendered page against the JSON; the screenshot is
// kept in the artifacts.
func TestDashboard(t *testing.T) {
	withHTTPRouting(t)
	externalHost(t)
	const ns = "e2e-dashboard"
	meshNamespace(t, ns, "client", "server", "legacy")
	ctx := context.Background()
	serverService(t, ns)
	server := deployTestappAs(t, ns, "server", "server", "serve", "-addr", ":8080")
	legacy := deployTestappAs(t, ns, "legacy", "legacy", "serve", "-addr", ":8080")
	orig := testappPodHook
	testappPodHook = func(p *corev1.Pod) {
		p.Spec.ServiceAccountName = "client"
		p.Spec.HostAliases = []corev1.HostAlias{{IP: externalIP, Hostnames: []string{"api.example.test", "other.example.test"}}}
	}
	client := deployTestapp(t, ns, "client", "svid")
	testappPodHook = func(p *corev1.Pod) { p.Annotations = map[string]string{"weft.dev/inject": "disabled"} }
	outsider := deployTestapp(t, ns, "outsider", "serve", "-addr", ":8080")
	testappPodHook = orig
	dyn := dynamic.NewForConfigOrDie(restConfig)
	permissive := weftObject("MTLSPolicy", ns, "legacy-permissive", map[string]any{
		"selector": appSelector("legacy"), "mode": "STRICT", "portLevelMtls": map[string]any{"8080": "PERMISSIVE"},
	})
	if _, err := dyn.Resource(mtlsGVR).Namespace(ns).Create(ctx, permissive, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	allowAPIExampleTest(t, ns, "client-egress")
	for _, p := range []*corev1.Pod{server, legacy, client} {
		requireSynced(t, p.Name+"."+ns)
	}
	exec := func(pod string, args ...string) (string, error) {
		return kubectlExec(t, ns, pod, "app", append([]string{"/usr/local/bin/testapp", "get"}, args...)...)
	}
	serverURL := "http://server." + ns + ".svc.cluster.local/"
	waitFor(t, time.Minute, "client → server through the mesh", func(context.Context) (bool, error) {
		out, err := exec(client.Name, "-n", "5", serverURL)
		return err == nil && strings.Contains(out, "hello from "+server.Name), nil
	})
	waitFor(t, time.Minute, "outsider → legacy in plaintext (PERMISSIVE)", func(context.Context) (bool, error) {
		out, err := exec(outsider.Name, "http://"+legacy.Status.PodIP+":8080/")
		return err == nil && strings.Contains(out, "hello from "+legacy.Name), nil
	})
	if out, err := exec(outsider.Name, "http://"+server.Status.PodIP+":8080/"); err == nil {
		t.Fatalf("plaintext to the STRICT server answered: %q", out)
	}
	waitFor(t, time.Minute, "egress to api.example.test allowed", func(context.Context) (bool, error) {
		out, err := exec(client.Name, "http://api.example.test/")
		return err == nil && strings.Contains(out, "hello from external-http"), nil
	})
	if out, err := exec(client.Name, "http://other.example.test/"); err == nil || !strings.Contains(out, "403") {
		t.Fatalf("egress to other.example.test: %v %q, want the allow-list's 403", err, out)
	}

	base := startDashboard(t)
	clientNode, serverNode := ns+"/deploy/client", ns+"/deploy/server"
	outsiderNode, legacyNode := ns+"/deploy/outsider", ns+"/deploy/legacy"
	clientID := "spiffe://cluster.local/ns/" + ns + "/sa/client"

	// Rates come from two readings with traffic between them: call until
	// the client → server edge shows requests per second.
	var g struct {
		Nodes []struct {
			ID, Kind     string
			Pods, Meshed int
		} `json:"nodes"`
		Edges []struct {
			From, To, Outcome string
			Connections       float64
			Peers             []string
			HTTP              *struct {
				RPS     float64  `json:"rps"`
				Success *float64 `json:"successRate"`
				P99     *float64 `json:"latencyP99Ms"`
			} `json:"http"`
		} `json:"edges"`
		Errors []string `json:"errors"`
	}
	edge := func(from, to, outcome string) int {
		for i, e := range g.Edges {
			if e.From == from && e.To == to && e.Outcome == outcome {
				return i
			}
		}
		return -1
	}
	waitFor(t, 90*time.Second, "the dashboard's client → server edge with HTTP figures", func(context.Context) (bool, error) {
		if _, err := exec(client.Name, "-n", "10", serverURL); err != nil {
			return false, nil
		}
		g.Edges = nil
		if err := dashboardJSON(base+"/api/graph", &g); err != nil {
			t.Logf("graph: %v", err)
			return false, nil
		}
		i := edge(clientNode, serverNode, "mtls")
		return i >= 0 && g.Edges[i].HTTP != nil && g.Edges[i].HTTP.RPS > 0, nil
	})
	mtls := g.Edges[edge(clientNode, serverNode, "mtls")]
	if len(mtls.Peers) != 1 || mtls.Peers[0] != clientID || mtls.HTTP.Success == nil || *mtls.HTTP.Success != 1 || mtls.HTTP.P99 == nil {
		t.Errorf("client → server: %+v http %+v", mtls, *mtls.HTTP)
	}
	if i := edge(outsiderNode, serverNode, "refused"); i < 0 || g.Edges[i].Peers[0] != outsider.Status.PodIP {
		t.Errorf("no refused edge outsider → server named by the outsider's address: %+v", g.Edges)
	}
	if i := edge(outsiderNode, legacyNode, "plaintext"); i < 0 {
		t.Errorf("no plaintext edge outsider → legacy: %+v", g.Edges)
	}
	if i := edge(outsiderNode, serverNode, "mtls"); i >= 0 {
		t.Errorf("the outsider credited with mTLS: %+v", g.Edges[i])
	}
	for _, n := range g.Nodes {
		if n.ID == outsiderNode && (n.Pods != 1 || n.Meshed != 0) || n.ID == clientNode && (n.Pods != 1 || n.Meshed != 1) {
			t.Errorf("node %+v", n)
		}
	}
	for _, e := range g.Errors {
		if strings.Contains(e, ns+"/") {
			t.Errorf("graph error for the test's pods: %s", e)
		}
	}

	var eg struct {
		Rows []struct{ Workload, WorkloadName, Destination, Decision string } `json:"rows"`
	}
	waitFor(t, time.Minute, "the egress panel's rows", func(context.Context) (bool, error) {
		eg.Rows = nil
		if err := dashboardJSON(base+"/api/egress", &eg); err != nil {
			return false, nil
		}
		seen := map[string]string{}
		for _, r := range eg.Rows {
			if r.Workload == clientID {
				seen[r.Destination] = r.Decision
			}
		}
		return seen["api.example.test:80"] == "allow" && seen["other.example.test:80"] == "deny", nil
	})
	var h struct {
		Sidecars []struct {
			Namespace, Pod, State string
			CertNotAfter          *time.Time `json:"certNotAfter"`
		} `json:"sidecars"`
	}
	if err := dashboardJSON(base+"/api/health", &h); err != nil {
		t.Fatal(err)
	}
	synced := 0
	for _, s := range h.Sidecars {
		if s.Namespace == ns {
			if s.State != "SYNCED" || s.CertNotAfter == nil || !s.CertNotAfter.After(time.Now()) {
				t.Errorf("sidecar %+v", s)
			}
			synced++
		}
	}
	if synced != 3 {
		t.Errorf("%d sidecars of %s in the health panel, want 3: %+v", synced, ns, h.Sidecars)
	}

	// The page, rendered by a real browser: the same nodes, edges and
	// marks, the egress decisions, the sidecars' states.
	dom := browser.DOM(t, base+"/?refresh=0&token="+dashboardToken)
	if !regexp.MustCompile(`<body[^>]*data-loaded="[1-9]`).MatchString(dom) {
		t.Fatalf("the page never finished loading:\n%.3000s", dom)
	}
	for _, re := range []string{
		`<g class="node workload[^"]*" data-id="` + regexp.QuoteMeta(clientNode) + `"`,
		`<g class="node workload[^"]*partial[^"]*" data-id="` + regexp.QuoteMeta(outsiderNode) + `"`,
		`<path class="edge mtls"[^>]* data-from="` + regexp.QuoteMeta(clientNode) + `" data-to="` + regexp.QuoteMeta(serverNode) + `"`,
		`<path class="edge refused"[^>]* data-from="` + regexp.QuoteMeta(outsiderNode) + `" data-to="` + regexp.QuoteMeta(serverNode) + `"`,
		`<path class="edge plaintext"[^>]* data-from="` + regexp.QuoteMeta(outsiderNode) + `" data-to="` + regexp.QuoteMeta(legacyNode) + `"`,
		`<tr class="egress-row[^"]*" data-workload="` + regexp.QuoteMeta(clientID) + `" data-destination="api.example.test:80" data-decision="allow"`,
		`<tr class="egress-row[^"]*" data-workload="` + regexp.QuoteMeta(clientID) + `" data-destination="other.example.test:80" data-decision="deny"`,
		`<tr class="sidecar[^"]*" data-pod="` + regexp.QuoteMeta(ns+"/"+client.Name) + `" data-state="SYNCED"`,
	} {
		if !regexp.MustCompile(re).MatchString(dom) {
			t.Errorf("the rendered page lacks %s", re)
		}
	}
	if t.Failed() {
		keep(t, "dashboard-dom.html", []byte(dom))
	}
	shot := filepath.Join(artifacts, "dashboard.png")
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	browser.Screenshot(t, base+"/?refresh=0&token="+dashboardToken, shot)
	t.Logf("screenshot: %s", shot)
}

// startDashboard runs `weftctl dashboard` in-process on a free loopback
// port until the test ends, and returns its base URL.
func startDashboard(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	root := weftctl.NewRoot(pw, pw)
	root.SetArgs([]string{"--kubeconfig", kubeconfig, "dashboard", "--address", "127.0.0.1:0", "--refresh", "2s", "--since", "30m"})
	done := make(chan error, 1)
	go func() {
		done <- root.ExecuteContext(ctx)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	if !lines.Scan() {
		cancel()
		t.Fatalf("weftctl dashboard said nothing: %v", <-done)
	}
	first := lines.Text()
	go io.Copy(io.Discard, pr)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("weftctl dashboard: %v", err)
		}
	})
	m := regexp.MustCompile(`(http://127\.0\.0\.1:\d+)/\?token=([A-Za-z0-9_-]+)`).FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("weftctl dashboard: %q", first)
	}
	// Without its token the dashboard reads nothing for anyone.
	if resp, err := http.Get(m[1] + "/api/health"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /api/health without the token: %v %v, want 401", resp, err)
	} else {
		resp.Body.Close()
	}
	dashboardToken = m[2]
	return m[1]
}

// dashboardToken is the token startDashboard's weftctl printed.
var dashboardToken string

// dashboardJSON GETs url (with the dashboard's token) into v.
func dashboardJSON(url string, v any) error {
	resp, err := http.Get(url + "?token=" + dashboardToken)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s %s", url, resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

// keep writes a file into the artifacts.
func keep(t *testing.T, name string, b []byte) {
	if err := os.MkdirAll(artifacts, 0o755); err == nil {
		path := filepath.Join(artifacts, name)
		if os.WriteFile(path, b, 0o644) == nil {
			t.Logf("kept %s", path)
		}
	}
}
