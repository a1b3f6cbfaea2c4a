// Package audit records the sidecar's egress audit events: one
// [github.com/weftmesh/weft/api/audit.Event] per egress connection (per
// request on a plain HTTP egress chain), written
// as a JSON line to stdout and delivered to the control plane over Envoy's
// gRPC access-log service (ALS,
// envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs).
//
// # Delivery: at-least-once transport, idempotent store
//
// [Recorder.Record] stamps the event with a unique ID ("<instance>-<seq>":
// a random instance ID per sidecar start, then a sequence number), writes
// it to stdout and appends it to a bounded in-memory buffer (default
// 10,000 events; when full, new events are dropped and counted in
// weft_sidecar_audit_dropped_total{reason="buffer_full"}).
//
// The connection (Config.Conn) must carry the pod's token on every stream
// besides the SVID (sidecar/identity.TokenCredentials): the control plane
// takes the access-log stream only with both, since the app holds the SVID.
//
// [Recorder.Run] sends the buffer in batches. ALS is a client stream
// without per-message acknowledgements, so a batch is one stream: open,
// send the identifier (node "<pod>.<namespace>", log_name "weft-egress")
// and the batch's TCPAccessLogEntries, half-close, and wait for the
// server's StreamAccessLogsResponse. The control plane answers only after
// every entry of the stream is committed to its store, so a clean
// CloseAndRecv is the acknowledgement: only then are the batch's events
// removed from the buffer. Any error (the control plane away, restarted
// mid-stream, a timeout) keeps them, and they are sent again on the next
// stream after a backoff (500ms doubling to 30s, jittered). A batch may
// therefore arrive twice; the control plane's store inserts by event ID and
// ignores IDs it holds. At-least-once transport plus an idempotent store is
// exactly-once storage. A batch the control plane refuses as malformed
// (InvalidArgument) would be refused forever: it is dropped and counted
// (reason "rejected") instead of blocking the buffer.
//
// # The wire format
//
// Each event is an envoy.data.accesslog.v3.TCPAccessLogEntry:
// common_properties {stream_id: event ID, start_time, duration,
// downstream_local_address and upstream_remote_address: the original
// destination, upstream_cluster: PassthroughCluster or BlackHoleCluster,
// tls_properties.tls_sni_hostname, access_log_type TcpConnectionEnd,
// metadata.filter_metadata["weft.egress"]: the weft fields (see
// [MetadataKey] and api/audit's Field constants, which the control plane
// decodes with)}, connection_properties
// {received_bytes: bytes from the app to the destination (BytesSent),
// sent_bytes: bytes back to the app (BytesReceived)} — Envoy's view from
// the downstream side.
//
// Imports: api/audit (the record and its wire names), api/names (the
// cluster names an entry carries), grpc, the sidecar's subset of Envoy's
// ALS and access-log protos (sidecar/internal/envoy; the stream is opened
// by method name), go-spiffe, internal/metrics, k8s.io/utils/clock,
// internal/sleep. Never controlplane/* or go-control-plane.
package audit
