package translate

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/controlplane/xds"
	"github.com/weftmesh/weft/internal/testutil/golden"
)

var meshTD = spiffeid.RequireTrustDomainFromString("cluster.local")

func workloadID(ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(meshTD, "ns", ns, "sa", sa)
}

// testBundle stands for the PEM of weft's roots; the translator copies it.
// testBundle is a real root (testdata/root.pem, a weft CA root valid from
// 1970 to 9999: rootfixture_test.go) so the golden secrets are what a
// sidecar can parse.
var testBundle = mustRead("testdata/root.pem")

func mustRead(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// ---- the golden mesh ----

func pod(ns, name, sa, ip string, injected bool, lbls map[string]string) *mesh.Workload {
	return &mesh.Workload{
		Namespace: ns, Name: name, UID: "uid-" + name, IPs: []netip.Addr{netip.MustParseAddr(ip)},
		Labels: lbls, ServiceAccount: sa, Identity: workloadID(ns, sa), Injected: injected, NodeName: "node-1",
	}
}

// endpointOf is w as an endpoint of a service port named portName.
func endpointOf(w *mesh.Workload, portName string, port uint16, ready, terminating bool) mesh.Endpoint {
	k := w.Key()
	return mesh.Endpoint{
		Address: w.IPs[0], Ports: []mesh.EndpointPort{{Name: portName, Port: port, Protocol: "TCP"}},
		Ready: ready, Serving: ready || terminating, Terminating: terminating, NodeName: w.NodeName,
		Pod: &k, Identity: w.Identity, Injected: w.Injected,
	}
}

func identities(eps []mesh.Endpoint) []spiffeid.ID {
	var ids []spiffeid.ID
	for _, e := range eps {
		if !e.Identity.IsZero() && !slices.Contains(ids, e.Identity) {
			ids = append(ids, e.Identity)
		}
	}
	slices.SortFunc(ids, func(a, b spiffeid.ID) int { return strings.Compare(a.String(), b.String()) })
	return ids
}

// meshContents is the golden mesh: namespace demo (client; server v1, v2,
// a terminating v1 and a v3 pod without sidecar behind Service server;
// STRICT), namespace legacy (PERMISSIVE by MTLSPolicy), default (no
// injection, the API server's Service), authorization and egress policies.
func meshContents(outbound v1alpha1.OutboundMode) mesh.Contents {
	client := pod("demo", "client-7d9f", "client", "198.18.1.10", true, map[string]string{"app": "client"})
	v1 := pod("demo", "server-v1-5b7c", "server", "198.18.1.11", true, map[string]string{"app": "server", "version": "v1"})
	v2 := pod("demo", "server-v2-8e2a", "server", "198.18.1.12", true, map[string]string{"app": "server", "version": "v2"})
	v3 := pod("demo", "server-v3-nosidecar", "server", "198.18.1.13", false, map[string]string{"app": "server", "version": "v3"})
	old := pod("demo", "server-v1-old", "server", "198.18.1.14", true, map[string]string{"app": "server", "version": "v1"})
	legacy := pod("legacy", "legacy-app-0", "legacy", "198.18.2.20", true, map[string]string{"app": "legacy"})

	serverEPs := []mesh.Endpoint{
		endpointOf(v1, "http", 8080, true, false),
		endpointOf(v2, "http", 8080, true, false),
		endpointOf(v3, "http", 8080, true, false),
		endpointOf(old, "http", 8080, false, true),
	}
	legacyEPs := []mesh.Endpoint{endpointOf(legacy, "tcp-legacy", 9090, true, false)}
	apiEP := mesh.Endpoint{Address: netip.MustParseAddr("198.18.250.2"), Ports: []mesh.EndpointPort{{Name: "https", Port: 6443, Protocol: "TCP"}}, Ready: true, Serving: true}

	return mesh.Contents{
		Mesh: mesh.MeshConfig{TrustDomain: meshTD, MTLSMode: v1alpha1.MTLSStrict, OutboundMode: outbound, FromObject: true},
		Namespaces: []mesh.Namespace{
			{Name: "default"},
			{Name: "demo", Injection: true, Labels: map[string]string{"weft.dev/inject": "enabled"}},
			{Name: "legacy", Injection: true, Labels: map[string]string{"weft.dev/inject": "enabled"}},
		},
		ServiceAccounts: []mesh.ServiceAccount{
			{Namespace: "demo", Name: "client", ID: workloadID("demo", "client")},
			{Namespace: "demo", Name: "server", ID: workloadID("demo", "server")},
			{Namespace: "legacy", Name: "legacy", ID: workloadID("legacy", "legacy")},
		},
		Services: []*mesh.Service{
			{
				Namespace: "demo", Name: "server", Type: "ClusterIP", ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.20")},
				Selector:  map[string]string{"app": "server"},
				Ports:     []mesh.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: "TCP", AppProtocol: mesh.AppProtocolHTTP}},
				Endpoints: serverEPs, Identities: identities(serverEPs),
			},
			{
				Namespace: "legacy", Name: "legacy", Type: "ClusterIP", ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.30")},
				Selector:  map[string]string{"app": "legacy"},
				Ports:     []mesh.ServicePort{{Name: "tcp-legacy", Port: 9090, TargetPortName: "legacy", Protocol: "TCP", AppProtocol: mesh.AppProtocolTCP}},
				Endpoints: legacyEPs, Identities: identities(legacyEPs),
			},
			{
				Namespace: "default", Name: "kubernetes", Type: "ClusterIP", ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.1")},
				Ports:     []mesh.ServicePort{{Name: "https", Port: 443, TargetPort: 6443, Protocol: "TCP"}},
				Endpoints: []mesh.Endpoint{apiEP},
			},
		},
		Workloads: []*mesh.Workload{client, v1, v2, v3, old, legacy},
		MTLSPolicies: []*mesh.MTLSPolicy{
			{Namespace: "legacy", Name: "permissive", Mode: v1alpha1.MTLSPermissive},
		},
		AuthorizationPolicies: []*mesh.AuthorizationPolicy{
			{
				Namespace: "demo", Name: "server-allow-client", Selector: labels.SelectorFromSet(labels.Set{"app": "server"}),
				Action: v1alpha1.ActionAllow,
				Rules: []mesh.AuthorizationRule{{
					From: []mesh.Source{{ServiceAccounts: []mesh.Key{{Namespace: "demo", Name: "client"}}}},
					To:   []mesh.Destination{{Ports: []uint16{8080}}},
				}},
			},
			{
				Namespace: "demo", Name: "server-deny-legacy", Selector: labels.SelectorFromSet(labels.Set{"app": "server"}),
				Action: v1alpha1.ActionDeny,
				Rules:  []mesh.AuthorizationRule{{From: []mesh.Source{{Namespaces: []string{"legacy"}}}}},
			},
		},
		EgressPolicies: []*mesh.EgressPolicy{
			{
				Namespace: "demo", Name: "client-egress", ServiceAccounts: []string{"client"}, Mode: v1alpha1.EgressEnforce,
				DefaultAction: v1alpha1.EgressDeny, // an allow-list: what no rule allows is refused
				Rules: []mesh.EgressRule{
					{Hosts: []string{"api.example.com"}, Ports: []mesh.EgressPort{{Number: 443, Protocol: v1alpha1.EgressTLS}}, Action: v1alpha1.EgressAllow},
					{Hosts: []string{"*.github.com"}, Ports: []mesh.EgressPort{{Number: 443, Protocol: v1alpha1.EgressTLS}}, Action: v1alpha1.EgressAllow},
					{Hosts: []string{"evil.example.com"}, Ports: []mesh.EgressPort{{Number: 80, Protocol: v1alpha1.EgressHTTP}}, Action: v1alpha1.EgressDeny},
				},
			},
			{
				Namespace: "demo", Name: "lab-audit", ServiceAccounts: []string{"client"}, Mode: v1alpha1.EgressAudit,
				DefaultAction: v1alpha1.EgressAllow, // a block-list
				Rules: []mesh.EgressRule{
					{CIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.100.0/24")}, Ports: []mesh.EgressPort{{Number: 9000, Protocol: v1alpha1.EgressTCP}}, Action: v1alpha1.EgressDeny},
				},
			},
		},
	}
}

func translatorFor(snap *mesh.Snapshot) *Generator {
	return &Generator{
		Snapshot: func() *mesh.Snapshot { return snap },
		Bundle:   func() []byte { return []byte(testBundle) },
	}
}

func generate(t testing.TB, snap *mesh.Snapshot, nodeID string) xds.Resources {
	t.Helper()
	return generateWith(t, translatorFor(snap), snap, nodeID)
}

// generateHTTP is generate with HTTP routing on (GAMMA routes, HTTP RBAC).
func generateHTTP(t testing.TB, snap *mesh.Snapshot, nodeID string) xds.Resources {
	t.Helper()
	gen := translatorFor(snap)
	gen.HTTPRouting = true
	return generateWith(t, gen, snap, nodeID)
}

// generateWith is generate with a Generator of the test's own (e.g. with
// HTTPRouting).
func generateWith(t testing.TB, gen *Generator, snap *mesh.Snapshot, nodeID string) xds.Resources {
	t.Helper()
	name, ns, err := xds.ParseNodeID(nodeID)
	if err != nil {
		t.Fatal(err)
	}
	w, ok := snap.Workload(ns, name)
	if !ok {
		t.Fatalf("no workload %s", nodeID)
	}
	res, err := gen.Generate(xds.Node{Name: name, Namespace: ns, ID: w.Identity})
	if err != nil {
		t.Fatalf("Generate(%s): %v", nodeID, err)
	}
	checkResources(t, res)
	return res
}

// ---- validation every generated set must pass ----

type validatable interface{ ValidateAll() error }

// checkResources asserts that every resource and every message packed in
// its Any fields passes ValidateAll, that the snapshot is Consistent, and
// that no listener has two filter chains Envoy would call identical.
func checkResources(t testing.TB, res xds.Resources) {
	t.Helper()
	for typ, items := range res {
		for _, r := range items {
			if err := validateDeep(r); err != nil {
				t.Errorf("%s %q: %v", typ, cachev3.GetResourceName(r), err)
			}
			if l, ok := r.(*listenerv3.Listener); ok {
				if err := checkChainMatches(l); err != nil {
					t.Error(err)
				}
			}
		}
	}
	snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource(res))
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		t.Errorf("snapshot not consistent: %v", err)
	}
}

// validateDeep runs ValidateAll on m and on everything packed in Any
// fields below it, which m's own ValidateAll does not look into.
func validateDeep(m proto.Message) error {
	if v, ok := m.(validatable); ok {
		if err := v.ValidateAll(); err != nil {
			return err
		}
	}
	var err error
	var walk func(protoreflect.Message)
	walk = func(pm protoreflect.Message) {
		if a, ok := pm.Interface().(*anypb.Any); ok {
			inner, uerr := a.UnmarshalNew()
			if uerr != nil {
				err = uerr
				return
			}
			if v, ok := inner.(validatable); ok {
				if verr := v.ValidateAll(); verr != nil {
					err = verr
					return
				}
			}
			walk(inner.ProtoReflect())
			return
		}
		pm.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := range v.List().Len() {
					walk(v.List().Get(i).Message())
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool { walk(mv.Message()); return true })
			case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
				walk(v.Message())
			}
			return err == nil
		})
	}
	walk(m.ProtoReflect())
	return err
}

// checkChainMatches fails when two filter chains share a leaf of Envoy's
// match tree (Envoy rejects such a listener, the sidecar NACKs it), or a
// chain sets server_names without transport_protocol "tls". Prefixes are
// compared as Envoy reads them: masked, and empty prefix_ranges as
// 0.0.0.0/0 and ::/0 (so an empty range and a rule's 0.0.0.0/0 collide).
func checkChainMatches(l *listenerv3.Listener) error {
	seen := map[string]string{}
	for _, c := range l.FilterChains {
		m := c.GetFilterChainMatch()
		if len(m.GetServerNames()) > 0 && m.GetTransportProtocol() != "tls" {
			return fmt.Errorf("listener %s chain %s: server_names without transport_protocol tls", l.Name, c.Name)
		}
		ranges := []string{"0.0.0.0/0", "::/0"}
		if len(m.GetPrefixRanges()) > 0 {
			ranges = nil
			for _, r := range m.GetPrefixRanges() {
				ip, err := netip.ParseAddr(r.GetAddressPrefix())
				if err != nil {
					return fmt.Errorf("listener %s chain %s: prefix %q: %v", l.Name, c.Name, r.GetAddressPrefix(), err)
				}
				p, err := ip.Unmap().Prefix(int(r.GetPrefixLen().GetValue()))
				if err != nil {
					return fmt.Errorf("listener %s chain %s: prefix %s/%d: %v", l.Name, c.Name, ip, r.GetPrefixLen().GetValue(), err)
				}
				ranges = append(ranges, p.String())
			}
		}
		names := []string{""}
		if len(m.GetServerNames()) > 0 {
			names = m.GetServerNames()
		}
		alpns := []string{""}
		if len(m.GetApplicationProtocols()) > 0 {
			alpns = m.GetApplicationProtocols()
		}
		for _, r := range ranges {
			for _, n := range names {
				for _, a := range alpns {
					k := strings.Join([]string{strconv.Itoa(int(m.GetDestinationPort().GetValue())), r, n, m.GetTransportProtocol(), a}, " ")
					if other, dup := seen[k]; dup {
						return fmt.Errorf("listener %s: chains %s and %s both match %q", l.Name, other, c.Name, k)
					}
					seen[k] = c.Name
				}
			}
		}
	}
	return nil
}

// ---- golden files ----

var goldenFiles = map[resource.Type]string{
	resource.ListenerType: "listeners.yaml",
	resource.ClusterType:  "clusters.yaml",
	resource.EndpointType: "endpoints.yaml",
	resource.RouteType:    "routes.yaml",
	resource.SecretType:   "secrets.yaml",
}

// toYAML renders resources as a YAML list: protojson, then YAML with
// sorted keys.
func toYAML(t testing.TB, items []types.Resource) []byte {
	t.Helper()
	list := []any{}
	for _, r := range items {
		b, err := protojson.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		list = append(list, v)
	}
	out, err := yaml.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// withHTTPAuthz adds to c policies of demo/server with HTTP fields.
func withHTTPAuthz(c mesh.Contents) mesh.Contents {
	server := labels.SelectorFromSet(labels.Set{"app": "server"})
	client := []mesh.Source{{ServiceAccounts: []mesh.Key{{Namespace: "demo", Name: "client"}}}}
	c.AuthorizationPolicies = append(slices.Clone(c.AuthorizationPolicies),
		&mesh.AuthorizationPolicy{Namespace: "demo", Name: "server-read", Selector: server, Action: v1alpha1.ActionAllow,
			Rules: []mesh.AuthorizationRule{{
				From: client,
				To: []mesh.Destination{
					{Ports: []uint16{8080}, Methods: []string{"GET", "HEAD"}, Paths: []mesh.PathMatch{{Value: "/api/", Prefix: true}, {Value: "/healthz"}}},
					{Methods: []string{"POST"}, Paths: []mesh.PathMatch{{Value: "/grpc.health.v1.Health/Check"}}},
				},
			}, {
				To: []mesh.Destination{{Paths: []mesh.PathMatch{{Prefix: true}}}, {Ports: []uint16{8080, 9090}}},
			}}},
		&mesh.AuthorizationPolicy{Namespace: "demo", Name: "server-no-admin", Selector: server, Action: v1alpha1.ActionDeny,
			Rules: []mesh.AuthorizationRule{{To: []mesh.Destination{{Ports: []uint16{8080}, Paths: []mesh.PathMatch{{Value: "/admin/", Prefix: true}}}}}}},
		&mesh.AuthorizationPolicy{Namespace: "demo", Name: "server-no-delete", Selector: server, Action: v1alpha1.ActionDeny,
			Rules: []mesh.AuthorizationRule{{From: []mesh.Source{{Namespaces: []string{"legacy"}}}, To: []mesh.Destination{{Methods: []string{"DELETE"}}}}}},
	)
	return c
}

func TestTranslateGolden(t *testing.T) {
	withRejected := func(c mesh.Contents, r ...mesh.Rejected) mesh.Contents {
		c.Rejected = r
		return c
	}
	withDefaults := func(c mesh.Contents, defs ...v1alpha1.EgressAction) mesh.Contents {
		c.EgressPolicies = withDefaults(c.EgressPolicies, defs...)
		return c
	}
	cases := []struct {
		name, node string
		contents   mesh.Contents
		http       bool // Generator.HTTPRouting
	}{
		{"client", "client-7d9f.demo", meshContents(v1alpha1.OutboundAllowAny), false},
		{"client-registry-only", "client-7d9f.demo", meshContents(v1alpha1.OutboundRegistryOnly), false},
		// client-egress with defaultAction Allow, lab-audit (Audit mode)
		// with Deny: what no rule matches goes out, flagged by lab-audit's
		// default.
		{"client-audit-default", "client-7d9f.demo", withDefaults(meshContents(v1alpha1.OutboundAllowAny), v1alpha1.EgressAllow, v1alpha1.EgressDeny), false},
		{"server-v1", "server-v1-5b7c.demo", meshContents(v1alpha1.OutboundAllowAny), false},
		{"legacy", "legacy-app-0.legacy", meshContents(v1alpha1.OutboundAllowAny), false},
		// weft.dev/inbound-loopback-ports: "8080,9091": both to 127.0.0.1,
		// 9091 with chains of its own though no Service names it.
		{"server-v1-loopback", "server-v1-5b7c.demo", withLoopbackPorts(meshContents(v1alpha1.OutboundAllowAny), "server-v1-5b7c", 8080, 9091), false},
		{"server-v1-rejected-policy", "server-v1-5b7c.demo", withRejected(meshContents(v1alpha1.OutboundAllowAny),
			mesh.Rejected{Kind: v1alpha1.AuthorizationPolicyKind, Namespace: "demo", Name: "broken", Generation: 2,
				Reason: v1alpha1.ReasonInvalid, Message: `spec.rules[0].from[0].principals[0] "spiffe://other.domain/x" is not in the mesh's trust domain "cluster.local"`}), false},
		// HTTPRouting: demo/server's port "http" is routed request by
		// request (docs/l7.md); legacy's tcp port stays L4.
		{"client-http", "client-7d9f.demo", meshContents(v1alpha1.OutboundAllowAny), true},
		{"server-v1-http", "server-v1-5b7c.demo", meshContents(v1alpha1.OutboundAllowAny), true},
		{"server-v1-http-rejected-policy", "server-v1-5b7c.demo", withRejected(meshContents(v1alpha1.OutboundAllowAny),
			mesh.Rejected{Kind: v1alpha1.AuthorizationPolicyKind, Namespace: "demo", Name: "broken", Generation: 2,
				Reason: v1alpha1.ReasonInvalid, Message: "broken"}), true},
		// HTTP fields (docs/l7.md, "Authorization at L7"): on the h2 chain
		// http rbac filters with methods and paths; on the L4 chains the
		// ALLOW entries with them dropped, the DENY ones applied without
		// them (server-no-delete denies every port to legacy).
		{"server-v1-http-authz", "server-v1-5b7c.demo", withHTTPAuthz(meshContents(v1alpha1.OutboundAllowAny)), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snap := mesh.NewSnapshot(0, tc.contents)
			gen := translatorFor(snap)
			gen.HTTPRouting = tc.http
			res := generateWith(t, gen, snap, tc.node)
			dir := filepath.Join("testdata", "golden", tc.name)
			for typ, file := range goldenFiles {
				got := toYAML(t, res[typ])
				golden.Check(t, filepath.Join(dir, file), got)
			}
		})
	}
}

// ---- behaviour ----

func TestTranslateUnknownNode(t *testing.T) {
	tr := translatorFor(mesh.NewSnapshot(0, meshContents(v1alpha1.OutboundAllowAny)))
	_, err := tr.Generate(xds.Node{Name: "nope", Namespace: "demo", ID: workloadID("demo", "client")})
	if err == nil || err.Error() != "xds: translate nope.demo: no such workload" {
		t.Fatalf("Generate(unknown) = %v", err)
	}
	_, err = tr.Generate(xds.Node{Name: "client-7d9f", Namespace: "demo", ID: workloadID("demo", "server")})
	if err == nil || !strings.Contains(err.Error(), "node runs as spiffe://cluster.local/ns/demo/sa/server, the workload as spiffe://cluster.local/ns/demo/sa/client") {
		t.Fatalf("Generate(other identity) = %v", err)
	}
	if _, err := (&Generator{Snapshot: func() *mesh.Snapshot { return nil }, Bundle: func() []byte { return []byte(testBundle) }}).
		Generate(xds.Node{Name: "client-7d9f", Namespace: "demo"}); err == nil || !strings.Contains(err.Error(), "no mesh snapshot yet") {
		t.Fatalf("Generate(no snapshot) = %v", err)
	}
	empty := translatorFor(mesh.NewSnapshot(0, meshContents(v1alpha1.OutboundAllowAny)))
	empty.Bundle = func() []byte { return nil }
	if _, err := empty.Generate(xds.Node{Name: "client-7d9f", Namespace: "demo"}); err == nil || !strings.Contains(err.Error(), "empty trust bundle") {
		t.Fatalf("Generate(no bundle) = %v", err)
	}
}

func TestTranslateIsDeterministic(t *testing.T) {
	marshal := func(res xds.Resources) []byte {
		var out []byte
		for _, typ := range slices.Sorted(func(yield func(string) bool) {
			for k := range res {
				if !yield(k) {
					return
				}
			}
		}) {
			for _, r := range res[typ] {
				b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, b...)
			}
		}
		return out
	}
	for _, node := range []string{"client-7d9f.demo", "server-v1-5b7c.demo", "legacy-app-0.legacy"} {
		a := marshal(generate(t, mesh.NewSnapshot(0, meshContents(v1alpha1.OutboundAllowAny)), node))
		// Same model, input lists reversed: NewSnapshot sorts, the translator must not care.
		c := meshContents(v1alpha1.OutboundAllowAny)
		slices.Reverse(c.Services)
		slices.Reverse(c.EgressPolicies)
		slices.Reverse(c.AuthorizationPolicies)
		b := marshal(generate(t, mesh.NewSnapshot(0, c), node))
		if string(a) != string(b) {
			t.Errorf("%s: two generations differ", node)
		}
	}
}

func resourceNames(res xds.Resources, typ resource.Type) []string {
	var out []string
	for _, r := range res[typ] {
		out = append(out, cachev3.GetResourceName(r))
	}
	return out
}

func chainNames(l *listenerv3.Listener) []string {
	var out []string
	for _, c := range l.FilterChains {
		out = append(out, c.Name)
	}
	return out
}

func listener(res xds.Resources, name string) *listenerv3.Listener {
	for _, r := range res[resource.ListenerType] {
		if l := r.(*listenerv3.Listener); l.Name == name {
			return l
		}
	}
	return nil
}

func TestTranslateDeletedServiceDisappears(t *testing.T) {
	before := generate(t, mesh.NewSnapshot(0, meshContents(v1alpha1.OutboundAllowAny)), "client-7d9f.demo")
	c := meshContents(v1alpha1.OutboundAllowAny)
	c.Services = slices.DeleteFunc(c.Services, func(s *mesh.Service) bool { return s.Name == "legacy" })
	after := generate(t, mesh.NewSnapshot(0, c), "client-7d9f.demo")
	const name = "outbound|9090|legacy.legacy"
	for _, typ := range []resource.Type{resource.ClusterType, resource.EndpointType} {
		if !slices.Contains(resourceNames(before, typ), name) {
			t.Errorf("before: %s has no %s", typ, name)
		}
		if slices.Contains(resourceNames(after, typ), name) {
			t.Errorf("after delete: %s still has %s", typ, name)
		}
	}
	if !slices.Contains(chainNames(listener(before, "outbound")), name) {
		t.Errorf("before: no chain %s in %v", name, chainNames(listener(before, "outbound")))
	}
	for _, n := range chainNames(listener(after, "outbound")) {
		if strings.Contains(n, "legacy.legacy") {
			t.Errorf("after delete: chain %s remains", n)
		}
	}
}

func TestTranslateOnlySidecarPodsAreEndpoints(t *testing.T) {
	res := generate(t, mesh.NewSnapshot(0, meshContents(v1alpha1.OutboundAllowAny)), "client-7d9f.demo")
	var cla *endpointv3.ClusterLoadAssignment
	for _, r := range res[resource.EndpointType] {
		if c := r.(*endpointv3.ClusterLoadAssignment); c.ClusterName == "outbound|80|server.demo" {
			cla = c
		}
	}
	if cla == nil {
		t.Fatal("no endpoints for outbound|80|server.demo")
	}
	got := map[string]string{}
	for _, loc := range cla.Endpoints {
		for _, lb := range loc.LbEndpoints {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			got[sa.GetAddress()+":"+strconv.Itoa(int(sa.GetPortValue()))] = lb.HealthStatus.String()
		}
	}
	want := map[string]string{"198.18.1.11:8080": "HEALTHY", "198.18.1.12:8080": "HEALTHY", "198.18.1.14:8080": "DRAINING"}
	if !mapsEqual(got, want) {
		t.Errorf("endpoints = %v, want %v (198.18.1.13 runs no sidecar)", got, want)
	}
	for _, c := range listener(res, "outbound").FilterChains {
		for _, r := range c.GetFilterChainMatch().GetPrefixRanges() {
			if r.AddressPrefix == "198.18.1.13" {
				t.Errorf("chain %s matches the pod without sidecar", c.Name)
			}
		}
	}
	// The service's certificate check names only identities behind sidecars.
	for _, r := range res[resource.ClusterType] {
		if c := r.(*clusterv3.Cluster); c.Name == "outbound|80|server.demo" && c.TransportSocket == nil {
			t.Error("in-mesh cluster without TLS")
		}
	}
}

func TestTranslateHTTPPortsStayL4(t *testing.T) {
	res := generate(t, mesh.NewSnapshot(0, meshContents(v1alpha1.OutboundAllowAny)), "server-v1-5b7c.demo")
	for _, c := range listener(res, "inbound").FilterChains {
		last := c.Filters[len(c.Filters)-1]
		if last.Name != "envoy.filters.network.tcp_proxy" {
			t.Errorf("inbound chain %s ends with %s, want tcp_proxy", c.Name, last.Name)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
