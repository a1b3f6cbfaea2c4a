package model

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/weftmesh/weft/api/names"
)

// TestListenerLookups: OutboundFor, Listeners and Listener, the model's
// own test of what sidecar/xds's and the proxy's tests reach only through
// a client (hack/mutate/uncovered, session 25, found them unpinned here).
// OutboundFor hands a destination that has a listener (an IPv4-mapped
// address as its IPv4 one) to that listener and any other to the outbound
// listener; Listeners is inbound, outbound, then the destinations in
// address order, leaving out those c lacks; Listener finds each by its
// name and a destination only by its canonical name.
func TestListenerLookups(t *testing.T) {
	dst := func(ap string) (netip.AddrPort, *Listener) {
		a := netip.MustParseAddrPort(ap)
		return a, &Listener{Name: names.DestinationListener(a), Addr: a}
	}
	ap10, l10 := dst("198.18.0.10:80")
	ap2, l2 := dst("198.18.0.2:443")
	in := &Listener{Name: InboundListener}
	out := &Listener{Name: OutboundListener}
	full := &Config{Inbound: in, Outbound: out, Destinations: map[netip.AddrPort]*Listener{ap10: l10, ap2: l2}}

	for _, tc := range []struct {
		c    *Config
		dst  string
		want *Listener
	}{
		{full, "198.18.0.10:80", l10},
		{full, "[::ffff:198.18.0.10]:80", l10},
		{full, "198.18.0.10:81", out},
		{full, "198.18.0.99:80", out},
		{&Config{Destinations: full.Destinations}, "198.18.0.99:80", nil},
		{&Config{}, "198.18.0.2:443", nil},
	} {
		if got := tc.c.OutboundFor(netip.MustParseAddrPort(tc.dst)); got != tc.want {
			t.Errorf("OutboundFor(%s) = %v, want %v", tc.dst, got, tc.want)
		}
	}

	for _, tc := range []struct {
		name string
		c    *Config
		want []*Listener
	}{
		{"all", full, []*Listener{in, out, l2, l10}},
		{"no inbound", &Config{Outbound: out}, []*Listener{out}},
		{"no outbound", &Config{Inbound: in, Destinations: map[netip.AddrPort]*Listener{ap2: l2}}, []*Listener{in, l2}},
		{"none", &Config{}, nil},
	} {
		if got := tc.c.Listeners(); !slices.Equal(got, tc.want) {
			t.Errorf("%s: Listeners() = %v, want %v", tc.name, got, tc.want)
		}
	}

	misnamed := &Config{Destinations: map[netip.AddrPort]*Listener{ap10: {Name: "outbound-198.18.0.10"}}}
	for _, tc := range []struct {
		c    *Config
		name string
		want *Listener
	}{
		{full, InboundListener, in},
		{full, OutboundListener, out},
		{full, names.DestinationListener(ap10), l10},
		{full, names.DestinationListener(ap2), l2},
		{full, "198.18.0.99:80", nil},          // no such destination
		{full, "[::ffff:198.18.0.10]:80", nil}, // not the canonical name
		{full, "virtualInbound", nil},
		{&Config{}, InboundListener, nil},
		{misnamed, names.DestinationListener(ap10), nil}, // held under another name
	} {
		if got := tc.c.Listener(tc.name); got != tc.want {
			t.Errorf("Listener(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
