package model

import (
	"net/netip"
	"testing"
)

// TestMatchServerNameEdges: a chain that names servers never takes a
// connection without SNI (the default does), and an exact name beats a
// wildcard as long as itself, whichever comes first.
func TestMatchServerNameEdges(t *testing.T) {
	dst := netip.MustParseAddrPort("198.18.0.1:443")
	l := &Listener{Default: &FilterChain{Name: "default"}, Chains: []*FilterChain{
		{Name: "wild", Match: ChainMatch{ServerNames: []string{"*.github.com"}}},
		{Name: "exact", Match: ChainMatch{ServerNames: []string{"api.github.com"}}},
	}}
	for sni, want := range map[string]string{"": "default", "api.github.com": "exact", "raw.github.com": "wild"} {
		if got := l.Match(dst, "tls", sni, nil); got == nil || got.Name != want {
			t.Errorf("SNI %q: got %v, want %s", sni, got, want)
		}
	}
}

// TestRouteConfigMatchOrder: the longest wildcard of a rank wins whatever
// the order, and of two equal ones the first listed.
func TestRouteConfigMatchOrder(t *testing.T) {
	vh := func(name string, d ...string) *VirtualHost { return &VirtualHost{Name: name, Domains: d} }
	rc := &RouteConfig{VirtualHosts: []*VirtualHost{
		vh("longer-suffix", "*.eu.example.com"),
		vh("suffix", "*.example.com"),
	}}
	for host, want := range map[string]string{"x.eu.example.com": "longer-suffix", "www.example.com": "suffix"} {
		if got := rc.Match(host); got == nil || got.Name != want {
			t.Errorf("Match(%q) = %v, want %s", host, got, want)
		}
	}
	// The same domain in two virtual hosts: the first listed.
	tie := &RouteConfig{VirtualHosts: []*VirtualHost{vh("one", "*.example.com"), vh("two", "*.example.com")}}
	if got := tie.Match("www.example.com"); got == nil || got.Name != "one" {
		t.Errorf("tie: got %v, want the first listed", got)
	}
}

// TestWildcardsNeedSomething: a wildcard stands for at least one
// character: "*.github.com" takes "a.github.com" but not ".github.com",
// "*example.com" not "example.com", "api.*" takes "api.x" but not "api.".
func TestWildcardsNeedSomething(t *testing.T) {
	dst := netip.MustParseAddrPort("198.18.0.1:443")
	l := &Listener{Default: &FilterChain{Name: "default"}, Chains: []*FilterChain{
		{Name: "wild", Match: ChainMatch{ServerNames: []string{"*.github.com"}}}}}
	for sni, want := range map[string]string{"a.github.com": "wild", ".github.com": "default"} {
		if got := l.Match(dst, "tls", sni, nil); got == nil || got.Name != want {
			t.Errorf("SNI %q: got %v, want %s", sni, got, want)
		}
	}
	vh := func(name string, d ...string) *VirtualHost { return &VirtualHost{Name: name, Domains: d} }
	rc := &RouteConfig{VirtualHosts: []*VirtualHost{vh("suffix", "*example.com"), vh("prefix", "api.*"), vh("all", "*")}}
	for host, want := range map[string]string{
		"xexample.com": "suffix", "example.com": "all",
		"api.x": "prefix", "api.": "all",
	} {
		if got := rc.Match(host); got == nil || got.Name != want {
			t.Errorf("Match(%q) = %v, want %s", host, got, want)
		}
	}
}
