package translate

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/registry"
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
// generated rbac filters decide as registry.WorkloadPolicies.Authorize.
func TestRBACAgreesWithAuthorize(t *testing.T) {
	serverSel := labels.SelectorFromSet(labels.Set{"app": "server"})
	ap := func(name string, action v1alpha1.AuthorizationAction, rules ...registry.AuthorizationRule) *registry.AuthorizationPolicy {
		return &registry.AuthorizationPolicy{Namespace: "demo", Name: name, Selector: serverSel, Action: action, Rules: rules}
	}
	golden := meshContents(v1alpha1.OutboundAllowAny).AuthorizationPolicies
	sets := map[string][]*registry.AuthorizationPolicy{
		"none":                   nil,
		"golden":                 golden,
		"allow-without-rules":    {ap("nothing", v1alpha1.ActionAllow)},
		"deny-without-rules":     {ap("nothing", v1alpha1.ActionDeny)},
		"deny-all-plaintext-too": {ap("all", v1alpha1.ActionDeny, registry.AuthorizationRule{To: []registry.Destination{{Ports: []uint16{9090}}}})},
		"allow-any-port-empty-rule": {ap("open", v1alpha1.ActionAllow, registry.AuthorizationRule{}),
			ap("no-legacy", v1alpha1.ActionDeny, registry.AuthorizationRule{From: []registry.Source{{Namespaces: []string{"legacy"}}}, To: []registry.Destination{{Ports: []uint16{8080}}}})},
		"principals": {ap("p", v1alpha1.ActionAllow,
			registry.AuthorizationRule{From: []registry.Source{{Principals: []registry.Principal{
				{Value: "spiffe://cluster.local/ns/demo/sa/client"},
				{Value: "spiffe://cluster.local/ns/legacy/", Prefix: true},
			}}}, To: []registry.Destination{{Ports: []uint16{8080, 9090}}}},
			registry.AuthorizationRule{From: []registry.Source{{Principals: []registry.Principal{{Value: "spiffe://cluster.local/", Prefix: true}}}}, To: []registry.Destination{{Ports: []uint16{1234}}}},
		)},
		"namespaces": {ap("ns", v1alpha1.ActionAllow, registry.AuthorizationRule{From: []registry.Source{{Namespaces: []string{"demo"}}}, To: []registry.Destination{{Ports: []uint16{8080}}}})},
		"and-of-fields": {ap("and", v1alpha1.ActionAllow,
			registry.AuthorizationRule{From: []registry.Source{
				{Namespaces: []string{"demo", "other"}, ServiceAccounts: []registry.Key{{Namespace: "demo", Name: "client"}, {Namespace: "other", Name: "x"}}},
				{Principals: []registry.Principal{{Value: "spiffe://cluster.local/ns/legacy/", Prefix: true}}, Namespaces: []string{"legacy"}},
			}}),
			ap("deny-x", v1alpha1.ActionDeny, registry.AuthorizationRule{From: []registry.Source{{ServiceAccounts: []registry.Key{{Namespace: "other", Name: "x"}}}}}),
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
				c.MTLSPolicies = append(c.MTLSPolicies, &registry.MTLSPolicy{Namespace: "demo", Name: "ports", Mode: mode,
					PortModes: map[uint16]v1alpha1.MTLSMode{9090: v1alpha1.MTLSPermissive}})
				snap := registry.NewSnapshot(c)
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
		rejected registry.Rejected
		denied   bool
	}{
		{registry.Rejected{Kind: v1alpha1.AuthorizationPolicyKind, Namespace: "demo", Name: "bad", Reason: "Invalid", Message: "spec.action \"MAYBE\" is not ALLOW or DENY"}, true},
		{registry.Rejected{Kind: v1alpha1.MTLSPolicyKind, Namespace: "demo", Name: "bad", Reason: "Invalid", Message: "spec.mode \"SOMETIMES\" is not STRICT or PERMISSIVE"}, true},
		{registry.Rejected{Kind: v1alpha1.AuthorizationPolicyKind, Namespace: "legacy", Name: "bad", Reason: "Invalid"}, false},
		{registry.Rejected{Kind: v1alpha1.EgressPolicyKind, Namespace: "demo", Name: "bad", Reason: "Invalid"}, false},
	} {
		c := meshContents(v1alpha1.OutboundAllowAny)
		c.Rejected = []registry.Rejected{tc.rejected}
		res := generate(t, registry.NewSnapshot(c), "server-v1-5b7c.demo")
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
