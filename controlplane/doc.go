// Package controlplane wires weft's control plane: the SPIFFE CA kept in the
// weft-system/weft-ca Secret, the certificate service on the TLS port 15012
// (controlplane/identity), the trust bundle published to every namespace that
// has injection on, and the HTTP admin port 15014 (/metrics, /healthz,
// /debug/status).
//
// Port 15012 asks for a client certificate but does not require one: the
// certificate service authenticates callers by their ServiceAccount token
// (they have no certificate yet), while the ADS stream served on the same
// port requires an X.509-SVID. A certificate that is presented must verify
// against the trust bundle, or the handshake fails.
//
// This package imports the control-plane rooms it wires and certs; it must not
// import sidecar/* or injector.
package controlplane
