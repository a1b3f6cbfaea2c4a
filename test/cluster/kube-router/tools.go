//go:build tools

// Package tools pins kube-router, the NetworkPolicy controller of the test
// cluster (the one k3s embeds). test/cluster/build.sh builds it from here.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
