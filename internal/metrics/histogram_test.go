package metrics

import (
	"bytes"
	"math"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

func TestHistogramExposition(t *testing.T) {
	r := NewRegistry()
	h, err := r.NewHistogramVec("weft_test_latency_seconds", "Latency.", []float64{0.005, 0.01, 1}, "route", "class")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.NewHistogramVec("weft_test_unused_seconds", "Never observed.", []float64{1}); err != nil {
		t.Fatal(err)
	}
	a := h.With("/a", "2xx")
	for _, v := range []float64{0.001, 0.005, 0.0051, 0.01, 0.5, 2, math.NaN(), 100} {
		a.Observe(v) // 0.005 and 0.01 land in their own buckets: "le" is inclusive
	}
	h.With(`q"uote`, "5xx").Observe(0.002)

	const want = `# HELP weft_test_latency_seconds Latency.
# TYPE weft_test_latency_seconds histogram
weft_test_latency_seconds_bucket{route="/a",class="2xx",le="0.005"} 2
weft_test_latency_seconds_bucket{route="/a",class="2xx",le="0.01"} 4
weft_test_latency_seconds_bucket{route="/a",class="2xx",le="1"} 5
weft_test_latency_seconds_bucket{route="/a",class="2xx",le="+Inf"} 7
weft_test_latency_seconds_sum{route="/a",class="2xx"} 102.5211
weft_test_latency_seconds_count{route="/a",class="2xx"} 7
weft_test_latency_seconds_bucket{route="q\"uote",class="5xx",le="0.005"} 1
weft_test_latency_seconds_bucket{route="q\"uote",class="5xx",le="0.01"} 1
weft_test_latency_seconds_bucket{route="q\"uote",class="5xx",le="1"} 1
weft_test_latency_seconds_bucket{route="q\"uote",class="5xx",le="+Inf"} 1
weft_test_latency_seconds_sum{route="q\"uote",class="5xx"} 0.002
weft_test_latency_seconds_count{route="q\"uote",class="5xx"} 1
# HELP weft_test_unused_seconds Never observed.
# TYPE weft_test_unused_seconds histogram
`
	var buf bytes.Buffer
	if _, err := r.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != want {
		t.Fatalf("exposition:\n%s\nwant:\n%s", got, want)
	}
	fams, err := parser().TextToMetricFamilies(strings.NewReader(buf.String()))
	if err != nil {
		t.Fatalf("Prometheus's parser refuses the exposition: %v", err)
	}
	f := fams["weft_test_latency_seconds"]
	if f.GetType() != dto.MetricType_HISTOGRAM || len(f.Metric) != 2 {
		t.Fatalf("parsed family: %v", f)
	}
	ph := f.Metric[0].GetHistogram()
	if ph.GetSampleCount() != 7 || len(ph.Bucket) != 4 || ph.Bucket[1].GetCumulativeCount() != 4 || ph.Bucket[1].GetUpperBound() != 0.01 {
		t.Fatalf("parsed histogram: %v", ph)
	}
	if _, ok := r.Value("weft_test_latency_seconds", "/a", "2xx"); ok {
		t.Fatal("Value answered for a histogram family")
	}
}

func TestHistogramRegistrationErrors(t *testing.T) {
	r := NewRegistry()
	for _, tc := range []struct {
		upper  []float64
		labels []string
		want   string
	}{
		{nil, nil, "at least one bucket"},
		{[]float64{1, 1}, nil, "must increase"},
		{[]float64{2, 1}, nil, "must increase"},
		{[]float64{1, math.Inf(1)}, nil, "not finite"},
		{[]float64{math.NaN()}, nil, "not finite"},
		{[]float64{1}, []string{"route", "le"}, `"le" is reserved`},
		{[]float64{1}, []string{"bad-label"}, "invalid label name"},
	} {
		_, err := r.NewHistogramVec("weft_test_seconds", "x", tc.upper, tc.labels...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewHistogramVec(%v, %v): %v, want an error with %q", tc.upper, tc.labels, err, tc.want)
		}
	}
	// The buckets are the family's own: changing the caller's slice later
	// changes nothing.
	upper := []float64{1, 2}
	h, err := r.NewHistogramVec("weft_test_seconds", "x", upper)
	if err != nil {
		t.Fatal(err)
	}
	upper[0] = 10
	h.With().Observe(1.5)
	if cum, _ := h.With().Snapshot(); cum[0] != 0 || cum[1] != 1 {
		t.Fatalf("cumulative counts %v after the caller's slice changed", cum)
	}
}

func TestHistogramConcurrentObserve(t *testing.T) {
	r := NewRegistry()
	h, err := r.NewHistogramVec("weft_test_seconds", "x", LatencyBuckets, "route")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				h.With([]string{"a", "b"}[i%2]).Observe(float64(g) * 0.001)
			}
			var buf bytes.Buffer
			if _, err := r.WriteTo(&buf); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var total uint64
	var sum float64
	for _, route := range []string{"a", "b"} {
		cum, s := h.With(route).Snapshot()
		total += cum[len(cum)-1]
		sum += s
	}
	if total != 8000 {
		t.Fatalf("%d observations counted, want 8000", total)
	}
	if want := 1000 * (0 + 1 + 2 + 3 + 4 + 5 + 6 + 7) * 0.001; math.Abs(sum-want) > 1e-6 {
		t.Fatalf("sum %v, want %v", sum, want)
	}
}

func TestLatencyBucketsIncrease(t *testing.T) {
	if _, err := NewRegistry().NewHistogramVec("weft_test_seconds", "x", LatencyBuckets); err != nil {
		t.Fatal(err)
	}
}
