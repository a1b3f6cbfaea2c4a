package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Directions: which listener accepted a connection.
const (
	inbound  = "inbound"
	outbound = "outbound"
)

// metrics are the proxy's Prometheus series, prefix weft_sidecar_.
type metrics struct {
	active       *prometheus.GaugeVec   // direction
	total        *prometheus.CounterVec // direction
	bytes        *prometheus.CounterVec // direction, flow
	handshakes   *prometheus.CounterVec // direction
	hsFailures   *prometheus.CounterVec // direction, reason
	connFailures *prometheus.CounterVec // direction, reason
	denials      *prometheus.CounterVec // direction, policy
	shadowDenies *prometheus.CounterVec // direction, policy

	// bytes children, resolved once: they are touched per copied chunk.
	bytesIn, bytesOut [2]prometheus.Counter // [inbound, outbound]
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_sidecar_connections",
			Help: "Open proxied connections (handshaking ones included)."}, []string{"direction"}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_sidecar_connections_total",
			Help: "Connections accepted."}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_sidecar_bytes_total",
			Help: "Bytes proxied; flow to_upstream is from the accepting side to the dialled one, to_downstream the reverse."},
			[]string{"direction", "flow"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_sidecar_tls_handshakes_total",
			Help: "Completed mTLS handshakes (inbound: terminated; outbound: originated)."}, []string{"direction"}),
		hsFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_sidecar_handshake_failures_total",
			Help: "Refused or failed mTLS handshakes by reason (no_client_cert, unknown_ca, expired, bad_spiffe_id, authz_denied, not_tls, tls_version, bad_certificate, timeout, peer_closed, no_svid, other)."},
			[]string{"direction", "reason"}),
		connFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_sidecar_connection_failures_total",
			Help: "Connections closed without being proxied, by reason (no_config, no_chain, original_dst, no_cluster, no_endpoint, upstream_connect, blackhole, http_denied, bad_request, unsupported)."},
			[]string{"direction", "reason"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_sidecar_authz_denials_total",
			Help: "Connections refused by an RBAC filter; policy is the matching DENY policy, empty when no ALLOW policy matched."},
			[]string{"direction", "policy"}),
		shadowDenies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_sidecar_authz_shadow_denials_total",
			Help: "Connections a shadow (audit-only) RBAC filter would have refused."}, []string{"direction", "policy"}),
	}
	for _, c := range []prometheus.Collector{m.active, m.total, m.bytes, m.handshakes, m.hsFailures, m.connFailures, m.denials, m.shadowDenies} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for i, d := range []string{inbound, outbound} {
		m.bytesIn[i] = m.bytes.WithLabelValues(d, "to_upstream")
		m.bytesOut[i] = m.bytes.WithLabelValues(d, "to_downstream")
		m.active.WithLabelValues(d)
		m.total.WithLabelValues(d)
		m.handshakes.WithLabelValues(d)
	}
	return m, nil
}

func dirIndex(direction string) int {
	if direction == outbound {
		return 1
	}
	return 0
}
