// Package egress answers, for one outbound connection, what the sidecar's
// configuration decides about it: allow, deny or audit (allow and flag),
// and which EgressPolicy rule said so.
//
// # Reading the decision
//
// The control plane resolves EgressPolicies into the outbound listener's
// filter chains and HTTP route configurations (sidecar/xds README, "Match
// semantics"); each egress chain and route carries the final decision as
// "weft.egress" metadata. This package does not re-evaluate policies: it
// walks the same tree the proxy walks ([model.Listener.Match], then
// [model.RouteConfig.Match] for HTTP chains) after normalising the names
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
// A connection whose name could not be learned (TLS without a
// trustworthy server_name, ECH, bytes that are neither TLS nor HTTP, a
// client that stalls) could be going to any host: unless a rule by
// address decided it, [NameUnknown] gives it the strictest decision of the
// rules by name that apply to its destination when that is stricter than
// its chain's (deny before audit before allow). [DecideConn] applies it to
// the connections [Unnamed] names; the proxy to those and to the ones
// only it can tell (an ECH outer name, a client that stalled).
//
// Pure: imports sidecar/xds/model and the standard library only.
package egress
