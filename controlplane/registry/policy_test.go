package registry

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/internal/testutil"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// buildWith builds a snapshot from weft objects alone (plus demo pods).
func buildWith(t *testing.T, objs ...string) *mesh.Snapshot {
	t.Helper()
	st := &state{td: td}
	st.pods = append(st.pods, pod("shop", "web-1", "web", "198.18.200.11", true, map[string]string{"app": "web", "tier": "front"}),
		pod("shop", "db-0", "db", "198.18.200.21", true, map[string]string{"app": "db"}))
	created := testutil.Epoch(t) // objs[i] is created i minutes after
	for i, y := range objs {
		u := weftObject(t, y)
		u.SetCreationTimestamp(metav1.NewTime(created.Add(time.Duration(i) * time.Minute)))
		into := map[string]*[]*unstructured.Unstructured{
			v1alpha1.MeshConfigKind: &st.meshConfigs, v1alpha1.MTLSPolicyKind: &st.mtlsPolicies,
			v1alpha1.AuthorizationPolicyKind: &st.authzPolicies, v1alpha1.EgressPolicyKind: &st.egressPolicies,
		}[u.GetKind()]
		*into = append(*into, u)
	}
	c, _ := build(st)
	return mesh.NewSnapshot(0, *c)
}

func TestValidationRejects(t *testing.T) {
	for _, tc := range []struct{ name, obj, want string }{
		{"selector operator", `kind: MTLSPolicy
metadata: {name: x, namespace: shop}
spec: {mode: STRICT, selector: {matchExpressions: [{key: app, operator: Near, values: [a]}]}}`, `spec.selector: "Near" is not a valid label selector operator`},
		{"mtls mode", `kind: MTLSPolicy
metadata: {name: x, namespace: shop}
spec: {mode: strict}`, `spec.mode "strict" is not STRICT or PERMISSIVE`},
		{"port key", `kind: MTLSPolicy
metadata: {name: x, namespace: shop}
spec: {mode: STRICT, portLevelMtls: {"70000": PERMISSIVE}}`, `spec.portLevelMtls[70000]: port 70000 is not in 1-65535`},
		{"principal not spiffe", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{from: [{principals: ["web"]}]}]}`, `spec.rules[0].from[0].principals[0] "web" is not a SPIFFE ID: scheme is missing or invalid`},
		{"principal other trust domain", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{from: [{principals: ["spiffe://evil.example/ns/a/sa/b"]}]}]}`, `spec.rules[0].from[0].principals[0] "spiffe://evil.example/ns/a/sa/b" is not in the mesh's trust domain "cluster.local"`},
		{"prefix without slash", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{from: [{principals: ["spiffe://cluster.local*"]}]}]}`, `is not in the mesh's trust domain`},
		{"bad service account", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{from: [{serviceAccounts: ["ops"]}]}]}`, `spec.rules[0].from[0].serviceAccounts[0] "ops" is not <namespace>/<service-account>`},
		{"empty source", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{from: [{}]}]}`, `spec.rules[0].from[0]: needs principals, namespaces or serviceAccounts`},
		{"duplicate rules", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{to: [{ports: [80]}]}, {to: [{ports: [80]}]}]}`, `spec.rules[1] duplicates spec.rules[0]`},
		{"empty to entry", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{to: [{}]}]}`, `spec.rules[0].to[0]: needs ports, methods or paths`},
		{"lower-case method", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{to: [{methods: [GET, get]}]}]}`, `spec.rules[0].to[0].methods[1] "get": a method is upper case (A-Z, 0-9, '-', '_'), as sent: GET, not get`},
		{"method with a space", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{to: [{methods: ["GET /"]}]}]}`, `spec.rules[0].to[0].methods[0] "GET /": a method is upper case`},
		{"empty method", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{to: [{methods: [""]}]}]}`, `spec.rules[0].to[0].methods[0] "": a method is 1 to 32 characters`},
		{"relative path", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{to: [{ports: [80], paths: ["api/*"]}]}]}`, `spec.rules[0].to[0].paths[0] "api/*": a path is absolute (starts with '/'), or is "*"`},
		{"wildcard inside a path", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{to: [{paths: ["/api/*/users"]}]}]}`, `spec.rules[0].to[0].paths[0] "/api/*/users": '*' is allowed only once, at the end`},
		{"two trailing wildcards", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{to: [{paths: ["/api/**"]}]}]}`, `spec.rules[0].to[0].paths[0] "/api/**": '*' is allowed only once, at the end`},
		{"path with a query", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{to: [{paths: ["/api?v=1"]}]}]}`, `spec.rules[0].to[0].paths[0] "/api?v=1": a path holds no query or fragment`},
		{"path too long", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{to: [{paths: ["/` + strings.Repeat("a", 1024) + `"]}]}]}`, `spec.rules[0].to[0].paths[0]: 1025 bytes, at most 1024`},
		{"too many methods", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{to: [{methods: [A, B, C, D, E, F, G, H, I, J, K, L, M, O, P, Q, R]}]}]}`, `spec.rules[0].to[0].methods: 17 methods, at most 16`},
		{"action", `kind: AuthorizationPolicy
metadata: {name: x, namespace: shop}
spec: {action: AUDIT}`, `spec.action "AUDIT" is not ALLOW or DENY`},
		{"egress no destination", `kind: EgressPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{ports: [{number: 443, protocol: TLS}]}]}`, `spec.rules[0]: needs at least one of hosts or cidrs`},
		{"egress host", `kind: EgressPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{hosts: ["API.example.com"]}]}`, `spec.rules[0].hosts[0] "API.example.com" is not a lowercase DNS name or a *. wildcard`},
		{"egress cidr", `kind: EgressPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{cidrs: ["198.18.200.0/40"]}]}`, `spec.rules[0].cidrs[0] "198.18.200.0/40" is not a CIDR`},
		{"egress host on tcp", `kind: EgressPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{hosts: [db.example.com], ports: [{number: 5432, protocol: TCP}]}]}`, `spec.rules[0].ports[0]: hosts cannot be matched on TCP port 5432`},
		{"egress duplicate", `kind: EgressPolicy
metadata: {name: x, namespace: shop}
spec: {rules: [{hosts: [a.example], action: Allow}, {hosts: [a.example], action: Allow}]}`, `spec.rules[1] duplicates spec.rules[0]`},
		{"egress no rules, default Allow", `kind: EgressPolicy
metadata: {name: x, namespace: shop}
spec: {defaultAction: Allow, rules: []}`, `spec.rules: a policy with defaultAction Allow needs at least one rule`},
		{"egress default action", `kind: EgressPolicy
metadata: {name: x, namespace: shop}
spec: {defaultAction: deny, rules: [{hosts: [a.example]}]}`, `spec.defaultAction "deny" is not Allow or Deny`},
		{"undecodable", `kind: EgressPolicy
metadata: {name: x, namespace: shop}
spec: {rules: "all"}`, `cannot decode`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := buildWith(t, tc.obj)
			if len(s.Rejected) != 1 {
				t.Fatalf("rejected %+v, want one", s.Rejected)
			}
			if r := s.Rejected[0]; !strings.Contains(r.Message, tc.want) || r.Reason != v1alpha1.ReasonInvalid {
				t.Fatalf("rejected %s: %s, want %q", r.Reason, r.Message, tc.want)
			}
		})
	}
}

func TestPoliciesFor(t *testing.T) {
	s := buildWith(t,
		`kind: MTLSPolicy
metadata: {name: ns-permissive, namespace: shop}
spec: {mode: PERMISSIVE}`,
		`kind: MTLSPolicy
metadata: {name: db-strict, namespace: shop}
spec: {mode: STRICT, selector: {matchLabels: {app: db}}, portLevelMtls: {"9187": PERMISSIVE}}`,
		`kind: MTLSPolicy
metadata: {name: db-younger, namespace: shop}
spec: {mode: PERMISSIVE, selector: {matchLabels: {app: db}}}`,
		`kind: AuthorizationPolicy
metadata: {name: allow-front, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{from: [{namespaces: [shop], serviceAccounts: [shop/web]}], to: [{ports: [5432]}]}]`,
		`kind: AuthorizationPolicy
metadata: {name: deny-ops, namespace: shop}
spec:
  action: DENY
  rules: [{from: [{principals: ["spiffe://cluster.local/ns/ops/*"]}]}]`,
		`kind: AuthorizationPolicy
metadata: {name: other-ns, namespace: ops}
spec: {}`,
		`kind: EgressPolicy
metadata: {name: web-out, namespace: shop}
spec: {serviceAccounts: [web], mode: Audit, rules: [{hosts: ["*.example.com"], ports: [{number: 443, protocol: TLS}]}, {cidrs: ["203.0.113.9/24"], action: Deny}]}`,
	)
	if len(s.Rejected) != 0 {
		t.Fatalf("rejected %+v", s.Rejected)
	}
	web, _ := s.Workload("shop", "web-1")
	db, _ := s.Workload("shop", "db-0")

	wp, dp := s.PoliciesFor(web), s.PoliciesFor(db)
	if wp.MTLS.Policy.Name != "ns-permissive" || wp.MTLS.ModeFor(8080) != v1alpha1.MTLSPermissive {
		t.Errorf("web mTLS %+v", wp.MTLS)
	}
	if dp.MTLS.Policy.Name != "db-strict" || dp.MTLS.ModeFor(5432) != v1alpha1.MTLSStrict || dp.MTLS.ModeFor(9187) != v1alpha1.MTLSPermissive {
		t.Errorf("db mTLS %+v (want the oldest selector policy, port 9187 PERMISSIVE)", dp.MTLS)
	}
	if n := names(dp.Authorization); n != "deny-ops,allow-front" {
		t.Errorf("db authorization policies %s, want deny first", n)
	}
	if n := names(wp.Authorization); n != "deny-ops" {
		t.Errorf("web authorization policies %s", n)
	}
	if len(wp.Egress) != 1 || len(dp.Egress) != 0 {
		t.Errorf("egress: web %d db %d, want 1 and 0", len(wp.Egress), len(dp.Egress))
	}
	if r := wp.Egress[0].Rules[1]; r.CIDRs[0].String() != "203.0.113.0/24" || r.Action != v1alpha1.EgressDeny {
		t.Errorf("egress rule %+v: want masked CIDR and Deny", r)
	}

	id := func(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }
	for _, tc := range []struct {
		name string
		pol  mesh.WorkloadPolicies
		peer spiffeid.ID
		port uint16
		want bool
		by   string
	}{
		{"allowed caller", dp, id("spiffe://cluster.local/ns/shop/sa/web"), 5432, true, "allow-front"},
		{"right caller, wrong port", dp, id("spiffe://cluster.local/ns/shop/sa/web"), 5433, false, "allow-front"},
		{"wrong account", dp, id("spiffe://cluster.local/ns/shop/sa/db"), 5432, false, "allow-front"},
		{"denied namespace", dp, id("spiffe://cluster.local/ns/ops/sa/web"), 5432, false, "deny-ops"},
		{"plaintext", dp, spiffeid.ID{}, 5432, false, "allow-front"},
		{"no allow policy", wp, id("spiffe://cluster.local/ns/shop/sa/db"), 80, true, ""},
		{"no allow policy, plaintext", wp, spiffeid.ID{}, 80, true, ""},
		{"deny beats no allow", wp, id("spiffe://cluster.local/ns/ops/sa/x"), 80, false, "deny-ops"},
		{"other trust domain", dp, id("spiffe://other.example/ns/shop/sa/web"), 5432, false, "allow-front"},
	} {
		got, by := tc.pol.Authorize(td, tc.peer, tc.port)
		byName := ""
		if by != nil {
			byName = by.Name
		}
		if got != tc.want || byName != tc.by {
			t.Errorf("%s: Authorize = %v by %q, want %v by %q", tc.name, got, byName, tc.want, tc.by)
		}
	}

	// An ALLOW policy without rules denies everything it selects.
	s2 := buildWith(t, "kind: AuthorizationPolicy\nmetadata: {name: nothing, namespace: shop}\nspec: {}")
	w2, _ := s2.Workload("shop", "web-1")
	p2 := s2.PoliciesFor(w2)
	if ok, _ := p2.Authorize(td, id("spiffe://cluster.local/ns/shop/sa/web"), 80); ok {
		t.Error("allow-nothing policy allowed a connection")
	}
	// "*" is any authenticated peer of the trust domain.
	s3 := buildWith(t, "kind: AuthorizationPolicy\nmetadata: {name: any, namespace: shop}\nspec: {rules: [{from: [{principals: ['*']}]}]}")
	w3, _ := s3.Workload("shop", "web-1")
	p3 := s3.PoliciesFor(w3)
	if ok, _ := p3.Authorize(td, id("spiffe://cluster.local/ns/x/sa/y"), 80); !ok {
		t.Error("'*' refused an authenticated peer")
	}
	if ok, _ := p3.Authorize(td, spiffeid.ID{}, 80); ok {
		t.Error("'*' allowed a plaintext peer")
	}
}

// TestEgressDefaultAction: an EgressPolicy without defaultAction is an
// allow-list (Deny, the CRD's default, also for objects stored before the
// field existed); Allow is kept; a policy without rules is accepted with
// Deny (all egress refused). The Accepted condition says which.
func TestEgressDefaultAction(t *testing.T) {
	st := &state{td: td}
	for _, y := range []string{
		`kind: EgressPolicy
metadata: {name: allow-list, namespace: shop}
spec: {rules: [{hosts: [api.example.com]}]}`,
		`kind: EgressPolicy
metadata: {name: block-list, namespace: shop}
spec: {defaultAction: Allow, rules: [{cidrs: [169.254.169.254/32], action: Deny}]}`,
		`kind: EgressPolicy
metadata: {name: lockdown, namespace: shop}
spec: {mode: Audit, defaultAction: Deny}`,
	} {
		st.egressPolicies = append(st.egressPolicies, weftObject(t, y))
	}
	s, verdicts := build(st)
	if len(s.Rejected) != 0 || len(s.EgressPolicies) != 3 {
		t.Fatalf("rejected %+v, accepted %d, want 3 accepted", s.Rejected, len(s.EgressPolicies))
	}
	want := map[string]struct {
		action  v1alpha1.EgressAction
		message string
	}{
		"allow-list": {v1alpha1.EgressDeny, "EgressPolicy is in force (Enforce, defaultAction Deny): egress no rule allows is refused"},
		"block-list": {v1alpha1.EgressAllow, "EgressPolicy is in force (Enforce, defaultAction Allow): egress no rule matches is left to MeshConfig's outboundTrafficPolicy"},
		"lockdown":   {v1alpha1.EgressDeny, "EgressPolicy is in force (Audit, defaultAction Deny): egress no rule allows is let through and flagged"},
	}
	for _, p := range s.EgressPolicies {
		if w := want[p.Name]; p.DefaultAction != w.action || p.DefaultDeny() != (w.action == v1alpha1.EgressDeny) {
			t.Errorf("%s: defaultAction %q (deny %t), want %q", p.Name, p.DefaultAction, p.DefaultDeny(), w.action)
		}
	}
	for _, v := range verdicts {
		if w := want[v.obj.GetName()]; !v.accepted || v.message != w.message {
			t.Errorf("%s: accepted %t, message %q, want %q", v.obj.GetName(), v.accepted, v.message, w.message)
		}
	}
	if (&mesh.EgressPolicy{}).DefaultDeny() != true {
		t.Error("an empty DefaultAction must read as Deny (the API's default)")
	}
}

func names(ps []*mesh.AuthorizationPolicy) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return strings.Join(out, ",")
}

func TestAppProtocol(t *testing.T) {
	for _, tc := range []struct {
		name, ap string
		want     mesh.AppProtocol
	}{
		{"http", "", mesh.AppProtocolHTTP}, {"http-web", "", mesh.AppProtocolHTTP}, {"grpc-api", "", mesh.AppProtocolGRPC},
		{"tcp-db", "", mesh.AppProtocolTCP}, {"tls-x", "", mesh.AppProtocolTLS}, {"HTTP2-x", "", mesh.AppProtocolHTTP2},
		{"web", "", mesh.AppProtocolUnknown}, {"httpx", "", mesh.AppProtocolUnknown},
		{"web", "grpc", mesh.AppProtocolGRPC}, {"http-web", "tcp", mesh.AppProtocolTCP}, {"x", "kubernetes.io/h2c", mesh.AppProtocolHTTP2},
		{"http-web", "example.com/custom", mesh.AppProtocolUnknown},
	} {
		var ap *string
		if tc.ap != "" {
			ap = &tc.ap
		}
		if got := appProtocol(tc.name, ap); got != tc.want {
			t.Errorf("appProtocol(%q, %q) = %q, want %q", tc.name, tc.ap, got, tc.want)
		}
	}
}

// TestAuthorizationHTTPFields: a to entry's methods and paths are parsed
// (exact, prefix, any; duplicates dropped) and decided on requests by
// AuthorizeRequest; on connections (Authorize) an ALLOW entry with them
// matches nothing and a DENY entry applies without them (docs/l7.md,
// "Where HTTP fields apply").
func TestAuthorizationHTTPFields(t *testing.T) {
	s := buildWith(t, `kind: AuthorizationPolicy
metadata: {name: read, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - from: [{namespaces: [shop]}]
    to: [{ports: [8080, 80, 8080], methods: [GET, HEAD, GET], paths: [/api/v1/users, "/api/*", /api/v1/users]}, {ports: [9090]}]
  - to: [{paths: ["*"]}]
    from: [{serviceAccounts: [ops/admin]}]`, `kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: DENY
  rules:
  - from: [{principals: ["spiffe://cluster.local/ns/shop/sa/intruder"]}]
    to: [{methods: [DELETE]}]
  - from: [{principals: ["spiffe://cluster.local/ns/shop/sa/web"]}]
    to: [{ports: [8080], paths: ["/admin/*"]}]`)
	if len(s.Rejected) != 0 {
		t.Fatalf("rejected %+v", s.Rejected)
	}
	var read *mesh.AuthorizationPolicy
	for _, p := range s.AuthorizationPolicies {
		if p.Name == "read" {
			read = p
		}
	}
	want := []mesh.Destination{
		{Ports: []uint16{80, 8080}, Methods: []string{"GET", "HEAD"}, Paths: []mesh.PathMatch{{Value: "/api/v1/users"}, {Value: "/api/", Prefix: true}}},
		{Ports: []uint16{9090}},
	}
	if got := read.Rules[0].To; !equalRule(got, want) {
		t.Fatalf("rule 0 to = %+v, want %+v", got, want)
	}
	if got := read.Rules[1].To; len(got) != 1 || len(got[0].Paths) != 1 || !got[0].Paths[0].Any() || got[0].Paths[0].String() != "*" {
		t.Fatalf("rule 1 to = %+v, want any path", got)
	}

	db, _ := s.Workload("shop", "db-0")
	pol := s.PoliciesFor(db)
	id := spiffeid.RequireFromString
	web := id("spiffe://cluster.local/ns/shop/sa/web")
	intruder := id("spiffe://cluster.local/ns/shop/sa/intruder")
	admin := id("spiffe://cluster.local/ns/ops/sa/admin")
	for _, tc := range []struct {
		peer         spiffeid.ID
		port         uint16
		method, path string
		want         bool
		by           string
	}{
		{web, 8080, "GET", "/api/v1/users", true, "read"},
		{web, 8080, "GET", "/api/v1/users?limit=3", true, "read"}, // the query is not the path
		{web, 80, "HEAD", "/api/", true, "read"},
		{web, 8080, "GET", "/api", false, "read"},           // the prefix is "/api/"
		{web, 8080, "GET", "/api/v1/users/", true, "read"},  // under the prefix
		{web, 8080, "POST", "/api/v1/users", false, "read"}, // method
		{web, 8080, "get", "/api/v1/users", false, "read"},  // methods are case-sensitive
		{web, 8081, "GET", "/api/v1/users", false, "read"},  // port
		{web, 9090, "DELETE", "/anything", true, "read"},    // the ports-only entry
		{web, 8080, "GET", "/other", false, "read"},         // no entry of read matches
		{web, 8080, "GET", "/admin/", false, "no-admin"},    // DENY on path
		{web, 8081, "GET", "/admin/", false, "read"},        // the DENY entry is on 8080 only
		{intruder, 9090, "DELETE", "/", false, "no-admin"},  // DENY on method, any port
		{intruder, 9090, "GET", "/", true, "read"},          // not DELETE
		{admin, 1234, "PUT", "/x", true, "read"},            // paths ["*"]
		{spiffeid.ID{}, 9090, "GET", "/", false, "read"},    // plaintext: no from matches
		{id("spiffe://cluster.local/ns/other/sa/x"), 9090, "GET", "/", false, "read"},
	} {
		ok, by := pol.AuthorizeRequest(td, tc.peer, tc.port, tc.method, tc.path)
		if ok != tc.want || by == nil || by.Name != tc.by {
			t.Errorf("AuthorizeRequest(%s, %d, %s %s) = %v by %+v, want %v by %s", tc.peer, tc.port, tc.method, tc.path, ok, by, tc.want, tc.by)
		}
	}
	for _, tc := range []struct {
		peer spiffeid.ID
		port uint16
		want bool
		by   string
	}{
		{web, 8080, false, "no-admin"},      // DENY {8080, /admin/*} without its path: all of 8080
		{web, 9090, true, "read"},           // the ports-only entry of read
		{web, 80, false, "read"},            // read's entry on 80 sets HTTP fields: dropped
		{intruder, 9090, false, "no-admin"}, // DENY {DELETE} without its method: every port
		{intruder, 9091, false, "no-admin"},
		{admin, 1234, false, "read"}, // ALLOW {paths: [*]} is an HTTP field too: dropped
		{id("spiffe://cluster.local/ns/shop/sa/other"), 9090, true, "read"},
	} {
		ok, by := pol.Authorize(td, tc.peer, tc.port)
		if ok != tc.want || by == nil || by.Name != tc.by {
			t.Errorf("Authorize(%s, %d) = %v by %+v, want %v by %s", tc.peer, tc.port, ok, by, tc.want, tc.by)
		}
	}
}
