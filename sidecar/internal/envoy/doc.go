// Package envoy holds the sidecar's own subset of Envoy's v3 xDS API: .proto
// files transcribed from Envoy's (github.com/envoyproxy/envoy, api/,
// Apache-2.0) that declare only the messages and fields the sidecar honours,
// accepts and ignores, or sends, with Envoy's message names, field names,
// field numbers, oneofs and enum values, in proto package "weft." + Envoy's.
// The generated Go packages mirror go-control-plane's layout and names
// (config/listener/v3 is package listenerv3, with Listener, Cluster_Type,
// Cluster_EDS, ...).
//
// The bytes are Envoy's: a control plane built on go-control-plane talks to
// the sidecar unchanged. What the sidecar does not declare arrives as an
// unknown field, which sidecar/xds refuses (NACKs). The sidecar binary links
// none of go-control-plane's generated code, which is most of its size.
//
// See README.md for how to add a field. Regenerate with hack/genproto.sh;
// generate_test.go checks the generated code is current, schema_test.go
// that every declaration is Envoy's.
package envoy

//go:generate ../../../hack/genproto.sh
