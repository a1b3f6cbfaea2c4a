// Package controlplane wires weft's control plane ([Run]):
//
//   - the SPIFFE CA kept in the weft-system/weft-ca Secret (loaded or
//     created once; intermediate-only when the Secret holds no root key),
//     the certificate service, the TokenReview cache and the trust bundle
//     published to every namespace that has injection on
//     (controlplane/identity);
//   - the mesh model (controlplane/mesh), built from informers and
//     published by controlplane/registry, which validates weft's policies
//     and writes their status;
//   - the translator (controlplane/xds/translate) and the ADS server
//     (controlplane/xds/ads), pushed after every registry change;
//   - the authorization of the sidecars' ADS and audit streams
//     (controlplane/streamauth);
//   - the egress audit store, the access-log service that fills it, its
//     HTTP queries and the optional OTLP export (controlplane/audit);
//   - the guard of the admin port's /audit and /debug endpoints
//     (controlplane/adminauth);
//   - the control plane's own serving certificate, issued from the CA and
//     renewed (servingcert.go), the gRPC server on 15012 (certificate
//     service, ADS, audit stream) and the admin port 15014 (/metrics,
//     /healthz, /debug/status, /audit/*).
//
// Ports, names and who may reach them: docs/architecture.md.
//
// The admin port speaks plain HTTP and HTTPS on one socket, told apart by
// the first byte (adminport.go). /metrics and /healthz answer anyone, for
// scrapers and probes. /audit/* (every workload's egress) and /debug/*
// (every connected sidecar) answer only over TLS — the serving certificate
// is the control plane's own, weft-controlplane.<ns>.svc, so a bearer token
// cannot be read on the node — to a caller authenticated by a client
// certificate of the API server's client CA or a token the API server
// accepts, and allowed by a SubjectAccessReview (controlplane/adminauth).
//
// Port 15012 asks for a client certificate but does not require one: the
// certificate service authenticates callers by their ServiceAccount token
// (they have no certificate yet), while the ADS and egress audit streams
// served on the same port require an X.509-SVID and the pod's token
// (controlplane/streamauth, fed by the registry through registryPods in
// pods.go and rechecked after every registry change). A certificate that
// is presented must verify against the trust bundle, or the handshake
// fails, and a connection is closed when its client certificate expires
// (expiry.go), so a sidecar reconnects with its renewed SVID.
//
// This package imports the control-plane packages it wires, certs, api/*,
// internal/version and internal/sleep; it must not import sidecar/* or
// injector.
package controlplane
