package audit

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiaudit "github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/internal/keyedrate"
)

// The app holds its pod's SVID (the Workload API gives it), so an audit
// stream may be the app, not its sidecar: these are what it can try.

// labEvent is an event of pod lab-1 in namespace lab running as labApp.
func labEvent(t0 time.Time, id string) apiaudit.Event {
	return ev(t0, id, 0, "lab", "lab-1", "app", "evil.example.com", "198.18.100.66", 443, "allow")
}

// TestForeignIDsDoNotHideEvents: a pod that writes events under the IDs a
// victim pod will use next (IDs are "<instance>-<seq>", readable at
// /audit/events) does not make the victim's events vanish as duplicates.
func TestForeignIDsDoNotHideEvents(t *testing.T) {
	h := newHarness(t)
	t0 := h.clk.Now()
	var squat []apiaudit.Event
	for i := range 5 {
		squat = append(squat, labEvent(t0, fmt.Sprintf("victim-%d", i)))
	}
	if err := h.send(t, labApp, message("lab-1.lab", squat...)); err != nil {
		t.Fatal(err)
	}
	var real []apiaudit.Event
	for i := range 5 {
		real = append(real, shopEvent(t0, fmt.Sprintf("victim-%d", i)))
	}
	if err := h.send(t, shopApp, message("web-1.shop", real...)); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.store.Query(Query{Namespace: "shop"}); len(got) != 5 {
		t.Fatalf("the victim's events stored: %v, want all 5", ids(got))
	}
	if got, _ := h.store.Query(Query{Namespace: "lab"}); len(got) != 5 {
		t.Fatalf("the squatter's own events: %v, want 5 (its own, under its own name)", ids(got))
	}
}

// TestEventTimesCannotDodgeRetention: an event dated in the future is
// stored at its receive time (its Time clamped to it) and pruned with the
// events received with it; one dated in the past is not pruned early.
func TestEventTimesCannotDodgeRetention(t *testing.T) {
	h := newHarness(t)
	t0 := h.clk.Now()
	future := shopEvent(t0.Add(365*24*time.Hour), "future")
	past := shopEvent(t0.Add(-30*24*time.Hour), "past") // a connection long open
	skewed := shopEvent(t0.Add(30*time.Second), "skewed")
	if err := h.send(t, shopApp, message("web-1.shop", future, past, skewed)); err != nil {
		t.Fatal(err)
	}
	got, _ := h.store.Query(Query{})
	byID := map[string]apiaudit.Event{}
	for _, e := range got {
		byID[e.ID] = e
		if !e.Received.Equal(t0) {
			t.Errorf("%s received %v, want the control plane's now %v", e.ID, e.Received, t0)
		}
	}
	if e := byID["future"]; !e.Time.Equal(t0) {
		t.Errorf("future-dated event's time %v, want clamped to %v", e.Time, t0)
	}
	if e := byID["skewed"]; !e.Time.Equal(t0.Add(30 * time.Second)) {
		t.Errorf("an event 30s ahead (within the skew) has time %v, want kept", e.Time)
	}
	if e := byID["past"]; !e.Time.Equal(t0.Add(-30 * 24 * time.Hour)) {
		t.Errorf("past event's time %v, want kept", e.Time)
	}
	if n, _ := h.store.Prune(); n != 0 {
		t.Fatalf("pruned %d right after receiving, want 0 (retention goes by receive time)", n)
	}
	h.clk.Step(8 * 24 * time.Hour)
	if n, _ := h.store.Prune(); n != 3 {
		t.Fatalf("pruned %d after the retention, want all 3 (the future-dated one too)", n)
	}
	if got := testutil.ToFloat64(h.svc.m.clamped); got != 1 {
		t.Errorf("clamped = %v, want 1", got)
	}
}

// TestPerPodRateLimit: a flood from one pod is refused with
// ResourceExhausted once its burst is spent (the sidecar keeps and resends
// the events); another pod of the same ServiceAccount is not starved; the
// bucket refills with time.
func TestPerPodRateLimit(t *testing.T) {
	h := newHarness(t)
	h.svc.cfg.EventsPerSecond, h.svc.cfg.Burst = 10, 20
	h.svc.limits = keyedrate.New(keyedrate.Config{Limit: 10, Burst: 20, MaxKeys: maxLimiters})
	t0 := h.clk.Now()
	batch := func(pod, prefix string, n int) []apiaudit.Event {
		var out []apiaudit.Event
		for i := range n {
			e := shopEvent(t0, fmt.Sprintf("%s-%d", prefix, i))
			e.Pod = pod
			out = append(out, e)
		}
		return out
	}
	if err := h.send(t, shopApp, message("web-1.shop", batch("web-1", "a", 20)...)); err != nil {
		t.Fatalf("within the burst: %v", err)
	}
	err := h.send(t, shopApp, message("web-1.shop", batch("web-1", "b", 5)...))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over the burst: %v, want ResourceExhausted", err)
	}
	if err := h.send(t, shopApp, message("web-2.shop", batch("web-2", "c", 20)...)); err != nil {
		t.Fatalf("a sibling pod of the same ServiceAccount: %v", err)
	}
	h.clk.Step(time.Second)
	if err := h.send(t, shopApp, message("web-1.shop", batch("web-1", "b", 5)...)); err != nil {
		t.Fatalf("after the bucket refilled: %v", err)
	}
	if got := testutil.ToFloat64(h.svc.m.events.WithLabelValues("rate_limited")); got != 5 {
		t.Errorf("rate_limited = %v, want 5", got)
	}
	if got, _ := h.store.Query(Query{Workload: "web-1"}); len(got) != 25 {
		t.Errorf("web-1 stored %d, want 25 (the refused 5 resent)", len(got))
	}
}

// TestFieldsCapped: fields longer than any sidecar writes are cut to their
// cap and counted; the event is kept.
func TestFieldsCapped(t *testing.T) {
	h := newHarness(t)
	e := shopEvent(h.clk.Now(), "long")
	e.DstHost = strings.Repeat("a", 100_000)
	e.Policy = strings.Repeat("p", 5000)
	e.SNI = strings.Repeat("s", 260) // exactly its cap: kept whole
	if err := h.send(t, shopApp, message("web-1.shop", e)); err != nil {
		t.Fatal(err)
	}
	got, _ := h.store.Query(Query{})
	if len(got) != 1 || len(got[0].DstHost) != 260 || len(got[0].Policy) != 320 || !strings.HasSuffix(got[0].DstHost, "…") {
		t.Fatalf("stored dstHost of %d bytes, policy of %d", len(got[0].DstHost), len(got[0].Policy))
	}
	if got[0].SNI != e.SNI {
		t.Errorf("sni of exactly its cap stored as %d bytes %q…", len(got[0].SNI), got[0].SNI[:10])
	}
	if n := testutil.ToFloat64(h.svc.m.truncated.WithLabelValues("sni")); n != 0 {
		t.Errorf("truncated{sni} = %v, want 0", n)
	}
	for _, f := range []string{"dstHost", "policy"} {
		if n := testutil.ToFloat64(h.svc.m.truncated.WithLabelValues(f)); n != 1 {
			t.Errorf("truncated{%s} = %v, want 1", f, n)
		}
	}
}

// TestStoreCapEvictsOldest: past MaxEvents the oldest events (by receive
// time) go first, counted, and the count stays exact.
func TestStoreCapEvictsOldest(t *testing.T) {
	h := newHarness(t)
	h.store.cfg.MaxEvents = 10
	logs := &logLines{}
	h.svc.log = slog.New(logs)
	for i := range 4 {
		var b []apiaudit.Event
		for j := range 4 {
			b = append(b, shopEvent(h.clk.Now(), fmt.Sprintf("e%d-%d", i, j)))
		}
		if err := h.send(t, shopApp, message("web-1.shop", b...)); err != nil {
			t.Fatal(err)
		}
		h.clk.Step(time.Second)
	}
	got, _ := h.store.Query(Query{})
	if len(got) != 10 || h.store.Len() != 10 {
		t.Fatalf("stored %d (Len %d), want the cap, 10", len(got), h.store.Len())
	}
	if oldest := got[len(got)-1].ID; oldest != "e1-2" {
		t.Fatalf("oldest kept %s, want e1-2 (e0-* and e1-0, e1-1 evicted)", oldest)
	}
	if n := testutil.ToFloat64(h.svc.m.evicted); n != 6 {
		t.Fatalf("evicted = %v, want 6", n)
	}
	// One warning per insert that evicted (the third and fourth), none for
	// those that fit.
	var warned int
	for _, l := range logs.get() {
		if l.msg == "store full, oldest events evicted" {
			warned++
		}
	}
	if warned != 2 {
		t.Errorf("%d eviction warnings, want 2: %+v", warned, logs.get())
	}
}
