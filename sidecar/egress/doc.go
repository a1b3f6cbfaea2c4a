// Package egress answers, for one outbound connection, what the sidecar's
// configuration decides about it: allow, deny or audit (allow and flag),
// and which EgressPolicy rule said so.
//
// # The room
//
// The control plane resolves EgressPolicies into the outbound listener's
// filter chains and HTTP route configurations (sidecar/xds README, "Match
// semantics"); each egress chain and route carries the final decision as
// "weft.egress" metadata. This package does not re-evaluate policies: it
// walks the same tree the proxy walks ([xds.Listener.Match], then
// [xds.RouteConfig.Match] for HTTP chains) after normalising the names
// (lower case, no trailing dot, no ":port" on Host) and reads the
// decision off what matched. A connection whose chain has no "weft.egress"
// metadata (an in-mesh service, or a Service outside the mesh reached in
// plaintext) is not egress: [NotEgress].
//
// HTTP CONNECT is decided as TCP to the original destination's IP and
// port: the authority in the CONNECT line is chosen by the client, and what
// flows through the tunnel afterwards (usually TLS) is opaque, so neither a
// Host chain nor the tunnelled SNI can be trusted for it.
//
// Pure: imports sidecar/xds (the model) and the standard library only.
package egress
