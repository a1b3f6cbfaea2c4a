// Package admin holds the JSON of weft's admin endpoints: what the control
// plane's /debug/status and the sidecar's /connections answer; and the
// names of the sidecar's metrics that weftctl reads (metrics.go; the peer
// connections' outcomes, which weftctl dashboard draws its graph from,
// peers.go). The server of each endpoint writes these and weftctl reads
// them, so a field cannot be renamed on one side alone.
//
// This package is a pure core: it imports the standard library only.
package admin
