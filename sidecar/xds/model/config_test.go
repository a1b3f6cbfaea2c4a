package model

import (
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestEnumStrings: the names the admin endpoints and logs show.
func TestEnumStrings(t *testing.T) {
	for got, want := range map[string]string{
		RBACAllow.String():        "ALLOW",
		RBACDeny.String():         "DENY",
		RoundRobin.String():       "ROUND_ROBIN",
		LeastRequest.String():     "LEAST_REQUEST",
		KindStatic.String():       "STATIC",
		KindControlPlane.String(): "CONTROLPLANE",
		Healthy.String():          "HEALTHY",
		Unhealthy.String():        "UNHEALTHY",
	} {
		if got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

// TestRBACFilterAllows: the first policy that matches decides, as Envoy's
// network RBAC: an ALLOW filter allows only what a policy matches, a DENY
// filter denies only that; a policy with ports matches those ports only.
func TestRBACFilterAllows(t *testing.T) {
	policies := []RBACPolicy{
		{Name: "web-only", Principals: []Principal{{Exact: clientID}}, Ports: []uint16{8080}},
		{Name: "demo-any-port", Principals: []Principal{{Prefix: demoNS}}},
	}
	for _, tc := range []struct {
		action     RBACAction
		peer       string
		port       uint16
		allowed    bool
		policyName string
	}{
		{RBACAllow, clientID, 8080, true, "web-only"},
		{RBACAllow, clientID, 9090, true, "demo-any-port"}, // port 9090 is not web-only's: the next policy
		{RBACAllow, demoNS + "other", 8080, true, "demo-any-port"},
		{RBACAllow, "spiffe://cluster.local/ns/shop/sa/x", 8080, false, ""},
		{RBACAllow, "", 8080, false, ""},
		{RBACDeny, clientID, 8080, false, "web-only"},
		{RBACDeny, "spiffe://cluster.local/ns/shop/sa/x", 8080, true, ""},
	} {
		f := RBACFilter{Action: tc.action, Policies: policies}
		allowed, name := f.Allows(tc.peer, tc.port)
		if allowed != tc.allowed || name != tc.policyName {
			t.Errorf("%s filter, %q on %d: %t by %q, want %t by %q", tc.action, tc.peer, tc.port, allowed, name, tc.allowed, tc.policyName)
		}
	}
	if ok, _ := (RBACFilter{Action: RBACAllow}).Allows(clientID, 80); ok {
		t.Error("an ALLOW filter without policies allowed a peer")
	}
	if ok, _ := (RBACFilter{Action: RBACDeny}).Allows(clientID, 80); !ok {
		t.Error("a DENY filter without policies denied a peer")
	}
	if (RBACPolicy{Name: "no principals", Ports: []uint16{80}}).Matches(clientID, 80) {
		t.Error("a policy without principals matched")
	}
}

// TestMissing: a configuration is complete once it has both listeners,
// the endpoints of every EDS cluster, every route configuration a chain
// names, every cluster a chain, a virtual host or an access log names, and
// the trust bundle; Missing lists the rest in that order, sorted, each once.
func TestMissing(t *testing.T) {
	c := &Config{}
	if got, want := c.Missing(), []string{"listener inbound", "listener outbound", "secret trust_bundle"}; !slices.Equal(got, want) {
		t.Fatalf("empty config: Missing = %q, want %q", got, want)
	}
	c = &Config{
		Inbound: &Listener{Name: InboundListener, Chains: []*FilterChain{
			{Name: "in-8080", Target: Target{Cluster: "inbound|8080"}, AccessLog: true},
			nil,
		}},
		Outbound: &Listener{Name: OutboundListener,
			Chains: []*FilterChain{
				{Name: "svc", Target: Target{Cluster: "outbound|80|b"}},
				{Name: "http", Target: Target{RouteConfig: "80"}},
				{Name: "http-again", Target: Target{RouteConfig: "80"}},
			},
			Default: &FilterChain{Name: "egress", Target: Target{RouteConfig: "egress"}}},
		Clusters: map[string]*Cluster{
			"outbound|80|b": {Name: "outbound|80|b", Kind: KindEDS},
			"outbound|80|a": {Name: "outbound|80|a", Kind: KindEDS},
			"inbound|8080":  {Name: "inbound|8080", Kind: KindStatic},
		},
		Routes: map[string]*RouteConfig{"80": {Name: "80", VirtualHosts: []*VirtualHost{
			{Name: "a", Cluster: "outbound|80|a"}, {Name: "gone", Cluster: "outbound|80|gone"}, {Name: "deny", Deny: &DirectResponse{Status: 403}}}}},
		Endpoints: map[string][]Endpoint{"outbound|80|a": nil}, // received, empty
	}
	if got := c.EDSClusters(); !slices.Equal(got, []string{"outbound|80|a", "outbound|80|b"}) {
		t.Errorf("EDSClusters = %q", got)
	}
	if got := c.RouteNames(); !slices.Equal(got, []string{"80", "egress"}) {
		t.Errorf("RouteNames = %q", got)
	}
	want := []string{"endpoints outbound|80|b", "routes egress", "cluster outbound|80|gone", "cluster weft-controlplane", "secret trust_bundle"}
	if got := c.Missing(); !slices.Equal(got, want) {
		t.Fatalf("Missing = %q, want %q", got, want)
	}
	c.Endpoints["outbound|80|b"] = []Endpoint{}
	c.Routes["egress"] = &RouteConfig{Name: "egress"}
	c.Clusters["outbound|80|gone"] = &Cluster{Name: "outbound|80|gone", Kind: KindStatic}
	c.Clusters[ControlPlaneCluster] = &Cluster{Name: ControlPlaneCluster, Kind: KindControlPlane}
	c.TrustBundle = x509bundle.New(spiffeid.RequireTrustDomainFromString("cluster.local"))
	if got := c.Missing(); len(got) != 0 {
		t.Errorf("complete config: Missing = %q", got)
	}
	c.Inbound = nil
	if got := c.Missing(); !slices.Equal(got, []string{"listener inbound"}) {
		t.Errorf("without the inbound listener: Missing = %q", got)
	}
}

// TestAllowsRequest: an HTTP policy's permissions are alternatives, each
// an AND of ports, methods and paths (each an OR, empty any); without
// Permissions, Ports decides as for a connection.
func TestAllowsRequest(t *testing.T) {
	f := RBACFilter{Action: RBACAllow, Policies: []RBACPolicy{
		{Name: "api", Principals: []Principal{{Exact: clientID}}, Permissions: []Permission{
			{Ports: []uint16{8080}, Methods: []string{"GET", "HEAD"}, Paths: []PathMatch{{Prefix: "/api/"}, {Exact: "/healthz"}}},
			{Methods: []string{"POST"}, Paths: []PathMatch{{Exact: "/orders"}}},
		}},
		{Name: "ports only", Principals: []Principal{{Prefix: "spiffe://td/ns/ops/"}}, Ports: []uint16{9090}},
	}}
	for _, tc := range []struct {
		peer         string
		port         uint16
		method, path string
		want         string // the allowing policy, "" for a denial
	}{
		{clientID, 8080, "GET", "/api/x", "api"},
		{clientID, 8080, "HEAD", "/healthz", "api"},
		{clientID, 8080, "GET", "/healthz/", ""},
		{clientID, 8080, "get", "/api/x", ""},
		{clientID, 9090, "GET", "/api/x", ""},
		{clientID, 9090, "POST", "/orders", "api"},
		{clientID, 8080, "POST", "/api/x", ""},
		{"", 8080, "GET", "/api/x", ""},
		{"spiffe://td/ns/ops/sa/x", 9090, "DELETE", "/x", "ports only"},
		{"spiffe://td/ns/ops/sa/x", 8080, "GET", "/api/x", ""},
	} {
		ok, policy := f.AllowsRequest(tc.peer, tc.port, tc.method, tc.path)
		if ok != (tc.want != "") || policy != tc.want {
			t.Errorf("%q %d %s %s: %v by %q, want %q", tc.peer, tc.port, tc.method, tc.path, ok, policy, tc.want)
		}
	}
	deny := RBACFilter{Action: RBACDeny, Policies: []RBACPolicy{{Name: "no-admin", Principals: []Principal{{Any: true}},
		Permissions: []Permission{{Paths: []PathMatch{{Prefix: "/admin"}}}}}}}
	if ok, p := deny.AllowsRequest("", 1, "GET", "/admin/x"); ok || p != "no-admin" {
		t.Errorf("DENY /admin: %v %q", ok, p)
	}
	if ok, p := deny.AllowsRequest(clientID, 1, "GET", "/api"); !ok || p != "" {
		t.Errorf("DENY, nothing matching: %v %q", ok, p)
	}
}
