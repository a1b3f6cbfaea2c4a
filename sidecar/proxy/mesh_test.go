package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// roundTrip writes msg, reads len(msg) bytes back and checks them.
func roundTrip(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %q, want %q", got, msg)
	}
	_ = c.SetDeadline(time.Time{})
}

func TestMeshPairRoundTrip(t *testing.T) {
	mp := newMeshPair(t, nil, nil)
	c := mp.dial()
	marker := []byte(fmt.Sprintf("weft-marker-%d\n", time.Now().UnixNano()))
	roundTrip(t, c, marker)

	// Both sidecars list the live connection with the peer's identity.
	check := func(pd *pod, direction string, peer spiffeid.ID) {
		t.Helper()
		conns := pd.connections()
		if len(conns) != 1 {
			t.Fatalf("%s: %d connections, want 1: %+v", pd.id, len(conns), conns)
		}
		ci := conns[0]
		if ci.Direction != direction || !ci.MTLS || ci.TLSInfo == nil || ci.PeerID != peer.String() ||
			ci.Version != "TLS 1.3" || !strings.HasPrefix(ci.Cipher, "TLS_") || ci.PeerNotAfter.Before(time.Now()) {
			t.Fatalf("%s: connection %+v %+v", pd.id, ci, ci.TLSInfo)
		}
		if ci.BytesIn != int64(len(marker)) || ci.BytesOut != int64(len(marker)) {
			t.Errorf("%s: bytes in/out %d/%d, want %d", pd.id, ci.BytesIn, ci.BytesOut, len(marker))
		}
	}
	check(mp.a, outbound, mp.b.id)
	check(mp.b, inbound, mp.a.id)
	if got := mp.a.connections()[0].Destination; got != "198.19.0.10:80" {
		t.Errorf("A destination %s", got)
	}
	if got := mp.a.counter("handshakes", outbound); got != 1 {
		t.Errorf("A outbound handshakes %v", got)
	}
	if got := mp.b.counter("handshakes", inbound); got != 1 {
		t.Errorf("B inbound handshakes %v", got)
	}

	// 10 MiB of random bytes both ways, compared by SHA-256.
	payload := make([]byte, 10<<20)
	rand.Read(payload)
	c2 := mp.dial()
	done := make(chan [32]byte)
	go func() {
		h := sha256.New()
		io.Copy(h, c2)
		done <- [32]byte(h.Sum(nil))
	}()
	if _, err := c2.Write(payload); err != nil {
		t.Fatal(err)
	}
	c2.CloseWrite()
	select {
	case sum := <-done:
		if sum != sha256.Sum256(payload) {
			t.Fatal("10 MiB payload changed on its way")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("10 MiB round trip timed out")
	}
	mp.b.waitCounter(float64(len(marker)+len(payload)), "bytes", inbound, "to_upstream")
}

// answerAtEOF is an app that reads to EOF, then answers: it only gets an
// answer out if the client's FIN travels through both sidecars while the
// way back stays open.
func answerAtEOF(c *net.TCPConn, _ *app) {
	b, _ := io.ReadAll(c)
	fmt.Fprintf(c, "got %d bytes: %s", len(b), b)
}

// finThenReply half-closes c after what it sent (7 bytes, "request") and
// checks answerAtEOF's reply comes back.
func finThenReply(t *testing.T, c *net.TCPConn) {
	t.Helper()
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(reply) != "got 7 bytes: request" {
		t.Fatalf("reply %q", reply)
	}
}

func TestHalfClose(t *testing.T) {
	mp := newMeshPair(t, answerAtEOF, nil)
	c := mp.dial()
	c.Write([]byte("request"))
	finThenReply(t, c)
}

func TestRenewedCertificateAppliesToNewConnections(t *testing.T) {
	mp := newMeshPair(t, nil, nil)
	old := mp.dial()
	roundTrip(t, old, []byte("before renewal"))
	oldExpiry := mp.a.connections()[0].PeerNotAfter

	// B renews: new key, new certificate with a later expiry.
	renewed := testutil.SVID(t, mp.ca, mp.b.id, 3*time.Hour)
	mp.b.svid.p.Store(renewed)
	fresh := mp.dial()
	roundTrip(t, fresh, []byte("after renewal"))
	var freshExpiry time.Time
	for _, ci := range mp.a.connections() {
		if ci.Source == fresh.LocalAddr().String() {
			freshExpiry = ci.PeerNotAfter
		}
	}
	if !freshExpiry.Equal(renewed.Certificates[0].NotAfter.UTC()) || freshExpiry.Equal(oldExpiry) {
		t.Fatalf("new connection's peer certificate expires %s; renewed %s, old %s", freshExpiry, renewed.Certificates[0].NotAfter, oldExpiry)
	}
	// The connection made with the old certificate keeps working.
	roundTrip(t, old, []byte("old connection still up"))
}

func TestConfigPushKeepsOpenConnections(t *testing.T) {
	mp := newMeshPair(t, nil, nil)
	c := mp.dial()
	roundTrip(t, c, []byte("before push"))

	// The service moves to REGISTRY_ONLY nowhere: A's chain for it is gone,
	// B no longer serves the port.
	a := meshConfig(nil, nil, nil, true)
	a.Outbound.Chains = a.Outbound.Chains[1:]
	mp.a.cfg.Store(a)
	mp.b.cfg.Store(meshConfig(nil, nil, nil, true))

	roundTrip(t, c, []byte("after push"))
	// New connections follow the new configuration.
	c2 := mp.dial()
	c2.Write([]byte("x"))
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatalf("new connection after push read %d bytes", n)
	}
	mp.a.waitCounter(1, "connection_failures", outbound, "blackhole")
}

func TestEndpointsRoundRobinRetryAndHealth(t *testing.T) {
	mp := newMeshPair(t, nil, nil)
	// A second server pod B2 with the same identity, one unhealthy endpoint
	// (never tried) and one dead one (a failed connect, retried).
	b2 := startPod(t, mp.ca, mp.b.id)
	b2.nat.setDefault(netip.AddrPortFrom(podBIP, mp.app.port()))
	b2.cfg.Store(mp.b.cfg.Load())
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().(*net.TCPAddr).AddrPort()
	dead.Close()
	eps := []model.Endpoint{
		{Addr: mp.b.inboundAddr()},
		{Addr: netip.MustParseAddrPort("127.0.0.1:1"), Health: model.Unhealthy},
		{Addr: deadAddr},
		{Addr: b2.inboundAddr()},
	}
	mp.a.cfg.Store(meshConfig([]spiffeid.ID{mp.b.id}, eps, nil, false))
	for i := range 6 {
		roundTrip(t, mp.dial(), []byte(fmt.Sprintf("req %d", i)))
	}
	// Healthy endpoints b, dead, b2 in turn: dead's turns went to b2.
	mp.b.waitCounter(2, "handshakes", inbound)
	b2.waitCounter(4, "handshakes", inbound)
}
