// Package version holds weft's version, set at build time with
// -ldflags "-X github.com/weftmesh/weft/internal/version.Version=v0.1.0".
package version

// Version is weft's release; "dev" for a build from a work tree.
var Version = "dev"
