package capture

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/weftmesh/weft/internal/testutil"
)

// The test topology: a "pod" namespace and a "peer" namespace joined by a
// veth pair in 198.18.200.0/24 (RFC 2544 benchmarking space).
const (
	podIP   = "198.18.200.1"
	peerIP  = "198.18.200.2"
	peerIP2 = "198.18.200.3" // a second address of the peer, for CIDR exclusion
)

// helperEnv makes TestMain act as a tiny client instead of running tests:
// it becomes UID 1337, dials the address (TCP, or UDP for "udp:ADDR"),
// prints the line it read, exits. "nft:list" instead reads table inet
// weft over netlink, as the sidecar would to export its counters.
const helperEnv = "WEFT_CAPTURE_TEST_DIAL_AS_1337"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		os.Exit(helperDial(addr))
	}
	leaked := hostWeftTable()
	code := m.Run()
	// Capture rules in the host's own namespace redirect the machine's TCP
	// (the module proxy, a test cluster's Services) into nowhere: a test,
	// or anything run beside the tests, that leaves them fails the run, and
	// they are removed so the machine stays usable.
	if !leaked && hostWeftTable() {
		fmt.Fprintf(os.Stderr, "capture: table inet %s was left in the host's network namespace; removed\n", TableName)
		_ = Remove()
		code = 1
	}
	os.Exit(code)
}

// hostWeftTable reports whether the host's network namespace (the one the
// test binary started in) holds table inet weft.
func hostWeftTable() bool {
	if os.Geteuid() != 0 {
		return false
	}
	c, err := nftables.New()
	if err != nil {
		return false
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false
	}
	for _, t := range tables {
		if t.Name == TableName {
			return true
		}
	}
	return false
}

func helperDial(addr string) int {
	// Since Go 1.16 Setresuid applies to every thread of the process, so
	// every socket below is owned by 1337.
	if err := syscall.Setresgid(1337, 1337, 1337); err != nil {
		fmt.Fprintln(os.Stderr, "setresgid:", err)
		return 2
	}
	if err := syscall.Setresuid(1337, 1337, 1337); err != nil {
		fmt.Fprintln(os.Stderr, "setresuid:", err)
		return 2
	}
	var line string
	var err error
	if udpAddr, ok := strings.CutPrefix(addr, "udp:"); ok {
		line, err = exchangeUDP(udpAddr)
	} else if addr == "nft:list" {
		line = listWeftTableAs1337()
	} else {
		line, err = dialLine(addr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(line)
	return 0
}

type topology struct {
	pod, peer *netns
}

func newTopology(t *testing.T) *topology {
	t.Helper()
	tp := &topology{pod: newNetns(t, "pod"), peer: newNetns(t, "peer")}
	veth(t, tp.pod, []string{podIP + "/24"}, tp.peer, []string{peerIP + "/24", peerIP2 + "/24"})
	return tp
}

// serve listens on addr inside ns. Every connection it accepts gets one
// line, "<name> <OriginalDst>", and is closed. Use it in namespaces with
// weft's rules (conntrack is loaded there); servePlain elsewhere.
func serve(t *testing.T, ns *netns, addr, name string) { serveReply(t, ns, addr, name, true) }

// servePlain is serve replying with the connection's local address.
func servePlain(t *testing.T, ns *netns, addr, name string) { serveReply(t, ns, addr, name, false) }

func serveReply(t *testing.T, ns *netns, addr, name string, origDst bool) {
	t.Helper()
	var ln net.Listener
	ns.Must(t, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	testutil.Serve(t, ln, func(c net.Conn) {
		reply := c.LocalAddr().String()
		if origDst {
			od, err := OriginalDst(c.(*net.TCPConn))
			reply = od.String()
			if err != nil {
				reply = "error: " + err.Error()
			}
		}
		fmt.Fprintf(c, "%s %s\n", name, reply)
	})
}

// dialLine dials addr and reads a line.
func dialLine(addr string) (string, error) {
	return lineFrom(&net.Dialer{Timeout: 3 * time.Second}, addr)
}

// lineFrom dials addr with d and reads a line, within 3 s.
func lineFrom(d *net.Dialer, addr string) (string, error) {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from %s: %w", addr, err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// expectLine dials addr from ns (as root, UID 0) and checks the reply.
func expectLine(t *testing.T, ns *netns, addr, want string) {
	t.Helper()
	var got string
	err := ns.Do(func() (err error) { got, err = dialLine(addr); return err })
	if err != nil {
		t.Errorf("dial %s from %s: %v (want %q)", addr, ns.Name, err, want)
		return
	}
	if got != want {
		t.Errorf("dial %s from %s: got %q, want %q", addr, ns.Name, got, want)
	}
}

func install(t *testing.T, ns *netns, cfg Config) {
	t.Helper()
	ns.Must(t, func() error { return Install(cfg) })
}

func TestOutboundCapture(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	install(t, tp.pod, DefaultConfig())
	serve(t, tp.pod, "127.0.0.1:15001", "proxy-out")
	serve(t, tp.pod, "0.0.0.0:8080", "app")
	servePlain(t, tp.peer, ":80", "peer")

	expectLine(t, tp.pod, peerIP+":80", "proxy-out "+peerIP+":80")
	// No listener behind it: the proxy still gets it, with the right port.
	expectLine(t, tp.pod, peerIP+":443", "proxy-out "+peerIP+":443")
	// Loopback and the pod's own IP (routed over lo) are not captured.
	expectLine(t, tp.pod, "127.0.0.1:8080", "app 127.0.0.1:8080")
	expectLine(t, tp.pod, podIP+":8080", "app "+podIP+":8080")
	// Without capture (peer namespace has no rules) the peer answers.
	expectLine(t, tp.peer, peerIP+":80", "peer "+peerIP+":80")

	// DefaultConfig has no DNSServers, so no UDP at all is redirected
	// (TestDNSCapture covers DNS to the pod's nameservers).
	t.Run("UDP is not captured", func(t *testing.T) {
		var pc net.PacketConn
		tp.peer.Must(t, func() (err error) { pc, err = net.ListenPacket("udp", peerIP+":53"); return err })
		defer pc.Close()
		tp.pod.Must(t, func() error {
			c, err := net.Dial("udp", peerIP+":53")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("query"))
			return err
		})
		_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 16)
		n, from, err := pc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "query" {
			t.Fatalf("peer UDP :53 got %q from %v, err %v; want the datagram directly", buf[:n], from, err)
		}
	})
}

func TestProxyUIDNotCaptured(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	install(t, tp.pod, DefaultConfig())
	serve(t, tp.pod, "127.0.0.1:15001", "proxy-out")
	servePlain(t, tp.peer, ":80", "peer")

	expectLineAs1337(t, tp.pod, peerIP+":80", "peer "+peerIP+":80") // direct, not captured
	// The same dial as root is captured.
	expectLine(t, tp.pod, peerIP+":80", "proxy-out "+peerIP+":80")
}

// A pod calling its own Service may be given itself as the endpoint: the
// client sidecar (UID 1337) then dials the pod's own address, over lo,
// which prerouting never sees. It must reach the pod's inbound side (mTLS
// to mTLS), not the app's plaintext port; loopback stays direct (the app's
// probes on 127.0.0.1), and the app's own call to its address stays the
// app's.
func TestSidecarToItsOwnPodGoesInbound(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	install(t, tp.pod, DefaultConfig())
	serve(t, tp.pod, ":15006", "proxy-in")
	serve(t, tp.pod, "127.0.0.1:15001", "proxy-out")
	serve(t, tp.pod, ":8080", "app8080")

	expectLineAs1337(t, tp.pod, podIP+":8080", "proxy-in "+podIP+":8080")
	expectLineAs1337(t, tp.pod, "127.0.0.1:8080", "app8080 127.0.0.1:8080")
	expectLine(t, tp.pod, podIP+":8080", "app8080 "+podIP+":8080")
}

// expectLineAs1337 is expectLine as the sidecar's UID: target is a TCP
// address, or "udp:ADDR" for exchangeUDP. The helper is this test binary,
// started from the namespace's thread (so it inherits that namespace); it
// switches to UID 1337.
func expectLineAs1337(t *testing.T, ns *netns, target, want string) {
	t.Helper()
	var out []byte
	err := ns.Do(func() (err error) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		// atexit_sleep_ms: a -race binary otherwise idles 1s before exiting.
		cmd.Env = append(os.Environ(), helperEnv+"="+target,
			"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
		cmd.Stderr = os.Stderr
		out, err = cmd.Output()
		return err
	})
	if err != nil {
		t.Errorf("helper as UID 1337 to %s: %v (want %q)", target, err, want)
		return
	}
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("UID 1337 to %s from %s: got %q, want %q", target, ns.Name, got, want)
	}
}

func TestOutboundExclusions(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	cfg := DefaultConfig()
	cfg.ExcludeOutboundPorts = []uint16{81}
	cfg.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix(peerIP2 + "/32"), netip.MustParsePrefix("2001:db8::/32")}
	install(t, tp.pod, cfg)
	serve(t, tp.pod, "127.0.0.1:15001", "proxy-out")
	servePlain(t, tp.peer, ":80", "peer80")
	servePlain(t, tp.peer, ":81", "peer81")

	expectLine(t, tp.pod, peerIP+":81", "peer81 "+peerIP+":81")   // excluded port
	expectLine(t, tp.pod, peerIP2+":80", "peer80 "+peerIP2+":80") // excluded CIDR
	expectLine(t, tp.pod, peerIP+":80", "proxy-out "+peerIP+":80")

	// A wider CIDR with host bits set still excludes the whole range.
	cfg.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("198.18.200.77/24")}
	install(t, tp.pod, cfg)
	expectLine(t, tp.pod, peerIP+":80", "peer80 "+peerIP+":80")
}

func TestInboundCapture(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	cfg := DefaultConfig()
	cfg.ExcludeInboundPorts = []uint16{9090}
	install(t, tp.pod, cfg)
	// ":15006" is a dual-stack socket: OriginalDst sees a v4-mapped local
	// address and must still answer with plain IPv4.
	serve(t, tp.pod, ":15006", "proxy-in")
	serve(t, tp.pod, "127.0.0.1:15001", "proxy-out")
	serve(t, tp.pod, ":15020", "health")
	serve(t, tp.pod, ":8080", "app8080")
	serve(t, tp.pod, ":8081", "app8081")
	serve(t, tp.pod, ":9090", "app9090")

	expectLine(t, tp.peer, podIP+":8080", "proxy-in "+podIP+":8080")
	expectLine(t, tp.peer, podIP+":8081", "proxy-in "+podIP+":8081")
	expectLine(t, tp.peer, podIP+":15020", "health "+podIP+":15020") // kubelet probes
	expectLine(t, tp.peer, podIP+":9090", "app9090 "+podIP+":9090")  // excluded
	expectLine(t, tp.peer, podIP+":15006", "proxy-in "+podIP+":15006")
	// The outbound listener is loopback-only and not redirected: refused.
	if err := tp.peer.Do(func() error { _, err := dialLine(podIP + ":15001"); return err }); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("peer -> pod:15001: got %v, want connection refused", err)
	}
	// The app talking to itself is not inbound traffic.
	expectLine(t, tp.pod, podIP+":8080", "app8080 "+podIP+":8080")

	t.Run("include list", func(t *testing.T) {
		cfg.IncludeInboundPorts = []uint16{8080, 15020}
		install(t, tp.pod, cfg)
		expectLine(t, tp.peer, podIP+":8080", "proxy-in "+podIP+":8080")
		expectLine(t, tp.peer, podIP+":8081", "app8081 "+podIP+":8081")
		// Exclusion wins over inclusion for the health port.
		expectLine(t, tp.peer, podIP+":15020", "health "+podIP+":15020")
	})
}

// TestOriginalDstIPv6 covers the IP6T_SO_ORIGINAL_DST path. Only loopback
// may carry IPv6 in these tests, and weft's rules never capture loopback, so
// a throwaway table redirects [::1]:80 itself.
func TestOriginalDstIPv6(t *testing.T) {
	t.Parallel()
	ns := newNetns(t, "v6")
	ns.Must(t, func() error { return nftTestRedirect6(80, 15001) })
	serve(t, ns, "[::1]:15001", "proxy-out")
	expectLine(t, ns, "[::1]:80", "proxy-out [::1]:80")
	// Installing weft's rules with IPv6 exclusions works as well.
	cfg := DefaultConfig()
	cfg.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("2001:db8::1/128")}
	install(t, ns, cfg)
}

func TestOriginalDstNotRedirected(t *testing.T) {
	t.Parallel()
	ns := newNetns(t, "plain")
	install(t, ns, DefaultConfig()) // loads conntrack; loopback stays uncaptured
	serve(t, ns, "127.0.0.1:9000", "plain")
	expectLine(t, ns, "127.0.0.1:9000", "plain 127.0.0.1:9000")

	if _, err := OriginalDst(nil); err == nil {
		t.Error("OriginalDst(nil): want error")
	}
}
