package proxy

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// newParkingPair is newMeshPair with both sidecars parking flows idle for
// idle, and draining within drain.
func newParkingPair(t *testing.T, handle func(*net.TCPConn, *app), idle, drain time.Duration) *meshPair {
	t.Helper()
	a := startApp(t, handle)
	mp := newPairTo(t, a.port(), func(c *Config) { c.IdleParkAfter, c.DrainTimeout = idle, drain })
	mp.app = a
	return mp
}

// newPairTo is a sidecar pair whose server side forwards to an app
// listening on 127.0.0.1:appPort (any server the test runs); mod applies to
// both sidecars.
func newPairTo(t *testing.T, appPort uint16, mod func(*Config)) *meshPair {
	t.Helper()
	if mod == nil {
		mod = func(*Config) {}
	}
	mp := &meshPair{ca: testutil.NewCA(t, td, nil)}
	mp.a = startPod(t, mp.ca, workloadID("shop", "frontend"), mod)
	mp.b = startPod(t, mp.ca, workloadID("demo", "echo"), mod)
	mp.b.nat.setDefault(netip.AddrPortFrom(podBIP, appPort))
	mp.b.cfg.Store(meshConfig(nil, nil, inboundChains(appPort, false, nil), false))
	mp.a.cfg.Store(meshConfig([]spiffeid.ID{mp.b.id}, []model.Endpoint{{Addr: mp.b.inboundAddr()}}, nil, false))
	return mp
}

// waitParked waits until pd has want flows parked.
func waitParked(t *testing.T, pd *pod, want int) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("%d parked flows in %s", want, pd.id), func() bool { return pd.p.ParkedFlows() == want })
}

// TestIdleFlowsParkAndResume: once a connection is idle, all four of its
// directions (plaintext and TLS sources, on both sidecars) leave their
// goroutines for the parker; bytes wake them, in either direction, and
// closing the connection finishes them.
func TestIdleFlowsParkAndResume(t *testing.T) {
	mp := newParkingPair(t, nil, 20*time.Millisecond, 5*time.Second)
	c := mp.dial()
	for i := range 5 {
		roundTrip(t, c, fmt.Appendf(nil, "request %d", i))
		waitParked(t, mp.a, 2)
		waitParked(t, mp.b, 2)
	}
	if got := mp.a.gauge("weft_sidecar_parked_flows"); got != 2 {
		t.Errorf("weft_sidecar_parked_flows = %v, want 2", got)
	}
	c.Close()
	waitParked(t, mp.a, 0)
	waitParked(t, mp.b, 0)
	mp.a.waitCounter(0, "connections", outbound)
	mp.b.waitCounter(0, "connections", inbound)
}

// TestParkedTransferIsByteExact sends writes of every buffer-boundary size
// with pauses longer than the idle time between some of them, so flows
// park and resume mid-stream, and checks the echo byte for byte.
func TestParkedTransferIsByteExact(t *testing.T) {
	mp := newParkingPair(t, nil, 5*time.Millisecond, 5*time.Second)
	c := mp.dial()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var msg []byte
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(c)
		got <- b
	}()
	for i, n := range []int{1, smallBufSize, smallBufSize + 1, recordSize - 1, recordSize + 1, bufSize + 1, 200_000, 3} {
		part := make([]byte, n)
		rand.Read(part)
		msg = append(msg, part...)
		if _, err := c.Write(part); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if i%2 == 0 { // the part echoed, the flows park before the next
			waitParked(t, mp.a, 2)
			waitParked(t, mp.b, 2)
		}
	}
	c.CloseWrite()
	if b := <-got; !bytes.Equal(b, msg) {
		t.Fatalf("echoed %d bytes, want the %d sent, byte for byte", len(b), len(msg))
	}
}

// TestHalfCloseWhileParked: the client's FIN wakes parked flows and
// travels through both sidecars; the reply comes back on the half that is
// still open.
func TestHalfCloseWhileParked(t *testing.T) {
	mp := newParkingPair(t, answerAtEOF, 20*time.Millisecond, 5*time.Second)
	c := mp.dial()
	c.Write([]byte("request"))
	waitParked(t, mp.a, 2)
	waitParked(t, mp.b, 2)
	finThenReply(t, c)
}

// TestDrainCutsParkedConnections: at the drain timeout, connections whose
// flows are parked are woken and closed, and Run returns.
func TestDrainCutsParkedConnections(t *testing.T) {
	mp := newParkingPair(t, nil, 20*time.Millisecond, 300*time.Millisecond)
	c := mp.dial()
	roundTrip(t, c, []byte("hello"))
	waitParked(t, mp.a, 2)
	start := time.Now()
	mp.a.stop()
	select {
	case err := <-mp.a.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return: parked flows were not cut")
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("Run returned after %v, before the drain timeout", d)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the connection is still open after drain")
	}
	if n := mp.a.p.ParkedFlows(); n != 0 {
		t.Errorf("%d flows still parked", n)
	}
	mp.a.done <- nil // for the pod's cleanup
}

// gauge reads an unlabelled gauge from the pod's registry.
func (pd *pod) gauge(name string) float64 {
	pd.t.Helper()
	v, ok := pd.reg.Value(name)
	if !ok {
		pd.t.Fatalf("no gauge %s", name)
	}
	return v
}
