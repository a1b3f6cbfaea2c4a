package egress

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// testConfig is an outbound listener shaped as the translator writes it
// (controlplane/xds/translate golden "client"), with REGISTRY_ONLY as outbound policy.
func testConfig() *model.Config {
	pfx := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	meta := func(policy, rule, decision string) *model.EgressMeta {
		return &model.EgressMeta{Policy: policy, Rule: rule, Decision: decision}
	}
	pass, hole := model.Target{Cluster: "PassthroughCluster"}, model.Target{Cluster: "BlackHoleCluster"}
	registryOnly := &model.EgressMeta{Decision: "deny", Outbound: "REGISTRY_ONLY"}
	return &model.Config{
		Outbound: &model.Listener{
			Name: model.OutboundListener, UseOriginalDst: true, InspectTLS: true, InspectHTTP: true,
			Chains: []*model.FilterChain{
				{Name: "outbound|80|server.demo", Match: model.ChainMatch{DestPort: 80, Prefixes: pfx("198.19.0.10/32")},
					Target: model.Target{Cluster: "outbound|80|server.demo"}},
				{Name: "passthrough|443|kubernetes.default", Match: model.ChainMatch{DestPort: 443, Prefixes: pfx("198.19.0.1/32")},
					Target: pass},
				{Name: "egress|443|tls|allow|demo/p#0", Match: model.ChainMatch{DestPort: 443, TransportProtocol: "tls",
					ServerNames: []string{"api.example.com"}}, Target: pass, AccessLog: true, Egress: meta("demo/p", "0", "allow")},
				{Name: "egress|443|tls|allow|demo/p#1", Match: model.ChainMatch{DestPort: 443, TransportProtocol: "tls",
					ServerNames: []string{"*.example.com"}}, Target: pass, AccessLog: true, Egress: meta("demo/p", "1", "allow")},
				{Name: "egress|443|tls|deny|demo/p#2", Match: model.ChainMatch{DestPort: 443, TransportProtocol: "tls",
					ServerNames: []string{"bad.example.com"}}, Target: hole, AccessLog: true, Egress: meta("demo/p", "2", "deny")},
				{Name: "egress|80|http|deny", Match: model.ChainMatch{DestPort: 80, TransportProtocol: "raw_buffer",
					AppProtocols: []string{"http/1.1", "h2c"}}, Target: model.Target{RouteConfig: "egress|80", StripAnyHostPort: true},
					AccessLog: true, Egress: registryOnly},
				{Name: "egress|9000|tcp|audit|demo/lab#0", Match: model.ChainMatch{DestPort: 9000, Prefixes: pfx("198.18.100.0/24")},
					Target: pass, AccessLog: true, Egress: meta("demo/lab", "0", "audit")},
				{Name: "egress|443|tcp|allow|demo/v6#0", Match: model.ChainMatch{DestPort: 443, Prefixes: pfx("2001:db8::/32")},
					Target: pass, AccessLog: true, Egress: meta("demo/v6", "0", "allow")},
				{Name: "egress|8443|tls|allow|demo/broken#0", Match: model.ChainMatch{DestPort: 8443}, Target: hole,
					AccessLog: true, Egress: meta("demo/broken", "0", "allow")},
			},
			Default: &model.FilterChain{Name: "egress|default", Target: hole, AccessLog: true, Egress: registryOnly},
		},
		Clusters: map[string]*model.Cluster{
			"PassthroughCluster":      {Name: "PassthroughCluster", Kind: model.KindOriginalDst},
			"BlackHoleCluster":        {Name: "BlackHoleCluster", Kind: model.KindBlackhole},
			"outbound|80|server.demo": {Name: "outbound|80|server.demo", Kind: model.KindEDS},
		},
		Routes: map[string]*model.RouteConfig{
			"egress|80": {Name: "egress|80", VirtualHosts: []*model.VirtualHost{
				{Name: "api.example.com", Domains: []string{"api.example.com"}, Cluster: "PassthroughCluster",
					Egress: meta("demo/p", "3", "allow")},
				{Name: "audit.example.com", Domains: []string{"audit.example.com"}, Cluster: "PassthroughCluster",
					Egress: meta("demo/lab", "1", "audit")},
				{Name: "evil.example.com", Domains: []string{"evil.example.com"}, Egress: meta("demo/p", "4", "deny"),
					Deny: &model.DirectResponse{Status: 403, Body: "weft: egress to evil.example.com denied by demo/p rule 4\n"}},
				{Name: "*", Domains: []string{"*"}, Egress: registryOnly,
					Deny: &model.DirectResponse{Status: 403, Body: "weft: egress to this host denied by outbound policy REGISTRY_ONLY\n"}},
			}},
		},
	}
}

func TestDecide(t *testing.T) {
	cfg := testConfig()
	ap := netip.MustParseAddrPort
	ext443, ext80 := ap("93.184.216.34:443"), ap("93.184.216.34:80")
	tests := []struct {
		name   string
		conn   Conn
		action Action
		policy string
		rule   string
		chain  string
		reason string // checked when set
	}{
		{"exact SNI", Conn{Dst: ext443, SNI: "api.example.com"}, Allow, "demo/p", "0", "egress|443|tls|allow|demo/p#0", ""},
		{"SNI case and trailing dot", Conn{Dst: ext443, SNI: "API.Example.COM."}, Allow, "demo/p", "0", "egress|443|tls|allow|demo/p#0", ""},
		{"wildcard SNI", Conn{Dst: ext443, SNI: "cdn.example.com"}, Allow, "demo/p", "1", "egress|443|tls|allow|demo/p#1", ""},
		{"wildcard, deeper name", Conn{Dst: ext443, SNI: "a.b.example.com"}, Allow, "demo/p", "1", "egress|443|tls|allow|demo/p#1", ""},
		{"wildcard does not match the apex", Conn{Dst: ext443, SNI: "example.com"}, Deny, "", "", "egress|default", ""},
		{"apex with trailing dot", Conn{Dst: ext443, SNI: "Example.com."}, Deny, "", "", "egress|default", ""},
		{"exact deny beats wildcard allow", Conn{Dst: ext443, SNI: "bad.example.com"}, Deny, "demo/p", "2", "egress|443|tls|deny|demo/p#2", ""},
		{"TLS without SNI", Conn{Dst: ext443, Transport: "tls"}, Deny, "", "", "egress|default", ""},
		{"raw TCP, no SNI, no Host", Conn{Dst: ext443}, Deny, "", "", "egress|default", ""},
		{"HTTP Host allowed", Conn{Dst: ext80, Host: "api.example.com"}, Allow, "demo/p", "3", "egress|80|http|deny", ""},
		{"HTTP Host with port", Conn{Dst: ext80, Host: "api.example.com:80"}, Allow, "demo/p", "3", "egress|80|http|deny", ""},
		{"HTTP Host case and trailing dot", Conn{Dst: ext80, Host: "API.EXAMPLE.COM.:80"}, Allow, "demo/p", "3", "egress|80|http|deny", ""},
		{"HTTP Host audited", Conn{Dst: ext80, Host: "audit.example.com"}, Audit, "demo/lab", "1", "egress|80|http|deny", ""},
		{"HTTP Host denied", Conn{Dst: ext80, Host: "evil.example.com"}, Deny, "demo/p", "4", "egress|80|http|deny",
			"weft: egress to evil.example.com denied by demo/p rule 4"},
		{"HTTP other host: outbound policy", Conn{Dst: ext80, Host: "other.org"}, Deny, "", "", "egress|80|http|deny",
			"weft: egress to this host denied by outbound policy REGISTRY_ONLY"},
		{"HTTP without Host", Conn{Dst: ext80, ALPN: []string{"http/1.1"}}, Deny, "", "", "egress|80|http|deny",
			"egress: chain egress|80|http|deny: HTTP request without Host"},
		{"plain TCP on the HTTP port", Conn{Dst: ext80}, Deny, "", "", "egress|default", ""},
		{"CONNECT is TCP to the port, not the Host", Conn{Dst: ext80, Host: "api.example.com:443", Connect: true},
			Deny, "", "", "egress|default", ""},
		{"CONNECT to an allowed TCP destination", Conn{Dst: ap("198.18.100.7:9000"), Host: "evil.example.com:443", Connect: true},
			Audit, "demo/lab", "0", "egress|9000|tcp|audit|demo/lab#0", ""},
		{"audit by CIDR", Conn{Dst: ap("198.18.100.7:9000")}, Audit, "demo/lab", "0", "egress|9000|tcp|audit|demo/lab#0", ""},
		{"IPv4-mapped IPv6", Conn{Dst: ap("[::ffff:198.18.100.7]:9000")}, Audit, "demo/lab", "0", "egress|9000|tcp|audit|demo/lab#0", ""},
		{"outside the CIDR", Conn{Dst: ap("198.18.101.7:9000")}, Deny, "", "", "egress|default", ""},
		{"IPv6 CIDR", Conn{Dst: ap("[2001:db8::1]:443")}, Allow, "demo/v6", "0", "egress|443|tcp|allow|demo/v6#0", ""},
		{"IPv6 with zone", Conn{Dst: netip.AddrPortFrom(netip.MustParseAddr("2001:db8::1%eth0"), 443)}, Allow, "demo/v6", "0",
			"egress|443|tcp|allow|demo/v6#0", ""},
		{"IPv6 outside CIDR by SNI", Conn{Dst: ap("[2001:db9::1]:443"), SNI: "api.example.com"}, Allow, "demo/p", "0",
			"egress|443|tls|allow|demo/p#0", ""},
		{"IPv6 HTTP Host literal", Conn{Dst: ap("[2001:db9::1]:80"), Host: "[2001:db9::1]:80"}, Deny, "", "", "egress|80|http|deny", ""},
		{"in-mesh service", Conn{Dst: ap("198.19.0.10:80"), Host: "server.demo"}, NotEgress, "", "", "outbound|80|server.demo", ""},
		{"plaintext Service outside the mesh", Conn{Dst: ap("198.19.0.1:443"), SNI: "kubernetes.default"}, NotEgress, "", "",
			"passthrough|443|kubernetes.default", ""},
		{"metadata allow but blackhole: fail closed", Conn{Dst: ap("93.184.216.34:8443")},
			Deny, "demo/broken", "0", "egress|8443|tls|allow|demo/broken#0", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DecideConn(cfg, tt.conn)
			if d.Action != tt.action || d.Policy != tt.policy || d.Rule != tt.rule || d.Chain != tt.chain {
				t.Fatalf("DecideConn(%+v) = %+v\nwant action %s policy %q rule %q chain %q", tt.conn, d, tt.action, tt.policy, tt.rule, tt.chain)
			}
			if tt.reason != "" && d.Reason != tt.reason {
				t.Errorf("reason = %q, want %q", d.Reason, tt.reason)
			}
			if d.Reason == "" {
				t.Error("empty reason")
			}
		})
	}
}

func TestDecideWithoutConfig(t *testing.T) {
	for _, cfg := range []*model.Config{nil, {}} {
		if d := Decide(cfg, netip.MustParseAddrPort("1.2.3.4:443"), "api.example.com", ""); d.Action != Deny {
			t.Errorf("Decide without outbound listener = %+v, want deny", d)
		}
	}
	cfg := testConfig()
	cfg.Outbound.Default = nil
	d := Decide(cfg, netip.MustParseAddrPort("1.2.3.4:443"), "example.com", "")
	if want := "egress: no filter chain and no default chain for 1.2.3.4:443"; d.Action != Deny || d.Reason != want {
		t.Errorf("Decide without default chain = %+v, want deny %q", d, want)
	}
}

func TestDecideShortForm(t *testing.T) {
	cfg := testConfig()
	if d := Decide(cfg, netip.MustParseAddrPort("93.184.216.34:443"), "Cdn.Example.Com.", ""); d.Action != Allow || d.Rule != "1" {
		t.Errorf("Decide by SNI = %+v", d)
	}
	if d := Decide(cfg, netip.MustParseAddrPort("93.184.216.34:80"), "", "api.example.com:80"); d.Action != Allow || d.Rule != "3" {
		t.Errorf("Decide by Host = %+v", d)
	}
}

func TestHostName(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM":          "example.com",
		"example.com.":         "example.com",
		"example.com.:8080":    "example.com",
		" api.example.com:80 ": "api.example.com",
		"[2001:DB8::1]:443":    "2001:db8::1",
		"[::1]":                "::1",
		"2001:db8::1":          "2001:db8::1",
		"":                     "",
		":80":                  "", // a port and no name: nothing a rule could match
	} {
		if got := HostName(in); got != want {
			t.Errorf("HostName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{NotEgress: "not-egress", Allow: "allow", Deny: "deny", Audit: "audit"} {
		if a.String() != want {
			t.Errorf("%d.String() = %q, want %q", a, a.String(), want)
		}
	}
}

// allowAny is testConfig with ALLOW_ANY as outbound policy.
func allowAny() *model.Config {
	cfg := testConfig()
	cfg.Outbound.Default = &model.FilterChain{Name: "egress|default", Target: model.Target{Cluster: "PassthroughCluster"},
		AccessLog: true, Egress: &model.EgressMeta{Decision: "allow", Outbound: "ALLOW_ANY"}}
	return cfg
}

func TestNameUnknown(t *testing.T) {
	ap := netip.MustParseAddrPort
	// The chain a connection without a name takes.
	nameless := func(cfg *model.Config, dst netip.AddrPort) *model.FilterChain {
		return cfg.Outbound.Match(dst, "raw_buffer", "", nil)
	}
	chain := func(cfg *model.Config, name string) func(*model.Config, netip.AddrPort) *model.FilterChain {
		return func(*model.Config, netip.AddrPort) *model.FilterChain {
			for _, fc := range cfg.Outbound.Chains {
				if fc.Name == name {
					return fc
				}
			}
			t.Fatalf("no chain %s", name)
			return nil
		}
	}
	// Only an Audit policy names a host on 443: flagged.
	auditOnly := allowAny()
	for _, fc := range auditOnly.Outbound.Chains {
		if fc.Name == "egress|443|tls|deny|demo/p#2" {
			fc.Target = model.Target{Cluster: "PassthroughCluster"}
			fc.Egress = &model.EgressMeta{Policy: "demo/watch", Rule: "0", Decision: "audit", Mode: "Audit"}
		}
	}
	// Only Allow rules name hosts on 443: nothing to evade.
	allowOnly := allowAny()
	allowOnly.Outbound.Chains = slices.DeleteFunc(allowOnly.Outbound.Chains, func(fc *model.FilterChain) bool {
		return fc.Name == "egress|443|tls|deny|demo/p#2"
	})
	// A CIDR rule allows 2001:db8::/32 on 443, and the translator repeats
	// the Deny rule by name inside that range.
	cidr := allowAny()
	cidr.Outbound.Chains = append(cidr.Outbound.Chains, &model.FilterChain{Name: "egress|443|tls|deny|demo/p#2|v6",
		Match:  model.ChainMatch{DestPort: 443, Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}, TransportProtocol: "tls", ServerNames: []string{"bad.example.com"}},
		Target: model.Target{Cluster: "BlackHoleCluster"}, Egress: &model.EgressMeta{Policy: "demo/p", Rule: "2", Decision: "deny"}})
	open := allowAny()
	// An Audit policy's defaultAction Deny decides what no rule names: the
	// default chain audits, naming that policy's rule "default".
	auditDefault := allowAny()
	auditDefault.Outbound.Default.Egress = &model.EgressMeta{Policy: "demo/watch", Rule: "default", Decision: "audit", Mode: "Audit"}
	// Two Enforce Deny rules by name on 443, listed in the reverse of
	// policy order: the decision names the first by policy, then rule.
	tie := allowAny()
	tie.Outbound.Chains = append([]*model.FilterChain{{Name: "egress|443|tls|deny|demo/z#0",
		Match:  model.ChainMatch{DestPort: 443, TransportProtocol: "tls", ServerNames: []string{"z.example.com"}},
		Target: model.Target{Cluster: "BlackHoleCluster"}, Egress: &model.EgressMeta{Policy: "demo/z", Rule: "0", Decision: "deny"}}, {Name: "egress|443|tls|deny|demo/p#10",
		Match:  model.ChainMatch{DestPort: 443, TransportProtocol: "tls", ServerNames: []string{"ten.example.com"}},
		Target: model.Target{Cluster: "BlackHoleCluster"}, Egress: &model.EgressMeta{Policy: "demo/p", Rule: "10", Decision: "deny"}}}, tie.Outbound.Chains...)
	tests := []struct {
		name   string
		cfg    *model.Config
		dst    netip.AddrPort
		chain  func(*model.Config, netip.AddrPort) *model.FilterChain
		ok     bool
		action Action
		policy string
		rule   string
		reason string
	}{
		{"ALLOW_ANY, a Deny rule names a host on the port", open, ap("93.184.216.34:443"), nameless, true, Deny, "demo/p", "2",
			"egress: no name learned, and demo/p rule 2 denies bad.example.com at 93.184.216.34:443"},
		{"HTTP virtual hosts: Enforce's deny before Audit's audit", open, ap("93.184.216.34:80"), nameless, true, Deny, "demo/p", "4", ""},
		{"only an Audit policy's Deny rule", auditOnly, ap("93.184.216.34:443"), nameless, true, Audit, "demo/watch", "0", ""},
		{"only Allow rules by name", allowOnly, ap("93.184.216.34:443"), nameless, false, Allow, "", "", ""},
		{"a chain matched by an untrusted name (ECH's outer name)", open, ap("93.184.216.34:443"),
			chain(open, "egress|443|tls|allow|demo/p#0"), true, Deny, "demo/p", "2", ""},
		{"a rule by address decided", cidr, ap("[2001:db8::1]:443"), nameless, false, Allow, "demo/v6", "0", ""},
		{"REGISTRY_ONLY: the default chain denies already", testConfig(), ap("93.184.216.34:443"), nameless, false, Deny, "", "", ""},
		{"no rule by name on the port", open, ap("198.18.101.7:9000"), nameless, false, Allow, "", "", ""},
		{"in-mesh service", open, ap("198.19.0.10:80"), nameless, false, NotEgress, "", "", ""},
		{"a chain that fails closed", open, ap("93.184.216.34:8443"), nameless, false, Deny, "demo/broken", "0", ""},
		{"a policy's defaultAction is not a rule by address", auditDefault, ap("93.184.216.34:443"), nameless, true, Deny, "demo/p", "2", ""},
		{"equally strict: first by policy, then rule index", tie, ap("93.184.216.34:443"), nameless, true, Deny, "demo/p", "2", ""},
		{"IPv4-mapped destination", open, ap("[::ffff:93.184.216.34]:443"), nameless, true, Deny, "demo/p", "2", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := tt.chain(tt.cfg, tt.dst)
			d, ok := NameUnknown(tt.cfg, tt.dst, fc)
			if ok != tt.ok || d.Action != tt.action || d.Policy != tt.policy || d.Rule != tt.rule {
				t.Fatalf("NameUnknown(%s, %s) = %+v, %v; want %v %s by %q rule %q", tt.dst, fc.Name, d, ok, tt.ok, tt.action, tt.policy, tt.rule)
			}
			if ok && d.Chain != fc.Name {
				t.Errorf("chain %q, want the connection's %q", d.Chain, fc.Name)
			}
			if tt.reason != "" && d.Reason != tt.reason {
				t.Errorf("reason %q, want %q", d.Reason, tt.reason)
			}
		})
	}
}

// TestDecideConnNameUnknown: DecideConn gives the connections Unnamed names
// NameUnknown's decision, and leaves named ones to their chain.
func TestDecideConnNameUnknown(t *testing.T) {
	cfg := allowAny()
	ap := netip.MustParseAddrPort
	for _, tt := range []struct {
		name    string
		c       Conn
		unnamed bool
		action  Action
		rule    string
	}{
		{"TLS without SNI", Conn{Dst: ap("93.184.216.34:443"), Transport: "tls"}, true, Deny, "2"},
		{"opaque TCP", Conn{Dst: ap("93.184.216.34:443")}, true, Deny, "2"},
		{"CONNECT is opaque TCP", Conn{Dst: ap("93.184.216.34:443"), Host: "api.example.com:443", Connect: true}, true, Deny, "2"},
		{"plain HTTP where only TLS rules name hosts", Conn{Dst: ap("93.184.216.34:443"), Host: "api.example.com"}, true, Deny, "2"},
		{"TLS with an SNI no rule names", Conn{Dst: ap("93.184.216.34:443"), SNI: "other.org"}, false, Allow, ""},
		// testConfig's catch-all virtual host on 80 says REGISTRY_ONLY.
		{"HTTP routed by Host", Conn{Dst: ap("93.184.216.34:80"), Host: "other.org"}, false, Deny, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.c.normalise()
			fc := cfg.Outbound.Match(n.Dst, n.Transport, n.SNI, n.ALPN)
			if got := Unnamed(fc, tt.c); got != tt.unnamed {
				t.Errorf("Unnamed(%s, %+v) = %v, want %v", fc.Name, tt.c, got, tt.unnamed)
			}
			d := DecideConn(cfg, tt.c)
			if d.Action != tt.action || d.Rule != tt.rule {
				t.Errorf("DecideConn(%+v) = %s by %q rule %q (%s), want %s rule %q", tt.c, d.Action, d.Policy, d.Rule, d.Reason, tt.action, tt.rule)
			}
		})
	}
}

// TestDecideRouteFailsClosed: an HTTP chain whose route configuration is
// missing, or has no virtual host for the request's Host, denies whatever
// its metadata says.
func TestDecideRouteFailsClosed(t *testing.T) {
	dst := netip.MustParseAddrPort("93.184.216.34:80")
	httpChain := func(cfg *model.Config) *model.FilterChain {
		for _, fc := range cfg.Outbound.Chains {
			if fc.Name == "egress|80|http|deny" {
				fc.Egress = &model.EgressMeta{Decision: "allow", Outbound: "ALLOW_ANY"}
				return fc
			}
		}
		t.Fatal("no HTTP chain")
		return nil
	}
	missing := testConfig()
	httpChain(missing).Target.RouteConfig = "egress|80|gone"
	noCatchAll := testConfig()
	httpChain(noCatchAll)
	vhs := noCatchAll.Routes["egress|80"].VirtualHosts
	noCatchAll.Routes["egress|80"].VirtualHosts = slices.DeleteFunc(vhs, func(vh *model.VirtualHost) bool { return vh.Name == "*" })
	for _, tt := range []struct {
		name   string
		cfg    *model.Config
		host   string
		action Action
		reason string
	}{
		{"no route configuration", missing, "api.example.com", Deny, "egress: chain egress|80|http|deny: no route configuration egress|80|gone"},
		{"no virtual host for the Host", noCatchAll, "other.org:80", Deny, "egress: route configuration egress|80 has no virtual host for other.org"},
		{"a virtual host for the Host", noCatchAll, "api.example.com", Allow, "egress: egress|80 virtual host api.example.com allows api.example.com"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := DecideConn(tt.cfg, Conn{Dst: dst, Host: tt.host})
			if d.Action != tt.action || d.Reason != tt.reason || d.Chain != "egress|80|http|deny" {
				t.Fatalf("DecideConn(%s, Host %q) = %+v\nwant %s, chain egress|80|http|deny, reason %q", dst, tt.host, d, tt.action, tt.reason)
			}
		})
	}
}

// TestBefore: the order NameUnknown picks by is a strict order: stricter
// first, then policy, then rule index numerically, indices before the
// words ("default", "rejected"), words by spelling; nothing before itself.
func TestBefore(t *testing.T) {
	d := func(a Action, policy, rule string) Decision { return Decision{Action: a, Policy: policy, Rule: rule} }
	for _, tt := range []struct {
		name  string
		first Decision
		then  Decision
	}{
		{"deny before audit", d(Deny, "demo/z", "9"), d(Audit, "demo/a", "0")},
		{"audit before allow", d(Audit, "demo/z", "9"), d(Allow, "demo/a", "0")},
		{"by policy", d(Deny, "demo/a", "9"), d(Deny, "demo/b", "0")},
		{"rule index numerically", d(Deny, "demo/p", "2"), d(Deny, "demo/p", "10")},
		{"an index before default", d(Deny, "demo/p", "10"), d(Deny, "demo/p", "default")},
		{"an index before rejected", d(Deny, "demo/p", "10"), d(Deny, "demo/p", "rejected")},
		{"words by spelling", d(Deny, "demo/p", "default"), d(Deny, "demo/p", "rejected")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !before(tt.first, tt.then) {
				t.Errorf("before(%+v, %+v) = false, want true", tt.first, tt.then)
			}
			if before(tt.then, tt.first) {
				t.Errorf("before(%+v, %+v) = true, want false", tt.then, tt.first)
			}
			for _, x := range []Decision{tt.first, tt.then} {
				if before(x, x) {
					t.Errorf("before(%+v, itself) = true", x)
				}
			}
		})
	}
}
