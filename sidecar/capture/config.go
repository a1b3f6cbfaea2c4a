package capture

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/api/names"
)

// Names and ports the rule set depends on.
const (
	// TableName is the name of the one nftables table (family inet) Install
	// creates and Remove deletes.
	TableName = "weft"

	DefaultInboundPort  uint16 = names.SidecarInboundPort
	DefaultOutboundPort uint16 = names.SidecarOutboundPort
	DefaultProxyUID     uint32 = 1337
	// DefaultDNSPort is the sidecar's DNS proxy (127.0.0.1 and [::1], UDP
	// and TCP).
	DefaultDNSPort uint16 = names.SidecarDNSPort

	// MaxDNSServers bounds Config.DNSServers (and ParseResolvConf): the
	// kubelet writes at most 3 nameservers, glibc and musl use 3.
	MaxDNSServers = 16

	// AdminPort is the sidecar's admin listener (loopback only). Inbound
	// connections to it are never redirected, whatever the Config says.
	AdminPort uint16 = names.SidecarAdminPort
	// HealthPort serves the kubelet's readiness probes on the pod IP.
	// Inbound connections to it are never redirected, whatever the Config
	// says.
	HealthPort uint16 = names.SidecarHealthPort
)

// The source addresses the sidecar delivers inbound connections from (to
// the pod's own address): connections from them over lo are never
// captured (output rules 1 and 2). Install puts InboundSourceIPv6 on lo,
// where IPv6 is on: unlike 127.0.0.6 it is not a loopback address the
// kernel already has. Istio's InboundPassthroughBindIpv4 and
// InboundPassthroughBindIpv6.
var (
	InboundSourceIPv4 = netip.AddrFrom4([4]byte{127, 0, 0, 6})
	InboundSourceIPv6 = netip.MustParseAddr("::6")
)

// Config says what Install redirects. The zero value is not valid: start
// from DefaultConfig.
type Config struct {
	InboundPort  uint16 // 15006: inbound TCP is redirected here
	OutboundPort uint16 // 15001: outbound TCP is redirected here
	ProxyUID     uint32 // 1337: connections from this UID are never captured

	// IncludeInboundPorts limits inbound capture to these ports; nil or
	// empty means every port.
	IncludeInboundPorts []uint16
	// ExcludeInboundPorts are never captured inbound. InboundPort,
	// OutboundPort, AdminPort and HealthPort are always excluded as well;
	// listing them is allowed and changes nothing.
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts are destination ports reached directly, not
	// through the sidecar: TCP, and under UDPDrop UDP as well.
	ExcludeOutboundPorts []uint16
	// ExcludeOutboundCIDRs are destinations reached directly, not through
	// the sidecar, over any protocol (so under UDPDrop their UDP leaves
	// too). Host bits are ignored (198.18.0.1/16 means 198.18.0.0/16).
	ExcludeOutboundCIDRs []netip.Prefix

	// DNSPort is the sidecar's DNS proxy, listening on 127.0.0.1 and [::1]
	// for UDP and TCP. DNS (UDP and TCP port 53) from the pod to one of
	// DNSServers is redirected here. 0 turns DNS capture off (DNSServers
	// must then be empty). Inbound TCP to DNSPort is never redirected, so
	// peers cannot reach the proxy through the inbound listener.
	DNSPort uint16
	// DNSServers are the pod's nameservers, the nameserver lines of its
	// /etc/resolv.conf (ParseResolvConf); at most MaxDNSServers. Only DNS to
	// these addresses is redirected: DNS to any other server is ordinary
	// egress. Loopback and unspecified addresses (127.0.0.0/8, ::1, 0.0.0.0,
	// ::) cannot be redirected and are skipped with a warning (see the
	// package doc). IPv4-mapped IPv6 addresses count as the IPv4 address.
	DNSServers []netip.Addr

	// OutboundUDP decides outbound UDP other than DNS to DNSServers (which
	// goes to the DNS proxy either way): UDPAllow (or "") lets it leave
	// the pod untouched and unaudited, UDPDrop rejects it with ICMP port
	// unreachable and counts it per destination (see the package doc).
	// UDP from ProxyUID, over loopback, to ExcludeOutboundCIDRs or to
	// ExcludeOutboundPorts always leaves.
	OutboundUDP UDPPolicy

	// Logger receives one Info record per successful Install; nil discards.
	Logger *slog.Logger
}

// UDPPolicy is what becomes of the pod's outbound UDP (Config.OutboundUDP).
type UDPPolicy string

const (
	// UDPAllow lets outbound UDP leave: the mesh cannot decide it, so it
	// is neither audited nor refused. What ALLOW_ANY pods get.
	UDPAllow UDPPolicy = "allow"
	// UDPDrop rejects outbound UDP (ICMP port unreachable, so a QUIC
	// client falls back to TCP at once) and counts it: REGISTRY_ONLY
	// pods, whose egress the mesh must decide.
	UDPDrop UDPPolicy = "drop"
)

// ParseUDPPolicy reads "allow" or "drop".
func ParseUDPPolicy(s string) (UDPPolicy, error) {
	switch p := UDPPolicy(strings.TrimSpace(s)); p {
	case UDPAllow, UDPDrop:
		return p, nil
	}
	return "", fmt.Errorf("capture: outbound UDP policy %q is not %s or %s", s, UDPAllow, UDPDrop)
}

// dropUDP reports whether outbound UDP is rejected.
func (c Config) dropUDP() bool { return c.OutboundUDP == UDPDrop }

// DefaultConfig returns the ports and UID of docs/architecture.md ("Ports",
// "Inside an injected pod") with nothing excluded beyond the sidecar's own
// ports. DNSPort is DefaultDNSPort, but with no
// DNSServers no DNS is redirected until the caller fills them in.
// OutboundUDP is UDPAllow, what the mesh's default (ALLOW_ANY) asks for.
func DefaultConfig() Config {
	return Config{
		InboundPort:  DefaultInboundPort,
		OutboundPort: DefaultOutboundPort,
		ProxyUID:     DefaultProxyUID,
		DNSPort:      DefaultDNSPort,
		OutboundUDP:  UDPAllow,
	}
}

// Validate reports the first problem that would make the rule set wrong.
// Install calls it.
func (c Config) Validate() error {
	switch {
	case c.InboundPort == 0:
		return errors.New("capture: InboundPort is 0 (the sidecar's inbound listener, normally 15006)")
	case c.OutboundPort == 0:
		return errors.New("capture: OutboundPort is 0 (the sidecar's outbound listener, normally 15001)")
	case c.InboundPort == c.OutboundPort:
		return fmt.Errorf("capture: InboundPort and OutboundPort are both %d", c.InboundPort)
	case c.ProxyUID == 0:
		return errors.New("capture: ProxyUID is 0: exempting root would leave every root process uncaptured (the sidecar runs as 1337)")
	case c.OutboundUDP != "" && c.OutboundUDP != UDPAllow && c.OutboundUDP != UDPDrop:
		return fmt.Errorf("capture: OutboundUDP %q is not %s or %s", string(c.OutboundUDP), UDPAllow, UDPDrop)
	}
	for _, p := range []struct {
		name string
		port uint16
	}{{"InboundPort", c.InboundPort}, {"OutboundPort", c.OutboundPort}} {
		switch p.port {
		case AdminPort:
			return fmt.Errorf("capture: %s %d is the sidecar's admin port", p.name, p.port)
		case HealthPort:
			return fmt.Errorf("capture: %s %d is the sidecar's health port", p.name, p.port)
		}
	}
	if err := c.validateDNS(); err != nil {
		return err
	}
	for _, l := range []struct {
		name  string
		ports []uint16
	}{
		{"IncludeInboundPorts", c.IncludeInboundPorts},
		{"ExcludeInboundPorts", c.ExcludeInboundPorts},
		{"ExcludeOutboundPorts", c.ExcludeOutboundPorts},
	} {
		if slices.Contains(l.ports, 0) {
			return fmt.Errorf("capture: %s: port 0 out of range 1-65535", l.name)
		}
	}
	for _, p := range c.ExcludeOutboundCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("capture: ExcludeOutboundCIDRs: invalid prefix %q", p.String())
		}
	}
	return nil
}

func (c Config) validateDNS() error {
	if c.DNSPort == 0 {
		if len(c.DNSServers) > 0 {
			return fmt.Errorf("capture: %d DNSServers but DNSPort is 0 (DNS capture off)", len(c.DNSServers))
		}
		return nil
	}
	for _, p := range []struct {
		name string
		port uint16
	}{{"InboundPort", c.InboundPort}, {"OutboundPort", c.OutboundPort}, {"the sidecar's admin port", AdminPort}, {"the sidecar's health port", HealthPort}} {
		if c.DNSPort == p.port {
			return fmt.Errorf("capture: DNSPort %d is also %s", c.DNSPort, p.name)
		}
	}
	if len(c.DNSServers) > MaxDNSServers {
		return fmt.Errorf("capture: %d DNSServers, at most %d", len(c.DNSServers), MaxDNSServers)
	}
	for _, a := range c.DNSServers {
		switch {
		case !a.IsValid():
			return errors.New("capture: DNSServers: invalid address")
		case a.Zone() != "":
			return fmt.Errorf("capture: DNSServers: %s: zones are not allowed", a)
		}
	}
	return nil
}

// dnsServers splits c.DNSServers into the addresses whose DNS is
// redirected and the loopback (or unspecified) ones that cannot be, each
// sorted, unique and unmapped. Both are nil when DNS capture is off.
func (c Config) dnsServers() (redirect, skipped []netip.Addr) {
	if c.DNSPort == 0 {
		return nil, nil
	}
	for _, a := range c.DNSServers {
		a = a.Unmap()
		if a.IsLoopback() || a.IsUnspecified() {
			skipped = append(skipped, a)
		} else {
			redirect = append(redirect, a)
		}
	}
	slices.SortFunc(redirect, netip.Addr.Compare)
	slices.SortFunc(skipped, netip.Addr.Compare)
	return slices.Compact(redirect), slices.Compact(skipped)
}

// ParsePorts parses a comma-separated list of ports such as "80,443"
// (spaces around entries are allowed). It returns the ports sorted, without
// duplicates. "" and "*" both return nil, which the Config fields read as
// "all ports" (IncludeInboundPorts) or "no ports" (the Exclude lists).
// Errors name the offending entry, e.g.
// `capture: port "70000": out of range 1-65535`.
func ParsePorts(s string) ([]uint16, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "*" {
		return nil, nil
	}
	var ports []uint16
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		switch {
		case item == "":
			return nil, fmt.Errorf("capture: port list %q: empty entry", s)
		case item == "*":
			return nil, fmt.Errorf("capture: port list %q: \"*\" must be the whole list", s)
		case strings.Trim(item, "0123456789") != "":
			return nil, fmt.Errorf("capture: port %q: not a number", item)
		}
		n, err := strconv.ParseUint(item, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("capture: port %q: out of range 1-65535", item)
		}
		ports = append(ports, uint16(n))
	}
	slices.Sort(ports)
	return slices.Compact(ports), nil
}

// ParseCIDRs parses a comma-separated list of IPv4 and IPv6 prefixes such as
// "198.18.0.0/15,2001:db8::/32"; a bare address means that one host (/32 or
// /128). Host bits are cleared (198.18.0.1/16 becomes 198.18.0.0/16), an
// IPv4-mapped IPv6 prefix becomes the IPv4 prefix it denotes, and the result
// is sorted without duplicates. "" returns nil. "*" is refused: write
// "0.0.0.0/0,::/0" to exclude every destination.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("capture: CIDR list %q: empty entry", s)
		}
		p, err := parseCIDR(item)
		if err != nil {
			return nil, fmt.Errorf("capture: CIDR %q: %s", item, err)
		}
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out), nil
}

func parseCIDR(item string) (netip.Prefix, error) {
	if item == "*" {
		return netip.Prefix{}, errors.New(`"*" is not a prefix (write 0.0.0.0/0,::/0 to exclude every destination)`)
	}
	addrPart, bitsPart, hasBits := strings.Cut(item, "/")
	addr, err := netip.ParseAddr(addrPart)
	if err != nil {
		return netip.Prefix{}, errors.New("not an IP address or prefix")
	}
	if addr.Zone() != "" {
		return netip.Prefix{}, errors.New("zones are not allowed")
	}
	bits := addr.BitLen()
	if hasBits {
		if bitsPart == "" || strings.Trim(bitsPart, "0123456789") != "" {
			return netip.Prefix{}, fmt.Errorf("prefix length %q is not a number", bitsPart)
		}
		n, err := strconv.Atoi(bitsPart)
		if err != nil || n > addr.BitLen() {
			return netip.Prefix{}, fmt.Errorf("prefix length %s out of range 0-%d", bitsPart, addr.BitLen())
		}
		bits = n
	}
	if addr.Is4In6() && bits >= 96 {
		addr, bits = addr.Unmap(), bits-96
	}
	return netip.PrefixFrom(addr, bits).Masked(), nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
