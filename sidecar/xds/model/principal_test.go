package model

import "testing"

const (
	clientID = "spiffe://cluster.local/ns/demo/sa/client"
	demoNS   = "spiffe://cluster.local/ns/demo/sa/"
)

// TestPrincipalMatches: the matcher alone, as Envoy's: and is all, or is
// one; Any matches every peer; names need an authenticated peer.
func TestPrincipalMatches(t *testing.T) {
	exact, prefix := Principal{Exact: clientID}, Principal{Prefix: demoNS}
	cases := []struct {
		p    Principal
		peer string
		want bool
	}{
		{Principal{Any: true}, "", true},
		{exact, "", false},
		{prefix, "", false},
		{Principal{And: []Principal{prefix, exact}}, clientID, true},
		{Principal{And: []Principal{prefix, exact}}, demoNS + "server", false},
		{Principal{And: []Principal{prefix, exact}}, "", false},
		{Principal{And: []Principal{{Any: true}}}, "", true},
		{Principal{And: []Principal{{Any: true}, exact}}, "", false},
		{Principal{Or: []Principal{exact, {Exact: demoNS + "server"}}}, demoNS + "server", true},
		{Principal{Or: []Principal{exact, {Exact: demoNS + "server"}}}, demoNS + "other", false},
		{Principal{Or: []Principal{exact, {Any: true}}}, "", true},
		{Principal{And: []Principal{prefix, {Or: []Principal{exact, {Prefix: demoNS + "x"}}}}}, demoNS + "xy", true},
		{Principal{And: []Principal{prefix, {Or: []Principal{exact, {Prefix: demoNS + "x"}}}}}, demoNS + "y", false},
	}
	for _, tc := range cases {
		if got := tc.p.Matches(tc.peer); got != tc.want {
			t.Errorf("%+v.Matches(%q) = %t, want %t", tc.p, tc.peer, got, tc.want)
		}
	}
}
