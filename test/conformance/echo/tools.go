//go:build tools

// Package tools pins the echo application that the Gateway API's mesh
// conformance tests deploy (registry.k8s.io/gateway-api/echo-advanced,
// which is Istio's echo server and client). test/cluster/images.sh
// builds both binaries from here and packs them under that image name.
// It is never compiled into weft.
package tools

import (
	_ "istio.io/istio/pkg/test/echo/cmd/client"
	_ "istio.io/istio/pkg/test/echo/cmd/server"
)
