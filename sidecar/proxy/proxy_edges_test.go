package proxy

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestAdmitCapsAndForgets: admit takes MaxConnections open connections
// and MaxPendingPerSource pending ones per source, no more; a refusal
// leaves the counts as they were, and a source whose connections have all
// settled leaves nothing behind.
func TestAdmitCapsAndForgets(t *testing.T) {
	p := &Proxy{cfg: Config{MaxConnections: 3, MaxPendingPerSource: 2}}
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	for i, tc := range []struct {
		src  netip.Addr
		want string // "" admitted, else what the refusal names
	}{
		{a, ""}, {a, ""}, {a, "MaxPendingPerSource"}, {b, ""}, {b, "MaxConnections"},
	} {
		why := p.admit(tc.src)
		if tc.want == "" && why != "" || !strings.Contains(why, tc.want) {
			t.Fatalf("admit %d (%v): %q, want %q", i, tc.src, why, tc.want)
		}
	}
	p.settled(a)
	p.settled(a)
	p.settled(b)
	p.pendingMu.Lock()
	left := len(p.pending)
	p.pendingMu.Unlock()
	if left != 0 {
		t.Fatalf("%d sources still counted once every connection settled", left)
	}
	p.open.Add(-1) // one of the three closes (handle's finish)
	if why := p.admit(b); why != "" {
		t.Fatalf("after a close: %q, want admitted (the refusals must not have kept a count)", why)
	}
}

// TestCleanShutdownLogsNoWarning: a proxy that starts (parking idle flows)
// and stops without trouble logs no warning and no error, and counts no
// accept error: stopping its listeners and its parker is no failure.
func TestCleanShutdownLogsNoWarning(t *testing.T) {
	var logs bytes.Buffer // written under the handler's lock; read once Run has returned
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("demo", "quiet"), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	if pd.p.parker.Load() == nil {
		t.Fatal("no parker: the default IdleParkAfter parks idle flows")
	}
	pd.stop()
	var err error
	select {
	case err = <-pd.done:
		pd.done <- err // for the cleanup's wait
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if logs.Len() != 0 {
		t.Fatalf("a clean start and stop logged:\n%s", logs.String())
	}
	for _, dir := range []string{inbound, outbound} {
		if n := pd.counter("accept_errors", dir); n != 0 {
			t.Fatalf("%s: %v accept errors counted", dir, n)
		}
	}
}

// TestAuthorizeNamesThePeerItDenies: an RBAC denial says whom it denied:
// the peer's SPIFFE ID, or "plaintext peer" for a caller without one.
func TestAuthorizeNamesThePeerItDenies(t *testing.T) {
	pd := startPod(t, testutil.NewCA(t, td, nil), workloadID("demo", "authz"))
	fc := &model.FilterChain{Name: "inbound|8080", RBAC: []model.RBACFilter{{Action: model.RBACAllow}}} // allows no one
	peer := workloadID("shop", "frontend").String()
	for _, tc := range []struct{ peer, want string }{
		{"", "denies plaintext peer to port 8080"},
		{peer, "denies " + peer + " to port 8080"},
	} {
		err := pd.p.authorize(inbound, fc, tc.peer, 8080)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("authorize(%q): %v, want %q", tc.peer, err, tc.want)
		}
	}
}
