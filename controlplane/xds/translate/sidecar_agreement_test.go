package translate

// The sidecar agreement tests close the boundary that TestRBACAgreesWithAuthorize
// and TestEgressAgreesWithPolicy leave open: those check the translator's
// output with evaluators written in this package, so a sidecar that reads
// the same resources differently (an exact principal matched as a prefix, a
// policy's ports ignored) passed every test. Here the translator's output
// goes to the REAL sidecar: the ADS server of this package serves it over
// gRPC and mTLS to sidecar/xds.Client, which decodes it and runs
// sidecar/xds.Build exactly as a sidecar does (a NACK fails the test). The
// sidecar's Config is then asked for its verdicts with the sidecar's own
// decision code:
//
//   - inbound: xds.Listener.Match picks the chain, then the proxy's
//     authorization (trust domain, DENY filters, ALLOW filters, all
//     RBACFilter.Allows / RBACPolicy.Matches / Principal.Matches), both
//     mirrored over the Config for the whole matrix (agreeSidecarInbound)
//     AND run for real through a sidecar/proxy.Proxy with real TLS 1.3
//     handshakes, so the mirror cannot drift from the proxy;
//   - egress: sidecar/egress.DecideConn (xds.Listener.Match, then
//     xds.RouteConfig.Match for HTTP chains: what the proxy walks) for the
//     whole matrix, and a rotating sample through the real proxy, whose
//     forwarding (or not) and audit record must say the same.
//
// The verdicts are compared with the policy model the translator is checked
// against, not a new one: mesh.WorkloadPolicies.Authorize and
// MTLSSettings.ModeFor (api/v1alpha1's documented semantics) for inbound,
// `reference` of translate/egress_test.go for egress.
//
// Why here (package controlplane/xds/translate, a _test.go file): the
// model lives in this package's tests (`reference`, `meshContents`), and
// the ADS server (controlplane/xds/ads) is imported only by this test,
// while sidecar/internal/envoy (the only way to decode into the sidecar's
// types without the ADS client) cannot be imported from outside sidecar/.
// The import stays one-way: this test binary imports controlplane/xds/ads
// (which never imports the translator), sidecar/xds, sidecar/egress and
// sidecar/proxy, none of which imports controlplane/* (their docs forbid
// it), so there is no cycle, and the production packages of both sides are
// untouched. A package under test/ would have had to copy the egress model.

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/controlplane/streamauth"
	"github.com/weftmesh/weft/controlplane/streamauth/streamauthtest"
	"github.com/weftmesh/weft/controlplane/xds"
	"github.com/weftmesh/weft/controlplane/xds/ads"
	wefttest "github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/egress"
	"github.com/weftmesh/weft/sidecar/proxy"
	sxds "github.com/weftmesh/weft/sidecar/xds"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

var (
	agreeSeed   = flag.Uint64("agreement.seed", 20240611, "seed of the sidecar agreement tests' random policy sets")
	agreeRandom = flag.Int("agreement.random", 40, "random policy sets per sidecar agreement test (each under two modes)")
)

// agreeKnownGapsEnv runs TestSidecarAgreementKnownGaps, which fails while
// the gaps it documents are open.
const agreeKnownGapsEnv = "WEFT_AGREEMENT_KNOWN_GAPS"

const (
	agreeServerNode = "server-v1-5b7c.demo" // the inbound side (meshContents)
	agreeClientNode = "client-7d9f.demo"    // the egress side
	agreeMaxErrors  = 12                    // per subtest, then a count
)

// agreeServerName is the name the control plane's serving certificate holds.
const agreeServerName = names.ControlPlane + "." + names.Namespace + ".svc"

var (
	agreeForeignTD = spiffeid.RequireTrustDomainFromString("other.domain")
	agreeServerIP  = netip.MustParseAddr("198.18.1.11") // server-v1-5b7c
	agreeMarkerIP  = netip.MustParseAddr("198.19.200.1")
)

// ---- the boundary: translator → ADS → sidecar/xds.Client (decode + Build) ----

// agreeMesh is the ADS server (controlplane/xds/ads) with the real Generator, and one
// real sidecar xDS client per node of agreeNodes, over gRPC with mTLS on
// loopback.
type agreeMesh struct {
	t     testing.TB
	ca    *certs.CA
	snap  atomic.Pointer[mesh.Snapshot]
	srv   *ads.Server
	seq   int
	nodes map[string]*sxds.Client
}

var agreeNodes = map[string]spiffeid.ID{
	agreeServerNode: workloadID("demo", "server"),
	agreeClientNode: workloadID("demo", "client"),
}

// agreePods admits a node when the current snapshot has its pod running
// as the certificate's identity; each node's token is "token-<node ID>",
// and every pod's IP is loopback's (the streams come from there).
type agreePods struct {
	snap *atomic.Pointer[mesh.Snapshot]
}

func (v agreePods) Pod(_ context.Context, ns, name string) (streamauth.Pod, bool, error) {
	s := v.snap.Load()
	if s == nil {
		return streamauth.Pod{}, false, errors.New("no snapshot yet")
	}
	w, ok := s.Workload(ns, name)
	if !ok {
		return streamauth.Pod{}, false, nil
	}
	return streamauth.Pod{UID: w.UID, ID: w.Identity, IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, true, nil
}

func (v agreePods) Authenticate(_ context.Context, token string) (identity.Caller, error) {
	pod, ns, err := xds.ParseNodeID(strings.TrimPrefix(token, "token-"))
	if err != nil {
		return identity.Caller{}, fmt.Errorf("%w: %v", identity.ErrUnauthenticated, err)
	}
	w, ok := v.snap.Load().Workload(ns, pod)
	if !ok {
		return identity.Caller{}, fmt.Errorf("%w: no pod %s/%s", identity.ErrUnauthenticated, ns, pod)
	}
	return identity.Caller{Namespace: ns, ServiceAccount: w.ServiceAccount, PodName: pod, PodUID: w.UID}, nil
}

func newAgreeMesh(t testing.TB) *agreeMesh { return newAgreeMeshWith(t, false) }

// newAgreeMeshWith is newAgreeMesh with Generator.HTTPRouting set to http
// and the sidecars' client configuration changed by mods.
func newAgreeMeshWith(t testing.TB, http bool, mods ...func(*sxds.ClientConfig)) *agreeMesh {
	t.Helper()
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: meshTD})
	if err != nil {
		t.Fatal(err)
	}
	m := &agreeMesh{t: t, ca: ca, nodes: map[string]*sxds.Client{}}
	gen := &Generator{Snapshot: m.snap.Load, Bundle: ca.BundlePEM, HTTPRouting: http}
	auth, err := streamauth.New(streamauth.Config{Authenticator: agreePods{&m.snap}, Pods: agreePods{&m.snap}, Bundle: ca.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	m.srv, err = ads.New(ads.Config{Generator: gen, Authorizer: auth, Bundle: ca.Bundle(),
		Debounce: time.Millisecond, MaxDelay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m.store(meshContents(v1alpha1.OutboundAllowAny))

	serving := wefttest.Certificate(t, ca, spiffeid.RequireFromSegments(meshTD, "ns", "weft-system", "sa", "weft-controlplane"), agreeServerName)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{serving}, ClientAuth: tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			_, _, err := x509svid.ParseAndVerify(raw, ca.Bundle())
			return err
		},
	})), grpc.ChainStreamInterceptor(m.srv.StreamInterceptor()))
	m.srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	wg.Go(func() { _ = m.srv.Run(ctx) })
	roots := x509.NewCertPool()
	for _, r := range ca.Roots() {
		roots.AddCert(r)
	}
	var conns []*grpc.ClientConn
	for node, id := range agreeNodes {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: agreeServerName,
			Certificates: []tls.Certificate{wefttest.Certificate(t, ca, id)},
		})), grpc.WithPerRPCCredentials(streamauthtest.Bearer("token-"+node)))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		cc := sxds.ClientConfig{Conn: conn, NodeID: node, TrustDomain: meshTD,
			Backoff: sxds.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}}
		for _, mod := range mods {
			mod(&cc)
		}
		c, err := sxds.New(cc)
		if err != nil {
			t.Fatal(err)
		}
		m.nodes[node] = c
		wg.Go(func() { _ = c.Run(ctx) })
	}
	t.Cleanup(func() {
		cancel()
		for _, c := range conns {
			c.Close()
		}
		gs.Stop()
		wg.Wait()
	})
	for node, c := range m.nodes {
		select {
		case <-c.Ready():
		case <-time.After(20 * time.Second):
			t.Fatalf("sidecar %s has no configuration after 20s: %+v", node, c.Status())
		}
	}
	return m
}

// store publishes contents, plus a marker Service whose passthrough chain
// tells which snapshot a sidecar's configuration comes from, and returns
// the marker chain's name.
func (m *agreeMesh) store(contents mesh.Contents) (*mesh.Snapshot, string) {
	m.seq++
	marker := fmt.Sprintf("agreement-%d", m.seq)
	contents.Services = append(slices.Clone(contents.Services), &mesh.Service{
		Namespace: "default", Name: marker, Type: "ClusterIP", ClusterIPs: []netip.Addr{agreeMarkerIP},
		Ports: []mesh.ServicePort{{Name: "marker", Port: 7, TargetPort: 7, Protocol: "TCP"}},
	})
	snap := mesh.NewSnapshot(0, contents)
	m.snap.Store(snap)
	return snap, "passthrough|7|" + marker + ".default"
}

func agreeNackCount(st sxds.Status) uint64 {
	var n uint64
	for _, v := range st.Nacks {
		n += v
	}
	return n
}

// push publishes contents and waits until every sidecar runs what the
// translator made of it: the marker chain is in its listeners, and every
// resource type it holds is at the version the server built from this
// snapshot (a new listener can arrive before the route configurations it
// names, whose names do not change). A NACK is returned as an error, with
// the sidecar's reason.
func (m *agreeMesh) push(contents mesh.Contents) (*mesh.Snapshot, map[string]*model.Config, error) {
	m.t.Helper()
	before := map[string]uint64{}
	for node, c := range m.nodes {
		before[node] = agreeNackCount(c.Status())
	}
	since := time.Now()
	snap, marker := m.store(contents)
	m.srv.Changed()
	out := map[string]*model.Config{}
	deadline := time.Now().Add(20 * time.Second)
	for _, node := range slices.Sorted(maps.Keys(m.nodes)) {
		c := m.nodes[node]
		for {
			cfg := c.Current()
			if cfg != nil && cfg.LookUp {
				// The marker's chain is in its destination listener,
				// held once looked up (asked again each round: a
				// destination known absent is answered at once).
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if next, release, err := c.Destination(ctx, netip.AddrPortFrom(agreeMarkerIP, 7)); err == nil {
					release()
					cfg = next
				}
				cancel()
			}
			if cfg != nil && hasChain(cfg, marker) && m.synced(node, cfg, since) {
				out[node] = cfg
				break
			}
			if st := c.Status(); agreeNackCount(st) > before[node] {
				return snap, nil, fmt.Errorf("sidecar %s NACKs the translator's output (it keeps its previous configuration): %s", node, st.LastNack.Error)
			}
			if time.Now().After(deadline) {
				return snap, nil, fmt.Errorf("sidecar %s: no configuration with chain %s after 20s: %+v", node, marker, c.Status())
			}
			time.Sleep(time.Millisecond)
		}
	}
	return snap, out, nil
}

// synced: the server built node's snapshot after since, and cfg holds
// every type of it at its version (types never sent are types the sidecar
// subscribes to nothing of; a type subscribed by name is compared with
// what it was last sent, ads.Server.Status says).
func (m *agreeMesh) synced(node string, cfg *model.Config, since time.Time) bool {
	for _, st := range m.srv.Status() {
		if st.Node != node {
			continue
		}
		if st.Generated.Before(since) || st.GenerateError != "" {
			return false
		}
		for _, ts := range st.Types {
			got, has := cfg.Version[ts.TypeURL]
			if (has || ts.Sent != "") && got != ts.Version {
				return false
			}
		}
		return true
	}
	return false
}

// hasChain says whether a listener of cfg on the outbound side (the
// outbound listener or a destination's) has a chain named name.
func hasChain(cfg *model.Config, name string) bool {
	for _, l := range cfg.Listeners() {
		if l != cfg.Inbound && slices.ContainsFunc(l.Chains, func(fc *model.FilterChain) bool { return fc.Name == name }) {
			return true
		}
	}
	return false
}

// agreeErrors caps a subtest's disagreements at agreeMaxErrors lines plus
// a count, so one broken matcher does not print ten thousand lines.
type agreeErrors struct {
	t      *testing.T
	n      int
	checks int
}

func (e *agreeErrors) check(ok bool, format string, args ...any) {
	e.t.Helper()
	e.checks++
	if ok {
		return
	}
	e.n++
	if e.n <= agreeMaxErrors {
		e.t.Errorf(format, args...)
	}
}

func (e *agreeErrors) done(what string) {
	e.t.Helper()
	if e.n > agreeMaxErrors {
		e.t.Errorf("... %d disagreements in all (%d shown)", e.n, agreeMaxErrors)
	}
	e.t.Logf("%d %s checked, %d disagreements", e.checks, what, e.n)
}

// ---- inbound: the model ----

// agreePeers: plaintext, the mesh's identities the policies name, and near
// misses of them (a prefix extension of an exact ID, a namespace that
// extends another, another trust domain with the same path, an ID with
// more path than a workload's).
var agreePeers = []spiffeid.ID{
	{}, // plaintext
	workloadID("demo", "client"),
	workloadID("demo", "client-x"),
	workloadID("demo", "clientx"),
	workloadID("demo", "server"),
	workloadID("demo-2", "client"),
	workloadID("legacy", "legacy"),
	workloadID("other", "x"),
	workloadID("other", "y"),
	spiffeid.RequireFromSegments(agreeForeignTD, "ns", "demo", "sa", "client"),
	spiffeid.RequireFromSegments(agreeForeignTD, "ns", "legacy", "sa", "legacy"),
}

// agreePorts: 8080 (the Service's target port), 9090 (its own chains by a
// port-level mTLS mode), 1234 and 5555 (catch-all chains); policies name
// 8080, 9090 and 1234.
var agreePorts = []uint16{8080, 9090, 1234, 5555}

func agreePeerName(p spiffeid.ID) string {
	if p.IsZero() {
		return "plaintext"
	}
	return p.String()
}

// agreeInboundModel decides a connection to w as the API documents it:
// STRICT refuses plaintext (MTLSPolicy, mode per port); mTLS peers must be
// of the mesh ("only mTLS from the mesh is accepted"); a rejected
// AuthorizationPolicy or MTLSPolicy of the namespace denies everything (the
// translator's documented fail-closed); then mesh.WorkloadPolicies.Authorize.
func agreeInboundModel(snap *mesh.Snapshot, w *mesh.Workload, peer spiffeid.ID, port uint16) (bool, string) {
	pol := snap.PoliciesFor(w)
	if peer.IsZero() && pol.MTLS.ModeFor(port) == v1alpha1.MTLSStrict {
		return false, "port is STRICT: plaintext refused"
	}
	if !peer.IsZero() && !peer.MemberOf(snap.Mesh.TrustDomain) {
		return false, "peer is not in the mesh's trust domain"
	}
	for _, r := range snap.Rejected {
		if r.Namespace == w.Namespace && (r.Kind == v1alpha1.AuthorizationPolicyKind || r.Kind == v1alpha1.MTLSPolicyKind) {
			return false, "rejected " + r.Kind + " " + r.Namespace + "/" + r.Name + " fails closed"
		}
	}
	ok, by := pol.Authorize(snap.Mesh.TrustDomain, peer, port)
	if by == nil {
		return ok, "Authorize: no ALLOW policy selects the workload"
	}
	return ok, "Authorize: decided by " + by.Namespace + "/" + by.Name
}

// agreeSidecarInbound is the sidecar's verdict, from its Config, in the
// proxy's order (sidecar/proxy inbound.go, tls.go, proxy.go authorize):
// Listener.Match on the original destination and the sniffed transport;
// no chain, or a TLS chain for plaintext, refuses; a TLS peer must be a
// member of the trust domain; then the chain's enforced RBAC filters, every
// DENY filter first, then every ALLOW filter, by RBACFilter.Allows. The
// end-to-end half of the test runs the real proxy over the same matrix, so
// this mirror cannot drift from it unnoticed.
func agreeSidecarInbound(cfg *model.Config, td spiffeid.TrustDomain, dst netip.AddrPort, peer spiffeid.ID) (bool, string) {
	transport := "raw_buffer"
	if !peer.IsZero() {
		transport = "tls"
	}
	fc := cfg.Inbound.Match(dst, transport, "", nil)
	switch {
	case fc == nil:
		return false, "no " + transport + " chain"
	case fc.TLS != nil && transport != "tls":
		return false, "chain " + fc.Name + " takes TLS only"
	case fc.TLS == nil && transport == "tls":
		return false, "chain " + fc.Name + " takes plaintext only"
	case !peer.IsZero() && !peer.MemberOf(td):
		return false, "chain " + fc.Name + ": peer outside trust domain " + td.String()
	}
	for _, action := range []model.RBACAction{model.RBACDeny, model.RBACAllow} {
		for _, f := range fc.RBAC {
			if f.Shadow || f.Action != action {
				continue
			}
			if ok, policy := f.Allows(agreeSidecarPeer(peer), dst.Port()); !ok {
				return false, fmt.Sprintf("chain %s: RBAC %s denies (policy %q)", fc.Name, action, policy)
			}
		}
	}
	return true, "chain " + fc.Name + ": RBAC allows"
}

// agreeSidecarPeer is the peer as the proxy passes it to RBAC: the SPIFFE ID,
// "" for plaintext.
func agreeSidecarPeer(p spiffeid.ID) string {
	if p.IsZero() {
		return ""
	}
	return p.String()
}

func agreeVerdict(ok bool) string {
	if ok {
		return "ALLOWS"
	}
	return "DENIES"
}

// ---- inbound: policy sets ----

type agreeAuthzSet struct {
	name     string
	policies []*mesh.AuthorizationPolicy
	rejected []mesh.Rejected
}

func (s agreeAuthzSet) String() string {
	var parts []string
	for _, p := range s.policies {
		parts = append(parts, agreeDescribePolicy(p))
	}
	for _, r := range s.rejected {
		parts = append(parts, "rejected "+r.Kind+" "+r.Namespace+"/"+r.Name)
	}
	if len(parts) == 0 {
		return "no policies"
	}
	return strings.Join(parts, "; ")
}

func agreeDescribePolicy(p *mesh.AuthorizationPolicy) string {
	sel := "namespace-wide"
	if p.Selector != nil {
		sel = p.Selector.String()
	}
	var rules []string
	for _, r := range p.Rules {
		var from []string
		for _, s := range r.From {
			var f []string
			for _, pr := range s.Principals {
				if pr.Prefix {
					f = append(f, "principal "+pr.Value+"*")
				} else {
					f = append(f, "principal "+pr.Value)
				}
			}
			if len(s.Namespaces) > 0 {
				f = append(f, "namespaces "+strings.Join(s.Namespaces, ","))
			}
			for _, sa := range s.ServiceAccounts {
				f = append(f, "sa "+sa.String())
			}
			from = append(from, strings.Join(f, " AND "))
		}
		rule := "from any"
		if len(from) > 0 {
			rule = "from [" + strings.Join(from, " | ") + "]"
		}
		if len(r.To) > 0 {
			var to []string
			for _, d := range r.To {
				to = append(to, fmt.Sprintf("ports %v methods %v paths %v", d.Ports, d.Methods, d.Paths))
			}
			rule += " to [" + strings.Join(to, " | ") + "]"
		} else {
			rule += " anywhere"
		}
		rules = append(rules, rule)
	}
	return fmt.Sprintf("%s %s/%s (%s) rules {%s}", p.Action, p.Namespace, p.Name, sel, strings.Join(rules, "; "))
}

var agreeServerSel = labels.SelectorFromSet(labels.Set{"app": "server"})

func agreeAP(name string, action v1alpha1.AuthorizationAction, rules ...mesh.AuthorizationRule) *mesh.AuthorizationPolicy {
	return &mesh.AuthorizationPolicy{Namespace: "demo", Name: name, Selector: agreeServerSel, Action: action, Rules: rules}
}

func agreeExact(id spiffeid.ID) mesh.Principal { return mesh.Principal{Value: id.String()} }

func agreePrefix(p string) mesh.Principal { return mesh.Principal{Value: p, Prefix: true} }

// agreeNamedSets are hand-picked sets: each of the API's rules, and the two
// shapes the issue names (an exact principal; a port-scoped ALLOW).
func agreeNamedSets() []agreeAuthzSet {
	from := func(srcs ...mesh.Source) []mesh.Source { return srcs }
	return []agreeAuthzSet{
		{name: "none"},
		{name: "golden", policies: meshContents(v1alpha1.OutboundAllowAny).AuthorizationPolicies},
		{name: "allow-exact-principal-port", policies: []*mesh.AuthorizationPolicy{agreeAP("exact", v1alpha1.ActionAllow,
			mesh.AuthorizationRule{From: from(mesh.Source{Principals: []mesh.Principal{agreeExact(workloadID("demo", "client"))}}), To: []mesh.Destination{{Ports: []uint16{8080}}}})}},
		{name: "deny-exact-principal", policies: []*mesh.AuthorizationPolicy{agreeAP("deny-exact", v1alpha1.ActionDeny,
			mesh.AuthorizationRule{From: from(mesh.Source{Principals: []mesh.Principal{agreeExact(workloadID("demo", "client"))}})})}},
		{name: "allow-port-scoped-any-peer", policies: []*mesh.AuthorizationPolicy{agreeAP("port-only", v1alpha1.ActionAllow,
			mesh.AuthorizationRule{To: []mesh.Destination{{Ports: []uint16{9090}}}})}},
		{name: "deny-port-scoped", policies: []*mesh.AuthorizationPolicy{agreeAP("deny-port", v1alpha1.ActionDeny,
			mesh.AuthorizationRule{From: from(mesh.Source{Namespaces: []string{"demo"}}), To: []mesh.Destination{{Ports: []uint16{1234}}}})}},
		{name: "allow-without-rules", policies: []*mesh.AuthorizationPolicy{agreeAP("nothing", v1alpha1.ActionAllow)}},
		{name: "deny-without-rules", policies: []*mesh.AuthorizationPolicy{agreeAP("nothing", v1alpha1.ActionDeny)}},
		{name: "allow-empty-rule-deny-legacy", policies: []*mesh.AuthorizationPolicy{
			agreeAP("open", v1alpha1.ActionAllow, mesh.AuthorizationRule{}),
			agreeAP("no-legacy", v1alpha1.ActionDeny, mesh.AuthorizationRule{From: from(mesh.Source{Namespaces: []string{"legacy"}}), To: []mesh.Destination{{Ports: []uint16{8080}}}})}},
		{name: "principal-prefixes", policies: []*mesh.AuthorizationPolicy{agreeAP("p", v1alpha1.ActionAllow,
			mesh.AuthorizationRule{From: from(mesh.Source{Principals: []mesh.Principal{
				agreeExact(workloadID("demo", "client")), agreePrefix("spiffe://cluster.local/ns/legacy/")}}), To: []mesh.Destination{{Ports: []uint16{8080, 9090}}}},
			mesh.AuthorizationRule{From: from(mesh.Source{Principals: []mesh.Principal{agreePrefix("spiffe://cluster.local/ns/demo")}}), To: []mesh.Destination{{Ports: []uint16{1234}}}},
			mesh.AuthorizationRule{From: from(mesh.Source{Principals: []mesh.Principal{agreePrefix("spiffe://cluster.local/ns/demo/sa/client")}}), To: []mesh.Destination{{Ports: []uint16{5555}}}},
		)}},
		{name: "namespaces-and-accounts", policies: []*mesh.AuthorizationPolicy{
			agreeAP("ns", v1alpha1.ActionAllow, mesh.AuthorizationRule{From: from(mesh.Source{Namespaces: []string{"demo"}}), To: []mesh.Destination{{Ports: []uint16{8080}}}},
				mesh.AuthorizationRule{From: from(mesh.Source{ServiceAccounts: []mesh.Key{{Namespace: "other", Name: "x"}}})}),
			agreeAP("deny-x", v1alpha1.ActionDeny, mesh.AuthorizationRule{From: from(mesh.Source{ServiceAccounts: []mesh.Key{{Namespace: "other", Name: "x"}}}), To: []mesh.Destination{{Ports: []uint16{9090}}}}),
		}},
		{name: "other-namespace-and-selector", policies: []*mesh.AuthorizationPolicy{
			{Namespace: "legacy", Name: "elsewhere", Action: v1alpha1.ActionAllow, Rules: []mesh.AuthorizationRule{{To: []mesh.Destination{{Ports: []uint16{1}}}}}},
			{Namespace: "demo", Name: "clients-only", Selector: labels.SelectorFromSet(labels.Set{"app": "client"}), Action: v1alpha1.ActionDeny, Rules: []mesh.AuthorizationRule{{}}},
			{Namespace: "demo", Name: "namespace-wide", Action: v1alpha1.ActionAllow, Rules: []mesh.AuthorizationRule{
				{From: from(mesh.Source{Principals: []mesh.Principal{agreePrefix("spiffe://cluster.local/")}}), To: []mesh.Destination{{Ports: []uint16{8080, 1234}}}}}},
		}},
		// A source with two fields: and_ids of the fields in RBAC.
		{name: "two-field-source", policies: []*mesh.AuthorizationPolicy{agreeAP("and", v1alpha1.ActionAllow,
			mesh.AuthorizationRule{From: from(mesh.Source{Namespaces: []string{"demo"}, ServiceAccounts: []mesh.Key{{Namespace: "demo", Name: "client"}}})})}},
		{name: "two-field-source-deny", policies: []*mesh.AuthorizationPolicy{
			agreeAP("open", v1alpha1.ActionAllow, mesh.AuthorizationRule{}),
			agreeAP("and", v1alpha1.ActionDeny, mesh.AuthorizationRule{From: from(mesh.Source{
				Principals: []mesh.Principal{agreePrefix("spiffe://cluster.local/ns/demo/sa/client")}, Namespaces: []string{"demo", "demo-2"}}), To: []mesh.Destination{{Ports: []uint16{8080}}}})}},
		{name: "rejected-policy", policies: meshContents(v1alpha1.OutboundAllowAny).AuthorizationPolicies,
			rejected: []mesh.Rejected{{Kind: v1alpha1.AuthorizationPolicyKind, Namespace: "demo", Name: "broken", Reason: v1alpha1.ReasonInvalid, Message: "bad"}}},
	}
}

var (
	agreeExactPool = []spiffeid.ID{workloadID("demo", "client"), workloadID("demo", "server"), workloadID("legacy", "legacy"),
		workloadID("other", "x"), workloadID("demo-2", "client")}
	agreePrefixPool = []string{"spiffe://cluster.local/", "spiffe://cluster.local/ns/demo/", "spiffe://cluster.local/ns/demo",
		"spiffe://cluster.local/ns/legacy/", "spiffe://cluster.local/ns/demo/sa/client", "spiffe://cluster.local/ns/other/sa/"}
	agreeNSPool = []string{"demo", "demo-2", "legacy", "other"}
	agreeSAPool = []mesh.Key{{Namespace: "demo", Name: "client"}, {Namespace: "demo", Name: "server"},
		{Namespace: "other", Name: "x"}, {Namespace: "legacy", Name: "legacy"}, {Namespace: "demo-2", Name: "client"}}
	agreePolicyPorts = []uint16{8080, 9090, 1234}
)

func agreePick[T any](rng *rand.Rand, pool []T, n int) []T {
	idx := rng.Perm(len(pool))[:min(n, len(pool))]
	slices.Sort(idx)
	out := make([]T, 0, len(idx))
	for _, i := range idx {
		out = append(out, pool[i])
	}
	return out
}

// agreeRandomSource is a Source with one field (multiField: one to three).
func agreeRandomSource(rng *rand.Rand, multiField bool) mesh.Source {
	kinds := []int{rng.IntN(3)}
	if multiField {
		kinds = agreePick(rng, []int{0, 1, 2}, 2+rng.IntN(2))
	}
	var s mesh.Source
	for _, k := range kinds {
		switch k {
		case 0:
			for range 1 + rng.IntN(2) {
				if rng.IntN(2) == 0 {
					s.Principals = append(s.Principals, agreeExact(agreeExactPool[rng.IntN(len(agreeExactPool))]))
				} else {
					s.Principals = append(s.Principals, agreePrefix(agreePrefixPool[rng.IntN(len(agreePrefixPool))]))
				}
			}
		case 1:
			s.Namespaces = agreePick(rng, agreeNSPool, 1+rng.IntN(2))
		case 2:
			s.ServiceAccounts = agreePick(rng, agreeSAPool, 1+rng.IntN(2))
		}
	}
	return s
}

// agreeRandomAuthz is one to three policies: mostly ALLOW, mostly
// selecting the server (some namespace-wide, some for other pods or in
// another namespace), each with zero to three rules of zero to two sources
// and a subset of the policy ports.
func agreeRandomAuthz(rng *rand.Rand, name string, multiField bool) agreeAuthzSet {
	set := agreeAuthzSet{name: name}
	for i := range 1 + rng.IntN(3) {
		p := &mesh.AuthorizationPolicy{Namespace: "demo", Name: fmt.Sprintf("r%d", i), Selector: agreeServerSel, Action: v1alpha1.ActionAllow}
		if rng.IntN(3) == 0 {
			p.Action = v1alpha1.ActionDeny
		}
		switch rng.IntN(8) {
		case 0:
			p.Selector = nil
		case 1:
			p.Selector = labels.SelectorFromSet(labels.Set{"app": "client"})
		case 2:
			p.Namespace = "legacy"
		}
		rules := 1 + rng.IntN(3)
		if rng.IntN(8) == 0 {
			rules = 0 // an ALLOW policy without rules denies everything
		}
		for range rules {
			var r mesh.AuthorizationRule
			if rng.IntN(4) != 0 {
				for range 1 + rng.IntN(2) {
					r.From = append(r.From, agreeRandomSource(rng, multiField))
				}
			}
			if rng.IntN(3) != 0 {
				r.To = []mesh.Destination{{Ports: agreePick(rng, agreePolicyPorts, 1+rng.IntN(2))}}
			}
			p.Rules = append(p.Rules, r)
		}
		set.policies = append(set.policies, p)
	}
	return set
}

// agreeInboundContents is the golden mesh with set's policies, the mesh in
// mode and, by a namespace MTLSPolicy of demo, port 9090 in the other mode.
func agreeInboundContents(set agreeAuthzSet, mode v1alpha1.MTLSMode) mesh.Contents {
	c := meshContents(v1alpha1.OutboundAllowAny)
	c.AuthorizationPolicies = set.policies
	c.Rejected = set.rejected
	c.Mesh.MTLSMode = mode
	other := v1alpha1.MTLSPermissive
	if mode == v1alpha1.MTLSPermissive {
		other = v1alpha1.MTLSStrict
	}
	c.MTLSPolicies = append(slices.Clone(c.MTLSPolicies), &mesh.MTLSPolicy{Namespace: "demo", Name: "ports", Mode: mode,
		PortModes: map[uint16]v1alpha1.MTLSMode{9090: other}})
	return c
}

// ---- inbound: the real proxy ----

type agreeFixedSVID struct{ s *x509svid.SVID }

func (f agreeFixedSVID) GetX509SVID() (*x509svid.SVID, error) { return f.s, nil }

// agreeNAT stands in for SO_ORIGINAL_DST: the destination a test client
// registered for its local address.
type agreeNAT struct{ m sync.Map }

func (n *agreeNAT) originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if dst, ok := n.m.Load(c.RemoteAddr().String()); ok {
			return dst.(netip.AddrPort), nil
		}
		if time.Now().After(deadline) {
			return netip.AddrPort{}, errors.New("agreeNAT: no original destination for " + c.RemoteAddr().String())
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// agreeProxy is a real sidecar/proxy.Proxy whose configuration the test
// sets, with the network around it faked: original destinations, and
// upstream dials.
type agreeProxy struct {
	p      *proxy.Proxy
	cfg    atomic.Pointer[model.Config]
	nat    agreeNAT
	bundle x509bundle.Source
}

func startAgreeProxy(t *testing.T, svid *x509svid.SVID, bundle x509bundle.Source, dial func(ctx context.Context, network, addr string) (net.Conn, error), auditFn func(audit.Event)) *agreeProxy {
	t.Helper()
	a := &agreeProxy{bundle: bundle}
	p, err := proxy.New(proxy.Config{
		SVID: agreeFixedSVID{svid}, Bundle: bundle, TrustDomain: meshTD, Config: a.cfg.Load,
		InboundAddr: "127.0.0.1:0", OutboundAddr: "127.0.0.1:0", AdminAddr: "-",
		OriginalDst: a.nat.originalDst, Dial: dial, Audit: auditFn, Logger: slog.New(slog.DiscardHandler),
		// The server pod's address, the one inbound delivery dials; only
		// from the sources the capture rules exempt.
		LocalAddrs: []netip.Addr{agreeServerIP},
		DialFrom: func(ctx context.Context, network string, src netip.Addr, addr string) (net.Conn, error) {
			if src != model.InboundSourceIPv4 && src != model.InboundSourceIPv6 {
				return nil, fmt.Errorf("dial to %s from %s, not an inbound source", addr, src)
			}
			return dial(ctx, network, addr)
		},
		DrainTimeout: time.Second, SniffTimeout: time.Second, HandshakeTimeout: 10 * time.Second, IdleParkAfter: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	a.p = p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("proxy Run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	return a
}

// dial connects to the proxy's listener l as if redirected there on the
// way to dst.
func (a *agreeProxy) dial(l net.Addr, dst netip.AddrPort) (*net.TCPConn, error) {
	c, err := net.Dial("tcp", l.String())
	if err != nil {
		return nil, err
	}
	a.nat.m.Store(c.LocalAddr().String(), dst)
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	return c.(*net.TCPConn), nil
}

// inboundApps are the server pod's apps: one per port, each answering
// "<port>:<what it read>" so the client knows which app the proxy reached.
func agreeInboundApps(t *testing.T) map[uint16]string {
	t.Helper()
	apps := map[uint16]string{}
	for _, port := range agreePorts {
		apps[port] = wefttest.ServeTCP(t, func(c net.Conn) {
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if string(buf) != "GET " {
				fmt.Fprintf(c, "%d:%s", port, buf)
				return
			}
			// A request the server sidecar delivered over HTTP/1.1
			// (an h2 chain): the same answer as its body.
			if _, err := http.ReadRequest(bufio.NewReader(io.MultiReader(strings.NewReader("GET "), c))); err != nil {
				return
			}
			body := fmt.Sprintf("%d:ping", port)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
		}).String()
	}
	return apps
}

// agreeInboundE2E sends "ping" from peer (plaintext when zero, else mTLS
// with its SVID) to the proxy's inbound listener, redirected from dst; it
// reports whether the app on dst's port answered.
func (a *agreeProxy) inbound(dst netip.AddrPort, svid *x509svid.SVID) (bool, string) {
	return a.inboundALPN(dst, svid, false)
}

// inboundALPN is inbound, as a client sidecar's HTTP cluster connects when
// h2: offering ALPN h2 and, when the server negotiates it (an h2 chain),
// sending "GET /ping" over HTTP/2, whose answer must be the app's.
func (a *agreeProxy) inboundALPN(dst netip.AddrPort, svid *x509svid.SVID, h2 bool) (bool, string) {
	c, err := a.dial(a.p.InboundAddr(), dst)
	if err != nil {
		return false, "dial: " + err.Error()
	}
	defer func() {
		c.Close()
		a.nat.m.Delete(c.LocalAddr().String())
	}()
	var rw io.ReadWriter = c
	if svid != nil {
		cfg := tlsconfig.MTLSClientConfig(svid, a.bundle, tlsconfig.AuthorizeID(workloadID("demo", "server")))
		if h2 {
			cfg.NextProtos = []string{"h2"}
		}
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			return false, "refused in handshake: " + err.Error()
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			return agreeH2Request(tc, dst.Port())
		}
		rw = tc
	}
	if _, err := rw.Write([]byte("ping")); err != nil {
		return false, "refused on write: " + err.Error()
	}
	got, err := io.ReadAll(rw)
	want := strconv.Itoa(int(dst.Port())) + ":ping"
	switch {
	case string(got) == want:
		return true, "the app on port " + strconv.Itoa(int(dst.Port())) + " answered"
	case len(got) > 0:
		return false, fmt.Sprintf("WRONG APP: got %q, want %q", got, want)
	case err != nil:
		return false, "refused: " + err.Error()
	}
	return false, "refused: closed"
}

// agreeH2Request sends one HTTP/2 request on tc, as a client sidecar's
// transport does, and reports whether the app on port answered it.
func agreeH2Request(tc *tls.Conn, port uint16) (bool, string) {
	cc, err := (&http2.Transport{}).NewClientConn(tc)
	if err != nil {
		return false, "h2: " + err.Error()
	}
	defer cc.Close()
	req, _ := http.NewRequest(http.MethodGet, "https://server.demo/ping", nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return false, "refused over h2: " + err.Error()
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	want := strconv.Itoa(int(port)) + ":ping"
	switch {
	case resp.StatusCode == http.StatusOK && string(got) == want:
		return true, "the app on port " + strconv.Itoa(int(port)) + " answered over h2"
	case resp.StatusCode == http.StatusOK:
		return false, fmt.Sprintf("WRONG APP: got %q (%v), want %q", got, err, want)
	}
	return false, fmt.Sprintf("refused over h2: %s %q", resp.Status, got)
}

// ---- inbound: the test ----

// TestSidecarAgreesOnInbound: for named and seeded random
// AuthorizationPolicy sets, under a STRICT and a PERMISSIVE mesh (port 9090
// in the other mode), every peer (plaintext, mesh identities, near misses,
// another trust domain) on every port (policy ports and others) is allowed
// by the real sidecar — from the translator's resources via ADS and
// xds.Build — exactly when the policy model allows it; once by the
// sidecar's decision code over its Config, once through the real proxy.
func TestSidecarAgreesOnInbound(t *testing.T) { testSidecarAgreesOnInbound(t, false) }

// TestSidecarAgreesOnInboundHTTP is TestSidecarAgreesOnInbound with
// Generator.HTTPRouting, every mesh peer offering ALPN h2 as a client
// sidecar's HTTP cluster does: on the HTTP port (8080) the h2 chain must
// decide every connection as the policy model does and deliver its
// requests to the app; on the other ports the L4 chains, which negotiate
// no h2, as before.
func TestSidecarAgreesOnInboundHTTP(t *testing.T) { testSidecarAgreesOnInbound(t, true) }

func testSidecarAgreesOnInbound(t *testing.T, h2 bool) {
	m := newAgreeMeshWith(t, h2)
	foreign, err := certs.NewCA(certs.CAConfig{TrustDomain: agreeForeignTD})
	if err != nil {
		t.Fatal(err)
	}
	// The foreign trust domain's roots are in the proxy's bundle (as under
	// federation), so a foreign peer passes verification and it is the
	// proxy's own trust-domain check that must refuse it.
	bundle := x509bundle.NewSet(m.ca.Bundle(), foreign.Bundle())
	svids := map[spiffeid.ID]*x509svid.SVID{}
	for _, p := range agreePeers {
		switch {
		case p.IsZero():
		case p.MemberOf(meshTD):
			svids[p] = wefttest.SVID(t, m.ca, p, 0)
		default:
			svids[p] = wefttest.SVID(t, foreign, p, 0)
		}
	}
	apps := agreeInboundApps(t)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		// The app's port on the pod's address, or on loopback for a port
		// delivered there (weft.dev/inbound-loopback-ports).
		if err != nil || ap.Addr() != agreeServerIP && ap.Addr() != netip.MustParseAddr("127.0.0.1") || apps[ap.Port()] == "" {
			return nil, fmt.Errorf("inbound dial to %s: not an app of the pod", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, apps[ap.Port()])
	}
	px := startAgreeProxy(t, wefttest.SVID(t, m.ca, workloadID("demo", "server"), 0), bundle, dial, nil)

	sets := agreeNamedSets()
	rng := rand.New(rand.NewPCG(*agreeSeed, 1))
	for i := range *agreeRandom {
		sets = append(sets, agreeRandomAuthz(rng, fmt.Sprintf("random-%02d", i), false))
	}
	// Sources with two or three fields: RBAC and_ids of or_ids.
	multi := rand.New(rand.NewPCG(*agreeSeed, 3))
	for i := range max(*agreeRandom/4, 1) {
		sets = append(sets, agreeRandomAuthz(multi, fmt.Sprintf("multi-%02d", i), true))
	}
	t.Logf("seed %d (-agreement.seed), %d policy sets × 2 modes × %d peers × %d ports", *agreeSeed, len(sets), len(agreePeers), len(agreePorts))
	total, totalAllowed, overH2 := 0, 0, 0
	for _, set := range sets {
		for _, mode := range []v1alpha1.MTLSMode{v1alpha1.MTLSStrict, v1alpha1.MTLSPermissive} {
			t.Run(set.name+"/"+string(mode), func(t *testing.T) {
				snap, cfgs, err := m.push(agreeInboundContents(set, mode))
				if err != nil {
					t.Fatalf("policies %s: %v", set, err)
				}
				cfg := cfgs[agreeServerNode]
				w, _ := snap.Workload("demo", "server-v1-5b7c")
				px.cfg.Store(cfg)

				type result struct {
					ok     bool
					detail string
				}
				type key struct {
					peer spiffeid.ID
					port uint16
				}
				e2e := map[key]result{}
				var mu sync.Mutex
				var wg sync.WaitGroup
				sem := make(chan struct{}, 8)
				for _, peer := range agreePeers {
					for _, port := range agreePorts {
						wg.Go(func() {
							sem <- struct{}{}
							defer func() { <-sem }()
							ok, detail := px.inboundALPN(netip.AddrPortFrom(agreeServerIP, port), svids[peer], h2)
							mu.Lock()
							e2e[key{peer, port}] = result{ok, detail}
							mu.Unlock()
						})
					}
				}
				wg.Wait()

				errs := &agreeErrors{t: t}
				allowed := 0
				for _, peer := range agreePeers {
					for _, port := range agreePorts {
						dst := netip.AddrPortFrom(agreeServerIP, port)
						want, why := agreeInboundModel(snap, w, peer, port)
						if want {
							allowed++
						}
						got, how := agreeSidecarInbound(cfg, meshTD, dst, peer)
						errs.check(got == want, "inbound %s → port %d: sidecar config %s (%s), model %s (%s)\n\tpolicies: %s",
							agreePeerName(peer), port, agreeVerdict(got), how, agreeVerdict(want), why, set)
						r := e2e[key{peer, port}]
						if strings.HasSuffix(r.detail, "over h2") {
							overH2++
						}
						errs.check(r.ok == want && !strings.HasPrefix(r.detail, "WRONG APP"), "inbound %s → port %d: real proxy %s (%s), model %s (%s)\n\tpolicies: %s",
							agreePeerName(peer), port, agreeVerdict(r.ok), r.detail, agreeVerdict(want), why, set)
					}
				}
				total += len(agreePeers) * len(agreePorts)
				totalAllowed += allowed
				t.Logf("the model allows %d of %d connections", allowed, len(agreePeers)*len(agreePorts))
				errs.done("verdicts (sidecar config and real proxy)")
			})
		}
	}
	t.Logf("%d inbound connections (%d allowed by the model, %d of them answered over h2), each decided by the sidecar's config and through the real proxy", total, totalAllowed, overH2)
	if h2 != (overH2 > 0) {
		t.Errorf("HTTP routing %v, yet %d connections were answered over h2", h2, overH2)
	}
}

// ---- egress ----

// agreeEgressIPs: the translator test's external addresses, and the mesh's
// own: the server Service's ClusterIP, a sidecar pod, the API server's
// ClusterIP (a Service outside the mesh) and a pod without sidecar.
var agreeEgressIPs = []string{"1.2.3.4", "203.0.113.5", "203.0.113.200", "198.18.100.7", "140.82.112.3", "198.18.9.9",
	"198.19.0.20", "198.18.1.11", "198.19.0.1", "198.18.1.13"}

var (
	// 15001 and 15020: ports of the sidecar's own guard chains, which
	// match loopback only.
	agreeEgressPorts = []uint16{22, 80, 443, 8080, 9000, 1234, 15001, 15020}
	agreeTLSNames    = []string{"", "api.example.com", "x.example.com", "a.b.example.com", "example.com", "bad.example.com",
		"x.bad.example.com", "docs.example.org", "x.github.com", "github.com", "evil.example.com", "other.org",
		"ext.demo.svc.cluster.local", "ext", "docs.shop.svc", "bad.shop", "docs", "byip.demo", "chain.demo.svc.cluster.local",
		"loop2.shop", "example.com.svc"}
	// No empty Host: an HTTP/1.1 request without one is answered 400
	// before any policy applies (sidecar/proxy routeHTTP), which the policy
	// model does not describe.
	agreeHTTPNames = []string{"evil.example.com", "evil.example.com:80", "api.example.com", "docs.example.org", "docs.example.org:8080",
		"a.internal.example", "a.internal.example:8080", "internal.example", "other.org", "x.bad.example.com",
		"ext", "Ext.Demo.svc.cluster.local.:8080", "docs.shop", "bad.shop.svc", "docs", "byip.demo.svc.cluster.local",
		"chain", "loop1.shop.svc.cluster.local", "example.com"}
)

// agreeExternalNames are ExternalName Services of the egress agreement
// mesh (the client is in namespace demo); agreeTLSNames and
// agreeHTTPNames call them by each kind of their names, and by names they
// do not have (another namespace's short name, a Service that points at an
// address).
var agreeExternalNames = []*mesh.Service{
	{Namespace: "demo", Name: "ext", Type: "ExternalName", ExternalName: "API.example.com."},
	{Namespace: "shop", Name: "docs", Type: "ExternalName", ExternalName: "docs.example.org"},
	{Namespace: "shop", Name: "bad", Type: "ExternalName", ExternalName: "x.bad.example.com"},
	{Namespace: "demo", Name: "byip", Type: "ExternalName", ExternalName: "198.18.100.7"},
	// Through another ExternalName Service: decided by where the chain ends.
	{Namespace: "demo", Name: "chain", Type: "ExternalName", ExternalName: "docs.shop.svc.cluster.local"},
	// A loop has no end: no names.
	{Namespace: "shop", Name: "loop1", Type: "ExternalName", ExternalName: "loop2.shop.svc.cluster.local"},
	{Namespace: "shop", Name: "loop2", Type: "ExternalName", ExternalName: "loop1.shop.svc.cluster.local."},
	// A Service whose <name>.<ns> is a public name, as a namespace "com"
	// makes possible: rules naming example.com keep deciding it.
	{Namespace: "com", Name: "example", Type: "ExternalName", ExternalName: "api.example.com"},
}

// agreeExternalName is the model of an ExternalName Service's names
// (README, "ExternalName Services"): for the client of namespace demo,
// <name>.<ns>.svc.cluster.local, <name>.<ns>.svc, <name>.<ns>, and <name>
// for a Service of demo, in any case, with a trailing dot or a port, are
// the Service ("<ns>/<name>") pointing at target — where the Service
// finally points, through the ExternalName Services it names by their
// <name>.<ns>.svc.cluster.local — unless a host of one of pols' rules
// covers the name: then it is a name like any other. A Service pointing
// at an IP address, or into a loop, has no such names.
func agreeExternalName(pols []*mesh.EgressPolicy, name string) (svc, target string, ok bool) {
	name = strings.ToLower(name)
	if h, port, err := net.SplitHostPort(name); err == nil && port != "" {
		name = h
	}
	name = strings.TrimSuffix(name, ".")
	for _, p := range pols {
		for _, r := range p.Rules {
			if slices.ContainsFunc(r.Hosts, func(h string) bool { return refHostMatches(h, name) }) {
				return "", "", false
			}
		}
	}
	for _, s := range agreeExternalNames {
		fq := s.Name + "." + s.Namespace
		if name != fq && name != fq+".svc" && name != fq+".svc.cluster.local" && (s.Namespace != "demo" || name != s.Name) {
			continue
		}
		end := s
		for range 8 {
			target = strings.TrimSuffix(strings.ToLower(end.ExternalName), ".")
			next := slices.IndexFunc(agreeExternalNames, func(n *mesh.Service) bool { return n.Name+"."+n.Namespace+".svc.cluster.local" == target })
			if next < 0 {
				break
			}
			end, target = agreeExternalNames[next], ""
		}
		if _, err := netip.ParseAddr(target); err == nil || target == "" {
			return "", "", false
		}
		return s.Namespace + "/" + s.Name, target, true
	}
	return "", "", false
}

// agreeTarget is c as the policy model decides it: by the name an
// ExternalName Service's name points at; any other name in lower case,
// without a trailing dot (as the sidecar reads names: sidecar/egress).
func agreeTarget(pols []*mesh.EgressPolicy, c conn) conn {
	if _, target, ok := agreeExternalName(pols, c.name); ok {
		c.name = target
		return c
	}
	host, port, err := net.SplitHostPort(c.name)
	if err != nil {
		host, port = c.name, ""
	}
	c.name = strings.TrimSuffix(strings.ToLower(host), ".")
	if port != "" {
		c.name += ":" + port
	}
	return c
}

// agreeEgressProbes enumerates IPs × ports × (TLS with each SNI, HTTP with
// each Host, opaque TCP).
func agreeEgressProbes() []conn {
	var out []conn
	for _, ip := range agreeEgressIPs {
		for _, port := range agreeEgressPorts {
			a := netip.MustParseAddr(ip)
			for _, n := range agreeTLSNames {
				out = append(out, conn{a, port, "tls", n})
			}
			for _, n := range agreeHTTPNames {
				out = append(out, conn{a, port, "http", n})
			}
			out = append(out, conn{a, port, "tcp", ""})
		}
	}
	return out
}

// agreeNotEgress: a Service's ClusterIP and port, and a sidecar endpoint's
// own port of a Service, are the mesh's (sidecar/xds README, "Outbound
// in-mesh": in-mesh or passthrough chains, no egress decision, no audit).
// Other ports of sidecar pods are egress (same section).
func agreeNotEgress(snap *mesh.Snapshot, dst netip.AddrPort) bool {
	if _, _, ok := snap.ServiceByAddr(dst); ok {
		return true
	}
	for _, svc := range snap.Services {
		for _, ep := range svc.Endpoints {
			if ep.Injected && ep.Address == dst.Addr() && slices.ContainsFunc(ep.Ports, func(p mesh.EndpointPort) bool { return p.Port == dst.Port() }) {
				return true
			}
		}
	}
	return false
}

const agreeNotEgressDecision = "not-egress"

// agreeEgressModel is `reference` (translate/egress_test.go: EgressPolicy's
// documented semantics, defaultAction included) over the policies selecting
// w, with the translator's documented base: the outbound policy, or deny by
// the rejected EgressPolicy of w's namespace.
func agreeEgressModel(snap *mesh.Snapshot, w *mesh.Workload, c conn) outcome {
	if agreeNotEgress(snap, netip.AddrPortFrom(c.ip, c.port)) {
		return outcome{decision: agreeNotEgressDecision}
	}
	def := outcome{decision: decisionAllow}
	if snap.Mesh.OutboundMode == v1alpha1.OutboundRegistryOnly {
		def.decision = decisionDeny
	}
	for _, r := range snap.Rejected {
		if r.Kind == v1alpha1.EgressPolicyKind && r.Namespace == w.Namespace {
			def = outcome{decisionDeny, r.Namespace + "/" + r.Name, "rejected"}
		}
	}
	pols := snap.PoliciesFor(w).Egress
	return agreeNameUnknown(pols, def, c, reference(pols, def, c))
}

// agreeNameUnknown is the rule for a connection whose name the sidecar
// cannot learn (README "Egress against a hostile app"; sidecar/egress
// NameUnknown), written from the policies: a connection has a name a rule
// can judge when it is TLS with an SNI, or HTTP with a Host at a port
// where a rule by host applies to HTTP. Any other connection could be
// going to any host. Unless d (its decision by reference) is a deny or the
// work of a rule by address (a CIDR containing its IP), it gets the
// strictest decision (deny, then audit) that reference gives the same
// destination under each name that a rule by host applying to this port
// names (a wildcard stands for a name under it), when that is stricter
// than d; of equally strict ones the first by policy, then rule index.
func agreeNameUnknown(pols []*mesh.EgressPolicy, base outcome, c conn, d outcome) outcome {
	if d.decision == decisionDeny || d.decision == agreeNotEgressDecision || c.proto == "tls" && c.name != "" {
		return d
	}
	type named struct {
		proto, host string
	}
	var names []named
	for _, p := range pols {
		for i, r := range p.Rules {
			if d.policy == p.Namespace+"/"+p.Name && d.rule == fmt.Sprint(i) && slices.ContainsFunc(r.CIDRs, func(pf netip.Prefix) bool { return pf.Contains(c.ip) }) {
				return d // a rule by address decided
			}
			var protos []string
			if len(r.Ports) == 0 {
				protos = []string{"tls", "http"}
			}
			for _, rp := range r.Ports {
				if rp.Number == c.port && rp.Protocol == v1alpha1.EgressTLS {
					protos = append(protos, "tls")
				}
				if rp.Number == c.port && rp.Protocol == v1alpha1.EgressHTTP {
					protos = append(protos, "http")
				}
			}
			for _, h := range r.Hosts {
				for _, proto := range protos {
					if name, ok := strings.CutPrefix(h, "*."); ok {
						h = "weft-unknown." + name
					}
					names = append(names, named{proto, h})
				}
			}
		}
	}
	if c.proto == "http" && slices.ContainsFunc(names, func(n named) bool { return n.proto == "http" }) {
		return d // routed by its Host
	}
	strict := map[string]int{decisionDeny: 3, decisionAudit: 2, decisionAllow: 1}
	best := d
	for _, n := range names {
		o := reference(pols, base, conn{c.ip, c.port, n.proto, n.host})
		switch so, sb := strict[o.decision], strict[best.decision]; {
		case so > sb && so > strict[d.decision]:
			best = o
		case so == sb && best != d && agreeRuleBefore(o, best):
			best = o
		}
	}
	return best
}

// agreeRuleBefore orders decisions by policy, then rule index.
func agreeRuleBefore(a, b outcome) bool {
	if a.policy != b.policy {
		return a.policy < b.policy
	}
	ia, ea := strconv.Atoi(a.rule)
	ib, eb := strconv.Atoi(b.rule)
	if ea == nil && eb == nil {
		return ia < ib
	}
	return ea == nil && eb != nil || (ea != nil) == (eb != nil) && a.rule < b.rule
}

// agreeEgressConn is what the proxy's listener filters learn from c.
func agreeEgressConn(c conn) egress.Conn {
	dst := netip.AddrPortFrom(c.ip, c.port)
	switch c.proto {
	case "tls":
		return egress.Conn{Dst: dst, Transport: "tls", SNI: c.name}
	case "http":
		return egress.Conn{Dst: dst, Transport: "raw_buffer", ALPN: []string{"http/1.1"}, Host: c.name}
	}
	return egress.Conn{Dst: dst, Transport: "raw_buffer"}
}

func agreeOutcome(d egress.Decision) outcome {
	if d.Action == egress.NotEgress {
		return outcome{decision: agreeNotEgressDecision}
	}
	return outcome{d.Action.String(), d.Policy, d.Rule}
}

// agreeShow prints an outcome (a type of translate/egress_test.go).
func agreeShow(o outcome) string {
	s := o.decision
	if o.policy != "" || o.rule != "" {
		s += " by " + o.policy + " rule " + o.rule
	}
	return s
}

type agreeEgressSet struct {
	name     string
	policies []*mesh.EgressPolicy
	rejected []mesh.Rejected
}

func (s agreeEgressSet) String() string {
	var parts []string
	for _, p := range s.policies {
		var rules []string
		for _, r := range p.Rules {
			var ports []string
			for _, pt := range r.Ports {
				ports = append(ports, fmt.Sprintf("%d/%s", pt.Number, pt.Protocol))
			}
			rules = append(rules, fmt.Sprintf("%s hosts %v cidrs %v ports %v", r.Action, r.Hosts, r.CIDRs, ports))
		}
		sel := "all"
		if p.Selector != nil {
			sel = p.Selector.String()
		}
		parts = append(parts, fmt.Sprintf("%s %s/%s (selector %s, sa %v, defaultAction %s) {%s}", p.Mode, p.Namespace, p.Name, sel, p.ServiceAccounts,
			cmp.Or(p.DefaultAction, "Deny"), strings.Join(rules, "; ")))
	}
	for _, r := range s.rejected {
		parts = append(parts, "rejected "+r.Kind+" "+r.Namespace+"/"+r.Name)
	}
	if len(parts) == 0 {
		return "no egress policies"
	}
	return strings.Join(parts, "; ")
}

func agreeEgressPort(n uint16, p v1alpha1.EgressProtocol) mesh.EgressPort {
	return mesh.EgressPort{Number: n, Protocol: p}
}

func agreeNamedEgressSets() []agreeEgressSet {
	golden := meshContents(v1alpha1.OutboundAllowAny).EgressPolicies
	pfx := netip.MustParsePrefix
	allowList := func(name string, mode v1alpha1.EgressMode, rules ...mesh.EgressRule) *mesh.EgressPolicy {
		return &mesh.EgressPolicy{Namespace: "demo", Name: name, Mode: mode, DefaultAction: v1alpha1.EgressDeny, Rules: rules}
	}
	tls443 := []mesh.EgressPort{agreeEgressPort(443, v1alpha1.EgressTLS)}
	http80 := []mesh.EgressPort{agreeEgressPort(80, v1alpha1.EgressHTTP)}
	return []agreeEgressSet{
		{name: "none"},
		{name: "golden", policies: golden},
		{name: "golden-default-allow", policies: withDefaults(golden, v1alpha1.EgressAllow)},
		{name: "golden-audit-default", policies: withDefaults(golden, v1alpha1.EgressAllow, v1alpha1.EgressDeny)},
		{name: "overlapping", policies: overlappingEgress()},
		{name: "overlapping-allow-list", policies: withDefaults(overlappingEgress(), v1alpha1.EgressDeny, v1alpha1.EgressAllow)},
		// Policies that do not select the client, with defaultAction Deny:
		// their defaults must not reach it.
		{name: "not-selecting", policies: append(withDefaults(golden, v1alpha1.EgressAllow),
			&mesh.EgressPolicy{Namespace: "demo", Name: "server-only", ServiceAccounts: []string{"server"}, Mode: v1alpha1.EgressEnforce,
				DefaultAction: v1alpha1.EgressDeny, Rules: []mesh.EgressRule{{Hosts: []string{"*.example.com"}, Action: v1alpha1.EgressDeny}}},
			// 0.0.0.0/1 and 128.0.0.0/1: all of IPv4 in two halves
			// (0.0.0.0/0 itself: the whole-family sets below).
			&mesh.EgressPolicy{Namespace: "demo", Name: "server-pods", Selector: agreeServerSel, Mode: v1alpha1.EgressEnforce,
				DefaultAction: v1alpha1.EgressDeny, Rules: []mesh.EgressRule{{CIDRs: []netip.Prefix{pfx("0.0.0.0/1"), pfx("128.0.0.0/1")}, Action: v1alpha1.EgressDeny}}},
			&mesh.EgressPolicy{Namespace: "legacy", Name: "elsewhere", Mode: v1alpha1.EgressEnforce,
				DefaultAction: v1alpha1.EgressDeny, Rules: []mesh.EgressRule{{CIDRs: []netip.Prefix{pfx("0.0.0.0/0")}, Action: v1alpha1.EgressDeny}}},
		)},
		{name: "cidr-over-the-mesh", policies: []*mesh.EgressPolicy{allowList("deny-cluster", v1alpha1.EgressEnforce,
			mesh.EgressRule{CIDRs: []netip.Prefix{pfx("198.18.0.0/15"), pfx("198.19.0.20/32")}, Action: v1alpha1.EgressDeny},
			mesh.EgressRule{Hosts: []string{"api.example.com"}, Ports: tls443, Action: v1alpha1.EgressAllow},
		)}},
		// Rules whose hosts cover names of ExternalName Services
		// (agreeExternalNames): those names are decided as sent, by the
		// rules, whatever Service has them.
		{name: "rules-over-externalname-names", policies: []*mesh.EgressPolicy{{Namespace: "demo", Name: "names", Mode: v1alpha1.EgressEnforce,
			DefaultAction: v1alpha1.EgressAllow, Rules: []mesh.EgressRule{
				{Hosts: []string{"example.com"}, Ports: tls443, Action: v1alpha1.EgressDeny},
				{Hosts: []string{"*.shop"}, Action: v1alpha1.EgressDeny},
				{Hosts: []string{"ext.demo.svc.cluster.local", "api.example.com"}, Ports: append(tls443, http80...), Action: v1alpha1.EgressAllow},
				{Hosts: []string{"*.example.com"}, Action: v1alpha1.EgressDeny},
			}}}},
		{name: "rejected", policies: golden,
			rejected: []mesh.Rejected{{Kind: v1alpha1.EgressPolicyKind, Namespace: "demo", Name: "broken", Reason: v1alpha1.ReasonInvalid}}},
		// A CIDR of a whole family is Envoy's "any IP" of that family:
		// beside a host rule without ports it once gave two chains with
		// the same match, which the sidecar NACKed.
		{name: "cidr-0.0.0.0/0-and-portless-host", policies: agreeLockdown(pfx("0.0.0.0/0"))},
		{name: "cidr-::/0-and-portless-host", policies: agreeLockdown(pfx("::/0"))},
		{name: "cidr-both-families-and-portless-host", policies: agreeLockdown(pfx("0.0.0.0/0"), pfx("::/0"))},
		{name: "cidr-::/0-and-portless-host-default-deny", policies: withDefaults(agreeLockdown(pfx("::/0")), v1alpha1.EgressDeny)},
		{name: "cidr-0.0.0.0/0-on-a-port-and-hosts", policies: []*mesh.EgressPolicy{{Namespace: "demo", Name: "tls-lockdown", Mode: v1alpha1.EgressEnforce,
			DefaultAction: v1alpha1.EgressAllow, Rules: []mesh.EgressRule{
				{Hosts: []string{"api.example.com", "*.github.com"}, Ports: tls443, Action: v1alpha1.EgressAllow},
				{CIDRs: []netip.Prefix{pfx("0.0.0.0/0")}, Ports: tls443, Action: v1alpha1.EgressDeny},
				{Hosts: []string{"docs.example.org"}, Action: v1alpha1.EgressAllow},
			}}}},
		{name: "cidr-0.0.0.0/0-audit", policies: append(agreeLockdown(pfx("0.0.0.0/0")), &mesh.EgressPolicy{Namespace: "demo", Name: "watch",
			Mode: v1alpha1.EgressAudit, DefaultAction: v1alpha1.EgressDeny, Rules: []mesh.EgressRule{{CIDRs: []netip.Prefix{pfx("0.0.0.0/0")}, Action: v1alpha1.EgressDeny}}})},
		// defaultAction: a policy without rules refuses all egress (not the
		// mesh); an Audit allow-list flags the rest; an Audit policy opens
		// nothing an Enforce allow-list refuses.
		{name: "deny-all", policies: []*mesh.EgressPolicy{allowList("deny-all", v1alpha1.EgressEnforce)}},
		{name: "audit-allow-list", policies: []*mesh.EgressPolicy{allowList("trial", v1alpha1.EgressAudit,
			mesh.EgressRule{Hosts: []string{"api.example.com"}, Ports: tls443, Action: v1alpha1.EgressAllow})}},
		{name: "enforce-and-audit-allow-lists", policies: []*mesh.EgressPolicy{
			allowList("enforced", v1alpha1.EgressEnforce, mesh.EgressRule{Hosts: []string{"api.example.com"}, Ports: tls443, Action: v1alpha1.EgressAllow}),
			allowList("trial", v1alpha1.EgressAudit,
				mesh.EgressRule{Hosts: []string{"*.github.com", "api.example.com"}, Ports: tls443, Action: v1alpha1.EgressAllow},
				mesh.EgressRule{Hosts: []string{"evil.example.com"}, Ports: http80, Action: v1alpha1.EgressDeny},
				mesh.EgressRule{CIDRs: []netip.Prefix{pfx("203.0.113.0/24")}, Action: v1alpha1.EgressAllow})}},
	}
}

// agreeLockdown: allow api.example.com, deny cidrs, no ports; the rest is
// left to the outbound policy (defaultAction Allow).
func agreeLockdown(cidrs ...netip.Prefix) []*mesh.EgressPolicy {
	return []*mesh.EgressPolicy{{Namespace: "demo", Name: "lockdown", Mode: v1alpha1.EgressEnforce, DefaultAction: v1alpha1.EgressAllow, Rules: []mesh.EgressRule{
		{Hosts: []string{"api.example.com"}, Action: v1alpha1.EgressAllow},
		{CIDRs: cidrs, Action: v1alpha1.EgressDeny},
	}}}
}

var (
	agreeHostPool = []string{"api.example.com", "x.example.com", "*.example.com", "bad.example.com", "*.bad.example.com",
		"docs.example.org", "*.github.com", "evil.example.com", "*.internal.example"}
	agreeCIDRPool = []string{"203.0.113.0/24", "203.0.113.128/25", "1.2.3.4/32", "198.18.100.0/24", "198.18.0.0/15", "140.82.112.0/20", "0.0.0.0/0", "::/0"}
	agreePortPool = []mesh.EgressPort{
		agreeEgressPort(443, v1alpha1.EgressTLS), agreeEgressPort(80, v1alpha1.EgressHTTP), agreeEgressPort(8080, v1alpha1.EgressHTTP),
		agreeEgressPort(22, v1alpha1.EgressTCP), agreeEgressPort(9000, v1alpha1.EgressTCP), agreeEgressPort(1234, v1alpha1.EgressTLS),
	}
)

// agreeRandomEgress is one to three EgressPolicies of demo (some not
// selecting the client), each with either defaultAction, and one to three
// rules the registry would accept (hosts and/or CIDRs, no hosts on TCP
// ports, no duplicates) or, now and then with Deny, none.
func agreeRandomEgress(rng *rand.Rand, name string) agreeEgressSet {
	set := agreeEgressSet{name: name}
	for i := range 1 + rng.IntN(3) {
		p := &mesh.EgressPolicy{Namespace: "demo", Name: fmt.Sprintf("e%d", i), Mode: v1alpha1.EgressEnforce, DefaultAction: v1alpha1.EgressAllow}
		if rng.IntN(3) == 0 {
			p.Mode = v1alpha1.EgressAudit
		}
		if rng.IntN(2) == 0 {
			p.DefaultAction = v1alpha1.EgressDeny
		}
		switch rng.IntN(6) {
		case 0:
			p.ServiceAccounts = []string{"client"}
		case 1:
			p.ServiceAccounts = []string{"server"}
		}
		nRules := 1 + rng.IntN(3)
		if p.DefaultAction == v1alpha1.EgressDeny && rng.IntN(8) == 0 {
			nRules = 0
		}
		seen := map[string]bool{}
		for range nRules {
			r := mesh.EgressRule{Action: v1alpha1.EgressAllow}
			if rng.IntN(2) == 0 {
				r.Action = v1alpha1.EgressDeny
			}
			switch rng.IntN(5) {
			case 0, 1:
				r.Hosts = agreePick(rng, agreeHostPool, 1+rng.IntN(2))
			case 2, 3:
				for _, c := range agreePick(rng, agreeCIDRPool, 1+rng.IntN(2)) {
					r.CIDRs = append(r.CIDRs, netip.MustParsePrefix(c))
				}
			default:
				r.Hosts = agreePick(rng, agreeHostPool, 1)
				r.CIDRs = []netip.Prefix{netip.MustParsePrefix(agreeCIDRPool[rng.IntN(len(agreeCIDRPool))])}
			}
			if rng.IntN(4) != 0 {
				for _, pt := range agreePick(rng, agreePortPool, 1+rng.IntN(2)) {
					if len(r.Hosts) == 0 || pt.Protocol != v1alpha1.EgressTCP {
						r.Ports = append(r.Ports, pt)
					}
				}
				if len(r.Ports) == 0 {
					r.Ports = []mesh.EgressPort{agreePortPool[0]}
				}
			}
			if k := fmt.Sprint(r); !seen[k] {
				seen[k] = true
				p.Rules = append(p.Rules, r)
			}
		}
		set.policies = append(set.policies, p)
	}
	return set
}

// ---- egress: the real proxy ----

// agreeClientHello is a TLS ClientHello for sni (none when empty), as
// bytes on the wire.
func agreeClientHello(t *testing.T, sni string) []byte {
	t.Helper()
	return wefttest.ClientHello(t, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
}

// agreeSink is "the internet": a dial of the proxy reaches it; it answers
// "UPSTREAM <where the proxy dialled>".
func agreeSink(t *testing.T) func(ctx context.Context, network, addr string) (net.Conn, error) {
	t.Helper()
	sink := wefttest.ServeTCP(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		line := make([]byte, 0, 64)
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil || b[0] == '\n' {
				break
			}
			line = append(line, b[0])
		}
		fmt.Fprintf(c, "UPSTREAM %s\n", line)
		c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, sink.String())
		if err != nil {
			return nil, err
		}
		if _, err := fmt.Fprintf(c, "%s\n", addr); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// agreeAudits routes the proxy's audit events, by original destination, to
// the probe waiting for them: probes to one destination run one at a time
// (the record's protocol and names depend on whether the proxy had to
// sniff, so they cannot tell probes apart).
type agreeAudits struct {
	mu      sync.Mutex
	waiting map[netip.AddrPort]chan audit.Event
}

func (a *agreeAudits) record(e audit.Event) {
	a.mu.Lock()
	ch := a.waiting[netip.AddrPortFrom(e.DstIP, e.DstPort)]
	a.mu.Unlock()
	if ch != nil {
		ch <- e
	}
}

func (a *agreeAudits) expect(dst netip.AddrPort) (chan audit.Event, func()) {
	ch := make(chan audit.Event, 4)
	a.mu.Lock()
	a.waiting[dst] = ch
	a.mu.Unlock()
	return ch, func() {
		a.mu.Lock()
		delete(a.waiting, dst)
		a.mu.Unlock()
	}
}

// egress sends probe c through the proxy's outbound listener and returns
// what happened: whether it reached the upstream it was going to, and the
// decision of its audit record.
func (a *agreeProxy) egress(audits *agreeAudits, hellos map[string][]byte, c conn) (forwarded bool, detail string, rec audit.Event, recOK bool) {
	dst := netip.AddrPortFrom(c.ip, c.port)
	var payload []byte
	switch c.proto {
	case "tls":
		payload = hellos[c.name]
	case "http":
		payload = []byte("GET / HTTP/1.1\r\nHost: " + c.name + "\r\nUser-Agent: weft-agreement\r\n\r\n")
	default:
		payload = []byte("\x00weft-agreement opaque bytes\n")
	}
	ch, stop := audits.expect(dst)
	defer stop()
	tc, err := a.dial(a.p.OutboundAddr(), dst)
	if err != nil {
		return false, "dial: " + err.Error(), audit.Event{}, false
	}
	defer func() {
		tc.Close()
		a.nat.m.Delete(tc.LocalAddr().String())
	}()
	if _, err := tc.Write(payload); err != nil {
		detail = "write: " + err.Error()
	}
	got, _ := io.ReadAll(tc)
	tc.Close()
	switch s := string(got); {
	case s == "UPSTREAM "+dst.String()+"\n":
		forwarded, detail = true, "forwarded to "+dst.String()
	case strings.HasPrefix(s, "UPSTREAM "):
		forwarded, detail = true, "WRONG UPSTREAM: "+strings.TrimSpace(s)
	case strings.HasPrefix(s, "HTTP/1.1 "):
		detail = "answered " + strings.SplitN(s, "\r\n", 2)[0]
	case detail == "":
		detail = fmt.Sprintf("closed after %d bytes", len(got))
	}
	select {
	case e := <-ch:
		return forwarded, detail, e, true
	case <-time.After(10 * time.Second):
		return forwarded, detail, audit.Event{}, false
	}
}

// agreeE2EEvery: every this many probes of a configuration (rotating with
// the configuration) also go through the real proxy.
const agreeE2EEvery = 5

// TestSidecarAgreesOnEgress: for named and seeded random EgressPolicy sets
// under ALLOW_ANY and REGISTRY_ONLY, every probe (external and in-mesh IPs
// × ports × TLS SNIs, HTTP Hosts and opaque TCP) gets from the real sidecar
// — the translator's resources via ADS and xds.Build, decided by
// sidecar/egress.DecideConn, and a rotating sample through the real proxy —
// the decision, policy and rule of the EgressPolicy model.
func TestSidecarAgreesOnEgress(t *testing.T) {
	m := newAgreeMesh(t)
	audits := &agreeAudits{waiting: map[netip.AddrPort]chan audit.Event{}}
	px := startAgreeProxy(t, wefttest.SVID(t, m.ca, workloadID("demo", "client"), 0), m.ca.Bundle(), agreeSink(t), audits.record)
	hellos := map[string][]byte{}
	for _, n := range agreeTLSNames {
		hellos[n] = agreeClientHello(t, n)
	}
	probes := agreeEgressProbes()

	sets := agreeNamedEgressSets()
	rng := rand.New(rand.NewPCG(*agreeSeed, 2))
	for i := range max(*agreeRandom/2, 1) {
		sets = append(sets, agreeRandomEgress(rng, fmt.Sprintf("random-%02d", i)))
	}
	t.Logf("seed %d (-agreement.seed), %d policy sets × 2 outbound modes × %d probes", *agreeSeed, len(sets), len(probes))
	total, e2eTotal, k := 0, 0, 0
	for _, set := range sets {
		for _, mode := range []v1alpha1.OutboundMode{v1alpha1.OutboundAllowAny, v1alpha1.OutboundRegistryOnly} {
			k++
			t.Run(set.name+"/"+string(mode), func(t *testing.T) {
				c := meshContents(mode)
				c.Services = append(slices.Clone(c.Services), agreeExternalNames...)
				c.EgressPolicies = set.policies
				c.Rejected = set.rejected
				snap, cfgs, err := m.push(c)
				if err != nil {
					t.Fatalf("policies %s: %v", set, err)
				}
				cfg := cfgs[agreeClientNode]
				w, _ := snap.Workload("demo", "client-7d9f")
				px.cfg.Store(cfg)
				errs := &agreeErrors{t: t}
				type e2eCase struct {
					probe     conn
					want      outcome
					forwarded bool
					detail    string
					rec       audit.Event
					recOK     bool
				}
				var cases []*e2eCase
				byDecision := map[string]int{}
				for i, p := range probes {
					want := agreeEgressModel(snap, w, agreeTarget(snap.PoliciesFor(w).Egress, p))
					byDecision[want.decision]++
					d := egress.DecideConn(cfg, agreeEgressConn(p))
					got := agreeOutcome(d)
					errs.check(got == want, "egress %v: sidecar config %s (chain %s, route %s: %s), model %s\n\tpolicies: %s",
						p, agreeShow(got), d.Chain, d.Route, d.Reason, agreeShow(want), set)
					if (i+k)%agreeE2EEvery == 0 && want.decision != agreeNotEgressDecision {
						cases = append(cases, &e2eCase{probe: p, want: want})
					}
				}
				byDst := map[netip.AddrPort][]*e2eCase{}
				for _, c := range cases {
					dst := netip.AddrPortFrom(c.probe.ip, c.probe.port)
					byDst[dst] = append(byDst[dst], c)
				}
				var wg sync.WaitGroup
				sem := make(chan struct{}, 16)
				for _, group := range byDst {
					wg.Go(func() {
						sem <- struct{}{}
						defer func() { <-sem }()
						for _, c := range group {
							c.forwarded, c.detail, c.rec, c.recOK = px.egress(audits, hellos, c.probe)
						}
					})
				}
				wg.Wait()
				for _, c := range cases {
					wantFwd := c.want.decision != decisionDeny
					errs.check(c.forwarded == wantFwd && !strings.HasPrefix(c.detail, "WRONG"), "egress %v: real proxy %s, model %s\n\tpolicies: %s",
						c.probe, c.detail, agreeShow(c.want), set)
					rec := outcome{c.rec.Decision, c.rec.Policy, c.rec.Rule}
					errs.check(c.recOK && rec == c.want, "egress %v: real proxy's audit record %s (recorded: %v), model %s\n\tpolicies: %s",
						c.probe, agreeShow(rec), c.recOK, agreeShow(c.want), set)
					// Through an ExternalName Service's name, the record
					// names the Service and, as the destination, the name
					// it points at: TLS by its SNI, HTTP where its Host is
					// judged (an HTTP chain; elsewhere the name is unknown).
					svc, target, aliased := agreeExternalName(snap.PoliciesFor(w).Egress, c.probe.name)
					if !aliased || c.probe.proto == "http" && !strings.Contains(c.rec.Chain, "|http|") {
						svc, target = "", egress.HostName(c.probe.name)
					}
					errs.check(!c.recOK || c.rec.Service == svc && c.rec.DstHost == target,
						"egress %v: real proxy's audit record names service %q host %q, want %q %q", c.probe, c.rec.Service, c.rec.DstHost, svc, target)
				}
				total += len(probes)
				e2eTotal += len(cases)
				t.Logf("the model says %v; %d probes also through the real proxy", byDecision, len(cases))
				errs.done("checks")
			})
		}
	}
	t.Logf("%d egress decisions compared with the model, %d of them also through the real proxy", total, e2eTotal)
}

// TestSidecarAgreementKnownGaps holds the cases where the translator's
// output and the sidecar disagree with the model today. It is skipped
// unless WEFT_AGREEMENT_KNOWN_GAPS=1, and then fails until they are fixed;
// each case says what happens. (Fixed gaps moved to the tests above: a
// source with several fields, RBAC and_ids, to agreeNamedSets and the
// multi-field random sets of TestSidecarAgreesOnInbound; a whole-family
// CIDR beside a host rule without ports to agreeNamedEgressSets.)
func TestSidecarAgreementKnownGaps(t *testing.T) {
	if os.Getenv(agreeKnownGapsEnv) == "" {
		t.Skipf("known gaps between the translator, the sidecar and the model; %s=1 runs them: "+
			"namespaces [ns] match any ID under spiffe://td/ns/<ns>/sa/ in RBAC, also IDs that are not /ns/<ns>/sa/<sa> (the model: only those)", agreeKnownGapsEnv)
	}
	m := newAgreeMesh(t)
	nonWorkload := spiffeid.RequireFromPath(meshTD, "/ns/demo/sa/client/x")
	peers := append(slices.Clone(agreePeers), nonWorkload)
	inbound := func(t *testing.T, set agreeAuthzSet) {
		for _, mode := range []v1alpha1.MTLSMode{v1alpha1.MTLSStrict, v1alpha1.MTLSPermissive} {
			snap, cfgs, err := m.push(agreeInboundContents(set, mode))
			if err != nil {
				t.Errorf("%s, policies %s: %v", mode, set, err)
				continue
			}
			w, _ := snap.Workload("demo", "server-v1-5b7c")
			errs := &agreeErrors{t: t}
			for _, peer := range peers {
				for _, port := range agreePorts {
					want, why := agreeInboundModel(snap, w, peer, port)
					got, how := agreeSidecarInbound(cfgs[agreeServerNode], meshTD, netip.AddrPortFrom(agreeServerIP, port), peer)
					errs.check(got == want, "%s: inbound %s → port %d: sidecar config %s (%s), model %s (%s)\n\tpolicies: %s",
						mode, agreePeerName(peer), port, agreeVerdict(got), how, agreeVerdict(want), why, set)
				}
			}
			errs.done("verdicts")
		}
	}
	t.Run("namespace-source-non-workload-id", func(t *testing.T) {
		inbound(t, agreeAuthzSet{name: "ns", policies: []*mesh.AuthorizationPolicy{agreeAP("ns", v1alpha1.ActionAllow,
			mesh.AuthorizationRule{From: []mesh.Source{{Namespaces: []string{"demo"}}}})}})
	})
}

// TestServiceWithoutSidecarEndpoints: a Service of an injected namespace
// that has no sidecar endpoint yet (created before its pods, as `kubectl
// apply` of a Service and its Deployment does in a running mesh) gives
// every sidecar a cluster the real sidecar accepts (no NACK) and that
// trusts no workload: its one SPIFFE ID is one weft's CA never signs, so
// an endpoint EDS delivers before the cluster names its identity is
// refused. With a sidecar endpoint, the cluster names that endpoint's
// identity instead.
func TestServiceWithoutSidecarEndpoints(t *testing.T) {
	m := newAgreeMesh(t)
	c := meshContents(v1alpha1.OutboundAllowAny)
	svc := &mesh.Service{Namespace: "demo", Name: "fresh", Type: "ClusterIP", ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.77")},
		Ports: []mesh.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: "TCP"}}}
	c.Services = append(slices.Clone(c.Services), svc)
	_, cfgs, err := m.push(c)
	if err != nil {
		t.Fatalf("a Service without sidecar endpoints: %v", err)
	}
	none := spiffeid.RequireFromSegments(workloadID("demo", "client").TrustDomain(), "weft", "no-sidecar-endpoints")
	peers := func(cfg *model.Config) []spiffeid.ID {
		cl := cfg.Clusters["outbound|80|fresh.demo"]
		if cl == nil || cl.UpstreamTLS == nil {
			t.Fatalf("cluster outbound|80|fresh.demo: %+v", cl)
		}
		return cl.UpstreamTLS.SANs
	}
	if got := peers(cfgs[agreeClientNode]); !slices.Equal(got, []spiffeid.ID{none}) {
		t.Fatalf("the cluster of a Service without sidecar endpoints accepts %v, want only %s", got, none)
	}
	if strings.HasPrefix(none.Path(), "/ns/") {
		t.Fatalf("%s has the form of an ID the CA signs", none)
	}
	// Its first sidecar endpoint: the cluster names that identity.
	ep := mesh.Endpoint{Address: netip.MustParseAddr("198.18.1.77"), Ports: []mesh.EndpointPort{{Name: "http", Port: 8080, Protocol: "TCP"}},
		Ready: true, Serving: true, Injected: true, Identity: workloadID("demo", "server")}
	fresh := *svc
	fresh.Endpoints = []mesh.Endpoint{ep}
	c.Services[len(c.Services)-1] = &fresh
	if _, cfgs, err = m.push(c); err != nil {
		t.Fatal(err)
	}
	if got := peers(cfgs[agreeClientNode]); !slices.Equal(got, []spiffeid.ID{workloadID("demo", "server")}) {
		t.Fatalf("with a sidecar endpoint the cluster accepts %v, want %s", got, workloadID("demo", "server"))
	}
}
