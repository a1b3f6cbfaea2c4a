// Package audit is the control plane's side of egress auditing: it receives
// the sidecars' audit events over Envoy's gRPC access-log service, stores
// them in an embedded bbolt file with retention, and answers queries for
// `weftctl egress audit` over HTTP (/audit/events, /audit/summary,
// /audit/store), and can export what it stores as OTLP logs
// ([OTLPExporter]). The control plane serves those queries
// only over TLS to callers RBAC allows (get auditevents.weft.dev; see
// controlplane/adminauth): the trail names every workload's destinations.
//
// # Store and service
//
// [Store] keeps events in a bbolt file (default /var/lib/weft/audit.db on
// an emptyDir or a PVC). Keys are ordered by the time the control plane
// received the event (Event.Received, its own clock), so range queries and
// retention (default 7 days, pruned every 10 minutes) are cursor walks
// that no sidecar's timestamp can dodge; a second bucket maps each event's
// identity — the stream's verified namespace and pod, then the sidecar's
// ID — to its key, which makes [Store.Insert] idempotent (an event
// delivered twice is stored once) without letting one pod's IDs shadow
// another's. The store is capped (StoreConfig.MaxEvents, default 500,000):
// past it the oldest events are evicted, counted, and `weftctl check` warns
// from 80 % (GET /audit/store).
//
// [Service] implements envoy.service.accesslog.v3.AccessLogService. A stream
// is authorized as ADS is, by controlplane/streamauth
// ([ServiceConfig.Authorizer]): a client X.509-SVID of the trust domain
// and the pod's projected token (audience weft-ca, which only weft-proxy
// mounts: the pod's apps hold the SVID but not the token), from one of the
// pod's IPs. Its first message's identifier names the node
// "<pod>.<namespace>" and log_name "weft-egress", and the node must be the
// token's pod (PermissionDenied otherwise: a sibling of the same
// ServiceAccount cannot write as it). The stream ends, and nothing more of
// it is stored, when the pod is deleted or replaced or the certificate
// expires. Every
// event must carry the stream's SPIFFE ID as its source and the
// identifier's pod and namespace: a sidecar cannot write events for another
// identity. Each message is validated whole, then committed; the stream's
// StreamAccessLogsResponse is sent only when the sidecar half-closes, after
// everything it sent is committed — that response is the sidecar's
// acknowledgement (see sidecar/audit).
//
// Even so nothing a stream sends is trusted beyond its identity (a
// compromised sidecar is still its pod's): each event is stamped with the receive time, its Time clamped
// to at most a minute past it, each string field cut to a cap no sidecar
// reaches, and each pod has a token bucket (50 events/s, burst 2,000): a
// message over it ends the stream with ResourceExhausted, and the sidecar
// resends after its backoff.
//
// Metrics: weft_egress_connections_total{destination,decision} and
// weft_egress_bytes_total{destination,decision,direction} with bounded
// cardinality (at most TopDestinations destination values, the rest
// "other"; see destMetrics), weft_audit_events_total{result},
// weft_audit_streams_refused_total{code}, weft_audit_pruned_total,
// weft_audit_evicted_total, weft_audit_times_clamped_total,
// weft_audit_fields_truncated_total{field}, weft_audit_store_events and
// weft_audit_store_capacity.
//
// The wire format's names (metadata "weft.egress" and its fields) and the
// queries' paths and answers are declared once in api/audit, which the
// sidecar's encoder and weftctl import too.
// Imports: api/audit, bbolt, grpc, go-control-plane's ALS protos, the OTLP
// protos, go-spiffe, Prometheus, k8s.io/utils/clock,
// controlplane/streamauth, internal/keyedrate, internal/sleep; never
// sidecar/*.
package audit
