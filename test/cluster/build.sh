#!/usr/bin/env bash
# Builds (and caches) the upstream binaries of the local test cluster:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
# kubectl (from test/cluster/tools), coredns (from test/cluster/coredns) and
# kube-router (from test/cluster/kube-router; only its NetworkPolicy controller runs).
# Rebuilds only when the pins (go.mod + go.sum of those modules) change.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
OUT="${WEFT_BIN_DIR:-${ROOT}/_output/bin}"
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
START=${SECONDS}
log() { printf '[build %4ds] %s\n' "$((SECONDS - START))" "$*"; }

stamp_of() { # module dir -> hash of its pins
  cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -d' ' -f1
}

ensure_sum() { # module dir
  if [[ ! -s "$1/go.sum" ]]; then
    log "go mod tidy in ${1#"${ROOT}"/}"
    (cd "$1" && go mod tidy)
  fi
}

build_k8s() {
  local mod="${HERE}/tools" want have=""
  ensure_sum "${mod}"
  want="$(stamp_of "${mod}")"
  [[ -f "${OUT}/.stamp" ]] && have="$(cat "${OUT}/.stamp")"
  local missing=0 b
  for b in "${K8S_BINS[@]}"; do [[ -x "${OUT}/${b}" ]] || missing=1; done
  if [[ "${want}" == "${have}" && ${missing} -eq 0 ]]; then
    log "kubernetes binaries up to date (${K8S_VERSION}, stamp ${want:0:12})"
    return
  fi
  local major minor ld pkgs=()
  major="$(echo "${K8S_VERSION#v}" | cut -d. -f1)"
  minor="$(echo "${K8S_VERSION#v}" | cut -d. -f2)"
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X ${p}.gitVersion=${K8S_VERSION} -X ${p}.gitMajor=${major} -X ${p}.gitMinor=${minor}"
    ld+=" -X ${p}.gitTreeState=clean -X ${p}.buildDate=1970-01-01T00:00:00Z"
  done
  for b in "${K8S_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${b}"); done
  log "building ${K8S_BINS[*]} ${K8S_VERSION} (cold: ~10 min)"
  mkdir -p "${OUT}"
  rm -f "${OUT}/.stamp"
  (cd "${mod}" && go build -trimpath -ldflags "${ld}" -o "${OUT}/" "${pkgs[@]}")
  echo "${want}" >"${OUT}/.stamp"
  log "kubernetes binaries built"
}

# build_module NAME MINUTES PKG [LDFLAGS]: builds PKG of the tools module
# test/cluster/NAME into ${OUT}/NAME, unless its stamp (.stamp-NAME: the
# hash of that module's pins) says the binary is already built from them.
build_module() {
  local name=$1 minutes=$2 pkg=$3 ld="-s -w ${4:-}"
  local mod="${HERE}/${name}" want have=""
  ensure_sum "${mod}"
  want="$(stamp_of "${mod}")"
  [[ -f "${OUT}/.stamp-${name}" ]] && have="$(cat "${OUT}/.stamp-${name}")"
  if [[ "${want}" == "${have}" && -x "${OUT}/${name}" ]]; then
    log "${name} up to date (stamp ${want:0:12})"
    return
  fi
  log "building ${name} (cold: ~${minutes} min)"
  mkdir -p "${OUT}"
  rm -f "${OUT}/.stamp-${name}"
  (cd "${mod}" && go build -trimpath -ldflags "${ld}" -o "${OUT}/${name}" "${pkg}")
  echo "${want}" >"${OUT}/.stamp-${name}"
  log "${name} built"
}

build_coredns() { build_module coredns 2 github.com/coredns/coredns; }

build_kube_router() {
  local ver
  ver="$(cd "${HERE}/kube-router" && go list -m -f '{{.Version}}' github.com/cloudnativelabs/kube-router/v2)"
  build_module kube-router 2 github.com/cloudnativelabs/kube-router/v2/cmd/kube-router \
    "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=${ver}"
}

# Traefik, the ingress controller test/e2e meshes: not part of "all" (the
# cluster does not need it); test/cluster/images.sh traefik builds and packs it.
build_traefik() {
  local ver
  ver="$(cd "${HERE}/traefik" && go list -m -f '{{.Version}}' github.com/traefik/traefik/v3)"
  build_module traefik 13 github.com/traefik/traefik/v3/cmd/traefik \
    "-X github.com/traefik/traefik/v3/pkg/version.Version=${ver}"
}

# Helm, the real helm binary that renders charts/weft for its comparison with
# weftctl install (make chart-test) and installs it on the cluster (make
# helm-e2e): not part of "all" either.
build_helm() {
  local ver
  ver="$(cd "${HERE}/helm" && go list -m -f '{{.Version}}' helm.sh/helm/v4)"
  build_module helm 4 helm.sh/helm/v4/cmd/helm "-X helm.sh/helm/v4/internal/version.version=${ver}"
}

case "${1:-all}" in
  k8s) build_k8s ;;
  coredns) build_coredns ;;
  kube-router) build_kube_router ;;
  traefik) build_traefik ;;
  helm) build_helm ;;
  all) build_k8s; build_coredns; build_kube_router ;;
  *) echo "usage: $0 [all|k8s|coredns|kube-router|traefik|helm]" >&2; exit 2 ;;
esac
