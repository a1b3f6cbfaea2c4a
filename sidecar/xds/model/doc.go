// Package model is the sidecar's configuration as the proxy runs it: plain
// immutable Go values (listeners, filter chains with their match rules,
// RBAC, clusters, endpoints, routes, the trust bundle) and the names the
// xDS contract fixes (README.md of sidecar/xds). sidecar/xds builds a
// [Config] from Envoy resources (sidecar/xds.Build) and hands it out;
// sidecar/proxy, sidecar/egress and sidecar/audit read it.
//
// [Listener.Match] chooses the filter chain for a connection with Envoy's
// precedence, and [RouteConfig.Match] the virtual host of an HTTP request;
// the proxy and the egress decision rely on both. A Config is never
// modified once built: share it, do not copy into it.
//
// Imports: the standard library, go-spiffe and api/names (the names the
// contract fixes) only. No gRPC, no protobuf, no Envoy types: a package
// that reads the configuration does not link the ADS client
// (TestReadersLinkNoClient).
package model
