package admin

// PeerConnectionsMetric is the sidecar's count of the inbound connections
// it accepted or refused, by outcome and peer (labels "outcome", "peer"):
// what weftctl dashboard draws the mesh graph's edges from.
const PeerConnectionsMetric = "weft_sidecar_inbound_peer_connections_total"

// The outcomes of PeerConnectionsMetric: what the receiving sidecar
// verified of the connection.
const (
	// PeerMTLS: the handshake completed with the client's X.509-SVID
	// verified; the peer is its SPIFFE ID.
	PeerMTLS = "mtls"
	// PeerTLS: TLS without a client certificate (a chain that does not
	// require one; weft's control plane never configures one); the peer
	// is the source address.
	PeerTLS = "tls"
	// PeerPlaintext: accepted without TLS (a PERMISSIVE port); the peer is
	// the source address.
	PeerPlaintext = "plaintext"
	// PeerRefused: refused (no or bad certificate, plaintext to a STRICT
	// port, denied by policy); the peer is the source address, never the
	// ID a certificate claimed.
	PeerRefused = "refused"
	// PeerOther is the peer past the sidecar's budget of peers.
	PeerOther = "other"
)
