#!/usr/bin/env bash
# Builds weft's container images without Docker or a registry and loads them
# into the local cluster's containerd (or pushes them to REGISTRY).
#
#   test/cluster/images.sh [all|weft|echo|pause|tools]
#
#   all    (default) weft + echo
#   weft   every cmd/<binary> dir in the repo -> weft/<binary>:$TAG, plus
#          test/e2e/testapp (if it exists) -> weft/testapp:$TAG
#   echo   test/cluster/testdata/echo -> weft/echo:$TAG (test workload)
#   pause  test/cluster/pause -> weft/pause:v0 (the pod sandbox image)
#   tools  only build imagetool, pause, echo and the pause/echo tarballs (used by up.sh)
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
    weft) weft_images ;;
    all)
      weft_images
      pack "${TAG}" echo="${GOBIN_DIR}/echo"
      ;;
    *) die "usage: $0 [all|weft|echo|pause|tools]" ;;
  esac
}

main "$@"
