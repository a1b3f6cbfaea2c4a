// Package identity is weft's certificate service: the gRPC endpoint on the
// control plane's TLS port (15012) where a workload trades a CSR and its
// projected ServiceAccount token for an X.509-SVID.
//
// The flow for one call:
//
//  1. The token is taken from the "authorization: Bearer <token>" metadata;
//     a call without one is refused (Unauthenticated).
//  2. A TokenReview, sent to the Kubernetes API server with audience
//     "weft-ca", authenticates it. Only pod-bound tokens of a ServiceAccount
//     are accepted, the review must report the weft-ca audience, and the pod
//     the token is bound to must still exist with the same UID and run as the
//     same ServiceAccount (a token of a deleted pod is refused even if the
//     API server still honours it).
//  3. The SPIFFE ID is derived from the review alone:
//     spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>. Nothing in
//     the CSR (subject, SANs, extensions) is ever used for the identity.
//  4. A per-identity token bucket limits how fast one identity can ask.
//  5. The CSR is checked (certs.ParseCSR) and signed by the CA (certs.CA);
//     weft's own servers (see ServerNames) also get their DNS names.
//
// Every refusal is logged with its reason and counted in
// weft_ca_sign_refusals_total{reason}. The CA itself is kept in the Secret
// weft-ca in weft-system (LoadOrCreateCA) so a restart changes no identity.
//
// This package imports certs and the certificate API; it must not import
// sidecar/* or the other control-plane rooms.
package identity
