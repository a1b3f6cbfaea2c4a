package capture

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The two chains of table inet weft.
const (
	chainInbound  = "prerouting"
	chainOutbound = "output"
)

// dnsPort is the port of DNS (RFC 1035), over UDP and TCP alike.
const dnsPort uint16 = 53

// ruleSpec is one rule both as nft(8) text and as the netlink expressions
// Install sends; keeping them side by side is what keeps Rules honest.
type ruleSpec struct {
	text    string
	comment string
	exprs   []expr.Any
}

type chainSpec struct {
	name  string
	hook  string
	prio  string // as nft(8) 1.0.6 prints and accepts it (dstnat = -100)
	hooks *nftables.ChainHook
	rules []ruleSpec
}

// part is a fragment of a rule: a match or a statement.
type part struct {
	text  string
	exprs []expr.Any
}

func rule(comment string, parts ...part) ruleSpec {
	r := ruleSpec{comment: comment}
	texts := make([]string, 0, len(parts))
	for _, p := range parts {
		texts = append(texts, p.text)
		r.exprs = append(r.exprs, p.exprs...)
	}
	r.text = strings.Join(texts, " ")
	return r
}

// buildChains turns a (validated) Config into the rule set. It is the single
// source of truth for both Install and Rules.
func buildChains(c Config) []chainSpec {
	in := chainSpec{name: chainInbound, hook: "prerouting", prio: "dstnat", hooks: nftables.ChainHookPrerouting}
	in.rules = append(in.rules,
		rule("weft: sidecar inbound port", tcpDport(c.InboundPort), ret()),
		rule("weft: sidecar outbound port", tcpDport(c.OutboundPort), ret()),
		rule("weft: sidecar admin port", tcpDport(AdminPort), ret()),
		rule("weft: sidecar health port", tcpDport(HealthPort), ret()),
	)
	reserved := []uint16{c.InboundPort, c.OutboundPort, AdminPort, HealthPort}
	if c.DNSPort != 0 {
		in.rules = append(in.rules, rule("weft: sidecar DNS port", tcpDport(c.DNSPort), ret()))
		reserved = append(reserved, c.DNSPort)
	}
	for _, p := range sortedPorts(c.ExcludeInboundPorts) {
		if !slices.Contains(reserved, p) {
			in.rules = append(in.rules, rule("weft: excluded inbound port", tcpDport(p), ret()))
		}
	}
	if len(c.IncludeInboundPorts) == 0 {
		in.rules = append(in.rules, rule("weft: inbound capture", l4TCP(), redirect(c.InboundPort)))
	} else {
		for _, p := range sortedPorts(c.IncludeInboundPorts) {
			in.rules = append(in.rules, rule("weft: inbound capture", tcpDport(p), redirect(c.InboundPort)))
		}
	}

	out := chainSpec{name: chainOutbound, hook: "output", prio: "-100", hooks: nftables.ChainHookOutput}
	out.rules = append(out.rules,
		rule("weft: sidecar traffic", skuid(c.ProxyUID), ret()),
		rule("weft: loopback", oifname("lo"), ret()),
		rule("weft: loopback", daddr(netip.MustParsePrefix("127.0.0.0/8")), ret()),
		rule("weft: loopback", daddr(netip.MustParsePrefix("::1/128")), ret()),
	)
	// DNS to the pod's nameservers, before the exclusions: excluding port 53
	// or a CIDR holding the cluster DNS service must not turn it off.
	redirectDNS, _ := c.dnsServers()
	for _, a := range redirectDNS {
		ns := netip.PrefixFrom(a, a.BitLen())
		out.rules = append(out.rules,
			rule("weft: DNS to the pod's nameserver", daddr(ns), udpDport(dnsPort), redirect(c.DNSPort)),
			rule("weft: DNS to the pod's nameserver", daddr(ns), tcpDport(dnsPort), redirect(c.DNSPort)),
		)
	}
	for _, p := range sortedPorts(c.ExcludeOutboundPorts) {
		out.rules = append(out.rules, rule("weft: excluded outbound port", tcpDport(p), ret()))
	}
	cidrs := make([]netip.Prefix, 0, len(c.ExcludeOutboundCIDRs))
	for _, p := range c.ExcludeOutboundCIDRs {
		cidrs = append(cidrs, p.Masked())
	}
	slices.SortFunc(cidrs, comparePrefix)
	for _, p := range slices.Compact(cidrs) {
		out.rules = append(out.rules, rule("weft: excluded outbound CIDR", daddr(p), ret()))
	}
	out.rules = append(out.rules, rule("weft: outbound capture", l4TCP(), redirect(c.OutboundPort)))

	return []chainSpec{in, out}
}

func sortedPorts(ports []uint16) []uint16 {
	s := slices.Clone(ports)
	slices.Sort(s)
	return slices.Compact(s)
}

// Rules returns, as an nft(8) ruleset, what Install(cfg) installs: the text
// `nft -f` would accept and `nft list table inet weft` prints afterwards. An
// invalid Config yields the Validate error as a comment instead.
func Rules(cfg Config) string {
	if err := cfg.Validate(); err != nil {
		return "# " + err.Error() + "\n"
	}
	var b strings.Builder
	redirectDNS, skippedDNS := cfg.dnsServers()
	if len(redirectDNS) == 0 {
		b.WriteString("# weft traffic capture: only TCP is redirected; UDP and other protocols are untouched.\n")
	} else {
		fmt.Fprintf(&b, "# weft traffic capture: TCP is redirected, and DNS (UDP and TCP port %d) to the pod's nameservers\n", dnsPort)
		fmt.Fprintf(&b, "# goes to :%d; other UDP and other protocols are untouched.\n", cfg.DNSPort)
	}
	for _, a := range skippedDNS {
		fmt.Fprintf(&b, "# nameserver %s is not captured: loopback traffic never is.\n", a)
	}
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for i, ch := range buildChains(cfg) {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", ch.name)
		fmt.Fprintf(&b, "\t\ttype nat hook %s priority %s; policy accept;\n", ch.hook, ch.prio)
		for _, r := range ch.rules {
			fmt.Fprintf(&b, "\t\t%s comment %q\n", r.text, r.comment)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// Building blocks. Each mirrors what nft(8) generates for the same text, so
// `nft list` shows the rules in the form Rules prints.

func l4TCP() part { return l4proto("tcp", unix.IPPROTO_TCP) }
func l4UDP() part { return l4proto("udp", unix.IPPROTO_UDP) }

func l4proto(name string, proto byte) part {
	return part{"meta l4proto " + name, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}}
}

func tcpDport(port uint16) part { return dport(l4TCP(), "tcp", port) }
func udpDport(port uint16) part { return dport(l4UDP(), "udp", port) }

// dport matches the destination port, which TCP and UDP both carry at
// offset 2 of their header, after the protocol match.
func dport(proto part, name string, port uint16) part {
	return part{fmt.Sprintf("%s dport %d", name, port), append(slices.Clone(proto.exprs),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	)}
}

func skuid(uid uint32) part {
	return part{fmt.Sprintf("meta skuid %d", uid), []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(uid)},
	}}
}

func oifname(name string) part {
	data := make([]byte, unix.IFNAMSIZ)
	copy(data, name)
	return part{fmt.Sprintf("oifname %q", name), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}}
}

// daddr matches an IPv4 or IPv6 destination prefix. In an inet table the
// network header can only be read after checking the family, as nft does.
func daddr(p netip.Prefix) part {
	p = p.Masked()
	family, kw, offset := byte(unix.NFPROTO_IPV4), "ip", uint32(16)
	if p.Addr().Is6() {
		family, kw, offset = unix.NFPROTO_IPV6, "ip6", 24
	}
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
	}
	bitLen := p.Addr().BitLen()
	if p.Bits() == 0 {
		// Every address of the family: nft reduces this to the family match.
		return part{"meta nfproto " + map[string]string{"ip": "ipv4", "ip6": "ipv6"}[kw], exprs}
	}
	size := uint32(bitLen / 8)
	exprs = append(exprs, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size})
	text := fmt.Sprintf("%s daddr %s", kw, p.Addr())
	if p.Bits() < bitLen {
		exprs = append(exprs, &expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: size,
			Mask: prefixMask(p.Bits(), int(size)), Xor: make([]byte, size),
		})
		text = fmt.Sprintf("%s daddr %s", kw, p)
	}
	exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()})
	return part{text, exprs}
}

func prefixMask(bits, size int) []byte {
	m := make([]byte, size)
	for i := range m {
		switch {
		case bits >= 8:
			m[i] = 0xff
			bits -= 8
		case bits > 0:
			m[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return m
}

func ret() part {
	return part{"return", []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}}
}

func redirect(port uint16) part {
	return part{fmt.Sprintf("redirect to :%d", port), []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		// Max = min and the flag are what the kernel fills in anyway.
		&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	}}
}

func comment(s string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, s)
}
