// Package controlplane wires weft's control plane: the SPIFFE CA kept in the
// weft-system/weft-ca Secret, the certificate service on the TLS port 15012
// (controlplane/identity), the trust bundle published to every namespace that
// has injection on, and the admin port 15014 (/metrics, /healthz,
// /debug/status, /audit/*).
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
// (controlplane/streamauth, fed by the registry through registryPods and
// rechecked after every registry change). A certificate that is presented
// must verify against the trust bundle, or the handshake fails, and a
// connection is closed when its client certificate expires (expiry.go), so
// a sidecar reconnects with its renewed SVID.
//
// This package imports the control-plane rooms it wires and certs; it must not
// import sidecar/* or injector.
package controlplane
