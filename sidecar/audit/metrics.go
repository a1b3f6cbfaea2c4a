package audit

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Drop reasons (label of weft_sidecar_audit_dropped_total).
const (
	DropBufferFull = "buffer_full" // the buffer was full when the event was recorded
	DropRejected   = "rejected"    // the control plane refused the batch as malformed
)

// metrics are the recorder's Prometheus series plus plain counters for
// Stats.
type metrics struct {
	events, delivered, failures prometheus.Counter
	dropped                     *prometheus.CounterVec

	eventsN, deliveredN, fullN, rejectedN, failuresN atomic.Int64
}

func newMetrics(reg prometheus.Registerer, buffered func() float64) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_sidecar_audit_events_total",
			Help: "Egress audit events recorded."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_sidecar_audit_delivered_total",
			Help: "Egress audit events the control plane acknowledged."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_sidecar_audit_send_failures_total",
			Help: "Batches of audit events that failed to reach the control plane (and are resent)."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_sidecar_audit_dropped_total",
			Help: "Egress audit events never delivered to the control plane, by reason (buffer_full, rejected)."}, []string{"reason"}),
	}
	buf := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "weft_sidecar_audit_buffered",
		Help: "Egress audit events waiting for the control plane's acknowledgement."}, buffered)
	for _, c := range []prometheus.Collector{m.events, m.delivered, m.failures, m.dropped, buf} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.dropped.WithLabelValues(DropBufferFull)
	m.dropped.WithLabelValues(DropRejected)
	return m, nil
}

func (m *metrics) recorded() {
	m.events.Inc()
	m.eventsN.Add(1)
}

func (m *metrics) failed() {
	m.failures.Inc()
	m.failuresN.Add(1)
}

func (m *metrics) acked(n int) {
	m.delivered.Add(float64(n))
	m.deliveredN.Add(int64(n))
}

func (m *metrics) drop(reason string, n int) {
	m.dropped.WithLabelValues(reason).Add(float64(n))
	if reason == DropBufferFull {
		m.fullN.Add(int64(n))
	} else {
		m.rejectedN.Add(int64(n))
	}
}
