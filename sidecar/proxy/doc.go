// Package proxy is the sidecar's data plane: the inbound (15006) and
// outbound (15001) listeners, mTLS in and out, protocol sniffing,
// authorization, forwarding, and the admin endpoint on 127.0.0.1:15000.
//
// # Connections
//
// A connection reads the current [model.Config] once, when accepted, and keeps
// the filter chain and cluster it chose: configuration pushes never touch
// open connections. Inbound: the original destination (SO_ORIGINAL_DST)
// and the first bytes (a TLS ClientHello or not, sniffed without being
// consumed) choose the chain with [model.Listener.Match]; a TLS chain
// terminates TLS 1.3 with the pod's X.509-SVID, requires the client's
// X.509-SVID, verifies it against the trust bundle and authorizes it inside
// the handshake (trust domain, then the chain's RBAC: DENY filters, then
// ALLOW filters; shadow filters only count and log); a plaintext chain
// (PERMISSIVE) takes the bytes as they come. Then the bytes go to the app
// where the chain's cluster says (delivery.go): the original destination -
// the pod's own address, IPv4 or IPv6 as the peer reached it - from
// 127.0.0.6 (::6), so listeners on 127.0.0.1 only stay private; or, for
// the ports of the pod's weft.dev/inbound-loopback-ports, 127.0.0.1 (from
// 127.0.0.6). An original destination that is not a non-loopback address
// of the pod is refused (reason not_local). Outbound: the original destination, the TLS SNI and ALPN
// and, for plaintext, HTTP/1 or h2c choose the chain; in-mesh clusters get
// an endpoint (round robin or least-request, healthy only, one retry of a
// failed connect; a connection addressed to one of the healthy endpoints
// itself, a pod IP, gets that endpoint and no other) and mTLS whose peer must present one of the cluster's
// SPIFFE IDs; PassthroughCluster dials the original destination;
// BlackHoleCluster closes before a byte leaves; HTTP chains read each
// request head of the connection and route it by its own Host (forward it,
// or answer the route's direct response after the responses to the
// requests before it, and close): see "Every request decided" below. The
// egress decision itself is encoded in the chains by
// the control plane; this package only follows them.
//
// # HTTP service ports
//
// A chain whose target is a route configuration and that has no
// weft.egress metadata is an in-mesh HTTP service port (docs/l7.md): its
// connections are not copied but served by the l7 engine (l7.go). On the
// outbound listener one l7.ConnServer serves the app's connections
// (HTTP/1.1 keep-alive, h2c with prior knowledge); each request is routed
// on the configuration current when it arrives (the connection keeps the
// chain, so the route configuration, it chose at accept): the virtual host
// of its Host, then the first route whose path and headers match
// ([model.VirtualHost.Route]; none: 404 "weft: route not found", gRPC
// UNIMPLEMENTED), and is forwarded by an l7.Forwarder: the route's
// timeout (504), its retry policy (retry_on mapped to the forwarder's
// conditions, refused-stream as a reset; what may have reached the app is
// retried only for idempotent methods), a weighted split over its
// clusters (Config.SplitRand), then per request a peak-EWMA balancer over
// the cluster's healthy endpoints (outlier detection as the cluster says;
// retries within its retry budget), except that a request of a connection
// addressed to one of the cluster's endpoints goes to that endpoint on
// every try (l7.WithEndpoint). Every cluster of HTTP/2 with upstream
// TLS is reached over pooled HTTP/2 connections that are dialled and
// handshaken as the L4 path's (the cluster's SANs checked against the
// trust bundle, our SVID), offering ALPN h2 only. A request that switches
// protocols (HTTP/1.1 Connection: upgrade with an Upgrade header:
// WebSocket) is routed and balanced the same way, then goes on an mTLS
// connection of its own dialled and handshaken the same way but offering
// no ALPN (l7.Cluster.DialTunnel), so the server sidecar takes it on the
// port's L4 chain (connection-level RBAC; a denial is the app's 503
// connect failure) and copies bytes to the app; after the app's 101 the
// client sidecar hijacks the app's connection and copies both ways (a
// half-close passed on) until either side closes, the request counted in
// flight (balancer and metrics) until then; any other answer is delivered
// as a response and the app's connection goes on. Balancers, transports
// and their pooled connections are kept by cluster name across
// configurations (a balancer keeps what it learned of the endpoints that
// stay) and brought up to date when a request or connection first sees a
// new configuration; a cluster that is gone has its idle connections
// closed then. On the inbound listener the chain inbound|<port>|h2 (TLS
// with ALPN h2, matched before the port's L4 chain) terminates mTLS and
// applies the connection-level RBAC as any TLS chain, then an l7.Inbound
// per cluster authorizes each request by the HTTP RBAC filters of the
// connection's chain as the current configuration has it (DENY filters,
// then ALLOW filters, on the peer's SPIFFE ID, the port, the method and
// the decoded path without its query; with such filters a path that is not
// absolute, has ".", ".." or empty segments, or an escaped "/" or "\" is
// refused 400 first, l7.CheckPath; a denial is 403 or gRPC
// PERMISSION_DENIED, counted in authz_denials_total{direction="inbound"})
// and delivers each request it allows to the app through the route's
// cluster as the L4 path delivers a connection (from 127.0.0.6 / ::6 to
// the original destination, or 127.0.0.1 for a loopback port), in HTTP/1.1
// or h2c as the cluster's HTTP protocol says. A client that offers no h2
// takes the L4 chain, as before. Such connections are accounted as the
// others (caps, /connections, connections and bytes_total — an inbound
// one's bytes are its TLS records —, IdleTimeout and WriteTimeout), and
// are asked to finish when the proxy drains (GOAWAY, or a close after the
// response in progress); a tunnel lasts until either side closes it, or
// drain's deadline. The golden signals are
// weft_sidecar_http_requests_total{direction,route,dst,peer,class,grpc_status}
// (a switch is class 1xx, counted at the 101),
// http_request_duration_seconds (for a switch, the time to the 101),
// http_requests_in_flight, http_retries_total and
// http_ejections_total{cluster} (each outlier ejection, through the
// balancer's OnEject) (sidecar/l7.Metrics).
//
// # Every request decided
//
// On an HTTP egress chain (httpegress.go) a keep-alive or pipelined
// connection is forwarded request by request: each head is parsed as
// net/http's server parses it, routed by its Host, its name bound to the
// destination address, counted (weft_sidecar_egress_http_requests_total)
// and audited on its own record (BytesSent its head and body,
// BytesReceived its responses). Bodies are delimited by Content-Length or
// chunked coding and forwarded as they are; a request whose framing
// another server could read differently (both headers, Content-Lengths
// that differ, a coding other than chunked, white space before the colon)
// is refused with 400, so no request can hide in another's body. A denied
// request gets its 403 once the responses to the requests before it have
// gone to the app, and the connection closes. A CONNECT is decided as
// opaque TCP to the connection's destination (egress.DecideConn with
// Connect: never by its authority, never by an earlier request; where a
// rule by name applies to the port it has no name, name_unknown); an
// allowed CONNECT's 2xx, and a 101 to an Upgrade request, turn the rest of
// the connection into a tunnel that belongs to that request's record.
//
// # Egress names against a hostile app
//
// The app chooses every byte, so the sniffer reads first bytes as the
// servers that will receive them do. A ClientHello is read as crypto/tls's
// server reads one: over any number of TCP segments and of handshake
// records (1 byte to 16 KiB each, any record version below 0x1000,
// warning alerts in between skipped), the message up to 64 KiB, within
// maxSniff (128 KiB) of raw bytes and the sniff deadline
// (HandshakeTimeout, counted from accept). An HTTP/1 request is
// read as net/http's server reads one, plus the empty lines before the
// request line that RFC 9112 section 2.2 lets servers skip: any token as
// method (any case), a request line up to maxRequestHead (64 KiB), lines
// ending in LF or CRLF. The Host an HTTP chain routes by is net/http's
// (the absolute-form or CONNECT authority, else the Host header); two Host
// headers are refused (400) as net/http refuses them, and so is a head
// another server could read another name from (an authority and a Host
// that differ, a folded Host, "Host :", bytes a Host cannot hold). A word
// that could still become a request line but is followed by a pause of
// SniffTimeout is taken as another protocol, so client-first protocols
// are not held up. FuzzSniffHTTPAgainstNetHTTP and
// FuzzClientHelloAgainstCryptoTLS check the sniffer against net/http and
// crypto/tls.
//
// A connection's name is learned when its ClientHello carries one
// server_name host name that is a DNS name and no encrypted_client_hello
// extension (0xfe0d: the server_name is then only the outer, public name),
// or when an HTTP chain routes its request by Host. Otherwise (no
// server_name, ECH, several host names, bytes that are neither, a client
// that sends nothing first or stalls, a request past the bounds, an HTTP
// request on a chain without routes) its name is unknown, and it could be
// going to any host. Unless the chain it took is an EgressPolicy rule's
// about its address (a CIDR rule: that decision stands), it is decided as
// follows. The rules by name that apply to its destination are
// the egress chains left for it by the destination_port and prefix_ranges
// steps of the match ([model.Listener.Candidates]) that have server_names,
// and the virtual hosts naming hosts (not "*") in the route configurations
// of the HTTP chains among them. When the strictest of their decisions is
// stricter than the one of the chain the connection took (deny before
// audit before allow), that decision holds ([egress.NameUnknown]): "deny"
// (a Deny rule of an Enforce policy, or a chain that fails closed) wins
// over "audit" (a Deny rule of an Audit policy), so where several policies
// name hosts on the port, Enforce wins. Under deny the connection is
// refused before a byte leaves (connection_failures reason name_unknown,
// egress_name_unknown{result="denied"}); under audit it is forwarded and
// flagged (egress_name_unknown{result="flagged"}). Its audit event has the
// decision, the policy and rule of that strictest rule, and Reason
// "name_unknown: <why> (<rule> denies|audits <hosts> at <dst>)". Allow
// rules by name never make it stricter (a connection without a name cannot
// claim them), and under REGISTRY_ONLY the default chain refuses such a
// connection already (blackhole). A rule naming hosts without ports
// applies on every port: there, a connection that carries no name (plain
// TCP included) is decided by it.
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
// as soon as its bytes are sealed; a TLS side is read (inside crypto/tls,
// under the idle deadline) into 2 KiB, and into a pooled 32 KiB buffer
// while reads keep filling what they get, each read topped up with the
// records crypto/tls already holds. Either way one read makes one write:
// the records crypto/tls seals for one Write leave in one system call
// (coalesce.go), not one call per 16 KiB record. The L7 path's HTTP/2
// connections — between sidecars (mTLS, ALPN h2) and between a sidecar and
// an h2c (gRPC) app — are written by weft's own HTTP/2 client and server
// (sidecar/l7/h2), which hand a request or response they hold whole
// (HEADERS, DATA and trailers) to one Write from the goroutine that has
// it: one record, one system call. Every socket is read and written with
// internal/rawio's raw system calls (prefixConn for accepted connections,
// Proxy.dial for dialled ones, the plaintext copy's reads): the sockets are
// non-blocking, and a call made through the scheduler would wake the
// runtime's monitor thread each time the sidecar comes back from idle —
// two futex calls, a sleep and two thread switches per request. A flow silent for
// Config.IdleParkAfter (1s) gives up its buffer and its goroutine: it waits
// in the proxy's one epoll set (park.go) and a new goroutine resumes it
// when its socket is readable. An idle connection is then only what
// crypto/tls keeps for it (~14 KB: the peer's parsed chain, record
// buffers, AEAD state) and ~1.5 KB of ours.
//
// # Bounded under abuse
//
// Every phase of a connection has a bound (timeouts.go), counted in
// weft_sidecar_timeouts_total{direction,kind}. Before it is established,
// what the client does — sending its first bytes, its first HTTP request
// head, its side of the inbound TLS handshake — shares one deadline,
// HandshakeTimeout (10s) from accept (kind handshake); nothing is
// buffered until its first byte arrives, so a connection that opens and
// sends nothing costs a socket and a goroutine. Once established, a
// connection that moves no byte either way for IdleTimeout (1h) is closed
// (kind idle): one sweeper per proxy wakes every tick (IdleTimeout/8, at
// least 10ms, at most 1m) and closes each connection whose flows, parked
// ones included, last moved a byte IdleTimeout or more ago, so one closes
// after between IdleTimeout and IdleTimeout + a tick of silence (1h to
// 1h01m at the default) and arms no timer of its own; a keep-alive HTTP
// egress connection waiting for its next request is idle too, and once a
// next head begins it has HandshakeTimeout to arrive whole. Each write to
// either side is bounded by WriteTimeout (5m, kind write; the deadline is
// set for the write and cleared after it, so an idle socket keeps none
// armed): a peer that stops reading cannot hold a flow, its buffer and its
// goroutine for longer. MaxConnections and MaxPendingPerSource (128) bound how many
// connections there are; MaxConnections is derived from the memory limit
// the sidecar runs under (ConnectionsFor: 486 at the default 128Mi, at
// most 16384), so that that many connections in their costliest state
// fit it. README ("The sidecar under abuse") has the bytes each state
// costs.
//
// # Observability
//
// /connections lists live connections as [ConnInfo] (peer SPIFFE ID, TLS
// version, cipher, peer certificate expiry, bytes): what `weftctl verify`
// reads. /config_dump shows the current configuration with its versions;
// /debug/pprof/ serves Go's profiles of the sidecar (heap, goroutines, CPU)
// only with Config.Pprof (the pod's weft.dev/pprof: "true"): the app shares
// the admin port's loopback and could otherwise burn the sidecar's CPU.
// Metrics (prefix weft_sidecar_): connections{direction},
// connections_total, bytes_total{direction,flow},
// tls_handshakes_total, handshake_failures_total{direction,reason},
// connection_failures_total{direction,reason},
// authz_denials_total{direction,policy},
// authz_shadow_denials_total{direction,policy},
// egress_name_bindings_total{result}, egress_name_unknown_total{result},
// inbound_peer_connections_total{outcome,peer} (who connected and what was
// verified of them: mtls with the client's SPIFFE ID once the handshake
// completed, plaintext or refused with its source address; at most 512
// IDs and 512 addresses, then "other": the mesh graph of weftctl
// dashboard),
// parked_flows.
//
// Imports: sidecar/xds/model (the configuration it runs), sidecar/l7 and
// sidecar/balance (the HTTP data plane), sidecar/capture
// (OriginalDst only), api/audit (the egress record), sidecar/egress (the
// egress decision), sidecar/dnsproxy (the Binding type; the table itself
// comes in as a [NameBinder]), api/admin (what its admin port serves and
// the metric names weftctl reads), api/names (the names the xDS contract
// fixes), internal/metrics, k8s.io/utils/clock, go-spiffe. Never the ADS
// client (sidecar/xds) or gRPC, never controlplane/*.
package proxy
