package capture

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseResolvConf(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name    string
		in      string
		want    []netip.Addr
		wantErr string
	}{
		{name: "empty", in: "", want: nil},
		{name: "no nameserver", in: "search default.svc.cluster.local\noptions ndots:5\n", want: nil},
		{name: "kubelet ClusterFirst", in: "search demo.svc.cluster.local svc.cluster.local cluster.local\nnameserver 198.18.0.10\noptions ndots:5\n",
			want: []netip.Addr{a("198.18.0.10")}},
		{name: "file order kept, duplicates dropped", in: "nameserver 198.18.0.11\nnameserver 2001:db8::53\nnameserver 198.18.0.10\nnameserver 198.18.0.11\n",
			want: []netip.Addr{a("198.18.0.11"), a("2001:db8::53"), a("198.18.0.10")}},
		{name: "comments", in: "# nameserver 198.18.0.1\n; nameserver 198.18.0.2\n#nameserver bogus\n;nameserver bogus\nnameserver 198.18.0.3\n",
			want: []netip.Addr{a("198.18.0.3")}},
		{name: "whitespace, tabs, CRLF, no final newline", in: "\n  nameserver\t198.18.0.1  \r\n\tnameserver 198.18.0.2",
			want: []netip.Addr{a("198.18.0.1"), a("198.18.0.2")}},
		{name: "trailing fields ignored as glibc does", in: "nameserver 198.18.0.1 # cluster DNS\n",
			want: []netip.Addr{a("198.18.0.1")}},
		{name: "zone dropped", in: "nameserver fe80::53%eth0\n", want: []netip.Addr{a("fe80::53")}},
		{name: "zoned duplicate", in: "nameserver fe80::53%eth0\nnameserver fe80::53%eth1\nnameserver fe80::53\n", want: []netip.Addr{a("fe80::53")}},
		{name: "IPv4-mapped becomes IPv4", in: "nameserver ::ffff:198.18.0.10\nnameserver 198.18.0.10\n", want: []netip.Addr{a("198.18.0.10")}},
		{name: "loopback is returned (the rules skip it)", in: "nameserver 127.0.0.53\nnameserver ::1\n", want: []netip.Addr{a("127.0.0.53"), a("::1")}},
		{name: "keyword is case-sensitive and whole", in: "Nameserver 300.0.0.1\nnameservers 300.0.0.1\nnameserver198.18.0.1\n", want: nil},
		{name: "other keywords with junk", in: "domain x\nsortlist 300.1.1.1\noptions edns0 trust-ad\nlookup file bind\n", want: nil},
		{name: "16 nameservers", in: strings.Repeat("nameserver 198.18.1.1\n", 3) + nameservers(MaxDNSServers), want: addrs(MaxDNSServers)},

		{name: "no address", in: "search x\nnameserver\n", wantErr: "capture: resolv.conf line 2: nameserver without an address"},
		{name: "no address, trailing blanks", in: "nameserver \t\n", wantErr: "capture: resolv.conf line 1: nameserver without an address"},
		{name: "invalid IPv4", in: "nameserver 198.18.0.1\nnameserver 300.1.1.1\n", wantErr: `capture: resolv.conf line 2: nameserver "300.1.1.1": not an IP address`},
		{name: "hostname", in: "nameserver dns.example.com\n", wantErr: `capture: resolv.conf line 1: nameserver "dns.example.com": not an IP address`},
		{name: "with port", in: "nameserver 198.18.0.1:53\n", wantErr: `capture: resolv.conf line 1: nameserver "198.18.0.1:53": not an IP address`},
		{name: "bracketed", in: "nameserver [2001:db8::53]\n", wantErr: `capture: resolv.conf line 1: nameserver "[2001:db8::53]": not an IP address`},
		{name: "IPv4 with zone", in: "nameserver 198.18.0.1%eth0\n", wantErr: `capture: resolv.conf line 1: nameserver "198.18.0.1%eth0": not an IP address`},
		{name: "comment glued to the address", in: "nameserver 198.18.0.1#x\n", wantErr: `capture: resolv.conf line 1: nameserver "198.18.0.1#x": not an IP address`},
		{name: "17 nameservers", in: nameservers(MaxDNSServers + 1), wantErr: "capture: resolv.conf line 17: more than 16 nameservers"},
		{name: "line too long", in: "nameserver 198.18.0.1 " + strings.Repeat("x", maxResolvConfLine) + "\n", wantErr: "capture: resolv.conf: a line is longer than 65536 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseResolvConf(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr || got != nil {
					t.Errorf("ParseResolvConf(%q) = %v, %v; want error %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseResolvConf(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}

	readErr := errors.New("disk on fire")
	if got, err := ParseResolvConf(iotest.ErrReader(readErr)); !errors.Is(err, readErr) || got != nil {
		t.Errorf("ParseResolvConf(failing reader) = %v, %v; want the read error", got, err)
	}
}

// addrs returns n distinct addresses 198.18.1.1, 198.18.1.2, ...
func addrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{198, 18, 1, byte(i + 1)})
	}
	return out
}

func nameservers(n int) string {
	var b strings.Builder
	for _, a := range addrs(n) {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	return b.String()
}

func FuzzParseResolvConf(f *testing.F) {
	for _, s := range []string{
		"",
		"nameserver 198.18.0.10\nsearch a.svc.cluster.local svc.cluster.local\noptions ndots:5\n",
		"# c\n; c\nnameserver 2001:db8::53\nnameserver 198.18.0.10 trailing\n",
		"nameserver fe80::1%eth0\nnameserver ::ffff:198.18.0.1\nnameserver 127.0.0.53\n",
		"nameserver\n", "nameserver 300.1.1.1", "nameserver\t::1\r\n", nameservers(MaxDNSServers + 1),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseResolvConf(strings.NewReader(s))
		if err != nil {
			if got != nil {
				t.Fatalf("ParseResolvConf(%q) returned addresses with an error", s)
			}
			if !strings.HasPrefix(err.Error(), "capture: ") {
				t.Fatalf("ParseResolvConf(%q) error %q lacks the package prefix", s, err)
			}
			return
		}
		if len(got) > MaxDNSServers {
			t.Fatalf("ParseResolvConf(%q) = %d addresses, more than %d", s, len(got), MaxDNSServers)
		}
		for i, a := range got {
			if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
				t.Fatalf("ParseResolvConf(%q)[%d] = %v: not a valid unmapped address without zone", s, i, a)
			}
			for _, b := range got[:i] {
				if a == b {
					t.Fatalf("ParseResolvConf(%q) = %v: %v twice", s, got, a)
				}
			}
		}
		// Writing them back as nameserver lines gives the same list.
		var b strings.Builder
		for _, a := range got {
			fmt.Fprintf(&b, "nameserver %s\n", a)
		}
		again, err := ParseResolvConf(strings.NewReader(b.String()))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("round trip of %q: %v -> %q -> %v, %v", s, got, b.String(), again, err)
		}
		// Whatever parses builds a valid rule set.
		cfg := DefaultConfig()
		cfg.DNSServers = got
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%v from %q fail Validate: %v", got, s, err)
		}
		rules := Rules(cfg)
		redirected, _ := cfg.dnsServers()
		if n := strings.Count(rules, "dport 53 redirect to :15053"); n != 2*len(redirected) {
			t.Fatalf("%v from %q: %d DNS rules, want %d:\n%s", got, s, n, 2*len(redirected), rules)
		}
	})
}
