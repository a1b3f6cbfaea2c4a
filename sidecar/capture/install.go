package capture

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nftMu serialises building a batch: google/nftables numbers new sets
// from a package-level counter that it does not guard, so two Installs at
// once (tests, each in its own namespace) race on it. weft-init calls
// Install once.
var nftMu sync.Mutex

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// Install programs the capture rules into the network namespace of the
// calling thread (in weft-init that is the pod's; a test that moved a locked
// OS thread into another namespace gets that one). It validates cfg first.
//
// An existing weft table is replaced in the same netlink transaction that
// builds the new one, so running Install again (a restarted init container)
// leaves exactly one copy of the rules, and no packet sees an empty or
// half-built table. Install needs CAP_NET_ADMIN in the namespace.
func Install(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	ipv6, err := addInboundSource6()
	if err != nil {
		return err
	}
	// Not AsLasting: the netlink socket is opened inside Flush, on the
	// calling thread, and so in its network namespace.
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("capture: open netlink: %w", err)
	}
	nftMu.Lock()
	defer nftMu.Unlock()
	t := table()
	// "add table; delete table; add table ..." in one batch: the first add
	// makes the delete valid whether or not the table existed.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	for _, spec := range buildSets(cfg) {
		set := spec.set
		set.Table = t
		if err := c.AddSet(&set, nil); err != nil {
			return fmt.Errorf("capture: set %s: %w", spec.name, err)
		}
	}
	accept := nftables.ChainPolicyAccept
	for _, ch := range buildChains(cfg) {
		chain := c.AddChain(&nftables.Chain{
			Name:     ch.name,
			Table:    t,
			Type:     ch.typ,
			Hooknum:  ch.hooks,
			Priority: ch.priority,
			Policy:   &accept,
		})
		for _, r := range ch.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: r.exprs, UserData: comment(r.comment)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("capture: install table inet %s: %w%s", TableName, err, hint(err))
	}
	log := logger(cfg.Logger)
	if !ipv6 {
		log.Info("no IPv6 in the pod: " + InboundSourceIPv6.String() + " not added to lo (inbound delivery over IPv4 only)")
	}
	dns, skipped := cfg.dnsServers()
	for _, a := range skipped {
		log.Warn("DNS to a loopback nameserver is not captured (loopback traffic never is): the sidecar does not see its answers",
			"nameserver", a.String(), "dns_port", cfg.DNSPort)
	}
	if cfg.dropUDP() && len(dns) == 0 {
		log.Warn("outbound UDP is dropped but DNS is not captured: DNS (UDP port 53) to any server leaves the pod, unaudited",
			"dns_port", cfg.DNSPort)
	}
	udp := cfg.OutboundUDP
	if udp == "" {
		udp = UDPAllow
	}
	log.Info("capture rules installed",
		"table", "inet "+TableName,
		"inbound_port", cfg.InboundPort, "outbound_port", cfg.OutboundPort, "proxy_uid", cfg.ProxyUID,
		"include_inbound_ports", cfg.IncludeInboundPorts, "exclude_inbound_ports", cfg.ExcludeInboundPorts,
		"exclude_outbound_ports", cfg.ExcludeOutboundPorts, "exclude_outbound_cidrs", cfg.ExcludeOutboundCIDRs,
		"dns_port", cfg.DNSPort, "dns_servers", dns, "outbound_udp", string(udp))
	return nil
}

// addInboundSource6 puts InboundSourceIPv6 (::6/128) on lo, so that the
// sidecar can deliver inbound IPv6 connections from it (an address it
// binds must be the host's) and their answers come back over lo. Adding it
// again is not an error. It reports false, and no error, where the pod has
// no IPv6 (switched off on lo: EACCES; not in the kernel: EAFNOSUPPORT);
// then there is no IPv6 to deliver either.
func addInboundSource6() (bool, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return false, fmt.Errorf("capture: loopback interface: %w", err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: InboundSourceIPv6.AsSlice(), Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD}
	err = netlink.AddrReplace(lo, a)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EAFNOSUPPORT), errors.Is(err, syscall.EPROTONOSUPPORT):
		return false, nil
	}
	return false, fmt.Errorf("capture: add %s/128 to lo: %w%s", InboundSourceIPv6, err, hint(err))
}

// Remove deletes table inet weft from the calling thread's network namespace,
// and nothing else. A namespace without the table is not an error. The
// address ::6 that Install put on lo stays (it routes nothing elsewhere).
func Remove() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("capture: open netlink: %w", err)
	}
	t := table()
	c.AddTable(t) // makes the delete valid when the table is absent
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("capture: remove table inet %s: %w%s", TableName, err, hint(err))
	}
	return nil
}

func hint(err error) string {
	switch {
	case errors.Is(err, os.ErrPermission):
		return " (needs CAP_NET_ADMIN in the pod's network namespace)"
	case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EAFNOSUPPORT):
		return " (does the kernel have nf_tables with inet nat and redir, Linux >= 5.2, and for --outbound-udp=drop nft_reject_inet and dynamic sets?)"
	}
	return ""
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
