package admin

// The sidecar's metrics (its /metrics on the health port) that weftctl
// reads: status and the dashboard the certificate's expiry, verify the
// handshakes, stat and the dashboard the HTTP golden metrics.
const (
	// SVIDExpiryMetric: when the sidecar's current X.509-SVID expires
	// (Unix time).
	SVIDExpiryMetric = "weft_sidecar_svid_expiry_timestamp_seconds"
	// TLSHandshakesMetric: the mTLS handshakes the sidecar completed, by
	// direction (inbound, outbound).
	TLSHandshakesMetric = "weft_sidecar_tls_handshakes_total"
	// HandshakeFailuresMetric: connections whose handshake failed, by
	// direction and reason (not_tls: plaintext to a port that wants mTLS).
	HandshakeFailuresMetric = "weft_sidecar_handshake_failures_total"
	// ReasonNotTLS is HandshakeFailuresMetric's reason for plaintext that
	// reached a port that wants mTLS.
	ReasonNotTLS = "not_tls"
	// HTTPRequestsMetric and HTTPLatencyMetric: the HTTP requests the
	// sidecar finished and their durations (sidecar/l7), by direction,
	// route, destination, peer and status class (and gRPC status).
	HTTPRequestsMetric = "weft_sidecar_http_requests_total"
	HTTPLatencyMetric  = "weft_sidecar_http_request_duration_seconds"
)
