package weftctl

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	adminapi "github.com/weftmesh/weft/api/admin"
	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/api/names"
)

// The dashboard: weftctl serves one page and its JSON on a loopback
// address, and reaches the cluster only as the other commands do — the
// user's kubeconfig, the API server's pod proxy for the sidecars' /metrics,
// and the control plane's admin API behind its RBAC (debug and audit
// readers). Nothing is exposed in the cluster.

type dashboardOptions struct {
	address string
	refresh time.Duration // between two readings of the sidecars
	since   time.Duration // the egress panel's range
	workers int           // sidecars read at once
}

func newDashboard(g *globals) *cobra.Command {
	o := dashboardOptions{workers: 16}
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "A live web page of the mesh: who talks to whom and what was verified, egress, and sidecar health",
		Long: `dashboard serves a web page on a loopback address and keeps it live:

  - the mesh graph: workloads as nodes, and as edges the connections their
    sidecars accepted or refused, marked by what the receiving sidecar
    verified (mTLS with the client's SPIFFE ID, plaintext on a PERMISSIVE
    port, refused), with requests per second, success rate and p99 latency
    where the port carries HTTP;
  - egress: each workload's destinations outside the mesh with the decision
    taken (allow, audit-flagged, deny) and the bytes, from the control
    plane's audit trail, and the EgressPolicy ` + "`weftctl egress suggest`" + `
    would write for it;
  - health: every sidecar's xDS state (SYNCED, STALE, NACKED with the
    NACK), its certificate's expiry, and the pods of injected namespaces
    that run without a sidecar.

It reads what the other commands read, with your kubeconfig's credentials:
pods, the sidecars' /metrics through the API server, and the control
plane's /debug/status and /audit/* (the weft-debug-reader and
weft-audit-reader roles). It listens on loopback only, answers only
requests addressed to it by that name (against DNS rebinding) that carry
the token in the URL it prints (other users of the machine reach loopback
too), refuses other sites' requests, and changes nothing. The page's data is also JSON: /api/graph, /api/egress,
/api/egress/suggest?namespace=&workload=, /api/health.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.env(cmd.Context())
			if err != nil {
				return err
			}
			ee, err := g.egressEnv(cmd.Context())
			if err != nil {
				return err
			}
			ln, err := listenLoopback(o.address)
			if err != nil {
				return err
			}
			d, err := newDashboardServer(e, ee, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "weft dashboard: http://%s/?token=%s (Ctrl-C to stop)\n", ln.Addr(), d.token)
			return d.serve(cmd.Context(), ln)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.address, "address", "127.0.0.1:15080", "loopback address and port to serve the page on")
	fl.DurationVar(&o.refresh, "refresh", 5*time.Second, "time between two readings of the sidecars' metrics")
	fl.DurationVar(&o.since, "since", time.Hour, "how far back the egress panel looks")
	return cmd
}

// listenLoopback listens on address, which must be a loopback one: the
// page shows the cluster with the user's credentials.
func listenLoopback(address string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("weftctl dashboard: --address %q: %w", address, err)
	}
	if host != "localhost" {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("weftctl dashboard: --address %q is not a loopback address: the page shows the cluster with your credentials", address)
		}
	}
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("weftctl dashboard: %w", err)
	}
	return ln, nil
}

// dashboardServer answers the page's requests from the latest readings.
type dashboardServer struct {
	e     *env
	ee    *egressEnv
	o     dashboardOptions
	csp   string
	warn  io.Writer
	token string // in the URL printed, then a cookie: what other local users and other sites lack

	mu        sync.Mutex
	prev, cur *meshReading // the last two readings (prev nil after the first)
	readErr   error        // why the last reading failed as a whole
	readOnce  chan struct{}
}

func newDashboardServer(e *env, ee *egressEnv, o dashboardOptions) (*dashboardServer, error) {
	var t [16]byte
	if _, err := rand.Read(t[:]); err != nil {
		return nil, fmt.Errorf("weftctl dashboard: token: %w", err)
	}
	return &dashboardServer{e: e, ee: ee, o: o, csp: pageCSP(dashboardPage), warn: io.Discard, readOnce: make(chan struct{}),
		token: base64.RawURLEncoding.EncodeToString(t[:])}, nil
}

// tokenCookie carries the token once the page was opened with it.
const tokenCookie = "weft-dashboard-token"

// authorized says whether r carries the token, as the cookie or ?token=.
func (d *dashboardServer) authorized(r *http.Request) (fromQuery, ok bool) {
	same := func(s string) bool { return subtle.ConstantTimeCompare([]byte(s), []byte(d.token)) == 1 }
	if q := r.URL.Query().Get("token"); q != "" {
		return true, same(q)
	}
	c, err := r.Cookie(tokenCookie)
	return false, err == nil && same(c.Value)
}

// pageCSP allows the page's own inline scripts, by hash, and nothing from
// elsewhere: a string from the cluster that escaped the page's escaping
// (a pod name, a host an app sent as SNI) still cannot run.
func pageCSP(page []byte) string {
	var hashes []string
	rest := page
	for {
		_, after, ok := bytes.Cut(rest, []byte("<script>"))
		if !ok {
			break
		}
		body, tail, ok := bytes.Cut(after, []byte("</script>"))
		if !ok {
			break
		}
		sum := sha256.Sum256(body)
		hashes = append(hashes, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
		rest = tail
	}
	return "default-src 'none'; script-src " + strings.Join(hashes, " ") +
		"; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// serve reads the mesh every o.refresh and serves until ctx ends.
func (d *dashboardServer) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: d.handler(), ReadHeaderTimeout: 10 * time.Second}
	go d.readLoop(ctx)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("weftctl dashboard: %w", err)
	}
	return nil
}

func (d *dashboardServer) readLoop(ctx context.Context) {
	for first := true; ; first = false {
		r, err := d.read(ctx)
		d.mu.Lock()
		if err == nil {
			d.prev, d.cur = d.cur, r
		}
		d.readErr = err
		d.mu.Unlock()
		if first {
			close(d.readOnce)
		}
		if sleepCtx(ctx, d.o.refresh) != nil {
			return
		}
	}
}

// handler serves the page and its JSON. Only GET; only to a Host that
// names a loopback address or localhost (a page elsewhere that rebinds its
// own name to 127.0.0.1 cannot read the cluster through it); never to
// another site's requests (Sec-Fetch-Site: a page elsewhere cannot even
// make it work with the user's credentials); and only with the token
// weftctl printed (other users of the machine reach loopback too). The
// token opens the page once in the URL, then rides in a SameSite=Strict
// cookie.
func (d *dashboardServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", d.csp)
		w.Write(dashboardPage)
	})
	mux.HandleFunc("GET /api/graph", func(w http.ResponseWriter, r *http.Request) {
		v, err := d.graph(r.Context())
		reply(w, v, err)
	})
	mux.HandleFunc("GET /api/health", func(w http.ResponseWriter, r *http.Request) {
		v, err := d.health(r.Context())
		reply(w, v, err)
	})
	mux.HandleFunc("GET /api/egress", func(w http.ResponseWriter, r *http.Request) {
		v, err := d.egress(r.Context())
		reply(w, v, err)
	})
	mux.HandleFunc("GET /api/egress/suggest", func(w http.ResponseWriter, r *http.Request) {
		v, err := d.suggest(r.Context(), r.URL.Query().Get("namespace"), r.URL.Query().Get("workload"))
		reply(w, v, err)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		if !loopbackHost(r.Host) {
			http.Error(w, "weftctl dashboard answers only at a loopback address or localhost, not "+r.Host, http.StatusMisdirectedRequest)
			return
		}
		if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
			http.Error(w, "weftctl dashboard answers only its own page, not a "+site+" request", http.StatusForbidden)
			return
		}
		fromQuery, ok := d.authorized(r)
		if !ok {
			http.Error(w, "weftctl dashboard: open the URL weftctl printed, with its token", http.StatusUnauthorized)
			return
		}
		if fromQuery {
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: d.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		}
		mux.ServeHTTP(w, r)
	})
}

func loopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}

// meshReading is one reading of the mesh: every pod, and the metrics of
// every running sidecar.
type meshReading struct {
	at       time.Time
	pods     []corev1.Pod
	injected map[string]map[string]string // injected namespace → its labels
	sidecars map[string]*sidecarReading   // "<ns>/<pod>"
}

// sidecarReading is what one sidecar's /metrics says of its inbound
// connections and requests, by peer.
type sidecarReading struct {
	err      error
	conns    map[[2]string]float64 // (outcome, peer) → connections
	requests map[string]float64    // peer → inbound HTTP requests
	failed   map[string]float64    // peer → of which failed (5xx, gRPC server errors)
	buckets  map[string]map[float64]float64
	expiry   *time.Time // the SVID's
}

// read lists the pods and reads the metrics of every running sidecar, at
// most o.workers at once.
func (d *dashboardServer) read(ctx context.Context) (*meshReading, error) {
	pods, err := d.e.kube.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("weftctl dashboard: list pods: %w", err)
	}
	r := &meshReading{at: d.e.now(), pods: pods.Items, injected: map[string]map[string]string{}, sidecars: map[string]*sidecarReading{}}
	nss, err := d.e.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: names.InjectLabel + "=" + names.InjectEnabled})
	if err != nil {
		return nil, fmt.Errorf("weftctl dashboard: list injected namespaces: %w", err)
	}
	for _, ns := range nss.Items {
		if ns.Name != "kube-system" && ns.Name != d.e.weftNS {
			r.injected[ns.Name] = ns.Labels
		}
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		work = make(chan *corev1.Pod)
	)
	for range max(d.o.workers, 1) {
		wg.Go(func() {
			for p := range work {
				sr := &sidecarReading{}
				b, err := d.e.admin.podGet(ctx, p, sidecarHealthPort, "/metrics")
				if err == nil {
					sr, err = parseSidecarReading(b)
				}
				sr.err = err
				mu.Lock()
				r.sidecars[p.Namespace+"/"+p.Name] = sr
				mu.Unlock()
			}
		})
	}
	for i := range r.pods {
		if p := &r.pods[i]; running(p) && hasSidecar(p) {
			work <- p
		}
	}
	close(work)
	wg.Wait()
	return r, nil
}

func running(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil
}

// parseSidecarReading reads the series the dashboard needs from a
// sidecar's /metrics.
func parseSidecarReading(body []byte) (*sidecarReading, error) {
	tp := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := tp.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	r := &sidecarReading{conns: map[[2]string]float64{}, requests: map[string]float64{}, failed: map[string]float64{},
		buckets: map[string]map[float64]float64{}}
	labels := func(m *dto.Metric) map[string]string {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		return l
	}
	for _, m := range fams[adminapi.PeerConnectionsMetric].GetMetric() {
		l := labels(m)
		r.conns[[2]string{l["outcome"], l["peer"]}] += sampleValue(m)
	}
	for _, m := range fams[adminapi.HTTPRequestsMetric].GetMetric() {
		if l := labels(m); l["direction"] == "inbound" {
			v := sampleValue(m)
			r.requests[l["peer"]] += v
			if l["class"] == "5xx" || slices.Contains(grpcServerErrors, l["grpc_status"]) {
				r.failed[l["peer"]] += v
			}
		}
	}
	for _, m := range fams[adminapi.HTTPLatencyMetric].GetMetric() {
		if l := labels(m); l["direction"] == "inbound" {
			bs := r.buckets[l["peer"]]
			if bs == nil {
				bs = map[float64]float64{}
				r.buckets[l["peer"]] = bs
			}
			for _, b := range m.GetHistogram().GetBucket() {
				bs[b.GetUpperBound()] += float64(b.GetCumulativeCount())
			}
		}
	}
	if ms := fams[adminapi.SVIDExpiryMetric].GetMetric(); len(ms) > 0 {
		sec, frac := math.Modf(sampleValue(ms[0]))
		t := time.Unix(int64(sec), int64(frac*1e9)).UTC()
		r.expiry = &t
	}
	return r, nil
}

// sampleValue is a counter's, gauge's or untyped sample's value.
func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	return m.GetUntyped().GetValue()
}

// latest waits for the first reading and returns the last two.
func (d *dashboardServer) latest(ctx context.Context) (prev, cur *meshReading, err error) {
	select {
	case <-d.readOnce:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == nil {
		return nil, nil, d.readErr
	}
	return d.prev, d.cur, nil
}

// workloadIndex maps what a sidecar knows of a peer to the graph's nodes.
type workloadIndex struct {
	nodes   map[string]*graphNode
	byID    map[string][]string // SPIFFE ID → workload node IDs whose sidecars run as it
	byIP    map[netip.Addr]string
	nsOfPod map[string]string // "<ns>/<pod>" → workload node ID
}

func indexWorkloads(r *meshReading) *workloadIndex {
	x := &workloadIndex{nodes: map[string]*graphNode{}, byID: map[string][]string{}, byIP: map[netip.Addr]string{}, nsOfPod: map[string]string{}}
	for i := range r.pods {
		p := &r.pods[i]
		if !running(p) {
			continue
		}
		_, injected := r.injected[p.Namespace]
		if !injected && !hasSidecar(p) {
			continue // not of the mesh: shown, if it connects, by its address
		}
		w := podWorkload(p)
		id := p.Namespace + "/" + w
		n := x.nodes[id]
		if n == nil {
			n = &graphNode{ID: id, Kind: nodeWorkload, Namespace: p.Namespace, Name: w}
			x.nodes[id] = n
		}
		n.Pods++
		if spiffeID := podSPIFFEID(p); spiffeID != "" {
			n.Meshed++
			if !slices.Contains(x.byID[spiffeID], id) {
				x.byID[spiffeID] = append(x.byID[spiffeID], id)
			}
			if !slices.Contains(n.Identities, spiffeID) {
				n.Identities = append(n.Identities, spiffeID)
			}
		}
		x.nsOfPod[p.Namespace+"/"+p.Name] = id
		if p.Spec.HostNetwork {
			continue // its address is the node's
		}
		for _, ip := range append([]corev1.PodIP{{IP: p.Status.PodIP}}, p.Status.PodIPs...) {
			if a, err := netip.ParseAddr(ip.IP); err == nil {
				x.byIP[a.Unmap()] = id
			}
		}
	}
	return x
}

// podSPIFFEID is the SPIFFE ID a meshed pod's sidecar runs as: its
// service account in the trust domain the injector gave the sidecar; ""
// without a sidecar.
func podSPIFFEID(p *corev1.Pod) string {
	for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
		if c.Name != names.ProxyContainer {
			continue
		}
		td := names.DefaultTrustDomain
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--trust-domain="); ok && v != "" {
				td = v
			}
		}
		return "spiffe://" + td + "/ns/" + p.Namespace + "/sa/" + cmp.Or(p.Spec.ServiceAccountName, "default")
	}
	return ""
}

// source is the node a sidecar's peer label stands for, made if needed: a
// workload when exactly one runs as the SPIFFE ID or has the address,
// else the ID or address itself.
func (x *workloadIndex) source(peer string) string {
	if strings.HasPrefix(peer, "spiffe://") {
		if ids := x.byID[peer]; len(ids) == 1 {
			return ids[0]
		}
		if x.nodes[peer] == nil {
			ns, _, _ := workloadOf(peer)
			x.nodes[peer] = &graphNode{ID: peer, Kind: nodeIdentity, Namespace: ns, Name: peer}
		}
		return peer
	}
	if a, err := netip.ParseAddr(peer); err == nil {
		if id, ok := x.byIP[a.Unmap()]; ok {
			return id
		}
	}
	id, name := "ip:"+peer, peer
	if peer == adminapi.PeerOther {
		// The sidecar's peers past its budget (512 IDs, 512 addresses).
		id, name = "other", "other peers (past a sidecar's 512)"
	}
	if x.nodes[id] == nil {
		x.nodes[id] = &graphNode{ID: id, Kind: nodeAddress, Name: name}
	}
	return id
}

// graph builds /api/graph from the last two readings.
func (d *dashboardServer) graph(ctx context.Context) (*graphView, error) {
	prev, cur, err := d.latest(ctx)
	if err != nil {
		return nil, err
	}
	return buildGraph(prev, cur), nil
}

func buildGraph(prev, cur *meshReading) *graphView {
	x := indexWorkloads(cur)
	v := &graphView{Generated: cur.at.UTC()}
	var window float64
	if prev != nil {
		window = cur.at.Sub(prev.at).Seconds()
		v.WindowSeconds = window
	}
	type edgeKey struct{ from, to, outcome string }
	edges := map[edgeKey]*graphEdge{}
	type httpAcc struct {
		requests, failed float64
		buckets          map[float64]float64
		windowed         bool // both readings had the sidecar
	}
	accs := map[edgeKey]*httpAcc{}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range cur.sidecars {
			if !yield(k) {
				return
			}
		}
	})
	for _, podKey := range keys {
		sr := cur.sidecars[podKey]
		to := x.nsOfPod[podKey]
		if sr.err != nil {
			v.Errors = append(v.Errors, podKey+": "+sr.err.Error())
			continue
		}
		if to == "" {
			continue
		}
		var before *sidecarReading
		if prev != nil {
			if b := prev.sidecars[podKey]; b != nil && b.err == nil {
				before = b
			}
		}
		for k, n := range sr.conns {
			outcome, peer := k[0], k[1]
			ek := edgeKey{x.source(peer), to, outcome}
			e := edges[ek]
			if e == nil {
				e = &graphEdge{From: ek.from, To: to, Outcome: outcome, Peers: []string{}}
				edges[ek] = e
			}
			e.Connections += n
			if before != nil && window > 0 {
				e.Rate += delta(before.conns[k], n) / window
			}
			if !slices.Contains(e.Peers, peer) {
				e.Peers = append(e.Peers, peer)
			}
		}
		for peer, n := range sr.requests {
			ek := edgeKey{x.source(peer), to, outcomeMTLS}
			a := accs[ek]
			if a == nil {
				a = &httpAcc{buckets: map[float64]float64{}}
				accs[ek] = a
			}
			if before == nil || window <= 0 {
				continue
			}
			a.windowed = true
			a.requests += delta(before.requests[peer], n)
			a.failed += delta(before.failed[peer], sr.failed[peer])
			for le, c := range sr.buckets[peer] {
				a.buckets[le] += delta(before.buckets[peer][le], c)
			}
		}
	}
	for ek, a := range accs {
		e := edges[ek]
		if e == nil {
			continue
		}
		h := &edgeHTTP{}
		if a.windowed {
			h.RPS = a.requests / window
			if a.requests > 0 {
				s := (a.requests - a.failed) / a.requests
				h.Success = &s
				h.P99ms = quantileMs(0.99, a.buckets)
			}
		}
		e.HTTP = h
	}
	nss := map[string]bool{}
	for _, n := range x.nodes {
		slices.Sort(n.Identities)
		v.Nodes = append(v.Nodes, *n)
		if n.Namespace != "" {
			nss[n.Namespace] = true
		}
	}
	for _, e := range edges {
		slices.Sort(e.Peers)
		v.Edges = append(v.Edges, *e)
	}
	v.Namespaces = slices.Sorted(func(yield func(string) bool) {
		for ns := range nss {
			if !yield(ns) {
				return
			}
		}
	})
	slices.SortFunc(v.Nodes, func(a, b graphNode) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(v.Edges, func(a, b graphEdge) int {
		return cmp.Or(strings.Compare(a.From, b.From), strings.Compare(a.To, b.To), strings.Compare(a.Outcome, b.Outcome))
	})
	if v.Nodes == nil {
		v.Nodes = []graphNode{}
	}
	if v.Edges == nil {
		v.Edges = []graphEdge{}
	}
	if v.Namespaces == nil {
		v.Namespaces = []string{}
	}
	return v
}

// health builds /api/health: each control-plane replica's view of its
// sidecars, the certificate expiries from the last reading, and the pods
// that slipped through injection.
func (d *dashboardServer) health(ctx context.Context) (*healthView, error) {
	_, cur, err := d.latest(ctx)
	if err != nil {
		return nil, err
	}
	cps, err := controlPlanes(ctx, d.e)
	if err != nil {
		return nil, err
	}
	x := indexWorkloads(cur)
	v := &healthView{ControlPlanes: []replicaReport{}, Sidecars: []sidecarHealth{}, Uninjected: []uninjectedPod{}, Counts: map[string]int{}}
	seen := map[string]bool{}
	for _, cp := range cps {
		rr := replicaReport{Pod: cp.replica, Version: cp.Version, Sidecars: len(cp.Sidecars)}
		if cp.err != nil {
			rr.Error = cp.err.Error()
			v.Errors = append(v.Errors, "control plane "+cp.replica+": "+cp.err.Error())
		}
		v.ControlPlanes = append(v.ControlPlanes, rr)
		for _, n := range cp.Sidecars {
			key := n.Namespace + "/" + n.Pod
			seen[key] = true
			sh := sidecarHealth{Namespace: n.Namespace, Pod: n.Pod, Workload: strings.TrimPrefix(x.nsOfPod[key], n.Namespace+"/"),
				SPIFFEID: n.SPIFFEID, State: string(adminapi.StateSynced)}
			for _, t := range n.Types {
				switch {
				case t.State == adminapi.StateNacked:
					sh.State = string(adminapi.StateNacked)
					if t.LastNACK != nil && sh.NACK == "" {
						sh.NACK = t.Type + ": " + t.LastNACK.Message
					}
				case t.State == adminapi.StateStale && sh.State != string(adminapi.StateNacked):
					sh.State = string(adminapi.StateStale)
				}
			}
			d.certOf(cur, key, &sh)
			v.Sidecars = append(v.Sidecars, sh)
		}
	}
	for i := range cur.pods {
		p := &cur.pods[i]
		key := p.Namespace + "/" + p.Name
		if !running(p) {
			continue
		}
		if hasSidecar(p) {
			if !seen[key] {
				sh := sidecarHealth{Namespace: p.Namespace, Pod: p.Name, Workload: podWorkload(p), State: "DISCONNECTED"}
				d.certOf(cur, key, &sh)
				v.Sidecars = append(v.Sidecars, sh)
			}
			continue
		}
		if labels, ok := cur.injected[p.Namespace]; ok && !optedOut(d.e.weftNS, labels, p) {
			v.Uninjected = append(v.Uninjected, uninjectedPod{Namespace: p.Namespace, Pod: p.Name, Workload: podWorkload(p),
				Reason: slippedReason(ctx, d.e, p)})
		}
	}
	for _, s := range v.Sidecars {
		v.Counts[s.State]++
	}
	slices.SortFunc(v.Sidecars, func(a, b sidecarHealth) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Pod, b.Pod))
	})
	slices.SortFunc(v.Uninjected, func(a, b uninjectedPod) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Pod, b.Pod))
	})
	return v, nil
}

func (d *dashboardServer) certOf(r *meshReading, key string, sh *sidecarHealth) {
	switch sr := r.sidecars[key]; {
	case sr == nil:
		sh.CertError = "not read yet"
	case sr.err != nil:
		sh.CertError = sr.err.Error()
	case sr.expiry == nil:
		sh.CertError = "no " + adminapi.SVIDExpiryMetric + " in /metrics"
	default:
		sh.CertNotAfter = sr.expiry
	}
}

// egress builds /api/egress from every control-plane replica's audit
// summary by workload and destination.
func (d *dashboardServer) egress(ctx context.Context) (*egressView, error) {
	now := d.ee.now()
	f := egressFilter{since: d.o.since}
	params := f.params(now, "")
	params["by"] = "workload"
	var rs replicaSet
	sums, err := fetchAll[audit.SummaryResponse](ctx, d.ee.audit, d.warn, &rs, audit.SummaryPath, params)
	if err != nil {
		return nil, err
	}
	_, cur, _ := d.latest(ctx)
	var x *workloadIndex
	if cur != nil {
		x = indexWorkloads(cur)
	}
	v := &egressView{Since: now.Add(-d.o.since).UTC(), Until: now.UTC(), Rows: []egressRow{},
		Replicas: fmt.Sprintf("%d/%d", len(rs.Answered), len(rs.Answered)+len(rs.Unreachable)), Errors: rs.Unreachable}
	for _, s := range sums {
		if s.Truncated {
			v.Errors = append(v.Errors, "a control-plane replica had more rows than it sends (its busiest are shown): narrow --since")
			break
		}
	}
	for _, s := range mergeSummaries(sums) {
		row := egressRow{Workload: s.Workload, Destination: s.Destination, Decisions: s.Decisions, Connections: s.Connections,
			BytesSent: s.BytesSent, BytesReceived: s.BytesReceived, LastSeen: s.LastSeen, Policies: s.Policies}
		for _, dec := range []string{"allow", "audit", "deny"} {
			if s.Decisions[dec] > 0 {
				row.Decision = dec // the strictest taken wins
			}
		}
		if x != nil {
			if ids := x.byID[s.Workload]; len(ids) == 1 {
				row.WorkloadRef = ids[0]
			}
		}
		v.Rows = append(v.Rows, row)
	}
	slices.SortFunc(v.Rows, func(a, b egressRow) int {
		return cmp.Or(strings.Compare(a.Workload, b.Workload), strings.Compare(a.Destination, b.Destination))
	})
	return v, nil
}

// suggest builds /api/egress/suggest: the allow-list `weftctl egress
// suggest -n namespace --workload workload` would print.
func (d *dashboardServer) suggest(ctx context.Context, namespace, workload string) (*suggestView, error) {
	if namespace == "" || workload == "" {
		return nil, fmt.Errorf("weftctl dashboard: suggest needs namespace and workload")
	}
	s, err := suggest(ctx, d.ee, d.warn, suggestOptions{egressFilter: egressFilter{since: d.o.since, workload: workload}}, namespace)
	if err != nil {
		return nil, err
	}
	b, err := yaml.Marshal(s.policy)
	if err != nil {
		return nil, fmt.Errorf("weftctl dashboard: yaml: %w", err)
	}
	return &suggestView{Namespace: namespace, Workload: workload, YAML: s.header() + string(b)}, nil
}
