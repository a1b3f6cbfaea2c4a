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
	if v := testutil.ToFloat64(counter(t, reg, "other")); v != 98 {
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
	want := `
# HELP weft_egress_connections_total Egress connections by destination (the busiest, the rest "other") and decision.
# TYPE weft_egress_connections_total counter
weft_egress_connections_total{decision="allow",destination="busy.example.com:443"} 2
weft_egress_connections_total{decision="allow",destination="h0.example.com:443"} 2
weft_egress_connections_total{decision="allow",destination="other"} 104
`
	if err := testutil.CollectAndCompare(d, strings.NewReader(want), "weft_egress_connections_total"); err != nil {
		t.Error(err)
	}
}

// counter finds destination's connection series.
func counter(t *testing.T, reg *prometheus.Registry, destination string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "weft_egress_connections_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "destination" && l.GetValue() == destination {
					c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
					c.Add(m.GetCounter().GetValue())
					return c
				}
			}
		}
	}
	t.Fatalf("no series for destination %q", destination)
	return nil
}
