#!/usr/bin/env bash
# Builds weft's container images without Docker or a registry and loads them
# into the local cluster's containerd (or pushes them to REGISTRY).
#
#   test/cluster/images.sh [all|weft|echo|pause|tools|conformance|traefik]
#
#   all    (default) weft + echo
#   weft   every cmd/<binary> dir in the repo -> weft/<binary>:$TAG, plus
#          test/e2e/testapp (if it exists) -> weft/testapp:$TAG
#   echo   test/cluster/testdata/echo -> weft/echo:$TAG (test workload)
#   pause  test/cluster/pause -> weft/pause:v0 (the pod sandbox image)
#   tools  only build imagetool, pause, echo and the pause/echo tarballs (used by up.sh)
#   traefik
#          Traefik, the ingress controller test/e2e meshes (built by
#          test/cluster/build.sh traefik, cached: ~13 min cold) -> weft/traefik:$TAG,
#          running as UID 65532
#   conformance
#          the Gateway API mesh conformance suite's echo app (Istio's echo
#          server and client, pinned in test/conformance/echo) ->
#          registry.k8s.io/gateway-api/echo-advanced:v1.5.1, the exact name
#          its manifests use (imagePullPolicy IfNotPresent: nothing is pulled)
#
# Env: TAG (default dev); REGISTRY=host:port pushes instead of importing;
# NO_IMPORT=1 only writes the tarballs to _output/images/.
# Binaries are static: CGO_ENABLED=0, -trimpath.
set -euo pipefail

SCRIPT_NAME=images
# shellcheck source=test/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TAG="${TAG:-dev}"
REGISTRY="${REGISTRY:-}"
NO_IMPORT="${NO_IMPORT:-}"
GOBIN_DIR="${IMAGES_DIR}/bin"
export CGO_ENABLED=0

gobuild() { # OUT PKG (package path relative to the repo root); tags as the Makefile's BUILDTAGS
  (cd "${ROOT}" && go build -trimpath -tags grpcnotrace -ldflags "-s -w -X github.com/weftmesh/weft/internal/version.Version=${VERSION:-dev}" -o "$1" "$2")
}

build_tools() {
  mkdir -p "${GOBIN_DIR}"
  gobuild "${GOBIN_DIR}/imagetool" ./test/cluster/imagetool
  gobuild "${GOBIN_DIR}/pause" ./test/cluster/pause
  gobuild "${GOBIN_DIR}/echo" ./test/cluster/testdata/echo
  # The sandbox image has a fixed tag; written every time (cheap, deterministic).
  "${GOBIN_DIR}/imagetool" -out "${IMAGES_DIR}" -tag "${PAUSE_IMAGE##*:}" pause="${GOBIN_DIR}/pause" >/dev/null
}

# pack TAG NAME=PATH...: writes the tarballs or pushes; prints what it did.
pack() {
  local tag=$1
  shift
  if [[ -n "${REGISTRY}" ]]; then
    "${GOBIN_DIR}/imagetool" -tag "${tag}" -registry "${REGISTRY}" "$@"
    return
  fi
  "${GOBIN_DIR}/imagetool" -out "${IMAGES_DIR}" -tag "${tag}" "$@"
  [[ -n "${NO_IMPORT}" ]] && return
  [[ -S "${CONTAINERD_SOCK}" ]] || die "containerd socket ${CONTAINERD_SOCK} not found: run test/cluster/up.sh first (or NO_IMPORT=1)"
  local spec
  for spec in "$@"; do
    ctr_k8s images import "${IMAGES_DIR}/${spec%%=*}.tar" >/dev/null
  done
}

weft_images() {
  local specs=() d name
  for d in "${ROOT}"/cmd/*/; do
    [[ -d "${d}" ]] || continue
    name="$(basename "${d}")"
    compgen -G "${d}*.go" >/dev/null || continue
    step "go build cmd/${name}"
    gobuild "${GOBIN_DIR}/${name}" "./cmd/${name}"
    specs+=("${name}=${GOBIN_DIR}/${name}")
  done
  if [[ -d "${ROOT}/test/e2e/testapp" ]] && compgen -G "${ROOT}/test/e2e/testapp/*.go" >/dev/null; then
    step "go build test/e2e/testapp"
    gobuild "${GOBIN_DIR}/testapp" ./test/e2e/testapp
    specs+=("testapp=${GOBIN_DIR}/testapp")
  fi
  if [[ ${#specs[@]} -eq 0 ]]; then
    step "no cmd/* binaries in the repo yet: nothing to pack"
    return
  fi
  pack "${TAG}" "${specs[@]}"
}

# The conformance suite's manifests run this image with TLS on 8443 from
# /cert.crt and /cert.key; like upstream's it runs as UID 1338 (not the
# sidecar's, so its traffic is captured like any app's).
CONFORMANCE_ECHO_IMAGE="registry.k8s.io/gateway-api/echo-advanced:v1.5.1"

conformance_echo() {
  local out="${IMAGES_DIR}/conformance-echo" ref="${CONFORMANCE_ECHO_IMAGE}"
  mkdir -p "${out}"
  step "go build Istio's echo server and client (test/conformance/echo)"
  (cd "${ROOT}/test/conformance/echo" && go build -trimpath -ldflags "-s -w" -o "${out}/" \
    istio.io/istio/pkg/test/echo/cmd/server istio.io/istio/pkg/test/echo/cmd/client)
  if [[ ! -s "${out}/cert.key" ]]; then
    # A self-signed certificate for the echo's own TLS port; no mesh test
    # verifies it (weft's mTLS is the sidecars').
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 -subj /CN=echo \
      -keyout "${out}/cert.key" -out "${out}/cert.crt" 2>/dev/null || die "openssl could not make the echo's certificate"
  fi
  local name="${ref##*/}"
  "${GOBIN_DIR}/imagetool" -out "${IMAGES_DIR}" -prefix "${ref%/*}/" -tag "${name##*:}" -user 1338 \
    -file "/cert.crt=${out}/cert.crt" -file "/cert.key=${out}/cert.key" \
    "${name%%:*}=${out}/server,${out}/client"
  [[ -n "${NO_IMPORT}" ]] && return
  [[ -S "${CONTAINERD_SOCK}" ]] || die "containerd socket ${CONTAINERD_SOCK} not found: run test/cluster/up.sh first (or NO_IMPORT=1)"
  ctr_k8s images import "${IMAGES_DIR}/${name%%:*}.tar" >/dev/null
}

traefik_image() {
  "${ROOT}/test/cluster/build.sh" traefik
  "${GOBIN_DIR}/imagetool" -out "${IMAGES_DIR}" -tag "${TAG}" -user 65532 traefik="${BIN_DIR}/traefik"
  [[ -n "${NO_IMPORT}" ]] && return
  [[ -S "${CONTAINERD_SOCK}" ]] || die "containerd socket ${CONTAINERD_SOCK} not found: run test/cluster/up.sh first (or NO_IMPORT=1)"
  ctr_k8s images import "${IMAGES_DIR}/traefik.tar" >/dev/null
}

main() {
  local what="${1:-all}"
  build_tools
  case "${what}" in
    tools) ;;
    pause)
      if [[ -n "${REGISTRY}" ]]; then
        pack "${PAUSE_IMAGE##*:}" pause="${GOBIN_DIR}/pause"
      else
        [[ -n "${NO_IMPORT}" ]] || ctr_k8s images import "${IMAGES_DIR}/pause.tar" >/dev/null
        echo "${PAUSE_IMAGE} ${IMAGES_DIR}/pause.tar"
      fi
      ;;
    echo) pack "${TAG}" echo="${GOBIN_DIR}/echo" ;;
    conformance) conformance_echo ;;
    traefik) traefik_image ;;
    weft) weft_images ;;
    all)
      weft_images
      pack "${TAG}" echo="${GOBIN_DIR}/echo"
      ;;
    *) die "usage: $0 [all|weft|echo|pause|tools|conformance|traefik]" ;;
  esac
}

main "$@"
