package translate

import (
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
)

// ---- a tiny evaluator of Envoy's network RBAC, as Envoy documents it ----

func evalString(m *matcherv3.StringMatcher, s string) bool {
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return s == p.Exact
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(s, p.Prefix)
	}
	panic("unsupported string matcher")
}

// evalPrincipal: peer is zero for a plaintext connection, which no
// authenticated principal matches.
func evalPrincipal(p *rbacv3.Principal, peer spiffeid.ID) bool {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return id.Any
	case *rbacv3.Principal_Authenticated_:
		return !peer.IsZero() && evalString(id.Authenticated.GetPrincipalName(), peer.String())
	case *rbacv3.Principal_AndIds:
		for _, q := range id.AndIds.Ids {
			if !evalPrincipal(q, peer) {
				return false
			}
		}
		return true
	case *rbacv3.Principal_OrIds:
		for _, q := range id.OrIds.Ids {
			if evalPrincipal(q, peer) {
				return true
			}
		}
		return false
	}
	panic("unsupported principal")
}

func evalPermission(p *rbacv3.Permission, port uint16) bool {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return r.Any
	case *rbacv3.Permission_DestinationPort:
		return r.DestinationPort == uint32(port)
	}
	panic("unsupported permission")
}

func evalPolicy(p *rbacv3.Policy, peer spiffeid.ID, port uint16) bool {
	perm, princ := false, false
	for _, q := range p.Permissions {
		perm = perm || evalPermission(q, port)
	}
	for _, q := range p.Principals {
		princ = princ || evalPrincipal(q, peer)
	}
	return perm && princ
}

// evalChain runs a chain's rbac filters in order: DENY refuses on a match,
// ALLOW refuses without one.
func evalChain(t *testing.T, c *listenerv3.FilterChain, peer spiffeid.ID, port uint16) bool {
	for _, f := range c.Filters {
		if f.Name != "envoy.filters.network.rbac" {
			continue
		}
		cfg := &netrbacv3.RBAC{}
		if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			t.Fatal(err)
		}
		matched := false
		for _, p := range cfg.GetRules().GetPolicies() {
			matched = matched || evalPolicy(p, peer, port)
		}
		if (cfg.GetRules().GetAction() == rbacv3.RBAC_DENY) == matched {
			return false
		}
	}
	return true
}

// inboundChain picks the chain Envoy would for a connection to port,
// TLS or plaintext; nil when none (the connection is closed).
func inboundChain(l *listenerv3.Listener, port uint16, tls bool) *listenerv3.FilterChain {
	transport := "raw_buffer"
	if tls {
		transport = "tls"
	}
	var catchAll, exact *listenerv3.FilterChain
	exactPort := false
	for _, c := range l.FilterChains {
		m := c.GetFilterChainMatch()
		if m.GetDestinationPort().GetValue() == uint32(port) {
			exactPort = true
			if m.GetTransportProtocol() == transport {
				exact = c
			}
		} else if m.GetDestinationPort() == nil && m.GetTransportProtocol() == transport {
			catchAll = c
		}
	}
	if exactPort {
		return exact
	}
	return catchAll
}

// TestRBACAgreesWithAuthorize proves the authorization translation: for
// several policy sets, every peer (plaintext included) and port, the
// generated rbac filters decide as mesh.WorkloadPolicies.Authorize.
func TestRBACAgreesWithAuthorize(t *testing.T) {
	golden := meshContents(v1alpha1.OutboundAllowAny).AuthorizationPolicies
	sets := map[string][]*mesh.AuthorizationPolicy{
		"none":                   nil,
		"golden":                 golden,
		"allow-without-rules":    {agreeAP("nothing", v1alpha1.ActionAllow)},
		"deny-without-rules":     {agreeAP("nothing", v1alpha1.ActionDeny)},
		"deny-all-plaintext-too": {agreeAP("all", v1alpha1.ActionDeny, mesh.AuthorizationRule{To: []mesh.Destination{{Ports: []uint16{9090}}}})},
		"allow-any-port-empty-rule": {agreeAP("open", v1alpha1.ActionAllow, mesh.AuthorizationRule{}),
			agreeAP("no-legacy", v1alpha1.ActionDeny, mesh.AuthorizationRule{From: []mesh.Source{{Namespaces: []string{"legacy"}}}, To: []mesh.Destination{{Ports: []uint16{8080}}}})},
		"principals": {agreeAP("p", v1alpha1.ActionAllow,
			mesh.AuthorizationRule{From: []mesh.Source{{Principals: []mesh.Principal{
				{Value: "spiffe://cluster.local/ns/demo/sa/client"},
				{Value: "spiffe://cluster.local/ns/legacy/", Prefix: true},
			}}}, To: []mesh.Destination{{Ports: []uint16{8080, 9090}}}},
			mesh.AuthorizationRule{From: []mesh.Source{{Principals: []mesh.Principal{{Value: "spiffe://cluster.local/", Prefix: true}}}}, To: []mesh.Destination{{Ports: []uint16{1234}}}},
		)},
		// HTTP fields on connections (docs/l7.md): an ALLOW entry with them
		// matches none, a DENY entry applies without them.
		"allow-paths-only-allows-nothing": {agreeAP("paths", v1alpha1.ActionAllow, mesh.AuthorizationRule{To: []mesh.Destination{{Paths: []mesh.PathMatch{{Value: "/api/", Prefix: true}}}}})},
		"allow-http-entry-dropped": {agreeAP("mixed", v1alpha1.ActionAllow, mesh.AuthorizationRule{To: []mesh.Destination{
			{Ports: []uint16{8080}, Methods: []string{"GET"}}, {Ports: []uint16{9090}}}})},
		"deny-paths-denies-every-port": {agreeAP("paths", v1alpha1.ActionDeny, mesh.AuthorizationRule{
			From: []mesh.Source{{Namespaces: []string{"demo"}}}, To: []mesh.Destination{{Paths: []mesh.PathMatch{{Value: "/admin"}}}}})},
		"deny-methods-denies-its-port": {agreeAP("methods", v1alpha1.ActionDeny, mesh.AuthorizationRule{
			To: []mesh.Destination{{Ports: []uint16{8080}, Methods: []string{"DELETE"}}}})},
		"namespaces": {agreeAP("ns", v1alpha1.ActionAllow, mesh.AuthorizationRule{From: []mesh.Source{{Namespaces: []string{"demo"}}}, To: []mesh.Destination{{Ports: []uint16{8080}}}})},
		"and-of-fields": {agreeAP("and", v1alpha1.ActionAllow,
			mesh.AuthorizationRule{From: []mesh.Source{
				{Namespaces: []string{"demo", "other"}, ServiceAccounts: []mesh.Key{{Namespace: "demo", Name: "client"}, {Namespace: "other", Name: "x"}}},
				{Principals: []mesh.Principal{{Value: "spiffe://cluster.local/ns/legacy/", Prefix: true}}, Namespaces: []string{"legacy"}},
			}}),
			agreeAP("deny-x", v1alpha1.ActionDeny, mesh.AuthorizationRule{From: []mesh.Source{{ServiceAccounts: []mesh.Key{{Namespace: "other", Name: "x"}}}}}),
		},
	}
	peers := []spiffeid.ID{
		{}, // plaintext
		workloadID("demo", "client"), workloadID("demo", "clientx"), workloadID("demo", "server"),
		workloadID("demo-2", "client"), workloadID("legacy", "legacy"), workloadID("other", "x"), workloadID("other", "y"),
	}
	ports := []uint16{8080, 9090, 1234, 5555}
	for name, set := range sets {
		for _, mode := range []v1alpha1.MTLSMode{v1alpha1.MTLSStrict, v1alpha1.MTLSPermissive} {
			t.Run(name+"/"+string(mode), func(t *testing.T) {
				c := meshContents(v1alpha1.OutboundAllowAny)
				c.AuthorizationPolicies = set
				c.Mesh.MTLSMode = mode
				// Port 9090 gets its own chains too, by a port-level mode.
				c.MTLSPolicies = append(c.MTLSPolicies, &mesh.MTLSPolicy{Namespace: "demo", Name: "ports", Mode: mode,
					PortModes: map[uint16]v1alpha1.MTLSMode{9090: v1alpha1.MTLSPermissive}})
				snap := mesh.NewSnapshot(0, c)
				res := generate(t, snap, "server-v1-5b7c.demo")
				w, _ := snap.Workload("demo", "server-v1-5b7c")
				pol := snap.PoliciesFor(w)
				in := listener(res, "inbound")
				for _, peer := range peers {
					for _, port := range ports {
						chain := inboundChain(in, port, !peer.IsZero())
						if chain == nil {
							if !peer.IsZero() || pol.MTLS.ModeFor(port) == v1alpha1.MTLSPermissive {
								t.Errorf("peer %q port %d: no chain", peer, port)
							}
							continue // STRICT refuses plaintext before authorization
						}
						want, by := pol.Authorize(meshTD, peer, port)
						if got := evalChain(t, chain, peer, port); got != want {
							t.Errorf("peer %q port %d: rbac allows=%v, Authorize=%v (policy %v)", peer, port, got, want, by)
						}
					}
				}
			})
		}
	}
}

// TestRejectedPolicyDeniesInbound: a rejected AuthorizationPolicy or
// MTLSPolicy in the workload's namespace denies every inbound connection;
// one in another namespace changes nothing.
func TestRejectedPolicyDeniesInbound(t *testing.T) {
	for _, tc := range []struct {
		rejected mesh.Rejected
		denied   bool
	}{
		{mesh.Rejected{Kind: v1alpha1.AuthorizationPolicyKind, Namespace: "demo", Name: "bad", Reason: "Invalid", Message: "spec.action \"MAYBE\" is not ALLOW or DENY"}, true},
		{mesh.Rejected{Kind: v1alpha1.MTLSPolicyKind, Namespace: "demo", Name: "bad", Reason: "Invalid", Message: "spec.mode \"SOMETIMES\" is not STRICT or PERMISSIVE"}, true},
		{mesh.Rejected{Kind: v1alpha1.AuthorizationPolicyKind, Namespace: "legacy", Name: "bad", Reason: "Invalid"}, false},
		{mesh.Rejected{Kind: v1alpha1.EgressPolicyKind, Namespace: "demo", Name: "bad", Reason: "Invalid"}, false},
	} {
		c := meshContents(v1alpha1.OutboundAllowAny)
		c.Rejected = []mesh.Rejected{tc.rejected}
		res := generate(t, mesh.NewSnapshot(0, c), "server-v1-5b7c.demo")
		in := listener(res, "inbound")
		for _, ch := range in.FilterChains {
			if strings.HasPrefix(ch.Name, "sidecar|") {
				continue // a guard of the sidecar's own port: BlackHoleCluster, no peer gets in
			}
			cfg := &netrbacv3.RBAC{}
			if err := ch.Filters[0].GetTypedConfig().UnmarshalTo(cfg); err != nil {
				t.Fatal(err)
			}
			rejected := cfg.StatPrefix == "weft_rejected_policy"
			if rejected != tc.denied {
				t.Errorf("%s %s/%s: chain %s fails closed = %v, want %v", tc.rejected.Kind, tc.rejected.Namespace, tc.rejected.Name, ch.Name, rejected, tc.denied)
			}
			msg := ch.GetMetadata().GetFilterMetadata()["weft.inbound"].GetFields()["rejected"].GetStringValue()
			if tc.denied && !strings.Contains(msg, tc.rejected.Kind+" demo/bad rejected (Invalid)") {
				t.Errorf("chain %s metadata says %q", ch.Name, msg)
			}
			for _, peer := range []spiffeid.ID{workloadID("demo", "client"), workloadID("legacy", "legacy")} {
				if tc.denied && evalChain(t, ch, peer, 8080) {
					t.Errorf("chain %s lets %s in despite the rejected policy", ch.Name, peer)
				}
			}
		}
		if !tc.denied && !evalChain(t, inboundChain(in, 8080, true), workloadID("demo", "client"), 8080) {
			t.Errorf("%s %s/%s: client denied", tc.rejected.Kind, tc.rejected.Namespace, tc.rejected.Name)
		}
	}
}

// ---- Envoy's HTTP RBAC on a request, as Envoy documents it ----

type evalRequest struct {
	peer         spiffeid.ID
	port         uint16
	method, path string
}

func evalRequestPermission(p *rbacv3.Permission, r evalRequest) bool {
	switch x := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return x.Any
	case *rbacv3.Permission_DestinationPort:
		return x.DestinationPort == uint32(r.port)
	case *rbacv3.Permission_Header:
		if x.Header.GetName() != ":method" {
			panic("unsupported header " + x.Header.GetName())
		}
		return evalString(x.Header.GetStringMatch(), r.method)
	case *rbacv3.Permission_UrlPath:
		path, _, _ := strings.Cut(r.path, "?")
		return evalString(x.UrlPath.GetPath(), path)
	case *rbacv3.Permission_AndRules:
		for _, q := range x.AndRules.GetRules() {
			if !evalRequestPermission(q, r) {
				return false
			}
		}
		return true
	case *rbacv3.Permission_OrRules:
		for _, q := range x.OrRules.GetRules() {
			if evalRequestPermission(q, r) {
				return true
			}
		}
		return false
	}
	panic("unsupported permission")
}

// evalHTTPChain decides a request on an h2 chain: its network rbac filters
// (the fail-closed one), then the HCM's http rbac filters in order.
func evalHTTPChain(t *testing.T, c *listenerv3.FilterChain, r evalRequest) bool {
	if !evalChain(t, c, r.peer, r.port) {
		return false
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := c.Filters[len(c.Filters)-1].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	for _, f := range hcm.HttpFilters {
		if f.Name != wellknown.HTTPRoleBasedAccessControl {
			continue
		}
		cfg := &httprbacv3.RBAC{}
		if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			t.Fatal(err)
		}
		matched := false
		for _, p := range cfg.GetRules().GetPolicies() {
			perm, princ := false, false
			for _, q := range p.Permissions {
				perm = perm || evalRequestPermission(q, r)
			}
			for _, q := range p.Principals {
				princ = princ || evalPrincipal(q, r.peer)
			}
			matched = matched || perm && princ
		}
		if (cfg.GetRules().GetAction() == rbacv3.RBAC_DENY) == matched {
			return false
		}
	}
	return true
}

// TestHTTPRBACAgreesWithAuthorizeRequest proves the request authorization
// of chain inbound|8080|h2 (Generator.HTTPRouting): for policy sets with
// methods and paths, every peer, method and path, its http rbac filters
// decide as mesh.WorkloadPolicies.AuthorizeRequest; its L4 chains, for
// every port, as Authorize. The h2 chain has no network rbac filter of the
// policies, and an HTTP filter only in its HCM.
func TestHTTPRBACAgreesWithAuthorizeRequest(t *testing.T) {
	prefix := func(p string) mesh.PathMatch { return mesh.PathMatch{Value: p, Prefix: true} }
	exact := func(p string) mesh.PathMatch { return mesh.PathMatch{Value: p} }
	demo := []mesh.Source{{Namespaces: []string{"demo"}}}
	sets := map[string][]*mesh.AuthorizationPolicy{
		"golden":          withHTTPAuthz(meshContents(v1alpha1.OutboundAllowAny)).AuthorizationPolicies,
		"paths-only":      {agreeAP("paths", v1alpha1.ActionAllow, mesh.AuthorizationRule{To: []mesh.Destination{{Paths: []mesh.PathMatch{prefix("/api/"), exact("/healthz")}}}})},
		"methods-of-demo": {agreeAP("m", v1alpha1.ActionAllow, mesh.AuthorizationRule{From: demo, To: []mesh.Destination{{Methods: []string{"GET", "HEAD"}}}})},
		"any-path":        {agreeAP("any", v1alpha1.ActionAllow, mesh.AuthorizationRule{To: []mesh.Destination{{Paths: []mesh.PathMatch{prefix("")}}}})},
		"deny-method-and-path": {agreeAP("open", v1alpha1.ActionAllow, mesh.AuthorizationRule{}),
			agreeAP("d", v1alpha1.ActionDeny, mesh.AuthorizationRule{From: demo, To: []mesh.Destination{
				{Ports: []uint16{8080, 9090}, Methods: []string{"DELETE", "PUT"}, Paths: []mesh.PathMatch{prefix("/admin/"), exact("/")}},
				{Methods: []string{"PATCH"}}}})},
		"deny-ports-only": {agreeAP("d", v1alpha1.ActionDeny, mesh.AuthorizationRule{To: []mesh.Destination{{Ports: []uint16{8080}}}})},
	}
	peers := []spiffeid.ID{workloadID("demo", "client"), workloadID("legacy", "legacy"), workloadID("other", "x")}
	methods := []string{"GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "get"}
	paths := []string{"/", "/api", "/api/", "/api/v1/users?limit=1", "/healthz", "/healthz/", "/admin/x", "/grpc.health.v1.Health/Check"}
	for name, set := range sets {
		t.Run(name, func(t *testing.T) {
			c := meshContents(v1alpha1.OutboundAllowAny)
			c.AuthorizationPolicies = set
			snap := mesh.NewSnapshot(0, c)
			res := generateHTTP(t, snap, "server-v1-5b7c.demo")
			w, _ := snap.Workload("demo", "server-v1-5b7c")
			pol := snap.PoliciesFor(w)
			in := listener(res, "inbound")
			var h2 *listenerv3.FilterChain
			for _, c := range in.FilterChains {
				if c.Name == "inbound|8080|h2" {
					h2 = c
				}
			}
			if h2 == nil || len(h2.Filters) != 1 {
				t.Fatalf("chain inbound|8080|h2: %v", h2)
			}
			for _, peer := range peers {
				for _, m := range methods {
					for _, p := range paths {
						r := evalRequest{peer, 8080, m, p}
						want, by := pol.AuthorizeRequest(meshTD, peer, 8080, m, p)
						if got := evalHTTPChain(t, h2, r); got != want {
							t.Errorf("%s %s %s: http rbac allows=%v, AuthorizeRequest=%v (policy %v)", peer, m, p, got, want, by)
						}
					}
				}
				for _, port := range []uint16{8080, 9090, 1234} {
					chain := inboundChain(in, port, true)
					if port == 8080 {
						chain = in.FilterChains[slices.IndexFunc(in.FilterChains, func(c *listenerv3.FilterChain) bool { return c.Name == "inbound|8080|tls" })]
					}
					want, by := pol.Authorize(meshTD, peer, port)
					if got := evalChain(t, chain, peer, port); got != want {
						t.Errorf("%s port %d (chain %s): rbac allows=%v, Authorize=%v (policy %v)", peer, port, chain.Name, got, want, by)
					}
				}
			}
		})
	}
}

// TestRequestPermissionShape: a to entry on a request is and_rules of its
// fields, several values of a field in or_rules, one alone; a path "*"
// adds no condition; an entry of only "*" is any (docs/l7.md).
func TestRequestPermissionShape(t *testing.T) {
	port := func(p uint32) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: p}}
	}
	method := func(m string) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m}}}}}}
	}
	path := func(p string, prefix bool) *rbacv3.Permission {
		m := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p}}
		if prefix {
			m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p}}
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}}}}
	}
	and := func(ps ...*rbacv3.Permission) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
	}
	or := func(ps ...*rbacv3.Permission) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
	}
	anyPerm := &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	for _, tc := range []struct {
		name string
		d    mesh.Destination
		want *rbacv3.Permission
	}{
		{"one port", mesh.Destination{Ports: []uint16{8080}}, and(port(8080))},
		{"ports", mesh.Destination{Ports: []uint16{80, 8080}}, and(or(port(80), port(8080)))},
		{"one method", mesh.Destination{Methods: []string{"GET"}}, and(method("GET"))},
		{"every field", mesh.Destination{Ports: []uint16{8080}, Methods: []string{"GET", "HEAD"}, Paths: []mesh.PathMatch{{Value: "/api/", Prefix: true}, {Value: "/healthz"}}},
			and(port(8080), or(method("GET"), method("HEAD")), or(path("/api/", true), path("/healthz", false)))},
		{"a path", mesh.Destination{Paths: []mesh.PathMatch{{Value: "/x"}}}, and(path("/x", false))},
		{"any path with a method", mesh.Destination{Methods: []string{"POST"}, Paths: []mesh.PathMatch{{Value: "/x"}, {Prefix: true}}}, and(method("POST"))},
		{"any path alone", mesh.Destination{Paths: []mesh.PathMatch{{Prefix: true}}}, anyPerm},
	} {
		if got := requestPermission(tc.d); !proto.Equal(got, tc.want) {
			t.Errorf("%s: requestPermission(%+v) = %v, want %v", tc.name, tc.d, got, tc.want)
		}
		if err := tc.want.ValidateAll(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
