package capture

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// serveUDP answers every datagram to addr inside ns with one datagram,
// "<name> <local address>", sent back to where it came from. It returns
// how many datagrams arrived so far.
func serveUDP(t *testing.T, ns *netns, addr, name string) *atomic.Int64 {
	t.Helper()
	var pc net.PacketConn
	ns.Must(t, func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	})
	var wg sync.WaitGroup
	var received atomic.Int64
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			received.Add(1)
			_, _ = pc.WriteTo(fmt.Appendf(nil, "%s %s", name, pc.LocalAddr()), from)
		}
	}()
	return &received
}

// exchangeUDP sends one datagram to addr from an unconnected socket (which,
// unlike a connected one, accepts a reply from any address) and returns
// "<reply> from <source of the reply>".
func exchangeUDP(addr string) (string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "", err
	}
	network := "udp4"
	if ap.Addr().Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, nil)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.WriteToUDPAddrPort([]byte("query"), ap); err != nil {
		return "", fmt.Errorf("send to %s: %w", addr, err)
	}
	buf := make([]byte, 512)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return "", fmt.Errorf("reply from %s: %w", addr, err)
	}
	return fmt.Sprintf("%s from %s", buf[:n], from), nil
}

// expectUDP sends a datagram to addr from ns as root (UID 0) and checks
// the reply and where it came from.
func expectUDP(t *testing.T, ns *netns, addr, want string) {
	t.Helper()
	var got string
	err := ns.Do(func() (err error) { got, err = exchangeUDP(addr); return err })
	if err != nil {
		t.Errorf("UDP to %s from %s: %v (want %q)", addr, ns.Name, err, want)
		return
	}
	if got != want {
		t.Errorf("UDP to %s from %s: got %q, want %q", addr, ns.Name, got, want)
	}
}

// TestDNSCapture: the peer's first address plays the pod's nameserver, its
// second address some other DNS server the app picked itself.
func TestDNSCapture(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	cfg := DefaultConfig()
	cfg.DNSServers = []netip.Addr{netip.MustParseAddr(peerIP)}
	install(t, tp.pod, cfg)
	serveUDP(t, tp.pod, "127.0.0.1:15053", "dnsproxy")
	serve(t, tp.pod, "127.0.0.1:15053", "dnsproxy-tcp")
	serve(t, tp.pod, "127.0.0.1:15001", "proxy-out")
	serve(t, tp.pod, ":15006", "proxy-in")
	serveUDP(t, tp.peer, peerIP+":53", "ns")
	serveUDP(t, tp.peer, peerIP+":5353", "ns5353")
	serveUDP(t, tp.peer, peerIP2+":53", "other")
	servePlain(t, tp.peer, ":53", "peer53")

	ns, other := peerIP+":53", peerIP2+":53"

	// The app's DNS to its nameserver reaches the proxy; the answer comes
	// back from the nameserver's address (conntrack undoes the rewrite).
	expectUDP(t, tp.pod, ns, "dnsproxy 127.0.0.1:15053 from "+ns)
	expectLine(t, tp.pod, ns, "dnsproxy-tcp "+ns)
	// The sidecar's own DNS goes to the nameserver: no loop.
	expectLineAs1337(t, tp.pod, "udp:"+ns, "ns "+ns+" from "+ns)
	expectLineAs1337(t, tp.pod, ns, "peer53 "+ns)
	// DNS to another server is ordinary egress: UDP untouched, TCP to the
	// outbound listener like any TCP.
	expectUDP(t, tp.pod, other, "other "+other+" from "+other)
	expectLine(t, tp.pod, other, "proxy-out "+other)
	// Other UDP to the nameserver is untouched.
	expectUDP(t, tp.pod, peerIP+":5353", "ns5353 "+peerIP+":5353 from "+peerIP+":5353")
	// Peers cannot reach the DNS proxy through the inbound listener.
	if err := tp.peer.Do(func() error { _, err := dialLine(podIP + ":15053"); return err }); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("peer -> pod:15053: got %v, want connection refused", err)
	}

	t.Run("exclusions do not switch DNS capture off", func(t *testing.T) {
		cfg := cfg
		cfg.ExcludeOutboundPorts = []uint16{53}
		cfg.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("198.18.200.0/24")}
		install(t, tp.pod, cfg)
		expectUDP(t, tp.pod, ns, "dnsproxy 127.0.0.1:15053 from "+ns)
		expectLine(t, tp.pod, ns, "dnsproxy-tcp "+ns)
		expectLine(t, tp.pod, other, "peer53 "+other) // excluded
	})

	t.Run("DNSPort 0", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.DNSPort = 0
		install(t, tp.pod, cfg)
		expectUDP(t, tp.pod, ns, "ns "+ns+" from "+ns)
		expectLine(t, tp.pod, ns, "proxy-out "+ns)
	})

	t.Run("loopback nameserver", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.DNSServers = []netip.Addr{netip.MustParseAddr("127.0.0.53")}
		var logs bytes.Buffer
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		install(t, tp.pod, cfg)
		if !strings.Contains(logs.String(), `level=WARN msg="DNS to a loopback nameserver is not captured`) || !strings.Contains(logs.String(), "nameserver=127.0.0.53") {
			t.Errorf("Install logged %q, want a warning about 127.0.0.53", logs.String())
		}
		serveUDP(t, tp.pod, "127.0.0.53:53", "local")
		expectUDP(t, tp.pod, "127.0.0.53:53", "local 127.0.0.53:53 from 127.0.0.53:53")
		expectUDP(t, tp.pod, ns, "ns "+ns+" from "+ns)
	})
}

// The IPv6 topology of TestDNSCaptureIPv6, in 2001:db8::/32 (documentation).
const (
	podIP6   = "2001:db8:200::1"
	peerIP6  = "2001:db8:200::53"
	peerIP62 = "2001:db8:200::54"
)

func TestDNSCaptureIPv6(t *testing.T) {
	t.Parallel()
	needIPv6(t)
	pod, peer := newNetns(t, "pod6"), newNetns(t, "peer6")
	veth(t, pod, []string{podIP6 + "/64"}, peer, []string{peerIP6 + "/64", peerIP62 + "/64"})
	cfg := DefaultConfig()
	cfg.DNSServers = []netip.Addr{netip.MustParseAddr(peerIP6)}
	install(t, pod, cfg)
	serveUDP(t, pod, "[::1]:15053", "dnsproxy")
	serve(t, pod, "[::1]:15053", "dnsproxy-tcp")
	serve(t, pod, "[::1]:15001", "proxy-out")
	serveUDP(t, peer, "["+peerIP6+"]:53", "ns")
	serveUDP(t, peer, "["+peerIP62+"]:53", "other")
	servePlain(t, peer, "[::]:53", "peer53")

	ns, other := "["+peerIP6+"]:53", "["+peerIP62+"]:53"
	expectUDP(t, pod, ns, "dnsproxy [::1]:15053 from "+ns)
	expectLine(t, pod, ns, "dnsproxy-tcp "+ns)
	expectLineAs1337(t, pod, "udp:"+ns, "ns "+ns+" from "+ns)
	expectLineAs1337(t, pod, ns, "peer53 "+ns)
	expectUDP(t, pod, other, "other "+other+" from "+other)
	expectLine(t, pod, other, "proxy-out "+other)
}
