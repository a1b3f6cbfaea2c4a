package audit

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	wefttest "github.com/weftmesh/weft/internal/testutil"
)

func TestDestMetricsBoundedCardinality(t *testing.T) {
	clk := wefttest.FakeClock(t)
	t0 := clk.Now()
	d := newDestMetrics(2, 10*time.Minute, clk)
	reg := prometheus.NewRegistry()
	reg.MustRegister(d)
	hit := func(host string, n int) {
		for range n {
			e := ev(t0, "x", 0, "shop", "web-1", "web", host, "1.2.3.4", 443, "allow")
			d.observe(e)
		}
	}
	for i := range 100 {
		hit(fmt.Sprintf("h%d.example.com", i), 1)
	}
	if n := testutil.CollectAndCount(d, "weft_egress_connections_total"); n != 3 {
		t.Fatalf("%d connection series, want 2 destinations + other", n)
	}
	if v, _ := wefttest.CounterValue(t, reg, "weft_egress_connections_total", "destination", "other"); v != 98 {
		t.Errorf("other = %v, want 98", v)
	}
	// A rotation keeps h0 and h1 (both active since the start); then h0
	// stays busy, h1 goes idle and busy is the busiest of "other": the next
	// rotation gives h1's slot to busy.
	clk.Step(11 * time.Minute)
	hit("h0.example.com", 1) // rotates first, then counts
	hit("busy.example.com", 5)
	hit("rare.example.com", 1)
	clk.Step(11 * time.Minute)
	hit("busy.example.com", 2) // rotates first, then counts
	checkConnections(t, d, `
weft_egress_connections_total{decision="allow",destination="busy.example.com:443"} 2
weft_egress_connections_total{decision="allow",destination="h0.example.com:443"} 2
weft_egress_connections_total{decision="allow",destination="other"} 104
`)
}

// checkConnections compares d's weft_egress_connections_total with series,
// its samples in the text exposition format.
func checkConnections(t *testing.T, d prometheus.Collector, series string) {
	t.Helper()
	want := `
# HELP weft_egress_connections_total Egress connections by destination (the busiest, the rest "other") and decision.
# TYPE weft_egress_connections_total counter` + series
	if err := testutil.CollectAndCompare(d, strings.NewReader(want), "weft_egress_connections_total"); err != nil {
		t.Error(err)
	}
}

// The service's destination metrics rotate every ten minutes: not sooner,
// and at exactly ten minutes since the last rotation.
func TestDestMetricsRotateEveryTenMinutes(t *testing.T) {
	clk := wefttest.FakeClock(t)
	t0 := clk.Now()
	m, err := newServiceMetrics(prometheus.NewRegistry(), 1, clk, openTestStore(t, clk))
	if err != nil {
		t.Fatal(err)
	}
	hit := func(host string, at time.Duration) {
		clk.SetTime(t0.Add(at))
		m.dest.observe(ev(t0, "x", 0, "shop", "web-1", "web", host, "1.2.3.4", 443, "allow"))
	}
	// The hit that rotates counts after the rotation, in the new interval.
	hit("a.example.com", 0)                              // takes the one slot
	hit("b.example.com", 10*time.Minute-time.Nanosecond) // other: no rotation yet
	hit("b.example.com", 10*time.Minute-time.Nanosecond)
	hit("b.example.com", 10*time.Minute) // rotates: a was active, keeps its slot
	hit("b.example.com", 15*time.Minute) // other
	hit("b.example.com", 20*time.Minute) // rotates: a was idle, b (the only candidate) takes its slot
	checkConnections(t, m.dest, `
weft_egress_connections_total{decision="allow",destination="b.example.com:443"} 1
weft_egress_connections_total{decision="allow",destination="other"} 4
`)
}

// Untracked destinations are ranked among at most 10 × max candidates per
// rotation: a destination first seen after that many is not one, however
// busy.
func TestDestMetricsCandidateCap(t *testing.T) {
	clk := wefttest.FakeClock(t)
	t0 := clk.Now()
	d := newDestMetrics(2, 10*time.Minute, clk)
	hit := func(host string, n int) {
		for range n {
			d.observe(ev(t0, "x", 0, "shop", "web-1", "web", host, "1.2.3.4", 443, "allow"))
		}
	}
	hit("a.example.com", 1)
	hit("b.example.com", 1)
	clk.Step(10 * time.Minute)
	hit("a.example.com", 1) // rotates: a and b keep their slots; b now idles
	for i := range 20 {     // the 20 candidates max 2 allows
		hit(fmt.Sprintf("c%02d.example.com", i), 1)
	}
	hit("c19.example.com", 2)  // the busiest candidate
	hit("late.example.com", 5) // busier, but past the cap: no candidate
	clk.Step(10 * time.Minute)
	hit("a.example.com", 1)    // rotates: b's slot goes to c19, and no slot past max to c00
	hit("late.example.com", 1) // no slot left for a newcomer
	hit("c19.example.com", 1)
	hit("c00.example.com", 1)
	checkConnections(t, d, `
weft_egress_connections_total{decision="allow",destination="a.example.com:443"} 3
weft_egress_connections_total{decision="allow",destination="c19.example.com:443"} 1
weft_egress_connections_total{decision="allow",destination="other"} 29
`)
}
