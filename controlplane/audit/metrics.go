package audit

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	apiaudit "github.com/weftmesh/weft/api/audit"
)

type serviceMetrics struct {
	events    *prometheus.CounterVec // result: stored, duplicate, rate_limited
	refused   *prometheus.CounterVec // code
	pruned    prometheus.Counter
	evicted   prometheus.Counter
	clamped   prometheus.Counter
	truncated *prometheus.CounterVec // field
	dest      *destMetrics
}

func newServiceMetrics(reg prometheus.Registerer, top int, clk clock.PassiveClock, store *Store) (*serviceMetrics, error) {
	m := &serviceMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_audit_events_total",
			Help: "Audit events received, by result: stored, duplicate (already stored: a resend), or rate_limited (refused with the stream: the sidecar resends them)."}, []string{"result"}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_audit_evicted_total",
			Help: "Audit events evicted, oldest first, because the store reached its cap (weft_audit_store_capacity)."}),
		clamped: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_audit_times_clamped_total",
			Help: "Audit events whose time was further in the future than the allowed clock skew, clamped to their receive time."}),
		truncated: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_audit_fields_truncated_total",
			Help: "Audit event fields cut to their cap, by field."}, []string{"field"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_audit_streams_refused_total",
			Help: "Access-log streams ended with an error, by gRPC code."}, []string{"code"}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_audit_pruned_total",
			Help: "Audit events removed by retention."}),
		dest: newDestMetrics(top, 10*time.Minute, clk),
	}
	storeEvents := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "weft_audit_store_events",
		Help: "Audit events in the store."}, func() float64 { return float64(store.Len()) })
	storeCap := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "weft_audit_store_capacity",
		Help: "The most audit events the store keeps; past it the oldest are evicted."}, func() float64 { return float64(store.Cap()) })
	for _, c := range []prometheus.Collector{m.events, m.refused, m.pruned, m.evicted, m.clamped, m.truncated, m.dest, storeEvents, storeCap} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *serviceMetrics) stored(added, dup int) {
	m.events.WithLabelValues("stored").Add(float64(added))
	m.events.WithLabelValues("duplicate").Add(float64(dup))
}

// otherDestination is the destination label of everything outside the
// tracked set.
const otherDestination = "other"

// destMetrics serves weft_egress_connections_total{destination,decision}
// and weft_egress_bytes_total{destination,decision,direction} with at most
// max destination values plus "other".
//
// A destination gets its own label while a slot is free; once all are
// taken, new destinations count under "other" and are ranked by their
// connections. Every interval, tracked destinations that saw no connection
// since the last rotation give up their slot (their series disappear) and
// the busiest ranked destinations take the free slots. A label's counter
// starts when it is admitted and "other" never gives counts back, so every
// series is monotonic; the labelled set converges to the busiest recent
// destinations.
type destMetrics struct {
	conns, bytes *prometheus.Desc
	max          int
	interval     time.Duration
	clock        clock.PassiveClock

	mu          sync.Mutex
	tracked     map[string]*destCounts
	other       *destCounts
	candidates  map[string]int64 // connections of untracked destinations since the last rotation
	lastRotated time.Time
}

type destCounts struct {
	byDecision map[string]*counts
	active     bool // a connection since the last rotation
}

type counts struct{ conns, sent, received float64 }

func newDestCounts() *destCounts { return &destCounts{byDecision: map[string]*counts{}} }

func newDestMetrics(max int, interval time.Duration, clk clock.PassiveClock) *destMetrics {
	return &destMetrics{
		conns: prometheus.NewDesc("weft_egress_connections_total",
			"Egress connections by destination (the busiest, the rest \"other\") and decision.", []string{"destination", "decision"}, nil),
		bytes: prometheus.NewDesc("weft_egress_bytes_total",
			"Egress bytes by destination, decision and direction (sent: app to destination).", []string{"destination", "decision", "direction"}, nil),
		max: max, interval: interval, clock: clk,
		tracked: map[string]*destCounts{}, other: newDestCounts(), candidates: map[string]int64{}, lastRotated: clk.Now(),
	}
}

func (d *destMetrics) observe(e apiaudit.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if now := d.clock.Now(); now.Sub(d.lastRotated) >= d.interval {
		d.rotate()
		d.lastRotated = now
	}
	key := e.Destination()
	dc := d.tracked[key]
	switch {
	case dc != nil:
	case len(d.tracked) < d.max:
		dc = newDestCounts()
		d.tracked[key] = dc
	default:
		dc = d.other
		if _, ok := d.candidates[key]; ok || len(d.candidates) < 10*d.max {
			d.candidates[key]++
		}
	}
	dc.active = true
	c := dc.byDecision[e.Decision]
	if c == nil {
		c = &counts{}
		dc.byDecision[e.Decision] = c
	}
	c.conns++
	c.sent += float64(e.BytesSent)
	c.received += float64(e.BytesReceived)
}

// rotate frees the slots of idle destinations and gives them to the
// busiest candidates.
func (d *destMetrics) rotate() {
	for k, dc := range d.tracked {
		if !dc.active {
			delete(d.tracked, k)
		}
		dc.active = false
	}
	type cand struct {
		key string
		n   int64
	}
	var cs []cand
	for k, n := range d.candidates {
		cs = append(cs, cand{k, n})
	}
	slices.SortFunc(cs, func(a, b cand) int { return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.key, b.key)) })
	for _, c := range cs {
		if len(d.tracked) >= d.max {
			break
		}
		d.tracked[c.key] = newDestCounts()
	}
	d.candidates = map[string]int64{}
}

func (d *destMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- d.conns
	ch <- d.bytes
}

func (d *destMetrics) Collect(ch chan<- prometheus.Metric) {
	d.mu.Lock()
	defer d.mu.Unlock()
	emit := func(dest string, dc *destCounts) {
		for decision, c := range dc.byDecision {
			ch <- prometheus.MustNewConstMetric(d.conns, prometheus.CounterValue, c.conns, dest, decision)
			ch <- prometheus.MustNewConstMetric(d.bytes, prometheus.CounterValue, c.sent, dest, decision, "sent")
			ch <- prometheus.MustNewConstMetric(d.bytes, prometheus.CounterValue, c.received, dest, decision, "received")
		}
	}
	for k, dc := range d.tracked {
		emit(k, dc)
	}
	emit(otherDestination, d.other)
}
