//go:build tools

// Package benchstat pins benchstat (golang.org/x/perf), which compares the
// proxy's Go benchmarks before and after a change (README.md, "Go
// benchmarks"), in a module of its own: it never enters weft's go.mod, nor
// the fortio module next door (tools/).
package benchstat

import _ "golang.org/x/perf/cmd/benchstat"
