package capture

import (
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParsePorts(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []uint16
		wantErr string
	}{
		{in: "", want: nil},
		{in: "  ", want: nil},
		{in: "*", want: nil},
		{in: " * ", want: nil},
		{in: "80", want: []uint16{80}},
		{in: "80,443", want: []uint16{80, 443}},
		{in: " 443 , 80 ,80", want: []uint16{80, 443}},
		{in: "1,65535", want: []uint16{1, 65535}},
		{in: "0080", want: []uint16{80}},
		{in: "70000", wantErr: `capture: port "70000": out of range 1-65535`},
		{in: "80,0", wantErr: `capture: port "0": out of range 1-65535`},
		{in: "65536", wantErr: `capture: port "65536": out of range 1-65535`},
		{in: "99999999999999999999999", wantErr: `capture: port "99999999999999999999999": out of range 1-65535`},
		{in: "http", wantErr: `capture: port "http": not a number`},
		{in: "-1", wantErr: `capture: port "-1": not a number`},
		{in: "+80", wantErr: `capture: port "+80": not a number`},
		{in: "80 443", wantErr: `capture: port "80 443": not a number`},
		{in: "8000-8010", wantErr: `capture: port "8000-8010": not a number`},
		{in: "80,,443", wantErr: `capture: port list "80,,443": empty entry`},
		{in: "80,", wantErr: `capture: port list "80,": empty entry`},
		{in: "80,*", wantErr: `capture: port list "80,*": "*" must be the whole list`},
	} {
		got, err := ParsePorts(tc.in)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("ParsePorts(%q) = %v, %v; want error %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParsePorts(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseCIDRs(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		in      string
		want    []netip.Prefix
		wantErr string
	}{
		{in: "", want: nil},
		{in: "198.18.0.0/15", want: []netip.Prefix{p("198.18.0.0/15")}},
		{in: " 2001:db8::/32 , 198.18.0.0/15 ", want: []netip.Prefix{p("198.18.0.0/15"), p("2001:db8::/32")}},
		{in: "198.18.200.7", want: []netip.Prefix{p("198.18.200.7/32")}},
		{in: "2001:db8::1", want: []netip.Prefix{p("2001:db8::1/128")}},
		{in: "198.18.200.7/24,198.18.200.0/24", want: []netip.Prefix{p("198.18.200.0/24")}},
		{in: "198.18.0.0/16,198.18.0.0/15", want: []netip.Prefix{p("198.18.0.0/15"), p("198.18.0.0/16")}},
		{in: "0.0.0.0/0,::/0", want: []netip.Prefix{p("0.0.0.0/0"), p("::/0")}},
		{in: "::ffff:198.18.0.0/112", want: []netip.Prefix{p("198.18.0.0/16")}},
		{in: "198.18.0.0/08", want: []netip.Prefix{p("198.0.0.0/8")}},
		{in: "*", wantErr: `capture: CIDR "*": "*" is not a prefix (write 0.0.0.0/0,::/0 to exclude every destination)`},
		{in: "198.18.0.0/33", wantErr: `capture: CIDR "198.18.0.0/33": prefix length 33 out of range 0-32`},
		{in: "2001:db8::/129", wantErr: `capture: CIDR "2001:db8::/129": prefix length 129 out of range 0-128`},
		{in: "198.18.0.0/", wantErr: `capture: CIDR "198.18.0.0/": prefix length "" is not a number`},
		{in: "198.18.0.0/-1", wantErr: `capture: CIDR "198.18.0.0/-1": prefix length "-1" is not a number`},
		{in: "198.18.0.0/99999999999999999999", wantErr: `capture: CIDR "198.18.0.0/99999999999999999999": prefix length 99999999999999999999 out of range 0-32`},
		{in: "300.1.1.1/8", wantErr: `capture: CIDR "300.1.1.1/8": not an IP address or prefix`},
		{in: "example.com", wantErr: `capture: CIDR "example.com": not an IP address or prefix`},
		{in: "fe80::1%eth0/64", wantErr: `capture: CIDR "fe80::1%eth0/64": zones are not allowed`},
		{in: "198.18.0.0/15,,", wantErr: `capture: CIDR list "198.18.0.0/15,,": empty entry`},
	} {
		got, err := ParseCIDRs(tc.in)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("ParseCIDRs(%q) = %v, %v; want error %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseCIDRs(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func joinPorts(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"", "*", "80", "80,443", " 1 ,65535", "70000", "80,,", "0", "a", "80,*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ports, err := ParsePorts(s)
		if err != nil {
			if ports != nil {
				t.Fatalf("ParsePorts(%q) returned ports with an error", s)
			}
			if !strings.HasPrefix(err.Error(), "capture: ") {
				t.Fatalf("ParsePorts(%q) error %q lacks the package prefix", s, err)
			}
			return
		}
		for i, p := range ports {
			if p == 0 || (i > 0 && ports[i-1] >= p) {
				t.Fatalf("ParsePorts(%q) = %v: not sorted, unique, non-zero", s, ports)
			}
		}
		again, err := ParsePorts(joinPorts(ports))
		if err != nil || !reflect.DeepEqual(again, ports) {
			t.Fatalf("round trip of %q: %v -> %q -> %v, %v", s, ports, joinPorts(ports), again, err)
		}
		// Whatever parses builds a valid rule set.
		cfg := DefaultConfig()
		cfg.IncludeInboundPorts, cfg.ExcludeInboundPorts, cfg.ExcludeOutboundPorts = ports, ports, ports
		if err := cfg.Validate(); err != nil {
			t.Fatalf("ports %v from %q fail Validate: %v", ports, s, err)
		}
		_ = Rules(cfg)
	})
}

func FuzzParseCIDRs(f *testing.F) {
	for _, s := range []string{"", "*", "198.18.0.0/15", "198.18.0.1/15,2001:db8::/32", "::ffff:1.2.3.4/120", "fe80::1%x", "1.2.3.4/", "0.0.0.0/0", "a,b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParseCIDRs(s)
		if err != nil {
			if ps != nil {
				t.Fatalf("ParseCIDRs(%q) returned prefixes with an error", s)
			}
			if !strings.HasPrefix(err.Error(), "capture: ") {
				t.Fatalf("ParseCIDRs(%q) error %q lacks the package prefix", s, err)
			}
			return
		}
		for i, p := range ps {
			if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || (i > 0 && comparePrefix(ps[i-1], p) >= 0) {
				t.Fatalf("ParseCIDRs(%q) = %v: not valid, masked, sorted and unique", s, ps)
			}
		}
		again, err := ParseCIDRs(joinPrefixes(ps))
		if err != nil || !reflect.DeepEqual(again, ps) {
			t.Fatalf("round trip of %q: %v -> %v, %v", s, ps, again, err)
		}
		cfg := DefaultConfig()
		cfg.ExcludeOutboundCIDRs = ps
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%v from %q fail Validate: %v", ps, s, err)
		}
		_ = Rules(cfg)
	})
}
