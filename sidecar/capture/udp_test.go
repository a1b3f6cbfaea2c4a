package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/weftmesh/weft/internal/testutil/golden"
)

func dropConfig() Config {
	cfg := DefaultConfig()
	cfg.OutboundUDP = UDPDrop
	return cfg
}

func TestRulesUDP(t *testing.T) {
	cfg := dropConfig()
	cfg.DNSServers = []netip.Addr{netip.MustParseAddr("198.18.0.10")}
	cfg.ExcludeOutboundPorts = []uint16{3478}
	cfg.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}
	golden.Check(t, "testdata/rules-drop.golden", Rules(cfg))

	// Allow (and the zero value, which means allow) adds no UDP rule at
	// all: the rule set is what it was before UDP had a policy.
	for _, udp := range []UDPPolicy{UDPAllow, ""} {
		allow := cfg
		allow.OutboundUDP = udp
		got := Rules(allow)
		if strings.Contains(got, "udp_dropped") || strings.Contains(got, "reject") || strings.Contains(got, chainUDP) || strings.Contains(got, "udp dport 3478") {
			t.Errorf("Rules(OutboundUDP %q) drops UDP:\n%s", udp, got)
		}
		if !strings.Contains(got, "# goes to :15053; other UDP and other protocols are untouched.\n") {
			t.Errorf("Rules(OutboundUDP %q) header:\n%s", udp, got)
		}
	}

	// Without DNS capture, DNS still resolves: UDP port 53 leaves before
	// the reject, to whatever server the pod asks.
	for name, mod := range map[string]func(*Config){
		"DNSPort 0":            func(c *Config) { c.DNSPort, c.DNSServers = 0, nil },
		"no nameservers":       func(c *Config) { c.DNSServers = nil },
		"loopback nameservers": func(c *Config) { c.DNSServers = []netip.Addr{netip.MustParseAddr("127.0.0.53")} },
	} {
		c := cfg
		mod(&c)
		got := Rules(c)
		want := "\t\tip6 daddr ::1 return comment \"weft: loopback and the DNS proxy\"\n" +
			"\t\tudp dport 53 return comment \"weft: DNS, not captured\"\n\t\tudp dport 3478 return"
		if !strings.Contains(got, want) || !strings.HasPrefix(got, "# weft traffic capture: TCP is redirected, DNS (UDP port 53) is not captured and leaves;\n") {
			t.Errorf("%s: Rules lacks %q:\n%s", name, want, got)
		}
	}
	if got := Rules(cfg); strings.Contains(got, "DNS, not captured") {
		t.Errorf("DNS captured and yet UDP 53 returned:\n%s", got)
	}

	bad := cfg
	bad.OutboundUDP = "reject"
	if err := bad.Validate(); err == nil || err.Error() != `capture: OutboundUDP "reject" is not allow or drop` {
		t.Errorf("Validate(OutboundUDP reject) = %v", err)
	}
	for in, want := range map[string]UDPPolicy{"drop": UDPDrop, " allow ": UDPAllow, "": "", "Drop": ""} {
		got, err := ParseUDPPolicy(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("ParseUDPPolicy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestUDPRuleExprs pins the expressions of the counting and reject rules
// to what nft(8) generates for their text (nft --debug=netlink, 1.0.6).
func TestUDPRuleExprs(t *testing.T) {
	got := map[string][]expr.Any{}
	for _, ch := range buildChains(dropConfig()) {
		for _, r := range ch.rules {
			got[r.text] = r.exprs
		}
	}
	meta := func(k expr.MetaKey, v byte) []expr.Any {
		return []expr.Any{&expr.Meta{Key: k, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{v}}}
	}
	cat := func(parts ...[]expr.Any) (out []expr.Any) {
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for text, want := range map[string][]expr.Any{
		"update @udp_dropped_ipv4 { ip daddr . udp dport counter }": cat(meta(expr.MetaKeyNFPROTO, 2), meta(expr.MetaKeyL4PROTO, 17), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Dynset{SrcRegKey: 1, SetName: "udp_dropped_ipv4", Operation: 1, Exprs: []expr.Any{&expr.Counter{}}},
		}),
		"update @udp_dropped_ipv6 { ip6 daddr . udp dport counter }": cat(meta(expr.MetaKeyNFPROTO, 10), meta(expr.MetaKeyL4PROTO, 17), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
			&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Dynset{SrcRegKey: 1, SetName: "udp_dropped_ipv6", Operation: 1, Exprs: []expr.Any{&expr.Counter{}}},
		}),
		"counter reject": {
			&expr.Counter{}, &expr.Reject{Type: 2, Code: 1}, // NFT_REJECT_ICMPX_UNREACH, NFT_REJECT_ICMPX_PORT_UNREACH
		},
		"meta l4proto != udp return": {
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{17}},
			&expr.Verdict{Kind: expr.VerdictReturn},
		},
		"ct direction reply return": {
			&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}},
			&expr.Verdict{Kind: expr.VerdictReturn},
		},
	} {
		if g := got[text]; fmtExprs(g) != fmtExprs(want) {
			t.Errorf("%s:\n got %s\nwant %s", text, fmtExprs(g), fmtExprs(want))
		}
	}
}

func fmtExprs(es []expr.Any) string {
	s := make([]string, 0, len(es))
	for _, e := range es {
		s = append(s, fmtExpr(e))
	}
	return strings.Join(s, " ")
}

// TestInstallUDPDrop: the kernel holds the sets and exactly the rules
// buildChains made; reinstalling with allow removes both.
func TestInstallUDPDrop(t *testing.T) {
	t.Parallel()
	ns := newNetns(t, "udpinst")
	cfg := dropConfig()
	cfg.ExcludeOutboundPorts = []uint16{3478}
	install(t, ns, cfg)
	install(t, ns, cfg) // idempotent, sets included
	_, weft := snapshot(t, ns)
	if want := builtRules(cfg); weft != want {
		t.Errorf("kernel rule set differs from the built one:\n got: %s\nwant: %s", weft, want)
	}
	sets := func() (out []string) {
		ns.Must(t, func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			ss, err := c.GetSets(table())
			for _, s := range ss {
				out = append(out, fmt.Sprintf("%s %s size %d timeout %v dynamic %v", s.Name, s.KeyType.Name, s.Size, s.Timeout, s.Dynamic))
			}
			return err
		})
		return out
	}
	want := []string{
		"udp_dropped_ipv4 ipv4_addr . inet_service size 1024 timeout 1h0m0s dynamic true",
		"udp_dropped_ipv6 ipv6_addr . inet_service size 1024 timeout 1h0m0s dynamic true",
	}
	if got := sets(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("sets:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	install(t, ns, DefaultConfig())
	if got := sets(); len(got) != 0 {
		t.Errorf("after reinstall with allow: sets %v", got)
	}
}

// exchangeUDPConnected is exchangeUDP from a connected socket, the one kind
// to which the kernel reports an ICMP port unreachable (ECONNREFUSED).
func exchangeUDPConnected(addr string) (string, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("query")); err != nil {
		return "", fmt.Errorf("send to %s: %w", addr, err)
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return "", fmt.Errorf("reply from %s: %w", addr, err)
	}
	return string(buf[:n]), nil
}

// expectUDPRejected sends a datagram to addr from ns as root and expects
// the pod's rules to refuse it at once (the destination's server would
// otherwise answer). The kernel fails the send itself with EPERM, as for
// any locally generated packet netfilter drops; ECONNREFUSED (the ICMP
// port unreachable reject sends) would do as well.
func expectUDPRejected(t *testing.T, ns *netns, addr string) {
	t.Helper()
	var got string
	err := ns.Do(func() (err error) { got, err = exchangeUDPConnected(addr); return err })
	if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("UDP to %s from %s: got %q, %v; want the send refused (EPERM or ECONNREFUSED)", addr, ns.Name, got, err)
	}
}

// udpDrops reads the per-destination counts of the udp_dropped sets in ns
// (packets by "addr:port") and the reject rule's packet count.
func udpDrops(t *testing.T, ns *netns) (map[string]uint64, uint64) {
	t.Helper()
	byDst := map[string]uint64{}
	var total uint64
	ns.Must(t, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		for _, name := range []string{UDPDroppedSetIPv4, UDPDroppedSetIPv6} {
			s, err := c.GetSetByName(table(), name)
			if err != nil {
				return err
			}
			elems, err := c.GetSetElements(s)
			if err != nil {
				return err
			}
			for _, e := range elems {
				n := len(e.Key) - 4 // the address, then the port padded to 4 bytes
				a, _ := netip.AddrFromSlice(e.Key[:n])
				dst := netip.AddrPortFrom(a, binary.BigEndian.Uint16(e.Key[n:])).String()
				if e.Counter != nil {
					byDst[dst] = e.Counter.Packets
				} else {
					byDst[dst] = 0
				}
			}
		}
		rules, err := c.GetRules(table(), &nftables.Chain{Name: chainUDP, Table: table()})
		if err != nil {
			return err
		}
		for _, r := range rules {
			if fmt.Sprint(r.Exprs[len(r.Exprs)-1]) == fmt.Sprint(&expr.Reject{Type: 2, Code: 1}) {
				total = r.Exprs[len(r.Exprs)-2].(*expr.Counter).Packets
			}
		}
		return nil
	})
	return byDst, total
}

// TestUDPDrop: under OutboundUDP drop, the app's UDP (QUIC to 443, DNS to
// a server of its own choosing) is refused and counted; the sidecar's own
// UDP, DNS to the pod's nameserver, loopback and excluded destinations
// pass; TCP capture is unchanged. Under allow, UDP leaves.
func TestUDPDrop(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	cfg := dropConfig()
	cfg.DNSServers = []netip.Addr{netip.MustParseAddr(peerIP)}
	cfg.ExcludeOutboundPorts = []uint16{3478}
	cfg.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix(peerIP2 + "/32")}
	install(t, tp.pod, cfg)
	serveUDP(t, tp.pod, "127.0.0.1:15053", "dnsproxy")
	serveUDP(t, tp.pod, "127.0.0.1:9999", "local")
	serve(t, tp.pod, "127.0.0.1:15001", "proxy-out")
	quic := serveUDP(t, tp.peer, peerIP+":443", "quic")
	other := serveUDP(t, tp.peer, peerIP+":5353", "ns5353")
	serveUDP(t, tp.peer, peerIP+":3478", "stun")
	serveUDP(t, tp.peer, peerIP2+":443", "excluded")

	expectUDPRejected(t, tp.pod, peerIP+":443")
	expectUDPRejected(t, tp.pod, peerIP+":443")
	expectUDPRejected(t, tp.pod, peerIP+":5353")
	if n, m := quic.Load(), other.Load(); n != 0 || m != 0 {
		t.Errorf("the peer received %d datagrams on 443 and %d on 5353 from the app, want none", n, m)
	}
	// The sidecar's own UDP leaves.
	expectLineAs1337(t, tp.pod, "udp:"+peerIP+":443", "quic "+peerIP+":443 from "+peerIP+":443")
	// DNS to the pod's nameserver still reaches the DNS proxy.
	expectUDP(t, tp.pod, peerIP+":53", "dnsproxy 127.0.0.1:15053 from "+peerIP+":53")
	// Loopback, an excluded port, an excluded CIDR.
	expectUDP(t, tp.pod, "127.0.0.1:9999", "local 127.0.0.1:9999 from 127.0.0.1:9999")
	expectUDP(t, tp.pod, peerIP+":3478", "stun "+peerIP+":3478 from "+peerIP+":3478")
	expectUDP(t, tp.pod, peerIP2+":443", "excluded "+peerIP2+":443 from "+peerIP2+":443")
	// TCP is redirected as ever.
	expectLine(t, tp.pod, peerIP+":443", "proxy-out "+peerIP+":443")
	// A UDP server in the pod answers its clients: answers are not egress.
	serveUDP(t, tp.pod, ":5000", "podudp")
	expectUDP(t, tp.peer, podIP+":5000", "podudp [::]:5000 from "+podIP+":5000")

	byDst, total := udpDrops(t, tp.pod)
	if byDst[peerIP+":443"] != 2 || byDst[peerIP+":5353"] != 1 || len(byDst) != 2 || total != 3 {
		t.Errorf("dropped UDP: by destination %v, total %d; want %s:443 2, %s:5353 1, total 3", byDst, total, peerIP, peerIP)
	}

	t.Run("the sidecar cannot read the counters", func(t *testing.T) {
		// nfnetlink answers nothing, not even a listing, without
		// CAP_NET_ADMIN: weft-proxy (UID 1337, no capabilities) cannot
		// export them as metrics.
		expectLineAs1337(t, tp.pod, "nft:list", "error: "+syscall.EPERM.Error())
	})

	t.Run("without DNS capture DNS leaves", func(t *testing.T) {
		c := cfg
		c.DNSPort, c.DNSServers = 0, nil
		install(t, tp.pod, c)
		serveUDP(t, tp.peer, peerIP+":53", "ns")
		expectUDP(t, tp.pod, peerIP+":53", "ns "+peerIP+":53 from "+peerIP+":53")
		expectUDPRejected(t, tp.pod, peerIP+":443")
	})

	t.Run("allow", func(t *testing.T) {
		c := cfg
		c.OutboundUDP = UDPAllow
		install(t, tp.pod, c)
		expectUDP(t, tp.pod, peerIP+":443", "quic "+peerIP+":443 from "+peerIP+":443")
		expectUDP(t, tp.pod, peerIP+":53", "dnsproxy 127.0.0.1:15053 from "+peerIP+":53")
	})
}

// TestUDPDropIPv6: the same for IPv6, counted in udp_dropped_ipv6.
func TestUDPDropIPv6(t *testing.T) {
	t.Parallel()
	needIPv6(t)
	pod, peer := newNetns(t, "udp6pod"), newNetns(t, "udp6peer")
	veth(t, pod, []string{podIP6 + "/64"}, peer, []string{peerIP6 + "/64", peerIP62 + "/64"})
	cfg := dropConfig()
	cfg.DNSServers = []netip.Addr{netip.MustParseAddr(peerIP6)}
	install(t, pod, cfg)
	serveUDP(t, pod, "[::1]:15053", "dnsproxy")
	quic := serveUDP(t, peer, "["+peerIP62+"]:443", "quic")

	dst := "[" + peerIP62 + "]:443"
	expectUDPRejected(t, pod, dst)
	if n := quic.Load(); n != 0 {
		t.Errorf("the peer received %d datagrams from the app, want none", n)
	}
	expectLineAs1337(t, pod, "udp:"+dst, "quic "+dst+" from "+dst)
	expectUDP(t, pod, "["+peerIP6+"]:53", "dnsproxy [::1]:15053 from ["+peerIP6+"]:53")
	if byDst, total := udpDrops(t, pod); byDst[dst] != 1 || len(byDst) != 1 || total != 1 {
		t.Errorf("dropped UDP: by destination %v, total %d; want %s 1", byDst, total, dst)
	}
}

// listWeftTableAs1337 is the helper's "nft:list": what the sidecar's UID
// gets when it asks for table inet weft.
func listWeftTableAs1337() string {
	c, err := nftables.New()
	if err == nil {
		_, err = c.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	}
	if err != nil {
		if errors.Is(err, syscall.EPERM) {
			return "error: " + syscall.EPERM.Error()
		}
		return "error: " + err.Error()
	}
	return "listed table inet " + TableName
}
