// Package certs is weft's SPIFFE certificate authority: it holds the roots
// and the intermediate, signs X.509-SVIDs for IDs the caller has already
// authenticated, serves the trust bundle, rotates roots step by step (see
// ROTATION.md) and does the renewal-time arithmetic.
//
// The package is pure: it imports the standard library's crypto and go-spiffe,
// and nothing of weft's (no Kubernetes, no other weft package). Storage is
// the caller's business: [CA.Material] and [LoadCA] turn a CA into PEM bytes
// (the Secret weft-ca) and back.
//
// # Hierarchy
//
// Root: ECDSA P-256, self-signed, CA with MaxPathLen 1, KeyUsage
// certSign|cRLSign, URI SAN spiffe://<trust-domain>, 10 years by default.
// Intermediate: ECDSA P-256, CA with MaxPathLen 0, same key usage and URI SAN,
// 1 year by default and never past its root. SVIDs (leaves) are signed by the
// intermediate; [CA.Sign] returns leaf and intermediate, never the root.
//
// A CA may be intermediate-only ([CA.IntermediateOnly]): loaded from
// material without the root key (weftctl install --ca-dir), it signs SVIDs
// as usual but cannot rotate roots or renew its intermediate; both happen
// where the root key lives, and the new material is loaded (ROTATION.md).
//
// # SVID decisions
//
//   - The SPIFFE ID comes from [SignRequest.ID], never from the CSR; the CSR
//     only contributes its public key. It must be in the CA's trust domain
//     and have a non-empty path (go-spiffe refuses leaf SVIDs for the bare
//     trust-domain ID).
//   - Exactly one URI SAN (the ID) plus optional DNS SANs, which are only
//     meant for weft's own servers. Subject O=weft (SPIFFE leaves the subject
//     free). Random 128-bit serial. SubjectKeyId is the first 160 bits of the
//     SHA-256 of the public key bits (RFC 7093, method 1); AuthorityKeyId is
//     the intermediate's SubjectKeyId.
//   - KeyUsage is digitalSignature only, for every key type, RSA included:
//     weft speaks TLS 1.3 and ECDHE suites, where even RSA keys only sign;
//     RSA key transport (keyEncipherment) has no forward secrecy and Go
//     disables it by default, so no SVID is allowed to be used for it.
//     ExtKeyUsage is serverAuth+clientAuth: every workload is both.
//   - Accepted CSR keys: ECDSA P-256 and P-384, RSA of at least 2048 bits,
//     and Ed25519 (Go's crypto/tls, go-spiffe and BoringSSL all handle it).
//     Refused: other curves (P-224, P-521, ...), short RSA, DSA and unknown
//     key types, CSRs with a bad signature, and CSRs asking to be a CA
//     (basicConstraints CA=true, keyUsage keyCertSign or cRLSign).
//   - NotBefore is backdated by [Backdate] (one minute) to absorb clock skew
//     between the control plane and the workloads, but never before the
//     issuer's NotBefore. NotAfter is min(now+TTL, intermediate.NotAfter):
//     an SVID never outlives its issuer.
//
// All [CA] methods are safe for concurrent use.
package certs
