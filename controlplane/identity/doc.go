// Package identity is weft's certificate service: the gRPC endpoint on the
// control plane's TLS port (15012) where a workload trades a CSR and its
// projected ServiceAccount token for an X.509-SVID.
//
// The flow for one call:
//
//  1. The caller's source address (the pod IP: the pod network has no NAT)
//     is limited before anything else, 5 requests/s with a burst of 20
//     (Config.SourceRateLimit): a flood of bad tokens costs the API server
//     nothing past that (ResourceExhausted).
//  2. The token is taken from the "authorization: Bearer <token>" metadata;
//     a call without one is refused (Unauthenticated).
//  3. A TokenReview, sent to the Kubernetes API server with audience
//     "weft-ca", authenticates it ([TokenReviewer]; [CachingAuthenticator]
//     remembers a review for 30 s). Only pod-bound tokens of a
//     ServiceAccount are accepted, the review must report the weft-ca
//     audience, and the pod the token is bound to must still exist with the
//     same UID and run as the same ServiceAccount, and not be terminating (a
//     token of a deleted pod is refused even if the API server still
//     honours it). The control plane checks the pod in its informers' cache
//     when that holds it with the token's UID (TokenReviewer.Pods: one API
//     request per new pod instead of two; the cache may be behind the API
//     server by its watch's latency), else with a GET.
//  4. The SPIFFE ID is derived from the review alone:
//     spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>. Nothing in
//     the CSR (subject, SANs, extensions) is ever used for the identity.
//  5. A token bucket per pod (its UID; 1/s, burst 10: Config.RateLimit)
//     limits how fast one pod can ask, so a noisy pod does not starve the
//     other pods of its ServiceAccount.
//  6. The CSR is checked (certs.ParseCSR) and signed by the CA (certs.CA);
//     weft's own servers (see Config.ServerNames) also get their DNS names.
//
// Every refusal is logged with its reason and counted in
// weft_ca_sign_refusals_total{reason}.
//
// The package also holds what the rest of the control plane needs of the
// same trust: [CAStore] keeps the CA in the Secret weft-ca in weft-system
// ([CAStore.LoadOrCreate]: created once, so a restart changes no identity;
// loaded intermediate-only when the Secret holds no root key);
// [BundlePublisher] writes the roots into the ConfigMap weft-trust-bundle of
// every namespace with injection on and of weft's own; [ReviewToken] and [TokenCache] serve
// controlplane/streamauth and controlplane/adminauth.
//
// This package imports certs, the certificate API, api/names and
// internal/keyedrate; it must not import sidecar/* or the other
// control-plane packages.
package identity
