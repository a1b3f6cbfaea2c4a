package metrics

import (
	"bufio"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"sync/atomic"
)

// LatencyBuckets are the upper bounds, in seconds, of the request latency
// histograms: 1 ms to 30 s, dense where meshed requests usually land, so
// that p50, p95 and p99 computed from the buckets (Prometheus's
// histogram_quantile, weftctl stat) are within one bucket's width.
var LatencyBuckets = []float64{
	0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
	0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 3, 5, 10, 30,
}

// Histogram counts observations in buckets by upper bound (Prometheus's
// cumulative "le" buckets when written) and keeps their sum. NaN
// observations are dropped.
type Histogram struct {
	upper  []float64       // shared by the family: sorted, finite
	counts []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum    atomic.Uint64   // float64 bits
}

func newHistogram(upper []float64) *Histogram {
	return &Histogram{upper: upper, counts: make([]atomic.Uint64, len(upper)+1)}
}

// Observe records one value (for latencies: seconds).
func (h *Histogram) Observe(v float64) {
	if math.IsNaN(v) {
		return
	}
	// The first bucket whose upper bound is >= v: "le" is inclusive.
	h.counts[sort.SearchFloat64s(h.upper, v)].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Snapshot returns the cumulative count at each upper bound (the last
// entry is +Inf, the total count) and the sum of the observations.
func (h *Histogram) Snapshot() (cumulative []uint64, sum float64) {
	cumulative = make([]uint64, len(h.counts))
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
		cumulative[i] = n
	}
	return cumulative, math.Float64frombits(h.sum.Load())
}

// HistogramVec is a histogram family with labels; every series has the
// family's buckets.
type HistogramVec struct {
	v     *vec[Histogram]
	upper []float64
}

// With returns the histogram of these label values, creating it empty.
func (h *HistogramVec) With(values ...string) *Histogram { return h.v.with(values) }

// NewHistogramVec registers a histogram family with the given upper
// bounds (finite, strictly increasing; "+Inf" is implied) and label names
// ("le" is the buckets' own).
func (r *Registry) NewHistogramVec(name, help string, upper []float64, labels ...string) (*HistogramVec, error) {
	if len(upper) == 0 {
		return nil, fmt.Errorf("metrics: %s: a histogram needs at least one bucket", name)
	}
	for i, u := range upper {
		if math.IsNaN(u) || math.IsInf(u, 0) {
			return nil, fmt.Errorf("metrics: %s: bucket %v is not finite (+Inf is implied)", name, u)
		}
		if i > 0 && u <= upper[i-1] {
			return nil, fmt.Errorf("metrics: %s: buckets must increase: %v after %v", name, u, upper[i-1])
		}
	}
	if slices.Contains(labels, "le") {
		return nil, fmt.Errorf("metrics: %s: label name \"le\" is reserved for histogram buckets", name)
	}
	upper = slices.Clone(upper)
	les := make([]string, len(upper)+1)
	for i, u := range upper {
		les[i] = strconv.FormatFloat(u, 'g', -1, 64)
	}
	les[len(upper)] = "+Inf"
	v := newVec[Histogram](len(labels))
	v.make = func() *Histogram { return newHistogram(upper) }
	f := &family{name: name, help: help, typ: HistogramType, labels: labels}
	f.write = func(w *bufio.Writer) {
		v.each(func(values []string, h *Histogram) {
			cum, sum := h.Snapshot()
			for i, n := range cum {
				writeSeries(w, name+"_bucket", labels, values, "le", les[i], strconv.FormatUint(n, 10))
			}
			writeSeries(w, name+"_sum", labels, values, "", "", formatFloat(sum))
			writeSeries(w, name+"_count", labels, values, "", "", strconv.FormatUint(cum[len(cum)-1], 10))
		})
	}
	if err := r.register(f); err != nil {
		return nil, err
	}
	return &HistogramVec{v: v, upper: upper}, nil
}
