package audit

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	apiaudit "github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/internal/testutil"
)

// ev is an event at t0+at.
func ev(t0 time.Time, id string, at time.Duration, ns, pod, sa, host, ip string, port uint16, decision string) apiaudit.Event {
	return apiaudit.Event{ID: id, Time: t0.Add(at), SourceID: "spiffe://cluster.local/ns/" + ns + "/sa/" + sa, Pod: pod, Namespace: ns,
		DstHost: host, SNI: host, DstIP: netip.MustParseAddr(ip), DstPort: port, Protocol: "tls", Decision: decision,
		BytesSent: 100, BytesReceived: 1000, Duration: 1500 * time.Millisecond}
}

// sampleEvents are five events a minute apart from t0.
func sampleEvents(t0 time.Time) []apiaudit.Event {
	return []apiaudit.Event{
		ev(t0, "a-1", 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow"),
		ev(t0, "a-2", time.Minute, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow"),
		ev(t0, "b-1", 2*time.Minute, "shop", "worker-7", "worker", "bad.example.com", "93.184.216.35", 443, "deny"),
		ev(t0, "c-1", 3*time.Minute, "lab", "probe-1", "probe", "", "198.18.100.7", 9000, "audit"),
		ev(t0, "c-2", 4*time.Minute, "lab", "probe-1", "probe", "", "2001:db8::1", 443, "allow"),
	}
}

func ids(events []apiaudit.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.ID)
	}
	return out
}

func TestStoreInsertIsIdempotent(t *testing.T) {
	clk := testutil.FakeClock(t)
	t0 := clk.Now()
	s := openTestStore(t, clk)
	added, _, err := s.Insert(sampleEvents(t0))
	if err != nil || len(added) != 5 {
		t.Fatalf("Insert = %d added, %v; want 5", len(added), err)
	}
	again := append(sampleEvents(t0)[:2], ev(t0, "d-1", 5*time.Minute, "shop", "web-1", "web", "x.example.com", "1.2.3.4", 443, "allow"))
	added, _, err = s.Insert(again)
	if err != nil || !slices.Equal(ids(added), []string{"d-1"}) {
		t.Fatalf("second Insert added %v, %v; want only d-1", ids(added), err)
	}
	if s.Len() != 6 {
		t.Errorf("Len = %d, want 6", s.Len())
	}
	if _, _, err := s.Insert([]apiaudit.Event{{Time: t0}}); err == nil {
		t.Error("Insert of an event without ID succeeded")
	}
	got, _ := s.Query(Query{Destination: "93.184.216.34"})
	if len(got) != 2 || got[0].Duration != 1500*time.Millisecond || got[0].DstIP != netip.MustParseAddr("93.184.216.34") {
		t.Errorf("stored events do not round-trip: %+v", got)
	}
}

func TestStoreQuery(t *testing.T) {
	clk := testutil.FakeClock(t)
	t0 := clk.Now()
	s := openTestStore(t, clk)
	mustInsert(t, s, sampleEvents(t0))
	tests := []struct {
		name string
		q    Query
		want []string // newest first
	}{
		{"all", Query{}, []string{"c-2", "c-1", "b-1", "a-2", "a-1"}},
		{"since", Query{Since: t0.Add(2 * time.Minute)}, []string{"c-2", "c-1", "b-1"}},
		{"until is exclusive", Query{Until: t0.Add(2 * time.Minute)}, []string{"a-2", "a-1"}},
		{"range", Query{Since: t0.Add(time.Minute), Until: t0.Add(3*time.Minute + time.Nanosecond)}, []string{"c-1", "b-1", "a-2"}},
		{"until after the last", Query{Until: t0.Add(time.Hour)}, []string{"c-2", "c-1", "b-1", "a-2", "a-1"}},
		{"empty range", Query{Since: t0.Add(time.Hour)}, nil},
		{"namespace", Query{Namespace: "lab"}, []string{"c-2", "c-1"}},
		{"workload by pod", Query{Workload: "worker-7"}, []string{"b-1"}},
		{"workload by service account", Query{Workload: "web"}, []string{"a-2", "a-1"}},
		{"workload by SPIFFE ID", Query{Workload: "spiffe://cluster.local/ns/lab/sa/probe"}, []string{"c-2", "c-1"}},
		{"destination host", Query{Destination: "API.example.com."}, []string{"a-2", "a-1"}},
		{"destination wildcard", Query{Destination: "*.example.com"}, []string{"b-1", "a-2", "a-1"}},
		{"destination IP", Query{Destination: "198.18.100.7"}, []string{"c-1"}},
		{"destination IPv6 host:port", Query{Destination: "[2001:db8::1]:443"}, []string{"c-2"}},
		{"destination host:port", Query{Destination: "bad.example.com:443"}, []string{"b-1"}},
		{"decision", Query{Decision: "deny"}, []string{"b-1"}},
		{"limit keeps the newest", Query{Limit: 2}, []string{"c-2", "c-1"}},
		{"combined", Query{Namespace: "shop", Decision: "allow", Limit: 1}, []string{"a-2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Query(tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), tt.want) {
				t.Errorf("Query(%+v) = %v, want %v", tt.q, ids(got), tt.want)
			}
		})
	}
}

func TestStoreRetention(t *testing.T) {
	clk := testutil.FakeClock(t)
	t0 := clk.Now().Add(-5 * time.Minute) // the events start 5m before the clock
	s := openTestStore(t, clk)
	s.cfg.Retention = 3 * time.Minute // keeps events from t0+2m on
	mustInsert(t, s, sampleEvents(t0))
	n, err := s.Prune()
	if err != nil || n != 2 {
		t.Fatalf("Prune = %d, %v; want 2", n, err)
	}
	got, _ := s.Query(Query{})
	if !slices.Equal(ids(got), []string{"c-2", "c-1", "b-1"}) {
		t.Errorf("after prune: %v", ids(got))
	}
	if s.Len() != 3 {
		t.Errorf("Len = %d, want 3 (ID index pruned too)", s.Len())
	}
	// A pruned ID is forgotten: the index does not grow without bound.
	clk.Step(time.Hour)
	if n, _ := s.Prune(); n != 3 || s.Len() != 0 {
		t.Errorf("Prune after an hour = %d, Len %d; want 3, 0", n, s.Len())
	}
}

func TestStoreRunPrunesPeriodically(t *testing.T) {
	clk := testutil.FakeClock(t)
	t0 := clk.Now()
	s := openTestStore(t, clk)
	s.cfg.Retention, s.cfg.PruneInterval = time.Hour, time.Minute
	mustInsert(t, s, sampleEvents(t0))
	ctx := testContext(t)
	pruned := make(chan int, 10)
	done := make(chan struct{})
	go func() { _ = s.Run(ctx, func(n int) { pruned <- n }); close(done) }()
	testutil.Eventually(t, "Run's ticker", clk.HasWaiters)
	clk.Step(2 * time.Hour)
	select {
	case n := <-pruned:
		if n != 5 {
			t.Errorf("pruned %d, want 5", n)
		}
	case <-ctx.Done():
		t.Fatal("Run did not prune after the interval")
	}
}

func TestStoreReopenKeepsEventsAndLock(t *testing.T) {
	clk := testutil.FakeClock(t)
	t0 := clk.Now()
	path := t.TempDir() + "/sub/audit.db"
	s, err := OpenStore(StoreConfig{Path: path, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	mustInsert(t, s, sampleEvents(t0))
	if _, err := OpenStore(StoreConfig{Path: path, Clock: clk}); err == nil {
		t.Error("a second OpenStore on a held file succeeded")
	}
	s.Close()
	s, err = OpenStore(StoreConfig{Path: path, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if added, _, _ := s.Insert(sampleEvents(t0)); len(added) != 0 || s.Len() != 5 {
		t.Errorf("after reopen: added %d, Len %d; want 0, 5", len(added), s.Len())
	}
}

func TestSummary(t *testing.T) {
	clk := testutil.FakeClock(t)
	t0 := clk.Now()
	s := openTestStore(t, clk)
	mustInsert(t, s, sampleEvents(t0))
	sum, err := s.Summary(Query{Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum) != 2 {
		t.Fatalf("Summary: %+v", sum)
	}
	a := sum[0]
	if a.Destination != "api.example.com:443" || a.Connections != 2 || a.BytesSent != 200 || a.BytesReceived != 2000 ||
		!a.FirstSeen.Equal(t0) || !a.LastSeen.Equal(t0.Add(time.Minute)) || a.Decisions["allow"] != 2 ||
		!slices.Equal(a.Workloads, []string{"spiffe://cluster.local/ns/shop/sa/web"}) || !slices.Equal(a.IPs, []string{"93.184.216.34"}) {
		t.Errorf("summary[0] = %+v", a)
	}
	if b := sum[1]; b.Destination != "bad.example.com:443" || b.Decisions["deny"] != 1 {
		t.Errorf("summary[1] = %+v", b)
	}
	all, _ := s.Summary(Query{})
	var dests []string
	for _, d := range all {
		dests = append(dests, d.Destination)
	}
	if want := []string{"api.example.com:443", "198.18.100.7:9000", "[2001:db8::1]:443", "bad.example.com:443"}; !slices.Equal(dests, want) {
		t.Errorf("destinations = %v, want %v", dests, want)
	}
	// At most 16 distinct IPs per destination.
	var many []apiaudit.Event
	for i := range 20 {
		many = append(many, ev(t0, fmt.Sprintf("ip-%02d", i), 0, "lab", "probe-1", "probe", "many.example.com", fmt.Sprintf("198.51.100.%d", i), 443, "allow"))
	}
	mustInsert(t, s, many)
	if m, _ := s.Summary(Query{Destination: "many.example.com"}); len(m) != 1 || m[0].Connections != 20 || len(m[0].IPs) != 16 {
		t.Errorf("20 IPs summarised as %+v, want 16 of them", m)
	}
	// Until is exclusive here too: a-2, at exactly t0+1m, is not counted.
	until, err := s.Summary(Query{Namespace: "shop", Until: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if len(until) != 1 || until[0].Connections != 1 || !until[0].LastSeen.Equal(t0) {
		t.Errorf("Summary until t0+1m = %+v, want a-1 alone", until)
	}
}

// TestStorePrunesPastOneBatch: Prune deletes in transactions of 10,000
// keys and goes on until none is left, so more than one batch of old
// events all goes.
func TestStorePrunesPastOneBatch(t *testing.T) {
	clk := testutil.FakeClock(t)
	t0 := clk.Now().Add(-2 * time.Hour)
	s := openTestStore(t, clk)
	s.cfg.Retention = time.Hour
	events := make([]apiaudit.Event, 10_001)
	for i := range events {
		events[i] = ev(t0, fmt.Sprintf("o-%05d", i), time.Duration(i)*time.Millisecond, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow")
	}
	mustInsert(t, s, events)
	if n, err := s.Prune(); err != nil || n != 10_001 || s.Len() != 0 {
		t.Fatalf("Prune = %d, %v, Len %d; want 10001, nil, 0", n, err, s.Len())
	}
}

// TestStoreRunLogs: Run says what a pass pruned, at Info (the log comes
// before the callback), and nothing for a pass that found nothing.
func TestStoreRunLogs(t *testing.T) {
	clk := testutil.FakeClock(t)
	logs := &logLines{}
	s, err := OpenStore(StoreConfig{Path: filepath.Join(t.TempDir(), "audit.db"), Clock: clk, Logger: slog.New(logs),
		Retention: time.Hour, PruneInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := sampleEvents(clk.Now().Add(-2 * time.Hour))
	fresh := ev(clk.Now(), "fresh", 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow")
	mustInsert(t, s, append(old, fresh))
	ctx, cancel := context.WithCancel(testContext(t))
	pruned := make(chan int, 10)
	done := make(chan struct{})
	go func() { _ = s.Run(ctx, func(n int) { pruned <- n }); close(done) }()
	pass := func() int {
		select {
		case n := <-pruned:
			return n
		case <-ctx.Done():
			t.Fatal("no pass pruned")
			return 0
		}
	}
	if n := pass(); n != 5 {
		t.Fatalf("first pass pruned %d, want 5", n)
	}
	clk.Step(time.Minute) // a pass with nothing to prune
	// Time for that pass to run on its own: if it has not by the next step,
	// it prunes "fresh" itself and the test still passes (it only sees one
	// empty pass fewer).
	time.Sleep(50 * time.Millisecond)
	clk.Step(2 * time.Hour) // "fresh" is old now
	if n := pass(); n != 1 {
		t.Fatalf("last pass pruned %d, want 1", n)
	}
	cancel()
	<-done
	want := []logLine{{level: slog.LevelInfo, msg: "pruned events"}, {level: slog.LevelInfo, msg: "pruned events"}}
	if got := logs.get(); !slices.Equal(got, want) {
		t.Errorf("logged %+v, want %+v", got, want)
	}
}

// TestTimeKey: keys order times as time does, from 1970 (before it: the
// first key) to 2262-04-11, where int64 nanoseconds end (after it: the
// last key, even where UnixNano has wrapped negative).
func TestTimeKey(t *testing.T) {
	epoch := time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	last := time.Unix(0, math.MaxInt64) // 2262-04-11T23:47:16.854775807Z
	key := func(t time.Time) uint64 { return binary.BigEndian.Uint64(timeKey(t)) }
	for _, tc := range []struct {
		name string
		t    time.Time
		want uint64
	}{
		{"zero", time.Time{}, 0},
		{"the epoch", epoch, 0},
		{"1ns after the epoch", epoch.Add(time.Nanosecond), 1},
		{"1ns before the epoch", epoch.Add(-time.Nanosecond), 0},
		{"1677", time.Unix(0, math.MinInt64).Add(-time.Nanosecond), 0}, // UnixNano wraps positive
		{"the last nanosecond", last, math.MaxInt64},
		{"the next (UnixNano wraps negative)", last.Add(time.Nanosecond), math.MaxUint64},
		{"2263", last.AddDate(1, 0, 0), math.MaxUint64},
		{"2600 (UnixNano wraps positive again)", last.AddDate(338, 0, 0), math.MaxUint64},
		{"3000 (negative again)", last.AddDate(738, 0, 0), math.MaxUint64},
	} {
		if got := key(tc.t); got != tc.want {
			t.Errorf("%s (%s): key %d, want %d", tc.name, tc.t.UTC(), got, tc.want)
		}
	}
	// A query until a year past 2262 sees everything; since one, nothing.
	clk := testutil.FakeClock(t)
	s := openTestStore(t, clk)
	mustInsert(t, s, sampleEvents(clk.Now()))
	if got, _ := s.Query(Query{Until: last.AddDate(38, 0, 0)}); len(got) != 5 {
		t.Errorf("until 2300: %v, want all 5", ids(got))
	}
	if got, _ := s.Query(Query{Since: last.AddDate(38, 0, 0)}); len(got) != 0 {
		t.Errorf("since 2300: %v, want none", ids(got))
	}
}

// TestOpenStoreDefaults: a zero or negative retention, prune interval or
// cap gets the default its comment names, a positive one stays.
func TestOpenStoreDefaults(t *testing.T) {
	clk := testutil.FakeClock(t)
	type limits struct {
		retention, prune time.Duration
		max              int
	}
	defaults := limits{7 * 24 * time.Hour, 10 * time.Minute, DefaultMaxEvents}
	for _, tc := range []struct {
		name     string
		in, want limits
	}{
		{"zero", limits{}, defaults},
		{"negative", limits{-time.Nanosecond, -time.Nanosecond, -1}, defaults},
		{"smallest", limits{time.Nanosecond, time.Nanosecond, 1}, limits{time.Nanosecond, time.Nanosecond, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := OpenStore(StoreConfig{Path: filepath.Join(t.TempDir(), "audit.db"), Clock: clk,
				Retention: tc.in.retention, PruneInterval: tc.in.prune, MaxEvents: tc.in.max})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := (limits{s.cfg.Retention, s.cfg.PruneInterval, s.cfg.MaxEvents}); got != tc.want || s.Cap() != tc.want.max {
				t.Errorf("settles on %+v (Cap %d), want %+v", got, s.Cap(), tc.want)
			}
		})
	}
}
