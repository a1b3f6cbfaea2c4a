//go:build tools

// Package tools pins the mutation tester (make mutate) outside weft's own
// go.mod.
package tools

import _ "github.com/go-gremlins/gremlins/cmd/gremlins"
