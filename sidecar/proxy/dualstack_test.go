package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/internal/testutil/netnstest"
	"github.com/weftmesh/weft/sidecar/capture"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// passthroughConfig sends every outbound connection to its original
// destination, nothing else configured.
func passthroughConfig() *model.Config {
	return &model.Config{
		Version: map[string]string{model.ListenerType: "1", model.ClusterType: "1"},
		Outbound: &model.Listener{Name: model.OutboundListener, UseOriginalDst: true,
			Default: &model.FilterChain{Name: "default", Target: model.Target{Cluster: "PassthroughCluster"}}},
		Clusters: map[string]*model.Cluster{
			"PassthroughCluster": {Name: "PassthroughCluster", Kind: model.KindOriginalDst, ConnectTimeout: time.Second},
		},
	}
}

// runProxy starts a passthrough proxy with cfg's addresses (run starts
// Run, on a thread of the caller's choosing). It returns once the proxy
// listens, or with Run's error if it fails before.
func runProxy(t *testing.T, cfg Config, run func(func()) error) (*Proxy, *testutil.SyncBuffer, error) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	ca := testutil.NewCA(t, td, nil)
	svid := newSwap(testutil.SVID(t, ca, workloadID("shop", "frontend"), time.Hour))
	cfg.SVID, cfg.Bundle, cfg.TrustDomain = svid, ca.Bundle(), td
	if cfg.Config == nil {
		cfg.Config = passthroughConfig
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.DrainTimeout = time.Second
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if err := run(func() { done <- p.Run(ctx) }); err != nil {
		cancel()
		t.Fatal(err)
	}
	select {
	case <-p.Ready():
	case err := <-done:
		cancel()
		return nil, logs, err
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	return p, logs, nil
}

func goRun(f func()) error { go f(); return nil }

func TestOutboundAddr6Default(t *testing.T) {
	for _, tc := range []struct {
		in, want Config
	}{
		{Config{}, Config{OutboundAddr: "127.0.0.1:15001", OutboundAddr6: "[::1]:15001"}},
		{Config{OutboundAddr: "127.0.0.1:0"}, Config{OutboundAddr: "127.0.0.1:0"}},
		{Config{OutboundAddr: "127.0.0.1:0", OutboundAddr6: "[::1]:0"}, Config{OutboundAddr: "127.0.0.1:0", OutboundAddr6: "[::1]:0"}},
		{Config{OutboundAddr6: "-"}, Config{OutboundAddr: "127.0.0.1:15001", OutboundAddr6: "-"}},
	} {
		c := tc.in
		c.defaults()
		if c.OutboundAddr != tc.want.OutboundAddr || c.OutboundAddr6 != tc.want.OutboundAddr6 {
			t.Errorf("defaults of OutboundAddr %q, OutboundAddr6 %q: got %q, %q; want %q, %q", tc.in.OutboundAddr, tc.in.OutboundAddr6,
				c.OutboundAddr, c.OutboundAddr6, tc.want.OutboundAddr, tc.want.OutboundAddr6)
		}
	}
}

// TestOutboundAddr6Optional: an IPv6 address the host cannot listen on
// (EADDRNOTAVAIL, what a pod with IPv6 disabled gets for [::1]) leaves the
// proxy serving IPv4; a taken port does not (capture would hand the pod's
// IPv6 TCP to whoever holds it).
func TestOutboundAddr6Optional(t *testing.T) {
	cfg := Config{InboundAddr: "127.0.0.1:0", OutboundAddr: "127.0.0.1:0", AdminAddr: "-",
		OutboundAddr6: "[2001:db8::15]:0"} // not an address of this host
	p, logs, err := runProxy(t, cfg, goRun)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if p.OutboundAddr6() != nil || p.OutboundAddr() == nil {
		t.Errorf("OutboundAddr6 %v, OutboundAddr %v; want none and one", p.OutboundAddr6(), p.OutboundAddr())
	}
	if !strings.Contains(logs.String(), `msg="no IPv6 outbound listener: the pod has no IPv6" addr=[2001:db8::15]:0`) {
		t.Errorf("logs %q", logs.String())
	}

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg.OutboundAddr6 = taken.Addr().String()
	if _, _, err := runProxy(t, cfg, goRun); err == nil || !strings.Contains(err.Error(), "proxy: outbound listener "+taken.Addr().String()) {
		t.Errorf("Run with OutboundAddr6 taken: %v, want an error naming it", err)
	}
}

// The dual-stack pod of TestOutboundIPv6Capture: IPv4 in the benchmarking
// range, IPv6 in a ULA prefix under fd00:198:18::/48, both only inside
// the test's namespaces.
const (
	podV4, extV4 = "198.18.210.1", "198.18.210.2"
	podV6, extV6 = "fd00:198:18::1", "fd00:198:18::2"
)

// dialAsProxyUID is Config.Dial for a sidecar in ns: dialFromAsProxyUID
// from any address.
func dialAsProxyUID(ns *netnstest.NS) func(ctx context.Context, network, addr string) (net.Conn, error) {
	dialFrom := dialFromAsProxyUID(ns)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialFrom(ctx, network, netip.Addr{}, addr)
	}
}

// TestOutboundIPv6Capture: in a dual-stack pod with weft's capture rules,
// an app's (UID 0) TCP to an external IPv6 address is redirected to
// [::1]:15001, arrives at the proxy's IPv6 outbound listener with its
// original destination, and is forwarded there; IPv4 still works beside
// it. Before the proxy listened on [::1], the app's connect was refused.
func TestOutboundIPv6Capture(t *testing.T) {
	pod, ext := capturedPod(t, "v6pod", []string{podV4 + "/24", podV6 + "/64"}, "v6ext", []string{extV4 + "/24", extV6 + "/64"})

	// The external server says who connected.
	var ln net.Listener
	ext.Must(t, func() (err error) { ln, err = net.Listen("tcp", ":80"); return err })
	testutil.Serve(t, ln, func(c net.Conn) {
		fmt.Fprintf(c, "ext %s from %s\n", c.LocalAddr(), c.RemoteAddr().(*net.TCPAddr).IP)
	})

	var mu sync.Mutex
	var origDsts []string
	cfg := Config{InboundAddr: "127.0.0.1:15006", OutboundAddr: "127.0.0.1:15001", OutboundAddr6: DefaultOutboundAddr6, AdminAddr: "-",
		OriginalDst: func(c *net.TCPConn) (netip.AddrPort, error) {
			dst, err := capture.OriginalDst(c)
			mu.Lock()
			origDsts = append(origDsts, fmt.Sprintf("%s at %s", dst, c.LocalAddr()))
			mu.Unlock()
			return dst, err
		},
		Dial: dialAsProxyUID(pod),
	}
	p, logs, err := runProxy(t, cfg, pod.Go)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := fmt.Sprint(p.OutboundAddr6()); got != "[::1]:15001" {
		t.Errorf("OutboundAddr6 %s, want [::1]:15001; logs %s", got, logs)
	}

	dial := func(addr string) string {
		var line string
		err := pod.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			line, err = bufio.NewReader(c).ReadString('\n')
			return err
		})
		if err != nil {
			t.Errorf("app dials %s: %v", addr, err)
		}
		return strings.TrimSpace(line)
	}
	if got, want := dial("["+extV6+"]:80"), "ext ["+extV6+"]:80 from "+podV6; got != want {
		t.Errorf("IPv6: got %q, want %q", got, want)
	}
	if got, want := dial(extV4+":80"), "ext "+extV4+":80 from "+podV4; got != want {
		t.Errorf("IPv4: got %q, want %q", got, want)
	}
	mu.Lock()
	got := strings.Join(origDsts, ", ")
	mu.Unlock()
	if want := "[" + extV6 + "]:80 at [::1]:15001, " + extV4 + ":80 at 127.0.0.1:15001"; got != want {
		t.Errorf("original destinations: %s\nwant %s", got, want)
	}
}

// capturedPod is a dual-stack pod: a network namespace of its own with
// weft's capture rules, linked by a veth pair to the namespace peer, each
// with the addresses (CIDR) given. It skips where the kernel has no IPv6
// or the host's namespace already holds weft's table, and fails the test
// if the table leaks into the host's namespace.
func capturedPod(t *testing.T, name string, podAddrs []string, peerName string, peerAddrs []string) (pod, peer *netnstest.NS) {
	t.Helper()
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("no IPv6 in this kernel")
	}
	if hostHasWeftTable(t) {
		t.Skip("the host's namespace already holds table inet weft")
	}
	t.Cleanup(func() {
		// Capture rules in the host's namespace would redirect the
		// machine's own TCP: the test's must stay in its namespace.
		if hostHasWeftTable(t) {
			t.Errorf("table inet %s leaked into the host's network namespace", capture.TableName)
		}
	})
	pod, peer = netnstest.New(t, name), netnstest.New(t, peerName)
	netnstest.Veth(t, pod, podAddrs, peer, peerAddrs)
	pod.Must(t, func() error { return capture.Install(capture.DefaultConfig()) })
	return pod, peer
}

// hostHasWeftTable reports whether the test binary's own namespace (the
// test goroutine's: netnstest never returns a moved thread to the
// runtime) holds table inet weft.
func hostHasWeftTable(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		return false
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(tables, func(tb *nftables.Table) bool { return tb.Name == capture.TableName })
}

// TestOutboundIPv6Disabled: in a pod whose IPv6 is switched off, the
// default [::1]:15001 cannot listen, and the proxy serves IPv4 alone.
func TestOutboundIPv6Disabled(t *testing.T) {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("no IPv6 in this kernel")
	}
	pod := netnstest.New(t, "nov6")
	pod.Must(t, func() error {
		// /proc/sys/net is the namespace of the thread that opens it.
		for _, dev := range []string{"all", "default", "lo"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+dev+"/disable_ipv6", []byte("1"), 0); err != nil {
				return err
			}
		}
		if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
			l.Close()
			return errors.New("[::1] still listens with IPv6 disabled")
		}
		return nil
	})
	cfg := Config{InboundAddr: "127.0.0.1:0", OutboundAddr: "127.0.0.1:0", OutboundAddr6: "[::1]:0", AdminAddr: "-"}
	p, logs, err := runProxy(t, cfg, pod.Go)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if p.OutboundAddr6() != nil {
		t.Errorf("OutboundAddr6 %v with IPv6 disabled", p.OutboundAddr6())
	}
	if !strings.Contains(logs.String(), `msg="no IPv6 outbound listener: the pod has no IPv6" addr=[::1]:0`) ||
		!strings.Contains(logs.String(), "cannot assign requested address") {
		t.Errorf("logs %q", logs.String())
	}
}
