// Package identity holds the pod's SPIFFE identity inside the sidecar: the
// private key, the X.509-SVID the control plane signed for it, the trust
// bundle that came with it, their renewal, and the SPIFFE Workload API that
// hands them to the app containers of the same pod.
//
// The package imports go-spiffe, gRPC, weft's certificate API
// (api/certificate/v1), certs (renewal arithmetic only),
// k8s.io/utils/clock and internal/sleep. It never imports
// controlplane/*: the certificate service is reached through the
// CertificateServiceClient interface (api/certificate/v1) the wiring passes
// in.
//
// [TokenCredentials] sends the pod's projected token on the control-plane
// streams that require it besides the SVID (ADS, the audit stream).
//
// # Keys
//
// Every attempt to obtain an SVID makes a fresh ECDSA P-256 key with
// crypto/rand. The key lives only in this process's memory: it is never
// written to disk and never sent to the control plane (the CSR carries only
// the public key and a signature proving possession). The one place it
// leaves the process is the Workload API socket, to the app containers of
// the same pod, whose identity it is (see workloadapi.go). A new key per
// renewal, rather than re-certifying the old one, bounds what a stolen key
// is worth: it dies with its certificate, so expiry (24 h by default) is the
// revocation mechanism, and no key is ever exposed for longer than one SVID
// lifetime. P-256 key generation costs microseconds, so this is free.
//
// # Renewal and failure
//
// [Manager.Run] fetches the first SVID (retrying until it succeeds), then
// renews at certs.RenewalTime: half-life with jitter, so that a fleet of
// pods started together does not renew together. When the control plane is
// unreachable or refuses, Run retries with exponential backoff and jitter,
// logs each failure at warn, and keeps serving the current SVID. Every
// response is validated before it is installed: the chain parses, the leaf
// verifies against the returned bundle, carries the SPIFFE ID the response
// names and certifies our own public key, and the identity did not change.
// A bad response is never installed.
//
// Once the current SVID has expired, [Manager.GetX509SVID] and
// [Manager.GetX509BundleForTrustDomain] return errors (fail closed): the
// proxy stops completing mTLS handshakes rather than presenting an expired
// certificate, and stops trusting a bundle that has not been refreshed for a
// whole SVID lifetime. Serving resumes with the next successful renewal.
//
// # Workload API
//
// [Manager.ServeWorkloadAPI] serves the SPIFFE Workload API (X.509 part) on
// a unix socket in an emptyDir volume shared by the pod's containers. See
// workloadapi.go for what it hands out and why.
package identity
