package model

import (
	"net/netip"
	"testing"
)

func TestListenerMatch(t *testing.T) {
	chain := func(name string, m ChainMatch) *FilterChain { return &FilterChain{Name: name, Match: m} }
	pfx := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, p := range s {
			out = append(out, netip.MustParsePrefix(p))
		}
		return out
	}
	l := &Listener{Default: chain("default", ChainMatch{}), Chains: []*FilterChain{
		chain("svc-80", ChainMatch{DestPort: 80, Prefixes: pfx("198.19.0.20/32")}),
		chain("pods-80", ChainMatch{DestPort: 80, Prefixes: pfx("198.18.0.0/16")}),
		chain("any-ip-80-http", ChainMatch{DestPort: 80, TransportProtocol: "raw_buffer", AppProtocols: []string{"http/1.1", "h2c"}}),
		chain("any-ip-80-tcp", ChainMatch{DestPort: 80}),
		chain("443-exact", ChainMatch{DestPort: 443, TransportProtocol: "tls", ServerNames: []string{"api.github.com"}}),
		chain("443-wild", ChainMatch{DestPort: 443, TransportProtocol: "tls", ServerNames: []string{"*.github.com"}}),
		chain("443-wilder", ChainMatch{DestPort: 443, TransportProtocol: "tls", ServerNames: []string{"*.com"}}),
		chain("443-cidr", ChainMatch{DestPort: 443, Prefixes: pfx("203.0.113.0/24")}),
		chain("cidr-any-port", ChainMatch{Prefixes: pfx("198.51.100.0/24")}),
		chain("v6", ChainMatch{Prefixes: pfx("2001:db8::/32")}),
		chain("tls-no-port", ChainMatch{TransportProtocol: "tls"}),
	}}
	cases := []struct {
		dst, proto, sni string
		alpn            []string
		want            string
	}{
		{"198.19.0.20:80", "raw_buffer", "", []string{"http/1.1"}, "svc-80"}, // IP beats protocol
		{"198.18.3.4:80", "raw_buffer", "", nil, "pods-80"},
		{"1.2.3.4:80", "raw_buffer", "", []string{"http/1.1"}, "any-ip-80-http"},
		{"1.2.3.4:80", "raw_buffer", "", []string{"h2c"}, "any-ip-80-http"},
		{"1.2.3.4:80", "raw_buffer", "", nil, "default"}, // raw_buffer chosen, ALPN fails: no backtracking to any-ip-80-tcp
		{"1.2.3.4:80", "tls", "x.com", []string{"h2"}, "any-ip-80-tcp"},
		{"[::ffff:198.18.3.4]:80", "raw_buffer", "", nil, "pods-80"}, // mapped addresses unmap
		{"1.2.3.4:443", "tls", "api.github.com", nil, "443-exact"},   // exact beats wildcard
		{"1.2.3.4:443", "tls", "API.GitHub.com", nil, "443-exact"},   // SNI is case-insensitive
		{"1.2.3.4:443", "tls", "raw.github.com", nil, "443-wild"},
		{"1.2.3.4:443", "tls", "a.b.github.com", nil, "443-wild"}, // longest wildcard
		{"1.2.3.4:443", "tls", "github.com", nil, "443-wilder"},   // *.github.com does not match github.com
		{"1.2.3.4:443", "tls", "example.org", nil, "default"},     // port 443 chosen, no SNI matches: no backtracking
		{"1.2.3.4:443", "raw_buffer", "", nil, "default"},
		{"203.0.113.9:443", "tls", "api.github.com", nil, "443-cidr"}, // destination IP before server name
		{"198.51.100.7:22", "raw_buffer", "", nil, "cidr-any-port"},
		{"198.51.100.7:80", "tls", "", nil, "any-ip-80-tcp"}, // destination port first
		{"[2001:db8::1]:22", "raw_buffer", "", nil, "v6"},
		{"8.8.8.8:853", "tls", "dns.google", nil, "tls-no-port"},
		{"8.8.8.8:853", "raw_buffer", "", nil, "default"},
	}
	for _, tc := range cases {
		got := l.Match(netip.MustParseAddrPort(tc.dst), tc.proto, tc.sni, tc.alpn)
		if got == nil || got.Name != tc.want {
			name := "<nil>"
			if got != nil {
				name = got.Name
			}
			t.Errorf("Match(%s, %q, %q, %v) = %s, want %s", tc.dst, tc.proto, tc.sni, tc.alpn, name, tc.want)
		}
	}
	if got := (&Listener{}).Match(netip.MustParseAddrPort("1.2.3.4:80"), "", "", nil); got != nil {
		t.Errorf("no chains, no default: got %s", got.Name)
	}
}

func TestRouteConfigMatch(t *testing.T) {
	vh := func(name string, d ...string) *VirtualHost { return &VirtualHost{Name: name, Domains: d} }
	rc := &RouteConfig{VirtualHosts: []*VirtualHost{
		vh("exact", "api.example.com", "api.example.com:80"),
		vh("suffix", "*.example.com"),
		vh("longer-suffix", "*.eu.example.com"),
		vh("prefix", "api.*"),
		vh("all", "*"),
	}}
	for host, want := range map[string]string{
		"api.example.com":    "exact",
		"API.example.com:80": "exact",
		"www.example.com":    "suffix",
		"x.eu.example.com":   "longer-suffix",
		"api.other.org":      "prefix",
		"example.com":        "all",
	} {
		if got := rc.Match(host); got == nil || got.Name != want {
			t.Errorf("Match(%q) = %v, want %s", host, got, want)
		}
	}
	if got := (&RouteConfig{VirtualHosts: []*VirtualHost{vh("x", "x.com")}}).Match("y.com"); got != nil {
		t.Errorf("no match: got %s", got.Name)
	}
}
