package capture

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/weftmesh/weft/internal/testutil"
)

// The dual-stack pod of TestInboundDeliveryNotCaptured (IPv6 in
// 2001:2::/48, the benchmarking range, only inside the test's namespaces).
const (
	deliveryPod6  = "2001:2:0:c::1"
	deliveryPeer6 = "2001:2:0:c::2"
)

// TestInboundDeliveryNotCaptured: the sidecar delivers inbound connections
// to the pod's own address from 127.0.0.6 or ::6. Such a connection, from
// a process that is not the sidecar's UID (the rule holds on its own),
// reaches the app directly: the output chain does not send it to 15001,
// and the prerouting chain never sees it, so it does not come back to
// 15006 either. Install puts ::6 on lo, so that it can be bound at all
// (before it did, the IPv6 dial failed: cannot assign requested address).
func TestInboundDeliveryNotCaptured(t *testing.T) {
	t.Parallel()
	needIPv6(t)
	pod, peer := newNetns(t, "dlvpod"), newNetns(t, "dlvpeer")
	veth(t, pod, []string{podIP + "/24", deliveryPod6 + "/64"}, peer, []string{peerIP + "/24", deliveryPeer6 + "/64"})
	install(t, pod, DefaultConfig())
	serve(t, pod, "127.0.0.1:15001", "proxy-out")
	serve(t, pod, "[::1]:15001", "proxy-out6")
	serve(t, pod, ":15006", "proxy-in")
	serveFrom(t, pod, ":8080", "app")

	for _, tc := range []struct{ src, dst, want string }{
		{"127.0.0.6", podIP + ":8080", "app from 127.0.0.6"},
		{"::6", "[" + deliveryPod6 + "]:8080", "app from ::6"},
	} {
		var got string
		err := pod.Do(func() (err error) { got, err = dialLineFrom(tc.src, tc.dst); return err })
		if err != nil || got != tc.want {
			t.Errorf("from %s to %s: %q, %v; want %q", tc.src, tc.dst, got, err, tc.want)
		}
	}

	// The address is on lo, once, after a second Install.
	install(t, pod, DefaultConfig())
	pod.Must(t, func() error {
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		addrs, err := lo.Addrs()
		if err != nil {
			return err
		}
		n := 0
		for _, a := range addrs {
			if a.String() == "::6/128" {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("lo has ::6/128 %d times: %v", n, addrs)
		}
		return nil
	})
}

// TestInstallWithoutIPv6: in a pod whose IPv6 is switched off, ::6 cannot
// be added; Install still installs the rules.
func TestInstallWithoutIPv6(t *testing.T) {
	t.Parallel()
	needIPv6(t)
	pod := newNetns(t, "dlvnov6")
	pod.Must(t, func() error {
		for _, dev := range []string{"all", "default", "lo"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+dev+"/disable_ipv6", []byte("1"), 0); err != nil {
				return err
			}
		}
		return nil
	})
	install(t, pod, DefaultConfig())
	if !hasTable(t, pod) {
		t.Fatal("no table inet weft after Install")
	}
}

// hasTable reports whether ns holds table inet weft.
func hasTable(t *testing.T, ns *netns) bool {
	t.Helper()
	var ok bool
	ns.Must(t, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		for _, tb := range tables {
			ok = ok || tb.Name == TableName
		}
		return err
	})
	return ok
}

// serveFrom listens on addr inside ns and answers each connection with
// "<name> from <remote IP>".
func serveFrom(t *testing.T, ns *netns, addr, name string) {
	t.Helper()
	var ln net.Listener
	ns.Must(t, func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	testutil.Serve(t, ln, func(c net.Conn) {
		fmt.Fprintf(c, "%s from %s\n", name, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
	})
}

// dialLineFrom dials addr from the source address src and reads a line.
func dialLineFrom(src, addr string) (string, error) {
	return lineFrom(&net.Dialer{Timeout: 3 * time.Second,
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 0))}, addr)
}
