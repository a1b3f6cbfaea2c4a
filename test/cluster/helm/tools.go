//go:build tools

// Package tools pins Helm, the package manager whose real binary renders and
// installs charts/weft (deploy's chart test, test/cluster/helm-smoke.sh).
// test/cluster/build.sh helm builds it from here.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
