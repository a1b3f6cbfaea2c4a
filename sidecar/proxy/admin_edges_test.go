package proxy

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestConfigDumpDestinations: /config_dump's "destinations" holds the
// destination listeners, in address order, and neither the inbound nor the
// outbound listener (they have fields of their own), whichever of the three
// a configuration holds.
func TestConfigDumpDestinations(t *testing.T) {
	dest := func(s string) *model.Listener {
		ap := netip.MustParseAddrPort(s)
		return &model.Listener{Name: names.DestinationListener(ap), Addr: ap}
	}
	in := &model.Listener{Name: model.InboundListener, Addr: netip.MustParseAddrPort("127.0.0.1:15006")}
	out := &model.Listener{Name: model.OutboundListener, Addr: netip.MustParseAddrPort("127.0.0.1:15001")}
	d1, d2 := dest("198.18.0.20:80"), dest("198.18.0.3:443")
	dests := map[netip.AddrPort]*model.Listener{d1.Addr: d1, d2.Addr: d2}
	for _, tc := range []struct {
		name    string
		cfg     model.Config
		want    []string
		in, out string
	}{
		{"all three", model.Config{Inbound: in, Outbound: out, Destinations: dests}, []string{d2.Name, d1.Name}, in.Name, out.Name},
		{"no destinations", model.Config{Inbound: in, Outbound: out}, nil, in.Name, out.Name},
		{"inbound only", model.Config{Inbound: in, Destinations: dests}, []string{d2.Name, d1.Name}, in.Name, ""},
		{"outbound only", model.Config{Outbound: out, Destinations: dests}, []string{d2.Name, d1.Name}, "", out.Name},
		{"destinations only", model.Config{Destinations: dests}, []string{d2.Name, d1.Name}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(dumpConfig(&tc.cfg))
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Inbound, Outbound *struct{ Name string }
				Destinations      []struct{ Name string }
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, l := range got.Destinations {
				names = append(names, l.Name)
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("destinations = %q, want %q (%s)", names, tc.want, b)
			}
			name := func(l *struct{ Name string }) string {
				if l == nil {
					return ""
				}
				return l.Name
			}
			if name(got.Inbound) != tc.in || name(got.Outbound) != tc.out {
				t.Errorf("inbound, outbound = %q, %q, want %q, %q", name(got.Inbound), name(got.Outbound), tc.in, tc.out)
			}
		})
	}
}
