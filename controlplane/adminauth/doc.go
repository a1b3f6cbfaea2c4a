// Package adminauth guards the control plane's admin endpoints that say
// more than a metric: /audit/* (every workload's egress: SPIFFE ID,
// destination, SNI/Host, bytes) and /debug/* (every connected sidecar).
// /metrics and /healthz stay open; they are wired past the [Guard].
//
// A guarded request must come over TLS (the admin port 15014 also speaks
// plain HTTP, for scrapers and probes: a credential sent in the clear
// could be read on the node, so plain HTTP is refused with 403 before any
// credential is looked at). Who the caller is comes, as for an extension
// API server, from either
//
//   - a client certificate that the TLS handshake verified against the
//     API server's client CA ([ClientCAs] reads it from the ConfigMap
//     kube-system/extension-apiserver-authentication, key client-ca-file,
//     which the API server publishes): user = CommonName, groups =
//     Organization, plus system:authenticated; or
//   - a bearer token that the API server accepts for itself (TokenReview
//     without audiences, identity.ReviewToken): a user's token, a
//     ServiceAccount's; a pod's weft-ca token is for another audience and
//     is refused.
//
// A certificate wins over a token. Without either, or with a token the API
// server refuses, the answer is 401. What the caller may do is then asked
// of the API server (SubjectAccessReview): verb get on the virtual
// resource auditevents (/audit/*) or debug (/debug/*) in API group
// weft.dev, in the control plane's namespace; no such objects exist, RBAC
// matches the names. A denial is 403. The ClusterRoles weft-audit-reader
// and weft-status-reader (deploy/30-readers.yaml) grant them, bound with a
// RoleBinding in weft-system.
//
// Answers are cached for TTL (default 10s): a token's review keyed by its
// SHA-256 (identity.TokenCache), each authorization decision, allowed or
// denied, keyed by the user and the resource. A revoked token or binding
// is honoured that much later. The API server being unreachable is 503,
// never a pass. A request that would ask the API server (a review or a
// decision not in the cache) is limited per source address (5/s, burst 20:
// 429 with Retry-After), so made-up tokens cost it at most the burst;
// cached answers are never limited.
//
// Imports: controlplane/identity (TokenReview and its cache),
// internal/keyedrate, internal/sleep, client-go, k8s.io/utils/clock.
package adminauth
