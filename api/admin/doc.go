// Package admin holds the JSON of weft's admin endpoints: what the control
// plane's /debug/status and the sidecar's /connections answer; and the
// sidecar metric weftctl dashboard draws its graph from (its name and
// outcomes, peers.go). The server of each endpoint writes these and
// weftctl reads them, so a field cannot be renamed on one side alone.
//
// This package is a pure core: it imports the standard library only.
package admin
