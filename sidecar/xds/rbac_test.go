package xds

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Principals as go-control-plane builds them (Envoy's own types).
func envoyAnyID() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func envoyAuthenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

func envoyExactID(id string) *rbacv3.Principal {
	return envoyAuthenticated(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}})
}

func envoyPrefixID(p string) *rbacv3.Principal {
	return envoyAuthenticated(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p}})
}

func envoyAndIDs(ids ...*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
}

func envoyOrIDs(ids ...*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
}

// nestedSets is depth sets made by set around an exact principal.
func nestedSets(depth int, set func(...*rbacv3.Principal) *rbacv3.Principal) *rbacv3.Principal {
	p := envoyExactID(clientID)
	for range depth {
		p = set(p)
	}
	return p
}

// alternating wraps in and_ids, then or_ids, then and_ids...
func alternating() func(...*rbacv3.Principal) *rbacv3.Principal {
	n := 0
	return func(ids ...*rbacv3.Principal) *rbacv3.Principal {
		n++
		if n%2 == 1 {
			return envoyAndIDs(ids...)
		}
		return envoyOrIDs(ids...)
	}
}

const (
	clientID = "spiffe://cluster.local/ns/demo/sa/client"
	demoNS   = "spiffe://cluster.local/ns/demo/sa/"
)

// buildWithPrincipals is the contract's mesh with the inbound RBAC policy
// "demo/allow-client" (port 8080) naming principals, decoded and built as
// the client does.
func buildWithPrincipals(t *testing.T, principals ...*rbacv3.Principal) (*model.Config, error) {
	t.Helper()
	r := mesh{}.envoy(t)
	f := r[model.ListenerType]["inbound"].(*listenerv3.Listener).FilterChains[0].Filters[0]
	var rb netrbacv3.RBAC
	if err := f.GetTypedConfig().UnmarshalTo(&rb); err != nil {
		t.Fatal(err)
	}
	rb.Rules.Policies["demo/allow-client"].Principals = principals
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &rb)}
	return buildEnvoy(r)
}

// TestBuildPrincipalSets: and_ids and or_ids decode into the Principal
// tree and match as Envoy's AndMatcher and OrMatcher do: and_ids when
// every member matches, or_ids when one does; any matches a plaintext
// peer too, authenticated names only a peer with an ID.
func TestBuildPrincipalSets(t *testing.T) {
	peers := []string{"", clientID, demoNS + "server", demoNS + "client-x", "spiffe://cluster.local/ns/other/sa/client"}
	cases := []struct {
		name       string
		principals []*rbacv3.Principal
		want       []model.Principal
		allowed    []string // of peers
	}{
		{"namespace and service account (the translator's two-field source)",
			[]*rbacv3.Principal{envoyAndIDs(envoyPrefixID(demoNS), envoyExactID(clientID))},
			[]model.Principal{{And: []model.Principal{{Prefix: demoNS}, {Exact: clientID}}}},
			[]string{clientID}},
		{"and_ids of or_ids",
			[]*rbacv3.Principal{envoyAndIDs(
				envoyOrIDs(envoyPrefixID(demoNS), envoyPrefixID("spiffe://cluster.local/ns/other/")),
				envoyOrIDs(envoyExactID(clientID), envoyExactID(demoNS+"server")))},
			[]model.Principal{{And: []model.Principal{
				{Or: []model.Principal{{Prefix: demoNS}, {Prefix: "spiffe://cluster.local/ns/other/"}}},
				{Or: []model.Principal{{Exact: clientID}, {Exact: demoNS + "server"}}}}}},
			[]string{clientID, demoNS + "server"}},
		{"disjoint and_ids match nobody",
			[]*rbacv3.Principal{envoyAndIDs(envoyExactID(clientID), envoyExactID(demoNS+"server"))},
			[]model.Principal{{And: []model.Principal{{Exact: clientID}, {Exact: demoNS + "server"}}}},
			nil},
		{"and_ids with any: plaintext fails the authenticated member",
			[]*rbacv3.Principal{envoyAndIDs(envoyAnyID(), envoyPrefixID(demoNS))},
			[]model.Principal{{And: []model.Principal{{Any: true}, {Prefix: demoNS}}}},
			[]string{clientID, demoNS + "server", demoNS + "client-x"}},
		{"and_ids of any alone matches plaintext",
			[]*rbacv3.Principal{envoyAndIDs(envoyAnyID())},
			[]model.Principal{{And: []model.Principal{{Any: true}}}},
			peers},
		{"or_ids in and_ids with any: plaintext matches",
			[]*rbacv3.Principal{envoyAndIDs(envoyOrIDs(envoyAnyID(), envoyExactID(clientID)))},
			[]model.Principal{{And: []model.Principal{{Or: []model.Principal{{Any: true}, {Exact: clientID}}}}}},
			peers},
		{"and_ids alongside other principals: any one of them",
			[]*rbacv3.Principal{envoyAndIDs(envoyPrefixID(demoNS), envoyExactID(clientID)), envoyExactID("spiffe://cluster.local/ns/other/sa/client")},
			[]model.Principal{{And: []model.Principal{{Prefix: demoNS}, {Exact: clientID}}}, {Exact: "spiffe://cluster.local/ns/other/sa/client"}},
			[]string{clientID, "spiffe://cluster.local/ns/other/sa/client"}},
		{"or_ids of and_ids: top-level or_ids stay alternatives",
			[]*rbacv3.Principal{envoyOrIDs(envoyAndIDs(envoyPrefixID(demoNS), envoyExactID(clientID)), envoyExactID(demoNS+"server"))},
			[]model.Principal{{And: []model.Principal{{Prefix: demoNS}, {Exact: clientID}}}, {Exact: demoNS + "server"}},
			[]string{clientID, demoNS + "server"}},
		{"and_ids nested in and_ids",
			[]*rbacv3.Principal{envoyAndIDs(envoyPrefixID(demoNS), envoyAndIDs(envoyPrefixID(demoNS+"client"), envoyOrIDs(envoyExactID(clientID), envoyExactID(demoNS+"client-x"))))},
			[]model.Principal{{And: []model.Principal{{Prefix: demoNS}, {And: []model.Principal{{Prefix: demoNS + "client"}, {Or: []model.Principal{{Exact: clientID}, {Exact: demoNS + "client-x"}}}}}}}},
			[]string{clientID, demoNS + "client-x"}},
		{fmt.Sprintf("and_ids nested %d deep", maxPrincipalSetDepth),
			[]*rbacv3.Principal{nestedSets(maxPrincipalSetDepth, envoyAndIDs)},
			nil, // checked by verdicts only
			[]string{clientID}},
		{fmt.Sprintf("and_ids and or_ids nested %d deep", maxPrincipalSetDepth),
			[]*rbacv3.Principal{nestedSets(maxPrincipalSetDepth, alternating())},
			nil,
			[]string{clientID}},
		{fmt.Sprintf("or_ids nested %d deep", maxPrincipalSetDepth),
			[]*rbacv3.Principal{nestedSets(maxPrincipalSetDepth, envoyOrIDs)},
			[]model.Principal{{Exact: clientID}},
			[]string{clientID}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := buildWithPrincipals(t, tc.principals...)
			if err != nil {
				t.Fatal(err)
			}
			f := cfg.Inbound.Chains[0].RBAC[0]
			if tc.want != nil && !reflect.DeepEqual(f.Policies[0].Principals, tc.want) {
				t.Errorf("principals = %+v\nwant %+v", f.Policies[0].Principals, tc.want)
			}
			for _, peer := range peers {
				want := false
				for _, a := range tc.allowed {
					want = want || a == peer
				}
				if ok, _ := f.Allows(peer, 8080); ok != want {
					t.Errorf("peer %q on 8080: allowed %t, want %t", peer, ok, want)
				}
				if ok, _ := f.Allows(peer, 9090); ok {
					t.Errorf("peer %q on 9090 (not a port of the policy): allowed", peer)
				}
			}
		})
	}
}

// TestBuildRejectsPrincipalSets: what Envoy's validation refuses in sets,
// and sets deeper than the sidecar evaluates, are NACKed with their path.
func TestBuildRejectsPrincipalSets(t *testing.T) {
	const policy = `rules.policies["demo/allow-client"].`
	cases := []struct {
		name       string
		principals []*rbacv3.Principal
		want       string
	}{
		{"empty and_ids", []*rbacv3.Principal{envoyAndIDs()}, policy + `principals[0].and_ids.ids: must not be empty`},
		{"empty and_ids nested", []*rbacv3.Principal{envoyAndIDs(envoyExactID(clientID), envoyOrIDs(envoyAndIDs()))},
			policy + `principals[0].and_ids.ids[1].or_ids.ids[0].and_ids.ids: must not be empty`},
		{"empty or_ids", []*rbacv3.Principal{envoyOrIDs()}, policy + `principals[0].or_ids.ids: must not be empty`},
		{"and_ids too deep", []*rbacv3.Principal{nestedSets(maxPrincipalSetDepth+1, envoyAndIDs)},
			fmt.Sprintf("and_ids: principal sets nested more than %d deep are not supported", maxPrincipalSetDepth)},
		{"or_ids too deep", []*rbacv3.Principal{nestedSets(maxPrincipalSetDepth+1, envoyOrIDs)},
			fmt.Sprintf("or_ids: principal sets nested more than %d deep are not supported", maxPrincipalSetDepth)},
		{"mixed sets too deep", []*rbacv3.Principal{nestedSets(maxPrincipalSetDepth+1, alternating())}, "principal sets nested more than"},
		{"unsupported member", []*rbacv3.Principal{envoyAndIDs(envoyExactID(clientID), &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{
			RemoteIp: &corev3.CidrRange{AddressPrefix: "198.18.0.0", PrefixLen: wrapperspb.UInt32(15)}}})},
			policy + `principals[0].and_ids.ids[1]: field 11 of envoy.config.rbac.v3.Principal is not supported`},
		{"member outside the trust domain", []*rbacv3.Principal{envoyAndIDs(envoyPrefixID(demoNS), envoyExactID("spiffe://evil.org/ns/demo/sa/client"))},
			`principals 0: and_ids 1: authenticated.principal_name.exact`},
		{"any: false in a set", []*rbacv3.Principal{envoyAndIDs(envoyExactID(clientID), &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: false}})},
			policy + `principals[0].and_ids.ids[1].any: must be true`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := buildWithPrincipals(t, tc.principals...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build() error = %v\nwant it to contain %s", err, tc.want)
			}
		})
	}
}
