// Package ads serves weft's configuration to sidecars over the Aggregated
// Discovery Service: the go-control-plane snapshot cache and ADS server
// (state-of-the-world and delta), the authentication of streams, one
// snapshot per connected sidecar, the debounce of model changes, and ACK
// and NACK tracking with its metrics and [Server.Status]. The contract with
// the sidecars is sidecar/xds/README.md; docs/architecture.md ("The xDS
// contract") sums it up.
//
// The server never touches the mesh model: it gets every sidecar's
// resources from an [xds.Generator] (controlplane/xds/translate in weft),
// and caches what the generator shares by pointer, which the invariant of
// package xds allows (snapshot.go). The authorizer's pod lookup is
// implemented by the wiring in controlplane; trust comes in as an
// x509bundle.Source.
//
// Imports: controlplane/xds (the node and resource types), go-control-plane,
// go-spiffe, gRPC, Prometheus, k8s.io/utils/clock, controlplane/streamauth
// (the streams' authorization, shared with the audit stream),
// internal/peersvid (the stream's client SVID), api/admin (the status
// types), api/names (the message limit). Never the translator, the registry or certs (its tests use the
// translator).
//
// # Protocol
//
// Types. A stream asking for a type outside the contract (clusters,
// endpoints, listeners, routes, secrets) is refused (InvalidArgument):
// each type holds a watch and room in the stream's response buffer.
//
// Node ID. A sidecar's node ID is "<pod>.<namespace>". Pod names are DNS
// subdomains and may contain dots; namespaces are DNS labels and cannot, so
// [xds.ParseNodeID] splits at the last dot.
//
// Authentication. The gRPC port also serves the certificate service, whose
// callers have no certificate yet, so TLS only requests a client
// certificate. [Server.StreamInterceptor] refuses ADS streams without one
// (Unauthenticated) before go-control-plane sees them, and [Server.Register]
// serves ADS behind controlplane/streamauth ([Config.Authorizer]): a stream
// needs the pod's projected token (audience weft-ca, mounted into weft-proxy
// only) besides the SVID, which the pod's apps hold too, from one of the
// pod's IPs; see that package for every check. The first request's node
// ID must parse (else InvalidArgument) and name the token's pod (else
// PermissionDenied: a pod of the same ServiceAccount cannot claim a
// sibling's node). A later request on the same stream naming another node
// is refused (PermissionDenied). A stream ends, with the grant's status,
// when its pod is deleted or replaced or its client certificate expires;
// the refusal and closure are logged and counted alike.
//
// Snapshots. Build, validate, publish: on a node's first request and after
// every debounced change, the Generator's output is checked (known type
// URLs, every resource of the type its URL says, named, unique names,
// ValidateAll, snapshot Consistent) and only then set in the cache. A
// failing Generate or validation is logged, counted in
// weft_xds_generate_errors_total, shown in Status, and the node keeps its
// last good snapshot; a node whose first generation fails gets no response
// until a later one succeeds. Each type's version is a hash of its content,
// so a regeneration that changes nothing for a node publishes nothing and
// pushes nothing to it. Types the Generator leaves out are served empty.
// The Generator should build Any fields with deterministic marshalling, or
// map-valued fields will look like changes. The snapshot of a node is
// cleared when its last stream closes.
//
// Endpoints. ClusterLoadAssignments are mesh-wide (a name means the same
// endpoints for every node, as package xds requires of a Generator), so
// they are served from one cache for every node behind a MuxCache, not
// from the per-node snapshots (eds.go): each is encoded once and the
// responses of every stream share the encoding; a change visits each open
// EDS watch once; a snapshot in which only endpoints changed is not set
// again, so its streams compare and send nothing else. A node's
// assignments are in that cache before its snapshot is published and leave
// it when no published snapshot holds them; a node is served only those of
// its own snapshot, whatever it subscribes to. An EDS response's system
// version is that cache's (a per-process prefix and a counter); resource
// versions stay content hashes, so a resuming delta stream is judged as
// before.
//
// Message size. No response exceeds [Config.MaxMessageSize]
// (names.MaxXDSMessageSize, what sidecars receive; the gRPC server's
// MaxSendMsgSize is the same). Before a snapshot is published, the largest
// response of each type it can make, SotW or delta (every resource of the
// type, the longest nonce, the names a delta stream holds that are gone),
// is sized from the encodings the snapshot build already has
// (snapshot.go, "Response sizes"). A snapshot over the limit is not
// published: the sidecar keeps what it runs (no stream error, nothing to
// reconnect for) and gets the next snapshot that fits; the node's status
// says so (GenerateError, and Withheld on the type: version, size, limit),
// and the server logs an error naming the node, type URL, size and limit
// and counts weft_xds_oversized_responses_total{type}, once per withheld
// snapshot. Why there and not later is Server.generate's comment. Behind
// it, each stream refuses to send a message over the limit (limitStream):
// the stream ends with ResourceExhausted, logged and counted alike; the
// sidecar does not reset its reconnect backoff for that end.
//
// Debounce. [Server.Changed] never blocks. Regeneration of every connected
// node starts Config.Debounce (100ms) after the last change, and at most
// Config.MaxDelay (1s) after the first change of a burst, so continuous
// churn still converges. Changes during a round start the next one.
//
// Absent names. A delta stream that subscribes by name to a resource its
// node's snapshot does not hold is told so at once, the name in
// removed_resources (the xDS protocol's way of saying a requested
// resource does not exist), for every type: once, in the response to the
// request that asked; if the resource appears later the stream, still
// subscribed, is sent it (absent.go; for endpoints, eds.go). An on-demand
// sidecar's connection to a Service deleted under it is refused at once
// instead of after its wait.
//
// Lookups. A node that looks destinations up (listeners by name, client
// feature weft.destination_listeners) is generated again at once when a
// request subscribes to a destination listener that exists, before the
// request is answered. Those regenerations, the watches the node's
// requests open (their cost grows with the names it subscribes to) and
// its streams' first generations are charged, by the time they take, to
// the node's lookup budget (lookupbudget.go: Config.LookupBudget of a core
// over time, LookupBurst at once; kept while the node reconnects; the
// mesh-wide build a first generation after a change makes is done first,
// uncharged: translate.Generator.Prepare); past it a request that
// subscribes to a new destination, existing or not, or flips the
// listener subscription to or from a wildcard, waits on its own stream
// until the budget allows, so the app behind a
// sidecar, which picks its destinations, cannot make the control plane
// spend more than that on it. Run ending during a wait ends the stream.
//
// ACK and NACK. Per node and type the server records the last version sent,
// the last version ACKed and the last NACK (version, the sidecar's
// error_detail message, time); the state is SYNCED (ACKed what it should
// run: the snapshot's version of the type, or, for endpoints and for a type
// a delta stream subscribes to by name, such as an on-demand sidecar's
// clusters, the last version it was sent), NACKED (rejected the latest
// version it was sent) or STALE. SotW
// requests are matched by response_nonce, delta requests likewise; stale
// nonces are ignored, as go-control-plane ignores them. A resumed SotW
// stream's version_info counts as ACKed. NACKs are logged at warn with the
// sidecar's message and counted in weft_xds_nacks_total{type}. The metric
// has no per-sidecar label: pod names would make its cardinality
// unbounded; the per-sidecar detail is in [Server.Status], which
// /debug/status serves. Label values are a fixed set of type names ("other"
// for anything a client invents).
//
// Metrics: weft_xds_connected_sidecars, weft_xds_pushes_total{type},
// weft_xds_nacks_total{type}, weft_xds_generate_errors_total,
// weft_xds_oversized_responses_total{type},
// weft_xds_refused_streams_total{code},
// weft_xds_regenerate_duration_seconds, weft_xds_lookup_waits_total,
// weft_xds_lookup_seconds_total.
package ads
