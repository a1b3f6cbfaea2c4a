#!/usr/bin/env bash
# make conformance: the Gateway API's own conformance suite
# (sigs.k8s.io/gateway-api/conformance, pinned in test/conformance/go.mod)
# against weft on the local test cluster: cluster up, weft's images and the
# suite's echo image built and imported, weft installed with HTTP routing,
# the Gateway API CRDs of the suite's own version applied, the suite run for
# the mesh profiles, its report written to test/conformance/reports/, the
# cluster down (always).
#
# Env: PROFILES (default MESH-HTTP,MESH-GRPC), FEATURES (the features weft
# declares; default below), RUN_TEST (one test by its ShortName), SKIP_TESTS
# (default below; empty skips none),
# KEEP_CLUSTER=1 (an existing cluster is used and left up), CLEANUP=false
# (the suite leaves its namespaces and echo pods, to look into a failure),
# TAG, VERSION.
set -euo pipefail

SCRIPT_NAME=conformance
# shellcheck source=test/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"

TAG="${TAG:-dev}"
VERSION="${VERSION:-$(git -C "${ROOT}" describe --tags --always --dirty 2>/dev/null || echo dev)}"
PROFILES="${PROFILES:-MESH-HTTP,MESH-GRPC}"
# The features weft declares: the mesh core and every extended feature its
# router serves (docs/gamma.md). Not declared: MeshHTTPRouteBackendRequestHeaderModification
# (filters on a backendRef are refused).
FEATURES="${FEATURES:-Mesh,HTTPRoute,GRPCRoute,HTTPRoute303RedirectStatusCode,HTTPRoute307RedirectStatusCode,HTTPRoute308RedirectStatusCode,MeshHTTPRouteNamedRouteRule,MeshHTTPRouteQueryParamMatching,MeshHTTPRouteRedirectPath,MeshHTTPRouteRedirectPort,MeshHTTPRouteSchemeRedirect,MeshHTTPRouteRewritePath,HTTPRouteResponseHeaderModification,MeshConsumerRoute,MeshClusterIPMatching,HTTPRouteParentRefPort}"
# Tests to skip (the suite's short names, comma-separated); none by default.
SKIP_TESTS="${SKIP_TESTS:-}"
REPORTS="${ROOT}/test/conformance/reports"
export KUBECONFIG="${ROOT}/_output/cluster/kubeconfig"
KUBECTL="${ROOT}/_output/bin/kubectl"
WEFTCTL="${ROOT}/_output/bin/weftctl"

cleanup() {
  local rc=$?
  if [[ -z "${KEEP_CLUSTER:-}" ]]; then
    "${ROOT}/test/cluster/down.sh" || rc=$((rc ? rc : 1))
    "${ROOT}/test/cluster/leftovers.sh" || rc=$((rc ? rc : 1))
  fi
  exit "${rc}"
}

main() {
  if [[ -z "${KEEP_CLUSTER:-}" ]]; then
    trap cleanup EXIT
    "${ROOT}/test/cluster/up.sh"
  fi
  TAG="${TAG}" VERSION="${VERSION}" "${ROOT}/test/cluster/images.sh" weft
  "${ROOT}/test/cluster/images.sh" conformance

  # The CRDs before weft, as a cluster that uses the Gateway API has them:
  # a control plane started without them finds them within its 30-second
  # discovery re-check (docs/gamma.md), later than the suite's first test
  # looks.
  step "Gateway API CRDs (standard channel) of the suite's version"
  local mod dir
  mod="$(cd "${ROOT}/test/conformance" && go list -m -f '{{.Path}}@{{.Version}}' sigs.k8s.io/gateway-api)"
  dir="$(cd "${ROOT}/test/conformance" && go mod download -json "${mod}" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  [[ -d "${dir}/config/crd/standard" ]] || die "no config/crd/standard in ${mod} (${dir})"
  "${KUBECTL}" apply --server-side -f "${dir}/config/crd/standard/" >/dev/null
  "${KUBECTL}" wait --for condition=Established --timeout 60s crd --all >/dev/null

  step "weftctl install --http-routing"
  (cd "${ROOT}" && CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -o "${WEFTCTL}" ./cmd/weftctl)
  "${WEFTCTL}" install --tag "${TAG}" --pull-policy Never --timeout 3m --http-routing

  step "conformance suite: ${PROFILES}"
  mkdir -p "${REPORTS}"
  local args=(
    -conformance-profiles="${PROFILES}"
    -supported-features="${FEATURES}"
    -namespace-labels=weft.dev/inject=enabled
    -organization=weftmesh -project=weft -url=https://github.com/weftmesh/weft
    -version="${VERSION}" -contact=https://github.com/weftmesh/weft/issues
    -report-output="${REPORTS}/weft-${VERSION}.yaml"
    -cleanup-base-resources="${CLEANUP:-true}"
  )
  [[ -n "${RUN_TEST:-}" ]] && args+=(-run-test="${RUN_TEST}")
  [[ -n "${SKIP_TESTS}" ]] && args+=(-skip-tests="${SKIP_TESTS}")
  (cd "${ROOT}/test/conformance" && go test -tags conformance -count=1 -timeout 60m -v . -args "${args[@]}")
}

main "$@"
