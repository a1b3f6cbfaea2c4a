// Package proxy is the sidecar's data plane: the inbound (15006) and
// outbound (15001) listeners, mTLS in and out, protocol sniffing,
// authorization, forwarding, and the admin endpoint on 127.0.0.1:15000.
//
// # The room
//
// A connection reads the current [xds.Config] once, when accepted, and keeps
// the filter chain and cluster it chose: configuration pushes never touch
// open connections. Inbound: the original destination (SO_ORIGINAL_DST)
// and the first bytes (a TLS ClientHello or not, sniffed without being
// consumed) choose the chain with [xds.Listener.Match]; a TLS chain
// terminates TLS 1.3 with the pod's X.509-SVID, requires the client's
// X.509-SVID, verifies it against the trust bundle and authorizes it inside
// the handshake (trust domain, then the chain's RBAC: DENY filters, then
// ALLOW filters; shadow filters only count and log); a plaintext chain
// (PERMISSIVE) takes the bytes as they come. Then the bytes go to the app
// on 127.0.0.1. Outbound: the original destination, the TLS SNI and ALPN
// and, for plaintext, HTTP/1 or h2c choose the chain; in-mesh clusters get
// an endpoint (round robin or least-request, healthy only, one retry of a
// failed connect) and mTLS whose peer must present one of the cluster's
// SPIFFE IDs; PassthroughCluster dials the original destination;
// BlackHoleCluster closes before a byte leaves; HTTP chains read the
// request head and route it by Host (forward it, or answer the route's
// direct response). The egress decision itself is encoded in the chains by
// the control plane; this room only follows them.
//
// Certificates and bundles come from go-spiffe sources read per handshake
// (a renewed SVID applies to the next connection, open ones keep theirs)
// and are verified by go-spiffe's tlsconfig. Session resumption is off, so
// every connection is authenticated and authorized in full.
//
// Bytes are copied both ways, byte-exact, with half-close: when one side
// finishes sending, the other side's sending half is shut (FIN, or TLS
// close_notify) and the opposite direction carries on. The goroutine that
// accepted a connection sniffs, dials and handshakes, then hands it to two
// flows (one per direction, each on a goroutine of its own) and ends, so
// the deep stack of a handshake does not stay with the connection. A flow
// holds no buffer while it waits: a plaintext TCP side is read only once
// the poller reports it readable, into a pooled 32 KiB buffer given back
// as soon as its bytes are written; a TLS side is read (inside crypto/tls,
// under the idle deadline) into 2 KiB, and into a pooled 16 KiB buffer (a
// whole record) while reads keep filling what they get. A flow silent for
// Config.IdleParkAfter (1s) gives up its buffer and its goroutine: it waits
// in the proxy's one epoll set (park.go) and a new goroutine resumes it
// when its socket is readable. An idle connection is then only what
// crypto/tls keeps for it (~14 KB: the peer's parsed chain, record
// buffers, AEAD state) and ~1.5 KB of ours.
//
// # Observability
//
// /connections lists live connections as [ConnInfo] (peer SPIFFE ID, TLS
// version, cipher, peer certificate expiry, bytes): what `weftctl verify`
// reads. /config_dump shows the current configuration with its versions;
// /debug/pprof/ serves Go's profiles of the sidecar (heap, goroutines, CPU).
// Metrics (prefix weft_sidecar_): connections{direction},
// connections_total, bytes_total{direction,flow},
// tls_handshakes_total, handshake_failures_total{direction,reason},
// connection_failures_total{direction,reason},
// authz_denials_total{direction,policy},
// authz_shadow_denials_total{direction,policy}, parked_flows.
//
// Imports: sidecar/xds (the model), sidecar/capture (OriginalDst only),
// api/audit (the egress record), internal/metrics, go-spiffe. Never
// controlplane/*.
package proxy
