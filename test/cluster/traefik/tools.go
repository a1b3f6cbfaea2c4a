//go:build tools

// Package tools pins Traefik, the ingress controller the e2e suite meshes
// (test/e2e/ingress_test.go). test/cluster/build.sh builds it from here.
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
