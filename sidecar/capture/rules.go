package capture

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The chains of table inet weft; chainUDP only under UDPDrop.
const (
	chainInbound  = "prerouting"
	chainOutbound = "output"
	chainUDP      = "output_udp"
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
	name     string
	typ      nftables.ChainType
	hook     string
	prio     string // as nft(8) 1.0.6 prints and accepts it (dstnat = -100, filter = 0)
	hooks    *nftables.ChainHook
	priority *nftables.ChainPriority
	rules    []ruleSpec
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
	in := chainSpec{name: chainInbound, typ: nftables.ChainTypeNAT, hook: "prerouting", prio: "dstnat",
		hooks: nftables.ChainHookPrerouting, priority: nftables.ChainPriorityNATDest}
	exempt, capture := inboundPorts(c)
	for _, e := range exempt {
		in.rules = append(in.rules, rule(e.comment, tcpDport(e.port), ret()))
	}
	if len(capture) == 0 {
		in.rules = append(in.rules, rule("weft: inbound capture", l4TCP(), redirect(c.InboundPort)))
	} else {
		for _, p := range capture {
			in.rules = append(in.rules, rule("weft: inbound capture", tcpDport(p), redirect(c.InboundPort)))
		}
	}

	out := chainSpec{name: chainOutbound, typ: nftables.ChainTypeNAT, hook: "output", prio: "-100",
		hooks: nftables.ChainHookOutput, priority: nftables.ChainPriorityNATDest}
	out.rules = append(out.rules,
		rule("weft: inbound delivery from the sidecar", saddr(netip.PrefixFrom(InboundSourceIPv4, 32)), oifname("lo"), ret()),
		rule("weft: inbound delivery from the sidecar", saddr(netip.PrefixFrom(InboundSourceIPv6, 128)), oifname("lo"), ret()),
		// The sidecar's connection to its own pod: a Service endpoint that
		// is this very pod (a pod calling its own Service). It leaves over
		// lo and never meets prerouting, so without this rule the client
		// side's mTLS would reach the app's plaintext port; redirected, the
		// pod's own inbound side takes it as any peer's (Istio does the
		// same). Loopback destinations (probes, the admin port) stay direct.
		rule("weft: sidecar to loopback", skuid(c.ProxyUID), daddr(netip.MustParsePrefix("127.0.0.0/8")), ret()),
		rule("weft: sidecar to loopback", skuid(c.ProxyUID), daddr(netip.MustParsePrefix("::1/128")), ret()),
	)
	// The ports inbound capture takes, as prerouting decides them.
	for _, e := range exempt {
		out.rules = append(out.rules, rule("weft: sidecar to its own pod, port not captured", skuid(c.ProxyUID), oifname("lo"), tcpDport(e.port), ret()))
	}
	if len(capture) == 0 {
		out.rules = append(out.rules, rule("weft: sidecar to its own pod", skuid(c.ProxyUID), oifname("lo"), l4TCP(), redirect(c.InboundPort)))
	} else {
		for _, p := range capture {
			out.rules = append(out.rules, rule("weft: sidecar to its own pod", skuid(c.ProxyUID), oifname("lo"), tcpDport(p), redirect(c.InboundPort)))
		}
	}
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
	cidrs := sortedCIDRs(c.ExcludeOutboundCIDRs)
	for _, p := range cidrs {
		out.rules = append(out.rules, rule("weft: excluded outbound CIDR", daddr(p), ret()))
	}
	out.rules = append(out.rules, rule("weft: outbound capture", l4TCP(), redirect(c.OutboundPort)))
	if !c.dropUDP() {
		return []chainSpec{in, out}
	}

	// Outbound UDP is refused in a filter chain, which sees every packet:
	// a nat chain sees only a connection's first packet, and none that
	// conntrack could not track. It runs after output (priority 0 >
	// -100), so DNS redirected to the DNS proxy arrives here addressed
	// to loopback.
	udp := chainSpec{name: chainUDP, typ: nftables.ChainTypeFilter, hook: "output", prio: "filter",
		hooks: nftables.ChainHookOutput, priority: nftables.ChainPriorityFilter}
	udp.rules = append(udp.rules,
		rule("weft: not UDP", l4protoNot("udp", unix.IPPROTO_UDP), ret()),
		rule("weft: sidecar traffic", skuid(c.ProxyUID), ret()),
		rule("weft: answers to UDP the pod received", ctDirection("reply", 1), ret()),
		rule("weft: loopback", oifname("lo"), ret()),
		rule("weft: loopback and the DNS proxy", daddr(netip.MustParsePrefix("127.0.0.0/8")), ret()),
		rule("weft: loopback and the DNS proxy", daddr(netip.MustParsePrefix("::1/128")), ret()),
	)
	if len(redirectDNS) == 0 {
		// No DNS capture (DNSPort 0, or no nameserver known): the pod's
		// DNS must still resolve, and which servers it asks is unknown.
		udp.rules = append(udp.rules, rule("weft: DNS, not captured", udpDport(dnsPort), ret()))
	}
	for _, p := range sortedPorts(c.ExcludeOutboundPorts) {
		udp.rules = append(udp.rules, rule("weft: excluded outbound port", udpDport(p), ret()))
	}
	for _, p := range cidrs {
		udp.rules = append(udp.rules, rule("weft: excluded outbound CIDR", daddr(p), ret()))
	}
	// Counting comes in rules of its own, before the reject: a full set
	// makes its update fail, which ends only that rule.
	udp.rules = append(udp.rules,
		rule("weft: dropped UDP, per destination", updateDropped(udpDroppedSets[0])),
		rule("weft: dropped UDP, per destination", updateDropped(udpDroppedSets[1])),
		rule("weft: outbound UDP dropped", counter(), reject()),
	)
	return []chainSpec{in, out, udp}
}

// exemptPort is a port that inbound capture leaves alone, and why.
type exemptPort struct {
	port    uint16
	comment string
}

// inboundPorts are the ports inbound capture leaves alone (the sidecar's
// own, then the excluded ones), in rule order, and the ports it captures
// (empty: every other port).
func inboundPorts(c Config) (exempt []exemptPort, capture []uint16) {
	exempt = []exemptPort{
		{c.InboundPort, "weft: sidecar inbound port"},
		{c.OutboundPort, "weft: sidecar outbound port"},
		{AdminPort, "weft: sidecar admin port"},
		{HealthPort, "weft: sidecar health port"},
	}
	reserved := []uint16{c.InboundPort, c.OutboundPort, AdminPort, HealthPort}
	if c.DNSPort != 0 {
		exempt = append(exempt, exemptPort{c.DNSPort, "weft: sidecar DNS port"})
		reserved = append(reserved, c.DNSPort)
	}
	for _, p := range sortedPorts(c.ExcludeInboundPorts) {
		if !slices.Contains(reserved, p) {
			exempt = append(exempt, exemptPort{p, "weft: excluded inbound port"})
		}
	}
	return exempt, sortedPorts(c.IncludeInboundPorts)
}

func sortedCIDRs(prefixes []netip.Prefix) []netip.Prefix {
	cidrs := make([]netip.Prefix, 0, len(prefixes))
	for _, p := range prefixes {
		cidrs = append(cidrs, p.Masked())
	}
	slices.SortFunc(cidrs, comparePrefix)
	return slices.Compact(cidrs)
}

// The sets that count rejected UDP per destination (address and port),
// one per family; only under UDPDrop. An element lives until
// UDPDroppedTimeout after its last packet; a full set stops adding
// elements (the packets are still rejected and counted by the rule).
const (
	UDPDroppedSetIPv4 = "udp_dropped_ipv4"
	UDPDroppedSetIPv6 = "udp_dropped_ipv6"
	UDPDroppedSetSize = 1024
	UDPDroppedTimeout = time.Hour
)

// setSpec is one named set, as nft(8) text and as the netlink set Install
// adds (without its table).
type setSpec struct {
	name  string
	text  []string // the lines between "set NAME {" and "}"
	proto byte     // NFPROTO_IPV4 or NFPROTO_IPV6
	set   nftables.Set
}

var udpDroppedSets = [2]setSpec{udpDroppedSet(UDPDroppedSetIPv4, "ipv4_addr", unix.NFPROTO_IPV4, nftables.TypeIPAddr),
	udpDroppedSet(UDPDroppedSetIPv6, "ipv6_addr", unix.NFPROTO_IPV6, nftables.TypeIP6Addr)}

func udpDroppedSet(name, addrType string, proto byte, addr nftables.SetDatatype) setSpec {
	return setSpec{
		name: name,
		text: []string{
			"type " + addrType + " . inet_service",
			fmt.Sprintf("size %d", UDPDroppedSetSize),
			"flags dynamic,timeout",
			"timeout 1h", // UDPDroppedTimeout, as nft(8) writes it
		},
		proto: proto,
		// Not Concatenation: that flag (NFT_SET_CONCAT, Linux >= 5.6) is
		// for interval sets, and nft(8) does not set it for this one.
		set: nftables.Set{Name: name, KeyType: nftables.MustConcatSetType(addr, nftables.TypeInetService),
			Dynamic: true, HasTimeout: true, Timeout: UDPDroppedTimeout, Size: UDPDroppedSetSize},
	}
}

// buildSets returns the named sets the rules of buildChains use.
func buildSets(c Config) []setSpec {
	if !c.dropUDP() {
		return nil
	}
	return udpDroppedSets[:]
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
	otherUDP := "other UDP and other protocols are untouched."
	if cfg.dropUDP() {
		otherUDP = "other UDP is rejected and counted per destination in sets " + UDPDroppedSetIPv4 + " and " + UDPDroppedSetIPv6 +
			";\n# other protocols are untouched."
	}
	switch {
	case len(redirectDNS) == 0 && cfg.dropUDP():
		fmt.Fprintf(&b, "# weft traffic capture: TCP is redirected, DNS (UDP port %d) is not captured and leaves;\n# %s\n", dnsPort, otherUDP)
	case len(redirectDNS) == 0:
		b.WriteString("# weft traffic capture: only TCP is redirected; UDP and other protocols are untouched.\n")
	default:
		fmt.Fprintf(&b, "# weft traffic capture: TCP is redirected, and DNS (UDP and TCP port %d) to the pod's nameservers\n", dnsPort)
		fmt.Fprintf(&b, "# goes to :%d; %s\n", cfg.DNSPort, otherUDP)
	}
	for _, a := range skippedDNS {
		fmt.Fprintf(&b, "# nameserver %s is not captured: loopback traffic never is.\n", a)
	}
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, s := range buildSets(cfg) {
		fmt.Fprintf(&b, "\tset %s {\n", s.name)
		for _, l := range s.text {
			fmt.Fprintf(&b, "\t\t%s\n", l)
		}
		b.WriteString("\t}\n\n")
	}
	for i, ch := range buildChains(cfg) {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", ch.name)
		fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy accept;\n", ch.typ, ch.hook, ch.prio)
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

func l4protoNot(name string, proto byte) part {
	return part{"meta l4proto != " + name, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{proto}},
	}}
}

// ctDirection matches the packet's direction in its conntrack entry
// (IP_CT_DIR_ORIGINAL 0, IP_CT_DIR_REPLY 1). An untracked packet has no
// direction and matches neither.
func ctDirection(name string, dir byte) part {
	return part{"ct direction " + name, []expr.Any{
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{dir}},
	}}
}

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
func daddr(p netip.Prefix) part { return addrMatch("daddr", p) }

// saddr matches an IPv4 or IPv6 source prefix, as daddr a destination.
func saddr(p netip.Prefix) part { return addrMatch("saddr", p) }

// addrMatch matches the source ("saddr") or destination ("daddr") address
// of the network header against p.
func addrMatch(which string, p netip.Prefix) part {
	p = p.Masked()
	family, kw, offset := byte(unix.NFPROTO_IPV4), "ip", uint32(16)
	if p.Addr().Is6() {
		family, kw, offset = unix.NFPROTO_IPV6, "ip6", 24
	}
	if which == "saddr" {
		offset -= uint32(p.Addr().BitLen() / 8) // IPv4 source at 12, IPv6 at 8
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
	text := fmt.Sprintf("%s %s %s", kw, which, p.Addr())
	if p.Bits() < bitLen {
		exprs = append(exprs, &expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: size,
			Mask: prefixMask(p.Bits(), int(size)), Xor: make([]byte, size),
		})
		text = fmt.Sprintf("%s %s %s", kw, which, p)
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

// updateDropped adds (or refreshes) the packet's destination address and
// UDP port in set s and counts the packet there; nft(8) writes it as
// `update @s { ip daddr . udp dport counter }`. The address fills 32-bit
// registers from reg 1 on, the port the next one (NFT_REG32_01 = 9 after
// an IPv4 address, reg 2 after an IPv6 one), as nft allocates them.
func updateDropped(s setSpec) part {
	kw, offset, size, portReg := "ip", uint32(16), uint32(4), uint32(9)
	if s.proto == unix.NFPROTO_IPV6 {
		kw, offset, size, portReg = "ip6", 24, 16, 2
	}
	return part{fmt.Sprintf("update @%s { %s daddr . udp dport counter }", s.name, kw), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{s.proto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
		&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Dynset{SrcRegKey: 1, SetName: s.name, Operation: uint32(unix.NFT_DYNSET_OP_UPDATE), Exprs: []expr.Any{&expr.Counter{}}},
	}}
}

func counter() part { return part{"counter", []expr.Any{&expr.Counter{}}} }

// reject answers with ICMP (or ICMPv6) port unreachable; nft(8) lists the
// inet family's default as plain `reject`.
func reject() part {
	return part{"reject", []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}}}
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
