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
# declares; default: the mesh core), RUN_TEST (one test by its ShortName),
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
FEATURES="${FEATURES:-Mesh,HTTPRoute,GRPCRoute}"
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

  step "weftctl install --http-routing"
  (cd "${ROOT}" && CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -o "${WEFTCTL}" ./cmd/weftctl)
  "${WEFTCTL}" install --tag "${TAG}" --pull-policy Never --timeout 3m --http-routing

  step "Gateway API CRDs (standard channel) of the suite's version"
  local mod dir
  mod="$(cd "${ROOT}/test/conformance" && go list -m -f '{{.Path}}@{{.Version}}' sigs.k8s.io/gateway-api)"
  dir="$(cd "${ROOT}/test/conformance" && go mod download -json "${mod}" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  [[ -d "${dir}/config/crd/standard" ]] || die "no config/crd/standard in ${mod} (${dir})"
  "${KUBECTL}" apply --server-side -f "${dir}/config/crd/standard/" >/dev/null
  "${KUBECTL}" wait --for condition=Established --timeout 60s crd --all >/dev/null

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
  (cd "${ROOT}/test/conformance" && go test -tags conformance -count=1 -timeout 60m -v . -args "${args[@]}")
}

main "$@"
