package metrics

import (
	"math"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parser is Prometheus's text parser with the classic name rules (what
// every scraper accepts).
func parser() *expfmt.TextParser {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return &p
}

func TestExposition(t *testing.T) {
	r := NewRegistry()
	conns, err := r.NewGaugeVec("weft_test_connections", "Open connections.", "direction")
	if err != nil {
		t.Fatal(err)
	}
	fails, err := r.NewCounterVec("weft_test_failures_total", "Failures by reason.\nSecond line with a \\ backslash.", "direction", "reason")
	if err != nil {
		t.Fatal(err)
	}
	total, err := r.NewCounter("weft_test_total", "Everything.")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.NewCounterVec("weft_test_empty_total", "Never used.", "kind"); err != nil {
		t.Fatal(err)
	}
	err = r.NewFunc("weft_test_func", "From a callback.", GaugeType, []string{"k"}, func(emit Emit) {
		emit(2.5, "b")
		emit(math.Inf(1), "a")
		emit(1e300, "c")
	})
	if err != nil {
		t.Fatal(err)
	}
	conns.With("outbound").Inc()
	conns.With("inbound").Inc()
	conns.With("inbound").Inc()
	conns.With("outbound").Dec()
	fails.With("inbound", `quote " newline`+"\n"+`back\slash`).Add(3)
	fails.With("inbound", "expired").Inc()
	total.Add(1 << 40)

	const want = `# HELP weft_test_connections Open connections.
# TYPE weft_test_connections gauge
weft_test_connections{direction="inbound"} 2
weft_test_connections{direction="outbound"} 0
# HELP weft_test_failures_total Failures by reason.\nSecond line with a \\ backslash.
# TYPE weft_test_failures_total counter
weft_test_failures_total{direction="inbound",reason="expired"} 1
weft_test_failures_total{direction="inbound",reason="quote \" newline\nback\\slash"} 3
# HELP weft_test_total Everything.
# TYPE weft_test_total counter
weft_test_total 1099511627776
# HELP weft_test_empty_total Never used.
# TYPE weft_test_empty_total counter
# HELP weft_test_func From a callback.
# TYPE weft_test_func gauge
weft_test_func{k="a"} +Inf
weft_test_func{k="b"} 2.5
weft_test_func{k="c"} 1e+300
`
	var b strings.Builder
	n, err := r.WriteTo(&b)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != want {
		t.Errorf("exposition\n%s\nwant\n%s", b.String(), want)
	}
	if n != int64(b.Len()) {
		t.Errorf("WriteTo returned %d, wrote %d", n, b.Len())
	}

	// Prometheus's own parser reads it back, values and labels intact.
	fams, err := parser().TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("Prometheus cannot parse the exposition: %v", err)
	}
	got := fams["weft_test_failures_total"].GetMetric()
	if len(got) != 2 || got[1].GetLabel()[1].GetValue() != `quote " newline`+"\n"+`back\slash` || got[1].GetCounter().GetValue() != 3 {
		t.Errorf("parsed failures: %v", got)
	}
	if h := fams["weft_test_failures_total"].GetHelp(); h != "Failures by reason.\nSecond line with a \\ backslash." {
		t.Errorf("parsed help %q", h)
	}
	if v := fams["weft_test_func"].GetMetric()[0].GetGauge().GetValue(); !math.IsInf(v, 1) {
		t.Errorf("parsed +Inf as %v", v)
	}

	if v, ok := r.Value("weft_test_connections", "inbound"); !ok || v != 2 {
		t.Errorf("Value(connections, inbound) = %v, %v", v, ok)
	}
	if v, ok := r.Value("weft_test_total"); !ok || v != 1<<40 {
		t.Errorf("Value(total) = %v, %v", v, ok)
	}
	if _, ok := r.Value("weft_test_connections", "sideways"); ok {
		t.Error("Value found a series never created")
	}
	if _, ok := r.Value("weft_test_nothing"); ok {
		t.Error("Value found a family never registered")
	}
}

func TestServeHTTP(t *testing.T) {
	r := NewRegistry()
	c, _ := r.NewCounter("weft_test_total", "Everything.")
	c.Inc()
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); ct != ContentType {
		t.Errorf("Content-Type %q", ct)
	}
	if ce := rec.Header().Get("Content-Encoding"); ce != "" {
		t.Errorf("Content-Encoding %q", ce)
	}
	if !strings.HasSuffix(rec.Body.String(), "\nweft_test_total 1\n") {
		t.Errorf("body %q", rec.Body.String())
	}
}

func TestRegistrationErrors(t *testing.T) {
	r := NewRegistry()
	if _, err := r.NewCounter("weft_ok_total", "ok"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   string
	}{
		{"weft_ok_total", nil, "registered twice"},
		{"0weft", nil, "invalid metric name"},
		{"weft-dash", nil, "invalid metric name"},
		{"weft_x", []string{"bad-label"}, "invalid label name"},
		{"weft_y", []string{"__reserved"}, "invalid label name"},
	} {
		_, err := r.NewCounterVec(tc.name, "h", tc.labels...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %v: err %v, want %q", tc.name, tc.labels, err, tc.want)
		}
	}
	if err := r.NewGaugeFunc("weft_ok_total", "again", func() float64 { return 0 }); err == nil {
		t.Error("a func family took a registered name")
	}
}

// TestWithDoesNotAllocate: the proxy counts per connection through With.
func TestWithDoesNotAllocate(t *testing.T) {
	r := NewRegistry()
	v, _ := r.NewCounterVec("weft_test_total", "h", "direction", "reason")
	g, _ := r.NewGaugeVec("weft_test_open", "h", "direction")
	v.With("inbound", "expired").Inc()
	g.With("inbound").Inc()
	dir, reason := "inbound", "expired"
	if n := testing.AllocsPerRun(100, func() {
		v.With(dir, reason).Inc()
		g.With(dir).Inc()
		g.With(dir).Dec()
	}); n != 0 {
		t.Errorf("With on existing series: %v allocations, want 0", n)
	}
}

func TestLabelCountMismatchPanics(t *testing.T) {
	r := NewRegistry()
	v, _ := r.NewCounterVec("weft_test_total", "h", "a", "b")
	defer func() {
		if recover() == nil {
			t.Error("With with one value for two labels did not panic")
		}
	}()
	v.With("only-one")
}

// TestConcurrentUse: series created and counted from many goroutines while
// scrapes run; every count arrives (run with -race).
func TestConcurrentUse(t *testing.T) {
	r := NewRegistry()
	v, _ := r.NewCounterVec("weft_test_total", "h", "worker")
	g, _ := r.NewGaugeVec("weft_test_open", "h", "worker")
	const workers, each = 8, 2000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	scrapes := make(chan struct{})
	go func() {
		defer close(scrapes)
		for {
			select {
			case <-stop:
				return
			default:
				var b strings.Builder
				if _, err := r.WriteTo(&b); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	for w := range workers {
		name := string(rune('a' + w))
		wg.Go(func() {
			for range each {
				v.With(name).Inc()
				g.With(name).Inc()
				g.With(name).Dec()
			}
		})
	}
	wg.Wait()
	close(stop)
	<-scrapes
	for w := range workers {
		name := string(rune('a' + w))
		if got, _ := r.Value("weft_test_total", name); got != each {
			t.Errorf("worker %s counted %v, want %d", name, got, each)
		}
		if got, _ := r.Value("weft_test_open", name); got != 0 {
			t.Errorf("worker %s gauge %v, want 0", name, got)
		}
	}
}

func TestRuntimeSeries(t *testing.T) {
	r := NewRegistry()
	if err := RegisterRuntime(r); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if _, err := r.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	fams, err := parser().TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("Prometheus cannot parse the exposition: %v\n%s", err, b.String())
	}
	positive := []string{"go_goroutines", "go_memstats_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes",
		"go_memstats_sys_bytes", "go_memstats_next_gc_bytes", "go_gc_gogc_percent", "go_gc_gomemlimit_bytes", "go_info",
		"process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes", "process_open_fds",
		"process_max_fds", "process_start_time_seconds"}
	for _, name := range positive {
		f := fams[name]
		if f == nil || len(f.GetMetric()) != 1 {
			t.Errorf("%s: missing or not one series", name)
			continue
		}
		m := f.GetMetric()[0]
		v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
		if !(v > 0) {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	for _, name := range []string{"go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_gc_cycles_total"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	if rss, _ := r.Value("process_resident_memory_bytes"); rss < 1<<20 {
		t.Errorf("RSS %v bytes: not read from /proc/self/statm", rss)
	}
	for name, f := range fams {
		if f.GetHelp() == "" {
			t.Errorf("%s: no help", name)
		}
	}
}
