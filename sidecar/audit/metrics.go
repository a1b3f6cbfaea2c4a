package audit

import (
	wm "github.com/weftmesh/weft/internal/metrics"
)

// Drop reasons (label of weft_sidecar_audit_dropped_total).
const (
	DropBufferFull = "buffer_full" // the buffer was full when the event was recorded
	DropRejected   = "rejected"    // the control plane refused the batch as malformed
)

// metrics are the recorder's Prometheus series; Stats reads the same
// counters.
type metrics struct {
	events, delivered, failures *wm.Counter
	full, rejected              *wm.Counter // weft_sidecar_audit_dropped_total by reason
}

func newMetrics(reg *wm.Registry, buffered func() float64) (*metrics, error) {
	m := &metrics{}
	for _, c := range []struct {
		dst        **wm.Counter
		name, help string
	}{
		{&m.events, "weft_sidecar_audit_events_total", "Egress audit events recorded."},
		{&m.delivered, "weft_sidecar_audit_delivered_total", "Egress audit events the control plane acknowledged."},
		{&m.failures, "weft_sidecar_audit_send_failures_total", "Batches of audit events that failed to reach the control plane (and are resent)."},
	} {
		v, err := reg.NewCounter(c.name, c.help)
		if err != nil {
			return nil, err
		}
		*c.dst = v
	}
	dropped, err := reg.NewCounterVec("weft_sidecar_audit_dropped_total",
		"Egress audit events never delivered to the control plane, by reason (buffer_full, rejected).", "reason")
	if err != nil {
		return nil, err
	}
	m.full, m.rejected = dropped.With(DropBufferFull), dropped.With(DropRejected)
	if err := reg.NewGaugeFunc("weft_sidecar_audit_buffered", "Egress audit events waiting for the control plane's acknowledgement.", buffered); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) recorded() { m.events.Inc() }

func (m *metrics) failed() { m.failures.Inc() }

func (m *metrics) acked(n int) { m.delivered.Add(uint64(n)) }

func (m *metrics) drop(reason string, n int) {
	if reason == DropBufferFull {
		m.full.Add(uint64(n))
	} else {
		m.rejected.Add(uint64(n))
	}
}
