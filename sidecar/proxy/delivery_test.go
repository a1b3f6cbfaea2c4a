package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/internal/testutil/netnstest"
	"github.com/weftmesh/weft/sidecar/capture"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// inboundSources are the contract's upstream_bind_config of inbound
// clusters: 127.0.0.6, and ::6 for IPv6.
var inboundSources = []netip.Addr{model.InboundSourceIPv4, model.InboundSourceIPv6}

// TestInboundSourcesAreExempt: the source addresses the sidecar binds are
// the ones the capture rules exempt.
func TestInboundSourcesAreExempt(t *testing.T) {
	if model.InboundSourceIPv4 != capture.InboundSourceIPv4 || model.InboundSourceIPv6 != capture.InboundSourceIPv6 {
		t.Fatalf("xds binds %s and %s, capture exempts %s and %s", model.InboundSourceIPv4, model.InboundSourceIPv6,
			capture.InboundSourceIPv4, capture.InboundSourceIPv6)
	}
}

// The dual-stack pod of TestInboundDelivery: IPv4 in 198.18.0.0/15, IPv6
// in 2001:2::/48 (both benchmarking ranges), only inside the test's
// namespaces.
const (
	dlvPod4, dlvPeer4 = "198.18.222.1", "198.18.222.2"
	dlvPod6, dlvPeer6 = "2001:2:0:de::1", "2001:2:0:de::2"
)

// App ports in the pod of TestInboundDelivery.
const (
	dlvPublic  = 8080 // on 0.0.0.0 and [::]: a Service port
	dlvPrivate = 8081 // on 127.0.0.1 and [::1] only: a Service port too
	dlvOther   = 8082 // on 127.0.0.1 only: no Service, the passthrough chain
)

// deliveryConfig is the inbound listener of a PERMISSIVE pod, as the
// control plane sends it: plaintext chains for the Service ports
// dlvPublic and dlvPrivate and a catch-all to InboundPassthroughCluster,
// each delivering to the original destination from 127.0.0.6 / ::6,
// except the ports in loopback (weft.dev/inbound-loopback-ports), which go
// to 127.0.0.1 from 127.0.0.6.
func deliveryConfig(loopback ...uint16) *model.Config {
	c := passthroughConfig()
	c.Inbound = &model.Listener{Name: model.InboundListener, UseOriginalDst: true, InspectTLS: true}
	c.Clusters[model.InboundPassthroughCluster] = &model.Cluster{Name: model.InboundPassthroughCluster, Kind: model.KindOriginalDst,
		ConnectTimeout: time.Second, SourceAddrs: inboundSources}
	for _, port := range []uint16{dlvPublic, dlvPrivate} {
		name := "inbound|" + strconv.Itoa(int(port))
		c.Inbound.Chains = append(c.Inbound.Chains, &model.FilterChain{Name: name + "|plaintext",
			Match: model.ChainMatch{DestPort: port, TransportProtocol: "raw_buffer"}, Target: model.Target{Cluster: name}})
		cl := &model.Cluster{Name: name, Kind: model.KindOriginalDst, ConnectTimeout: time.Second, SourceAddrs: inboundSources}
		for _, lp := range loopback {
			if lp == port {
				cl = &model.Cluster{Name: name, Kind: model.KindStatic, ConnectTimeout: time.Second,
					StaticEndpoints: []model.Endpoint{{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}},
					SourceAddrs:     []netip.Addr{model.InboundSourceIPv4}}
			}
		}
		c.Clusters[name] = cl
	}
	c.Inbound.Chains = append(c.Inbound.Chains, &model.FilterChain{Name: "inbound|passthrough|plaintext",
		Match: model.ChainMatch{TransportProtocol: "raw_buffer"}, Target: model.Target{Cluster: model.InboundPassthroughCluster}})
	return c
}

// TestInboundDelivery: in a dual-stack pod with weft's capture rules and
// the sidecar as it runs there (UID 1337, SO_ORIGINAL_DST), a peer's
// connections to the pod through the inbound listener
//
//	(a) never reach a listener on 127.0.0.1 or [::1] only, on a Service
//	    port or any other;
//	(b) reach an app on 0.0.0.0 / [::], which sees them come from
//	    127.0.0.6 (IPv4) and ::6 (IPv6);
//	(c) reach the 127.0.0.1 listener once its port is delivered on
//	    loopback (weft.dev/inbound-loopback-ports), from 127.0.0.6;
//
// and a connection to the inbound port itself is refused as a loop. Before
// inbound delivery went to the pod's address, (a) reached the private
// listeners and (b) saw 127.0.0.1.
func TestInboundDelivery(t *testing.T) {
	pod, peer := capturedPod(t, "dlvpod", []string{dlvPod4 + "/24", dlvPod6 + "/64"}, "dlvpeer", []string{dlvPeer4 + "/24", dlvPeer6 + "/64"})

	apps := map[string]*whoApp{}
	for _, a := range []struct{ name, addr string }{
		{"public", fmt.Sprintf(":%d", dlvPublic)},
		{"private", fmt.Sprintf("127.0.0.1:%d", dlvPrivate)},
		{"private6", fmt.Sprintf("[::1]:%d", dlvPrivate)},
		{"other", fmt.Sprintf("127.0.0.1:%d", dlvOther)},
	} {
		apps[a.name] = startWhoApp(t, pod, a.name, a.addr)
	}

	var cfg atomic.Pointer[model.Config]
	cfg.Store(deliveryConfig())
	p, logs, err := runProxy(t, Config{InboundAddr: ":15006", OutboundAddr: "127.0.0.1:15001", OutboundAddr6: "-", AdminAddr: "-",
		Config: cfg.Load, Dial: dialAsProxyUID(pod), DialFrom: dialFromAsProxyUID(pod)}, pod.Go)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	// dial connects from the peer, says hello and reads the app's line;
	// "" when the sidecar closed the connection without one.
	dial := func(host string, port int) string {
		t.Helper()
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		var line string
		err := peer.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("hello\n")); err != nil {
				return err
			}
			line, err = bufio.NewReader(c).ReadString('\n')
			if err == io.EOF || isReset(err) {
				return nil
			}
			return err
		})
		if err != nil {
			t.Errorf("peer dials %s: %v", addr, err)
		}
		return strings.TrimSpace(line)
	}
	check := func(what string, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %q, want %q\nsidecar log:\n%s", what, got, want, logs)
		}
	}

	// (b) The app on 0.0.0.0 and [::]: delivered to the pod's address of
	// the family the peer used, from 127.0.0.6 or ::6.
	check("IPv4 to the public app", dial(dlvPod4, dlvPublic), "public at "+dlvPod4+":8080 from 127.0.0.6")
	check("IPv6 to the public app", dial(dlvPod6, dlvPublic), "public at ["+dlvPod6+"]:8080 from ::6")

	// (a) Listeners on loopback only: nothing arrives, whether a chain
	// names the port or the passthrough chain takes it.
	check("IPv4 to the private app", dial(dlvPod4, dlvPrivate), "")
	check("IPv6 to the private app", dial(dlvPod6, dlvPrivate), "")
	check("IPv4 to a port no Service names", dial(dlvPod4, dlvOther), "")
	for _, name := range []string{"private", "private6", "other"} {
		if n := apps[name].accepted.Load(); n != 0 {
			t.Errorf("the %s app, on loopback only, accepted %d connections from the sidecar", name, n)
		}
	}
	if got := p.m.connFailures.With(inbound, "upstream_connect").Value(); got != 3 {
		t.Errorf("upstream_connect failures %d, want 3", got)
	}

	// (c) With dlvPrivate delivered on loopback, its 127.0.0.1 listener
	// gets the peer's connections, IPv4 and IPv6 alike, from 127.0.0.6.
	cfg.Store(deliveryConfig(dlvPrivate))
	check("IPv4 to the private app, loopback delivery", dial(dlvPod4, dlvPrivate), "private at 127.0.0.1:8081 from 127.0.0.6")
	check("IPv6 to the private app, loopback delivery", dial(dlvPod6, dlvPrivate), "private at 127.0.0.1:8081 from 127.0.0.6")
	check("IPv4 to the public app, still", dial(dlvPod4, dlvPublic), "public at "+dlvPod4+":8080 from 127.0.0.6")
	check("IPv4 to a port no Service names, still", dial(dlvPod4, dlvOther), "")

	// The inbound port itself (capture does not redirect it): refused as a
	// loop, not delivered to podIP:15006 again.
	check("IPv4 to the inbound port", dial(dlvPod4, 15006), "")
	if got := p.m.connFailures.With(inbound, reasonLoop).Value(); got != 1 {
		t.Errorf("loop refusals %d, want 1", got)
	}
}

// whoApp is an app in the pod that reads a line from every connection and
// answers "<name> at <local address> from <remote IP>".
type whoApp struct {
	accepted atomic.Int64
}

func startWhoApp(t *testing.T, ns *netnstest.NS, name, addr string) *whoApp {
	t.Helper()
	a := &whoApp{}
	var ln net.Listener
	ns.Must(t, func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	testutil.Serve(t, ln, func(c net.Conn) {
		a.accepted.Add(1)
		// Read the peer's hello first: closing with it unread would
		// answer with a reset.
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = bufio.NewReader(c).ReadString('\n')
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		fmt.Fprintf(c, "%s at %s from %s\n", name, local, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
	})
	return a
}

// dialFromAsProxyUID is Config.DialFrom for a sidecar in ns: it dials
// addr from src (any address when src is not valid) with a socket owned
// by UID 1337, as the sidecar's upstream connections are, so that the
// capture rules let it leave. The socket's owner is the fsuid of the
// thread that created it, one of ns's; the thread, moved and with its
// fsuid changed, is never reused.
func dialFromAsProxyUID(ns *netnstest.NS) func(ctx context.Context, network string, src netip.Addr, addr string) (net.Conn, error) {
	return func(ctx context.Context, network string, src netip.Addr, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		res := make(chan result, 1)
		err := ns.Go(func() {
			if err := unix.Setfsuid(int(capture.DefaultProxyUID)); err != nil {
				res <- result{err: err}
				return
			}
			if fsuid, _ := unix.SetfsuidRetUid(-1); fsuid != int(capture.DefaultProxyUID) {
				res <- result{err: fmt.Errorf("fsuid %d, want %d", fsuid, capture.DefaultProxyUID)}
				return
			}
			var d net.Dialer
			if src.IsValid() {
				d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
			}
			c, err := d.DialContext(ctx, network, addr)
			res <- result{c, err}
		})
		if err != nil {
			return nil, err
		}
		r := <-res
		return r.c, r.err
	}
}

// TestInboundOriginalDstMustBeThePods: a cluster that delivers to the
// original destination delivers only to an address of the pod. A peer on
// the pod's link can send a packet to any address, which the inbound
// redirect hands to the sidecar all the same: without the check the
// sidecar would open that connection for it (an open relay, IPv6 ::6
// being no loopback address). And an original destination on loopback is
// not delivered either: loopback is what the 127.0.0.1 cluster of an
// opted-in port is for.
func TestInboundOriginalDstMustBeThePods(t *testing.T) {
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("shop", "web"))
	cfg := meshConfig(nil, nil, nil, false)
	cfg.Inbound.Chains = append(cfg.Inbound.Chains, &model.FilterChain{Name: "inbound|passthrough|plaintext",
		Match: model.ChainMatch{TransportProtocol: "raw_buffer"}, Target: model.Target{Cluster: model.InboundPassthroughCluster}})
	pd.cfg.Store(cfg)
	local := startApp(t, echo) // on 127.0.0.1
	for i, dst := range []netip.AddrPort{netip.MustParseAddrPort("198.18.9.9:80"), netip.MustParseAddrPort("[2001:2:0:9::9]:80"), local.addr()} {
		c, err := net.Dial("tcp", pd.inboundAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		pd.nat.set(c.LocalAddr(), dst)
		_, _ = c.Write([]byte("x"))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := io.ReadAll(c); len(n) != 0 || err != nil && !isReset(err) {
			t.Fatalf("to %s: got %q, %v; want the connection closed", dst, n, err)
		}
		c.Close()
		pd.waitCounter(float64(i+1), "connection_failures", inbound, reasonNotLocal)
	}
	if n := local.received.Load(); n != 0 {
		t.Errorf("the app on 127.0.0.1 received %d bytes", n)
	}
}
