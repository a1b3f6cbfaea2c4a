// Package metrics is the sidecar's Prometheus instrumentation: counters,
// gauges, histograms and callbacks registered in a [Registry] that writes the text
// exposition format (version 0.0.4) that every Prometheus scraper reads.
//
// The sidecar runs in every pod, so it carries its own small registry
// rather than github.com/prometheus/client_golang: that library, with the
// modules it pulls in (client_model, common, procfs, and through them
// expvar and database/sql), was 0.73 MB of the sidecar's binary — pages
// mapped in every pod — plus its descriptors on the heap, and a scrape built
// a protobuf message per series before writing it. Here a scrape writes
// straight from the atomics. The control plane, one per cluster, keeps
// client_golang.
//
// Values are integers (every weft sidecar series counts something) except
// what a [Func] returns and a [Histogram]'s sum. Label values are created on first use and kept;
// every label weft uses has a bounded set of values (directions, reasons,
// policy names from the configuration).
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Type is a series' Prometheus type.
type Type string

// The types the registry writes.
const (
	CounterType   Type = "counter"
	GaugeType     Type = "gauge"
	HistogramType Type = "histogram"
)

// ContentType is what /metrics answers with.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

var (
	nameRE  = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// family is one metric name: its help, type, label names and series.
type family struct {
	name, help string
	typ        Type
	labels     []string
	// collect reports the family's samples, ordered by label values.
	collect func(emit func(values []string, v float64))
	// write, when set, writes the family's samples itself (histograms,
	// whose samples have suffixed names and an "le" label); collect is
	// then nil.
	write func(w *bufio.Writer)
}

// Registry holds metric families and writes them.
type Registry struct {
	mu   sync.Mutex
	fams []*family // in registration order
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{} }

func (r *Registry) register(f *family) error {
	if !nameRE.MatchString(f.name) {
		return fmt.Errorf("metrics: invalid metric name %q", f.name)
	}
	for _, l := range f.labels {
		if !labelRE.MatchString(l) || strings.HasPrefix(l, "__") {
			return fmt.Errorf("metrics: %s: invalid label name %q", f.name, l)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.fams {
		if g.name == f.name {
			return fmt.Errorf("metrics: %s registered twice", f.name)
		}
	}
	r.fams = append(r.fams, f)
	return nil
}

// Counter is a monotonically increasing integer.
type Counter struct{ v atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value is the current count.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Gauge is an integer that goes up and down.
type Gauge struct{ v atomic.Int64 }

// Inc adds one.
func (g *Gauge) Inc() { g.v.Add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.v.Add(-1) }

// Set sets the value.
func (g *Gauge) Set(v int64) { g.v.Store(v) }

// Value is the current value.
func (g *Gauge) Value() int64 { return g.v.Load() }

// vec holds one family's series by label values.
type vec[T any] struct {
	n      int       // label count
	make   func() *T // a new series
	mu     sync.RWMutex
	series map[string]*T // key: label values joined by "\xff"
	values map[*T][]string
}

func (v *vec[T]) with(values []string) *T {
	if len(values) != v.n {
		panic(fmt.Sprintf("metrics: %d label values for %d labels", len(values), v.n))
	}
	// The key is built on the stack and looked up without a string
	// allocation: With runs per connection.
	var buf [128]byte
	key := buf[:0]
	for i, val := range values {
		if i > 0 {
			key = append(key, 0xff)
		}
		key = append(key, val...)
	}
	v.mu.RLock()
	s := v.series[string(key)]
	v.mu.RUnlock()
	if s != nil {
		return s
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if s = v.series[string(key)]; s == nil {
		s = v.make()
		v.series[string(key)] = s
		v.values[s] = slices.Clone(values)
	}
	return s
}

// each calls f for every series, ordered by label values.
func (v *vec[T]) each(f func(values []string, s *T)) {
	v.mu.RLock()
	type kv struct {
		values []string
		s      *T
	}
	all := make([]kv, 0, len(v.series))
	for _, s := range v.series {
		all = append(all, kv{v.values[s], s})
	}
	v.mu.RUnlock()
	slices.SortFunc(all, func(a, b kv) int { return slices.Compare(a.values, b.values) })
	for _, e := range all {
		f(e.values, e.s)
	}
}

func newVec[T any](n int) *vec[T] {
	return &vec[T]{n: n, make: func() *T { return new(T) }, series: map[string]*T{}, values: map[*T][]string{}}
}

// CounterVec is a counter family with labels.
type CounterVec struct {
	v *vec[Counter]
}

// With returns the counter of these label values (one per label name, in
// order), creating it at zero on first use.
func (c *CounterVec) With(values ...string) *Counter { return c.v.with(values) }

// GaugeVec is a gauge family with labels.
type GaugeVec struct {
	v *vec[Gauge]
}

// With returns the gauge of these label values, creating it at zero.
func (g *GaugeVec) With(values ...string) *Gauge { return g.v.with(values) }

// NewCounterVec registers a counter family with the given label names.
func (r *Registry) NewCounterVec(name, help string, labels ...string) (*CounterVec, error) {
	v, err := registerVec(r, name, help, CounterType, labels, func(c *Counter) float64 { return float64(c.Value()) })
	if err != nil {
		return nil, err
	}
	return &CounterVec{v}, nil
}

// NewGaugeVec registers a gauge family with the given label names.
func (r *Registry) NewGaugeVec(name, help string, labels ...string) (*GaugeVec, error) {
	v, err := registerVec(r, name, help, GaugeType, labels, func(g *Gauge) float64 { return float64(g.Value()) })
	if err != nil {
		return nil, err
	}
	return &GaugeVec{v}, nil
}

// registerVec registers a family of typ whose series are a new vec's, each
// sampled as value of it.
func registerVec[T any](r *Registry, name, help string, typ Type, labels []string, value func(*T) float64) (*vec[T], error) {
	v := newVec[T](len(labels))
	f := &family{name: name, help: help, typ: typ, labels: labels, collect: func(emit func([]string, float64)) {
		v.each(func(values []string, s *T) { emit(values, value(s)) })
	}}
	if err := r.register(f); err != nil {
		return nil, err
	}
	return v, nil
}

// NewCounter registers a counter without labels.
func (r *Registry) NewCounter(name, help string) (*Counter, error) {
	v, err := r.NewCounterVec(name, help)
	if err != nil {
		return nil, err
	}
	return v.With(), nil
}

// Emit reports one sample of a [Func] family: its value and label values.
type Emit func(value float64, labelValues ...string)

// NewFunc registers a family whose samples f reports at every scrape, for
// state that lives elsewhere (a client's status, a certificate's expiry).
func (r *Registry) NewFunc(name, help string, typ Type, labels []string, f func(emit Emit)) error {
	return r.register(&family{name: name, help: help, typ: typ, labels: labels, collect: func(emit func([]string, float64)) {
		type sample struct {
			values []string
			v      float64
		}
		var samples []sample
		f(func(v float64, values ...string) {
			if len(values) != len(labels) {
				panic(fmt.Sprintf("metrics: %s: %d label values for %d labels", name, len(values), len(labels)))
			}
			samples = append(samples, sample{slices.Clone(values), v})
		})
		slices.SortFunc(samples, func(a, b sample) int { return slices.Compare(a.values, b.values) })
		for _, s := range samples {
			emit(s.values, s.v)
		}
	}})
}

// NewGaugeFunc registers a gauge without labels whose value f returns.
func (r *Registry) NewGaugeFunc(name, help string, f func() float64) error {
	return r.NewFunc(name, help, GaugeType, nil, func(emit Emit) { emit(f()) })
}

// WriteTo writes every family in the text exposition format, in
// registration order, series ordered by label values. A family without
// series is written with its HELP and TYPE only.
func (r *Registry) WriteTo(out io.Writer) (int64, error) {
	r.mu.Lock()
	fams := slices.Clone(r.fams)
	r.mu.Unlock()
	cw := &countingWriter{w: out}
	w := bufio.NewWriter(cw)
	for _, f := range fams {
		w.WriteString("# HELP ")
		w.WriteString(f.name)
		w.WriteByte(' ')
		w.WriteString(escapeHelp(f.help))
		w.WriteString("\n# TYPE ")
		w.WriteString(f.name)
		w.WriteByte(' ')
		w.WriteString(string(f.typ))
		w.WriteByte('\n')
		if f.write != nil {
			f.write(w)
			continue
		}
		f.collect(func(values []string, v float64) { writeSample(w, f, values, formatFloat(v)) })
	}
	err := w.Flush()
	return cw.n, err
}

// Value is the current value of one series (for tests and status pages):
// the family's name and the series' label values.
func (r *Registry) Value(name string, labelValues ...string) (float64, bool) {
	r.mu.Lock()
	i := slices.IndexFunc(r.fams, func(f *family) bool { return f.name == name })
	var f *family
	if i >= 0 {
		f = r.fams[i]
	}
	r.mu.Unlock()
	if f == nil {
		return 0, false
	}
	if f.collect == nil {
		return 0, false // a histogram: read it from its Histogram
	}
	var v float64
	found := false
	f.collect(func(values []string, x float64) {
		if !found && slices.Equal(values, labelValues) {
			v, found = x, true
		}
	})
	return v, found
}

// ServeHTTP serves the exposition (uncompressed: a sidecar's is a few KB).
func (r *Registry) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", ContentType)
	_, _ = r.WriteTo(w)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func writeSample(w *bufio.Writer, f *family, values []string, value string) {
	writeSeries(w, f.name, f.labels, values, "", "", value)
}

// writeSeries writes one sample line: name, the labels with their values,
// then extra="extraValue" when extra is set.
func writeSeries(w *bufio.Writer, name string, labels, values []string, extra, extraValue, value string) {
	w.WriteString(name)
	if len(values) > 0 || extra != "" {
		w.WriteByte('{')
		for i, v := range values {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(labels[i])
			w.WriteString(`="`)
			w.WriteString(escapeLabel(v))
			w.WriteByte('"')
		}
		if extra != "" {
			if len(values) > 0 {
				w.WriteByte(',')
			}
			w.WriteString(extra)
			w.WriteString(`="`)
			w.WriteString(extraValue)
			w.WriteByte('"')
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(value)
	w.WriteByte('\n')
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

// formatFloat writes a sample value as Prometheus does: integers without
// an exponent where exact, +Inf, -Inf and NaN by name.
func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	case v == math.Trunc(v) && math.Abs(v) < 1<<53:
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
