package capture

import (
	"fmt"
	"net/netip"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/weftmesh/weft/internal/testutil/golden"
)

func sampleConfig() Config {
	cfg := DefaultConfig()
	cfg.ExcludeInboundPorts = []uint16{15020, 9090}
	cfg.ExcludeOutboundPorts = []uint16{3306}
	cfg.ExcludeOutboundCIDRs = []netip.Prefix{
		netip.MustParsePrefix("198.18.0.0/15"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("198.18.200.9/32"),
	}
	// Unsorted, a duplicate (mapped), and a loopback server that gets no rule.
	cfg.DNSServers = []netip.Addr{
		netip.MustParseAddr("2001:db8::53"),
		netip.MustParseAddr("198.18.0.10"),
		netip.MustParseAddr("127.0.0.53"),
		netip.MustParseAddr("::ffff:198.18.0.10"),
	}
	return cfg
}

func TestRules(t *testing.T) {
	golden.Check(t, "testdata/rules-sample.golden", Rules(sampleConfig()))
	cfg := DefaultConfig()
	cfg.IncludeInboundPorts = []uint16{8080, 80, 8080}
	got := Rules(cfg)
	for _, want := range []string{
		"tcp dport 80 redirect to :15006",
		"tcp dport 8080 redirect to :15006",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Rules with include list lacks %q:\n%s", want, got)
		}
	}
	// Only the listed ports, once each (the duplicate dropped), inbound and
	// for the sidecar's calls to its own pod alike.
	if strings.Contains(got, "meta l4proto tcp redirect to :15006") ||
		strings.Count(got, `tcp dport 8080 redirect to :15006 comment "weft: inbound capture"`) != 1 ||
		strings.Count(got, `meta skuid 1337 oifname "lo" tcp dport 8080 redirect to :15006 comment "weft: sidecar to its own pod"`) != 1 ||
		strings.Count(got, `meta skuid 1337 oifname "lo" tcp dport 80 redirect to :15006 comment "weft: sidecar to its own pod"`) != 1 {
		t.Errorf("Rules with include list:\n%s", got)
	}
	if got := Rules(Config{}); !strings.HasPrefix(got, "# capture: InboundPort is 0") {
		t.Errorf("Rules(Config{}) = %q", got)
	}
}

func TestRulesDNS(t *testing.T) {
	a := netip.MustParseAddr
	const (
		tcpOnly  = "# weft traffic capture: only TCP is redirected; UDP and other protocols are untouched.\n"
		withDNS  = "# weft traffic capture: TCP is redirected, and DNS (UDP and TCP port 53) to the pod's nameservers\n"
		inDNS    = "\t\ttcp dport 15053 return comment \"weft: sidecar DNS port\"\n"
		loopback = "\t\tip6 daddr ::1 return comment \"weft: loopback\"\n"
		dnsV4    = "\t\tip daddr 198.18.0.10 udp dport 53 redirect to :15053 comment \"weft: DNS to the pod's nameserver\"\n" +
			"\t\tip daddr 198.18.0.10 tcp dport 53 redirect to :15053 comment \"weft: DNS to the pod's nameserver\"\n"
		dnsV6 = "\t\tip6 daddr 2001:db8::53 udp dport 53 redirect to :15053 comment \"weft: DNS to the pod's nameserver\"\n" +
			"\t\tip6 daddr 2001:db8::53 tcp dport 53 redirect to :15053 comment \"weft: DNS to the pod's nameserver\"\n"
	)
	for _, tc := range []struct {
		name      string
		port      uint16
		servers   []netip.Addr
		want, not []string
		dnsRules  int
	}{
		{name: "default: port reserved, no servers", port: DefaultDNSPort,
			want: []string{tcpOnly, inDNS}, not: []string{"dport 53 redirect"}},
		{name: "off", port: 0,
			want: []string{tcpOnly}, not: []string{"15053", "dport 53 redirect"}},
		{name: "IPv4 server right after the loopback rules", port: DefaultDNSPort, servers: []netip.Addr{a("198.18.0.10")},
			want: []string{withDNS, inDNS, loopback + dnsV4 + "\t\ttcp dport 53 return"}, dnsRules: 2},
		{name: "IPv6 server", port: DefaultDNSPort, servers: []netip.Addr{a("2001:db8::53")},
			want: []string{withDNS, loopback + dnsV6}, dnsRules: 2},
		{name: "both, sorted, deduplicated", port: DefaultDNSPort,
			servers: []netip.Addr{a("2001:db8::53"), a("198.18.0.10"), a("::ffff:198.18.0.10"), a("2001:db8::53")},
			want:    []string{loopback + dnsV4 + dnsV6}, dnsRules: 4},
		{name: "other port", port: 5353, servers: []netip.Addr{a("198.18.0.10")},
			want: []string{"# goes to :5353;", "\t\ttcp dport 5353 return comment", "ip daddr 198.18.0.10 udp dport 53 redirect to :5353 "}, dnsRules: 2},
		{name: "loopback servers are skipped", port: DefaultDNSPort,
			servers: []netip.Addr{a("127.0.0.53"), a("::1"), a("::ffff:127.0.0.1"), a("0.0.0.0"), a("::")},
			want: []string{tcpOnly, inDNS,
				"# nameserver 0.0.0.0 is not captured: loopback traffic never is.\n",
				"# nameserver 127.0.0.1 is not captured: loopback traffic never is.\n",
				"# nameserver 127.0.0.53 is not captured: loopback traffic never is.\n",
				"# nameserver :: is not captured: loopback traffic never is.\n",
				"# nameserver ::1 is not captured: loopback traffic never is.\n",
			}, not: []string{"dport 53 redirect"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.DNSPort, cfg.DNSServers = tc.port, tc.servers
			// Exclusions never switch DNS capture off.
			cfg.ExcludeOutboundPorts = []uint16{53}
			cfg.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
			got := Rules(cfg)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("Rules lacks %q:\n%s", w, got)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("Rules has %q:\n%s", n, got)
				}
			}
			if n := strings.Count(got, "comment \"weft: DNS to the pod's nameserver\""); n != tc.dnsRules {
				t.Errorf("%d DNS rules, want %d:\n%s", n, tc.dnsRules, got)
			}
			if tc.dnsRules > 0 && strings.Index(got, "dport 53 redirect") > strings.Index(got, "tcp dport 53 return") {
				t.Errorf("the port 53 exclusion comes before the DNS rules:\n%s", got)
			}
		})
	}
}

func TestDNSRuleExprs(t *testing.T) {
	// What nft(8) generates for `ip daddr 198.18.0.10 udp dport 53 redirect
	// to :15053` in an inet table (nft --debug=netlink); TestRulesMatchNft
	// checks the listing of the installed rules as well.
	cfg := DefaultConfig()
	cfg.DNSServers = []netip.Addr{netip.MustParseAddr("198.18.0.10")}
	var got []expr.Any
	for _, ch := range buildChains(cfg) {
		for _, r := range ch.rules {
			if strings.HasPrefix(r.text, "ip daddr 198.18.0.10 udp dport 53") {
				got = r.exprs
			}
		}
	}
	want := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{2}}, // NFPROTO_IPV4
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{198, 18, 0, 10}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{17}}, // IPPROTO_UDP
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 53}},
		&expr.Immediate{Register: 1, Data: []byte{15053 >> 8, 15053 & 0xff}},
		&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 1, Flags: 2}, // NF_NAT_RANGE_PROTO_SPECIFIED
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("exprs:\n got %#v\nwant %#v", got, want)
	}
}

func TestValidate(t *testing.T) {
	ok := DefaultConfig()
	mod := func(f func(*Config)) Config { c := DefaultConfig(); f(&c); return c }
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{ok, ""},
		{sampleConfig(), ""},
		{Config{}, "capture: InboundPort is 0 (the sidecar's inbound listener, normally 15006)"},
		{mod(func(c *Config) { c.OutboundPort = 0 }), "capture: OutboundPort is 0 (the sidecar's outbound listener, normally 15001)"},
		{mod(func(c *Config) { c.OutboundPort = 15006 }), "capture: InboundPort and OutboundPort are both 15006"},
		{mod(func(c *Config) { c.ProxyUID = 0 }), "capture: ProxyUID is 0: exempting root would leave every root process uncaptured (the sidecar runs as 1337)"},
		{mod(func(c *Config) { c.InboundPort = 15020 }), "capture: InboundPort 15020 is the sidecar's health port"},
		{mod(func(c *Config) { c.OutboundPort = 15000 }), "capture: OutboundPort 15000 is the sidecar's admin port"},
		{mod(func(c *Config) { c.ExcludeOutboundPorts = []uint16{80, 0} }), "capture: ExcludeOutboundPorts: port 0 out of range 1-65535"},
		{mod(func(c *Config) { c.IncludeInboundPorts = []uint16{0} }), "capture: IncludeInboundPorts: port 0 out of range 1-65535"},
		{mod(func(c *Config) { c.ExcludeOutboundCIDRs = []netip.Prefix{{}} }), `capture: ExcludeOutboundCIDRs: invalid prefix "invalid Prefix"`},
		{mod(func(c *Config) { c.DNSPort = 0 }), ""},
		{mod(func(c *Config) { c.DNSPort, c.DNSServers = 0, []netip.Addr{netip.MustParseAddr("198.18.0.10")} }),
			"capture: 1 DNSServers but DNSPort is 0 (DNS capture off)"},
		{mod(func(c *Config) { c.DNSPort = 15006 }), "capture: DNSPort 15006 is also InboundPort"},
		{mod(func(c *Config) { c.DNSPort = 15001 }), "capture: DNSPort 15001 is also OutboundPort"},
		{mod(func(c *Config) { c.DNSPort = 15000 }), "capture: DNSPort 15000 is also the sidecar's admin port"},
		{mod(func(c *Config) { c.DNSPort = 15020 }), "capture: DNSPort 15020 is also the sidecar's health port"},
		{mod(func(c *Config) { c.DNSServers = make([]netip.Addr, MaxDNSServers) }), "capture: DNSServers: invalid address"},
		{mod(func(c *Config) { c.DNSServers = make([]netip.Addr, MaxDNSServers+1) }), "capture: 17 DNSServers, at most 16"},
		{mod(func(c *Config) { c.DNSServers = []netip.Addr{netip.MustParseAddr("fe80::53%eth0")} }), "capture: DNSServers: fe80::53%eth0: zones are not allowed"},
		{mod(func(c *Config) { c.DNSServers = []netip.Addr{netip.MustParseAddr("127.0.0.53")} }), ""}, // skipped, not refused
	} {
		err := tc.cfg.Validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("Validate(%+v) = %q, want %q", tc.cfg, got, tc.want)
		}
		if tc.want != "" {
			// Install refuses before touching the kernel: safe without a netns.
			if err := Install(tc.cfg); err == nil || err.Error() != tc.want {
				t.Errorf("Install(%+v) = %v, want %q", tc.cfg, err, tc.want)
			}
		}
	}
}

// snapshot is every table in the namespace and, for table inet weft, its
// chains and rules (expressions and comments, not handles).
func snapshot(t *testing.T, ns *netns) (tables []string, weft string) {
	t.Helper()
	ns.Must(t, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		ts, err := c.ListTables()
		if err != nil {
			return err
		}
		for _, tb := range ts {
			tables = append(tables, fmt.Sprintf("%s/%d", tb.Name, tb.Family))
		}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			return err
		}
		var b strings.Builder
		for _, ch := range chains {
			if ch.Table.Name != TableName {
				continue
			}
			fmt.Fprintf(&b, "chain %s type %s hook %d prio %d policy %d\n", ch.Name, ch.Type, *ch.Hooknum, *ch.Priority, *ch.Policy)
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return err
			}
			for _, r := range rules {
				cm, _ := userdata.GetString(r.UserData, userdata.TypeComment)
				fmt.Fprintf(&b, "  rule %q:", cm)
				for _, e := range r.Exprs {
					b.WriteString(" " + fmtExpr(e))
				}
				b.WriteString("\n")
			}
		}
		weft = b.String()
		return nil
	})
	return tables, weft
}

// fmtExpr prints an expression with its fields, and a dynset's own
// expressions likewise (not as pointers).
func fmtExpr(e expr.Any) string {
	if d, ok := e.(*expr.Dynset); ok {
		inner := make([]string, 0, len(d.Exprs))
		for _, x := range d.Exprs {
			inner = append(inner, fmtExpr(x))
		}
		c := *d
		c.Exprs = nil
		return fmt.Sprintf("%T%+v%v", e, c, inner)
	}
	return fmt.Sprintf("%T%+v", e, reflect.ValueOf(e).Elem().Interface())
}

// builtRules is what snapshot should find for cfg: the expressions
// buildChains made.
func builtRules(cfg Config) string {
	var want strings.Builder
	for _, ch := range buildChains(cfg) {
		fmt.Fprintf(&want, "chain %s type %s hook %d prio %d policy 1\n", ch.name, ch.typ, *ch.hooks, *ch.priority)
		for _, r := range ch.rules {
			fmt.Fprintf(&want, "  rule %q:", r.comment)
			for _, e := range r.exprs {
				want.WriteString(" " + fmtExpr(e))
			}
			want.WriteString("\n")
		}
	}
	return want.String()
}

func TestInstallIdempotentAndRemove(t *testing.T) {
	t.Parallel()
	ns := newNetns(t, "idem")
	if tables, _ := snapshot(t, ns); len(tables) != 0 {
		t.Fatalf("fresh namespace has tables %v", tables)
	}
	// An unrelated table that must survive everything below.
	ns.Must(t, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		keep := c.AddTable(&nftables.Table{Name: "keepme", Family: nftables.TableFamilyIPv4})
		c.AddChain(&nftables.Chain{Name: "x", Table: keep})
		return c.Flush()
	})

	cfg := sampleConfig()
	install(t, ns, cfg)
	tables1, weft1 := snapshot(t, ns)
	install(t, ns, cfg)
	tables2, weft2 := snapshot(t, ns)
	if weft1 != weft2 || !reflect.DeepEqual(tables1, tables2) {
		t.Errorf("second Install changed the rule set:\n%s\nthen\n%s\ntables %v then %v", weft1, weft2, tables1, tables2)
	}
	if want := []string{"keepme/2", "weft/1"}; !reflect.DeepEqual(tables2, want) {
		t.Errorf("tables = %v, want %v", tables2, want)
	}
	wantRules := strings.Count(Rules(cfg), "comment ")
	if got := strings.Count(weft2, "  rule "); got != wantRules {
		t.Errorf("installed %d rules, Rules() shows %d:\n%s", got, wantRules, weft2)
	}

	// The kernel holds exactly the expressions buildChains made.
	if want := builtRules(cfg); weft2 != want {
		t.Errorf("kernel rule set differs from the built one:\n got: %s\nwant: %s", weft2, want)
	}

	// A different Config replaces, not appends.
	install(t, ns, DefaultConfig())
	_, weft3 := snapshot(t, ns)
	if got, want := strings.Count(weft3, "  rule "), strings.Count(Rules(DefaultConfig()), "comment "); got != want {
		t.Errorf("after reinstall with defaults: %d rules, want %d", got, want)
	}

	ns.Must(t, Remove)
	if tables, weft := snapshot(t, ns); !reflect.DeepEqual(tables, []string{"keepme/2"}) || weft != "" {
		t.Errorf("after Remove: tables %v, weft %q; want only keepme", tables, weft)
	}
	ns.Must(t, Remove) // absent is fine
	if tables, _ := snapshot(t, ns); !reflect.DeepEqual(tables, []string{"keepme/2"}) {
		t.Errorf("after second Remove: tables %v", tables)
	}
}

// TestRulesMatchNft checks Rules against nft(8)'s own listing of what
// Install put in the kernel, for the sample and for the sample with
// outbound UDP dropped. It needs the nft binary (Debian: nftables), which
// weft's images do not ship; skipped without it.
func TestRulesMatchNft(t *testing.T) {
	t.Parallel()
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("nft binary not installed")
	}
	ns := newNetns(t, "nft")
	drop := sampleConfig()
	drop.OutboundUDP = UDPDrop
	for _, cfg := range []Config{sampleConfig(), drop} {
		install(t, ns, cfg)
		var out []byte
		ns.Must(t, func() (err error) {
			out, err = exec.Command(nft, "list", "table", "inet", TableName).CombinedOutput()
			return err
		})
		if got, want := normNft(string(out)), normNft(Rules(cfg)); got != want {
			t.Errorf("OutboundUDP %s: nft list table inet weft:\n%s\nRules():\n%s", cfg.OutboundUDP, got, want)
		}
		// And nft accepts Rules() as input (check mode: nothing is changed).
		ns.Must(t, func() error {
			cmd := exec.Command(nft, "-c", "-f", "-")
			cmd.Stdin = strings.NewReader(Rules(cfg))
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("nft -c -f Rules(): %v: %s", err, out)
			}
			return nil
		})
	}
}

// nftCounter is what nft(8) lists after a counter statement: its values,
// which Rules leaves out.
var nftCounter = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// normNft drops comment and blank lines, spacing and counter values.
func normNft(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, nftCounter.ReplaceAllString(strings.Join(strings.Fields(l), " "), "counter"))
		}
	}
	return strings.Join(lines, "\n")
}

// nftTestRedirect6 installs, in its own table, "ip6 daddr ::1 tcp dport from
// redirect to :to" on output: a loopback-only way to exercise
// IP6T_SO_ORIGINAL_DST.
func nftTestRedirect6(from, to uint16) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	tb := c.AddTable(&nftables.Table{Name: "wefttest6", Family: nftables.TableFamilyIPv6})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name: "output", Table: tb, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: &accept,
	})
	exprs := append(daddr(netip.MustParsePrefix("::1/128")).exprs[2:], tcpDport(from).exprs...)
	exprs = append(exprs, &expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(to)}, &expr.Redir{RegisterProtoMin: 1})
	c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: exprs})
	return c.Flush()
}
