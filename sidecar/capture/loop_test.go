package capture

import (
	"errors"
	"syscall"
	"testing"
)

// TestSidecarPortsNeverRedirected: the capture rules never hand the
// sidecar a connection addressed to one of its own listeners as if it were
// going elsewhere, in either direction, from any process of the pod: a
// connection to 15001, 15006, 15000 or 15053 on loopback or the pod's
// address reaches exactly the listener it was addressed to (or nothing),
// and its original destination is that listener's own address. So the
// sidecar sees it as addressed to itself, and refuses it (sidecar/proxy
// TestSidecarNeverDialsItself: reason loop; the translator's guard chains
// send those ports to BlackHoleCluster), rather than forward it to an
// original destination that is itself, again and again. The sidecar's own
// connections (UID 1337) are never captured at all, so whatever it dials
// leaves as dialled: it cannot be redirected back to its own listeners
// either.
func TestSidecarPortsNeverRedirected(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	install(t, tp.pod, DefaultConfig())
	serve(t, tp.pod, ":15006", "proxy-in")
	serve(t, tp.pod, "127.0.0.1:15001", "proxy-out")
	serve(t, tp.pod, "127.0.0.1:15000", "admin")
	serve(t, tp.pod, "127.0.0.1:15053", "dns")

	// Outbound: the app (root) and the sidecar (1337) dialling the
	// sidecar's listeners.
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1:15001", "proxy-out 127.0.0.1:15001"},
		{"127.0.0.1:15006", "proxy-in 127.0.0.1:15006"},
		{podIP + ":15006", "proxy-in " + podIP + ":15006"},
		{"127.0.0.1:15000", "admin 127.0.0.1:15000"},
		{"127.0.0.1:15053", "dns 127.0.0.1:15053"},
	} {
		expectLine(t, tp.pod, tc.addr, tc.want)
		expectLineAs1337(t, tp.pod, tc.addr, tc.want)
	}
	// The loopback-only listeners are not on the pod's address, and
	// nothing redirects a connection there to them.
	for _, addr := range []string{podIP + ":15001", podIP + ":15000", podIP + ":15053"} {
		if err := tp.pod.Do(func() error { _, err := dialLine(addr); return err }); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("app -> %s: got %v, want connection refused", addr, err)
		}
	}

	// Inbound: a peer dialling the sidecar's ports on the pod.
	expectLine(t, tp.peer, podIP+":15006", "proxy-in "+podIP+":15006")
	for _, addr := range []string{podIP + ":15001", podIP + ":15000", podIP + ":15053"} {
		if err := tp.peer.Do(func() error { _, err := dialLine(addr); return err }); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("peer -> %s: got %v, want connection refused", addr, err)
		}
	}
}
