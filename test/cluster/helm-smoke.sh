#!/usr/bin/env bash
# Installs weft on the running local cluster with the real helm (built from
# test/cluster/helm) from charts/weft, and proves it works and goes away.
# First a release kept in weft's own namespace (-n weft-system
# --create-namespace): it installs, but helm uninstall deletes the namespace
# holding the release record and exits 1 (why docs/install.md keeps the
# release elsewhere). Then the documented one, kept in default:
#   helm install --wait → the control plane and the injector Available, every
#   object `weftctl install --render` lists exists and belongs to the release
#   (CRDs: Helm's crds/, not annotated) → weftctl check → a pod in a labelled
#   namespace is injected and its sidecar SYNCED on every xDS type (weftctl
#   status) → helm uninstall --wait → what Helm leaves is exactly the CRDs
#   (Helm never deletes crds/) and the trust bundles weft's control plane
#   wrote into injected namespaces → the documented cleanup (docs/install.md)
#   → nothing of weft left.
# Needs: the cluster up (up.sh) and weft's images imported (images.sh, TAG).
# Refuses to run where weft is already installed. `make helm-e2e` brings
# the cluster up and down around it.
set -euo pipefail

SCRIPT_NAME=helm-smoke
# shellcheck source=test/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TAG="${TAG:-dev}"
RELEASE_NS=default
WEFT_NS=weft-system
NS=helm-smoke
CHART="${ROOT}/charts/weft"
HELM="${BIN_DIR}/helm"
K() { kubectl_admin "$@"; }

WORK="$(mktemp -d)"
export KUBECONFIG="${KUBECONFIG_PATH}"
# A private helm home: no repositories, plugins or cache of this machine's.
export HELM_CACHE_HOME="${WORK}/helm/cache" HELM_CONFIG_HOME="${WORK}/helm/config" HELM_DATA_HOME="${WORK}/helm/data"
INSTALLED=0
cleanup() {
  local rc=$?
  if [[ ${rc} -ne 0 && ${INSTALLED} -eq 1 ]]; then
    warn "failed (exit ${rc}); removing the release and what it left"
    "${HELM}" uninstall weft -n "${RELEASE_NS}" --wait --timeout 2m >/dev/null 2>&1 || true
    K delete namespace "${NS}" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    # What Helm leaves and what the kubectl path applied: weftctl removes it all.
    "${WORK}/weftctl" --kubeconfig "${KUBECONFIG_PATH}" uninstall --timeout 2m >/dev/null 2>&1 || true
  fi
  rm -rf "${WORK}"
  exit "${rc}"
}
trap cleanup EXIT

[[ -s "${KUBECONFIG_PATH}" ]] || die "no cluster (${KUBECONFIG_PATH}): run test/cluster/up.sh"
K get namespace "${WEFT_NS}" >/dev/null 2>&1 && die "namespace ${WEFT_NS} exists: weft is already installed here"

# What of weft is in the cluster, one line each.
weft_objects() {
  K get namespace "${WEFT_NS}" -o name --ignore-not-found
  K get clusterroles,clusterrolebindings,mutatingwebhookconfigurations -o name | grep '/weft-' || true
  K -n kube-system get rolebindings -o name | grep '/weft-' | sed 's|^|kube-system/|' || true
  K get crd -o name | grep '\.weft\.dev$' || true
  K get configmaps --all-namespaces -l app.kubernetes.io/part-of=weft -o jsonpath='{range .items[*]}configmap/{.metadata.namespace}/{.metadata.name}{"\n"}{end}'
  K -n "${RELEASE_NS}" get secrets -l owner=helm,name=weft -o name
}

step "build helm (test/cluster/build.sh helm) and weftctl"
"${HERE}/build.sh" helm | sed 's/^/    /'
# images.sh's flags: its build cache serves this one.
(cd "${ROOT}" && CGO_ENABLED=0 go build -trimpath -tags grpcnotrace \
  -ldflags "-s -w -X github.com/weftmesh/weft/internal/version.Version=${VERSION:-dev}" -o "${WORK}/weftctl" ./cmd/weftctl)
W() { "${WORK}/weftctl" --kubeconfig "${KUBECONFIG_PATH}" "$@"; }
step "$("${HELM}" version --short)"

# docs/install.md: why the release is not kept in weft's own namespace.
# Helm v4 installs it (its conflict check runs before --create-namespace
# creates the namespace; its server-side apply then takes the namespace over
# with the chart's labels), but helm uninstall deletes that namespace with
# the release record in it and exits 1.
step "helm install -n ${WEFT_NS} --create-namespace works, helm uninstall then fails, as documented"
INSTALLED=1
"${HELM}" install weft "${CHART}" -n "${WEFT_NS}" --create-namespace --set-string tag="${TAG}" --set-string pullPolicy=Never >/dev/null
label=$(K get namespace "${WEFT_NS}" -o jsonpath='{.metadata.labels.weft\.dev/inject}')
[[ "${label}" == disabled ]] || die "namespace ${WEFT_NS} lacks the chart's label weft.dev/inject=disabled (has '${label}')"
if "${HELM}" uninstall weft -n "${WEFT_NS}" --wait --timeout 2m >"${WORK}/un.out" 2>&1; then
  die "helm uninstall -n ${WEFT_NS} succeeded: docs/install.md is wrong"
fi
grep -q 'Failed to purge the release: release: not found' "${WORK}/un.out" || { cat "${WORK}/un.out" >&2; die "it failed otherwise"; }
for _ in $(seq 120); do
  K get namespace "${WEFT_NS}" >/dev/null 2>&1 || break
  sleep 1
done
K delete -f "${CHART}/crds/" >/dev/null
INSTALLED=0
left=$(weft_objects)
[[ -z "${left}" ]] || die "left after helm uninstall -n ${WEFT_NS} and deleting the CRDs: ${left}"
step "PASS installed (namespace labelled weft.dev/inject=disabled); uninstall exits 1: $(grep -o 'Failed to purge the release: release: not found' "${WORK}/un.out"); nothing else left"

step "helm install weft ${CHART#"${ROOT}"/} -n ${RELEASE_NS} --set-string tag=${TAG} --set-string pullPolicy=Never --wait"
t0=${SECONDS}
INSTALLED=1
"${HELM}" install weft "${CHART}" -n "${RELEASE_NS}" --set-string tag="${TAG}" --set-string pullPolicy=Never \
  --wait --timeout 3m | sed 's/^/    /'
step "PASS helm install --wait returned after $((SECONDS - t0))s"
K -n "${WEFT_NS}" wait --for=condition=Available --timeout 60s deployment/weft-controlplane deployment/weft-injector | sed 's/^/    /'
[[ "$("${HELM}" status weft -n "${RELEASE_NS}" -o json | jq -r .info.status)" == deployed ]] || die "release not deployed"

step "every object weftctl install renders is in the cluster, and the release owns it"
W install --render --tag "${TAG}" --pull-policy Never >"${WORK}/render.yaml"
K get -f "${WORK}/render.yaml" -o json >"${WORK}/live.json"
want=$(grep -c '^kind: ' "${WORK}/render.yaml")
have=$(jq '.items | length' "${WORK}/live.json")
[[ "${want}" -eq "${have}" ]] || die "weftctl renders ${want} objects, ${have} exist"
unowned=$(jq -r '.items[] | select(.kind != "CustomResourceDefinition")
  | select(.metadata.annotations["meta.helm.sh/release-name"] != "weft"
           or .metadata.annotations["meta.helm.sh/release-namespace"] != "'"${RELEASE_NS}"'")
  | .kind + " " + .metadata.name' "${WORK}/live.json")
[[ -z "${unowned}" ]] || die "not owned by release weft: ${unowned}"
step "PASS ${have} objects, every one but the CRDs annotated with release weft/${RELEASE_NS}"

step "weftctl check"
W check | sed 's/^/    /'

step "namespace ${NS} labelled weft.dev/inject=enabled, an echo Deployment in it"
K create namespace "${NS}" >/dev/null
K label namespace "${NS}" weft.dev/inject=enabled >/dev/null
K -n "${NS}" apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: weft/echo:dev
        imagePullPolicy: Never
        args: [serve, -addr, ":8080"]
        ports: [{containerPort: 8080}]
EOF
K -n "${NS}" wait --for=condition=Available --timeout 120s deployment/echo | sed 's/^/    /'
pod=$(K -n "${NS}" get pods -l app=echo -o jsonpath='{.items[0].metadata.name}')
containers=$(K -n "${NS}" get pod "${pod}" -o json | jq -r '[(.spec.initContainers // [])[].name, .spec.containers[].name] | join(" ")')
[[ " ${containers} " == *" weft-proxy "* ]] || die "pod ${pod} was not injected (containers: ${containers})"
step "PASS pod ${pod} injected: ${containers}"

synced=""
for _ in $(seq 60); do
  if W status -n "${NS}" -o json >"${WORK}/status.json" 2>/dev/null; then
    synced=$(jq -r --arg p "${pod}" '.sidecars[] | select(.pod == $p)
      | select((.types | length) > 0 and all(.types[]; .state == "SYNCED")) | .pod' "${WORK}/status.json")
    [[ -n "${synced}" ]] && break
  fi
  sleep 1
done
[[ -n "${synced}" ]] || { cat "${WORK}/status.json" >&2 || true; die "sidecar of ${pod} not SYNCED after 60s"; }
step "PASS weftctl status: ${NS}/${pod} SYNCED on $(jq -r --arg p "${pod}" '[.sidecars[] | select(.pod == $p) | .types[].type] | join(", ")' "${WORK}/status.json")"

step "helm uninstall weft -n ${RELEASE_NS} --wait"
t0=${SECONDS}
"${HELM}" uninstall weft -n "${RELEASE_NS}" --wait --timeout 3m | sed 's/^/    /'
for _ in $(seq 120); do
  K get namespace "${WEFT_NS}" >/dev/null 2>&1 || break
  sleep 1
done
step "PASS uninstalled, namespace ${WEFT_NS} gone after $((SECONDS - t0))s"
weft_objects | sort >"${WORK}/left"
{
  sed -n 's/^  name: \(.*\.weft\.dev\)$/customresourcedefinition.apiextensions.k8s.io\/\1/p' "${CHART}"/crds/*.yaml
  echo "configmap/${NS}/weft-trust-bundle"
} | sort >"${WORK}/expected"
if ! diff -u "${WORK}/expected" "${WORK}/left" >"${WORK}/diff"; then
  cat "${WORK}/diff" >&2
  die "after helm uninstall: not exactly Helm's CRDs and the trust bundle of ${NS} left (diff: expected, found)"
fi
step "PASS left by helm uninstall, as documented: $(wc -l <"${WORK}/left") objects ($(grep -c customresourcedefinition "${WORK}/left") CRDs, the trust bundle of ${NS})"

step "documented cleanup: kubectl delete configmap -A -l app.kubernetes.io/part-of=weft; kubectl delete -f charts/weft/crds/"
K delete configmap --all-namespaces -l app.kubernetes.io/part-of=weft | sed 's/^/    /'
K delete -f "${CHART}/crds/" | sed 's/^/    /'
INSTALLED=0
left=$(weft_objects)
[[ -z "${left}" ]] || die "still in the cluster: ${left}"
step "PASS nothing of weft left"

K delete namespace "${NS}" --wait=true --timeout 120s >/dev/null

# The third install path, as docs/install.md gives it: the release manifest
# of weftctl install --render applied with plain kubectl.
step "kubectl apply --server-side -f <(weftctl install --render), as docs/install.md says"
INSTALLED=1
W install --render --tag "${TAG}" --pull-policy Never >"${WORK}/weft.yaml"
t0=${SECONDS}
if K apply --server-side -f "${WORK}/weft.yaml" >"${WORK}/apply1" 2>&1; then
  step "first apply: all $(wc -l <"${WORK}/apply1") objects applied"
else
  step "first apply exited non-zero, as documented: $(grep -v 'serverside-applied' "${WORK}/apply1" | head -3 | tr '\n' ' ')"
fi
K wait --for condition=Established --timeout 60s crd/meshconfigs.weft.dev | sed 's/^/    /'
K apply --server-side -f "${WORK}/weft.yaml" >/dev/null
K -n "${WEFT_NS}" rollout status --timeout 3m deployment/weft-controlplane deployment/weft-injector | sed 's/^/    /'
W check | sed 's/^/    /'
step "PASS applied with kubectl and ready after $((SECONDS - t0))s; weftctl uninstall"
W uninstall --timeout 2m | sed 's/^/    /'
INSTALLED=0
left=$(weft_objects)
[[ -z "${left}" ]] || die "still in the cluster after weftctl uninstall: ${left}"
step "PASS helm smoke (and the kubectl apply path)"
