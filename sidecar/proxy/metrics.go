package proxy

import (
	"github.com/weftmesh/weft/api/admin"
	wm "github.com/weftmesh/weft/internal/metrics"
)

// Directions: which listener accepted a connection.
const (
	inbound  = "inbound"
	outbound = "outbound"
)

// metrics are the proxy's Prometheus series, prefix weft_sidecar_.
type metrics struct {
	active       *wm.GaugeVec   // direction
	total        *wm.CounterVec // direction
	bytes        *wm.CounterVec // direction, flow
	handshakes   *wm.CounterVec // direction
	hsFailures   *wm.CounterVec // direction, reason
	connFailures *wm.CounterVec // direction, reason
	denials      *wm.CounterVec // direction, policy
	shadowDenies *wm.CounterVec // direction, policy
	bindings     *wm.CounterVec // result: literal, dns, lookup, mismatch_denied, mismatch_flagged
	nameUnknown  *wm.CounterVec // result: denied, flagged
	peers        *peerCounter   // inbound, by outcome and peer (peers.go)
	httpRequests *wm.CounterVec // decision: allow, audit, deny
	acceptErrors *wm.CounterVec // direction
	timeouts     *wm.CounterVec // direction, kind: handshake, idle, write

	// bytes children, resolved once: they are touched per copied chunk.
	bytesIn, bytesOut [2]*wm.Counter // [inbound, outbound]
}

func newMetrics(reg *wm.Registry) (*metrics, error) {
	active, err := reg.NewGaugeVec("weft_sidecar_connections", "Open proxied connections (handshaking ones included).", "direction")
	if err != nil {
		return nil, err
	}
	peers, err := newPeerCounter(reg)
	if err != nil {
		return nil, err
	}
	m := &metrics{active: active, peers: peers}
	for _, f := range []struct {
		vec        **wm.CounterVec
		name, help string
		labels     []string
	}{
		{&m.total, "weft_sidecar_connections_total", "Connections accepted.", []string{"direction"}},
		{&m.bytes, "weft_sidecar_bytes_total",
			"Bytes proxied; flow to_upstream is from the accepting side to the dialled one, to_downstream the reverse.",
			[]string{"direction", "flow"}},
		{&m.handshakes, admin.TLSHandshakesMetric,
			"Completed mTLS handshakes (inbound: terminated; outbound: originated).", []string{"direction"}},
		{&m.hsFailures, admin.HandshakeFailuresMetric,
			"Refused or failed mTLS handshakes by reason (no_client_cert, unknown_ca, expired, bad_spiffe_id, authz_denied, not_tls, tls_version, bad_certificate, timeout, peer_closed, no_svid, other).",
			[]string{"direction", "reason"}},
		{&m.connFailures, "weft_sidecar_connection_failures_total",
			"Connections closed without being proxied, by reason (no_config, no_chain, original_dst, no_cluster, on_demand, no_endpoint, upstream_connect, blackhole, http_denied, bad_request, unsupported, name_mismatch, name_unknown, loop, overload).",
			[]string{"direction", "reason"}},
		{&m.denials, "weft_sidecar_authz_denials_total",
			"Connections refused by an RBAC filter, and requests by an HTTP RBAC filter (inbound h2 chains); policy is the matching DENY policy, empty when no ALLOW policy matched.",
			[]string{"direction", "policy"}},
		{&m.shadowDenies, "weft_sidecar_authz_shadow_denials_total",
			"Connections a shadow (audit-only) RBAC filter would have refused.", []string{"direction", "policy"}},
		{&m.bindings, "weft_sidecar_egress_name_bindings_total",
			"Egress connections an EgressPolicy rule allowed by name, by how the name bound to the destination address (literal, dns, lookup) or what happened when it did not (mismatch_denied under Enforce, mismatch_flagged under Audit).",
			[]string{"result"}},
		{&m.nameUnknown, "weft_sidecar_egress_name_unknown_total",
			"Egress connections whose name (TLS server_name, HTTP Host) could not be learned where a rule by name decides more strictly than their chain: denied under Enforce, flagged under Audit.",
			[]string{"result"}},
		{&m.acceptErrors, "weft_sidecar_accept_errors_total",
			"Accept errors on a listener (out of file descriptors, aborted connections); the listener backs off and accepts again.",
			[]string{"direction"}},
		{&m.timeouts, "weft_sidecar_timeouts_total",
			"Connections closed by a timeout: handshake (not established within the handshake timeout of accept), idle (no byte either way for the idle timeout), write (a peer did not read for the write timeout).",
			[]string{"direction", "kind"}},
		{&m.httpRequests, "weft_sidecar_egress_http_requests_total",
			"Plaintext HTTP/1 requests on egress HTTP chains, each decided on its own Host (a CONNECT as TCP to the destination): allow, audit (forwarded and flagged) or deny (answered and the connection closed).",
			[]string{"decision"}},
	} {
		v, err := reg.NewCounterVec(f.name, f.help, f.labels...)
		if err != nil {
			return nil, err
		}
		*f.vec = v
	}
	for i, d := range []string{inbound, outbound} {
		m.bytesIn[i] = m.bytes.With(d, "to_upstream")
		m.bytesOut[i] = m.bytes.With(d, "to_downstream")
		m.active.With(d)
		m.total.With(d)
		m.handshakes.With(d)
	}
	return m, nil
}

func dirIndex(direction string) int {
	if direction == outbound {
		return 1
	}
	return 0
}
