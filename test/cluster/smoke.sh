#!/usr/bin/env bash
# Proves a running local cluster works end to end: a 2-replica Deployment of
# weft/echo:dev behind a ClusterIP Service; pod-to-pod traffic direct, through
# the Service IP and through its DNS name; pods reaching the API server at
# 198.19.0.1:443 and kubernetes.default.svc with their projected token; a
# TokenReview of a `kubectl create token --audience weft-ca` token; kubectl
# logs and exec through the kubelet. Leaves the namespace deleted.
set -euo pipefail

SCRIPT_NAME=smoke
# shellcheck source=test/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NS="${SMOKE_NAMESPACE:-weft-smoke}"
K() { kubectl_admin -n "${NS}" "$@"; }
pass() { step "PASS $*"; }
fail() { step "FAIL $*"; FAILED=1; }
FAILED=0

step "import weft/echo:dev"
"${HERE}/images.sh" echo | sed 's/^/    /'

kubectl_admin create namespace "${NS}" --dry-run=client -o yaml | kubectl_admin apply -f - >/dev/null
K apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 2
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
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
EOF
step "waiting for the Deployment"
K rollout status deployment/echo --timeout=180s >/dev/null
mapfile -t pods < <(K get pods -l app=echo -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
mapfile -t ips < <(K get pods -l app=echo -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}')
svc_ip="$(K get service echo -o jsonpath='{.spec.clusterIP}')"
step "pods ${pods[*]} at ${ips[*]}; service echo at ${svc_ip}"
[[ ${#pods[@]} -eq 2 ]] || die "want 2 pods, have ${#pods[@]}"
for ip in "${ips[@]}"; do
  [[ "${ip}" == 198.18.0.* ]] || fail "pod IP ${ip} not in ${POD_CIDR}"
done
[[ "${svc_ip}" == 198.19.* ]] || fail "service IP ${svc_ip} not in ${SERVICE_CIDR}"

in_pod() { K exec "${pods[0]}" -c echo -- /usr/local/bin/echo "$@"; }

if out="$(in_pod get "http://${ips[1]}:8080/")" && [[ "${out}" == *"pod=${pods[1]}"* ]]; then
  pass "pod-to-pod ${ips[0]} -> ${ips[1]}:8080"
else fail "pod-to-pod: ${out:-}"; fi

seen=""
for _ in $(seq 1 30); do
  out="$(in_pod get "http://${svc_ip}/" 2>&1)" || true
  for p in "${pods[@]}"; do [[ "${out}" == *"pod=${p} "* && "${seen}" != *"${p}"* ]] && seen+=" ${p}"; done
  [[ "$(wc -w <<<"${seen}")" -eq 2 ]] && break
done
if [[ "$(wc -w <<<"${seen}")" -eq 2 ]]; then
  pass "service ${svc_ip}:80 reaches both pods (${seen# })"
else fail "service ${svc_ip}:80 reached only '${seen}' (last: ${out:-})"; fi

fqdn="echo.${NS}.svc.${CLUSTER_DOMAIN}"
if out="$(in_pod lookup "${fqdn}")" && [[ "${out}" == "${svc_ip}" ]]; then
  pass "DNS ${fqdn} -> ${out}"
else fail "DNS ${fqdn}: ${out:-}"; fi
if out="$(in_pod get "http://${fqdn}/")" && [[ "${out}" == pod=* ]]; then
  pass "http://${fqdn}/ answers"
else fail "http://${fqdn}/: ${out:-}"; fi
if out="$(in_pod get "http://echo/")" && [[ "${out}" == pod=* ]]; then
  pass "short name http://echo/ (search path) answers"
else fail "http://echo/: ${out:-}"; fi

if out="$(in_pod get -sa "https://${API_SERVICE_IP}:443/version")" && [[ "${out}" == *gitVersion* ]]; then
  pass "pod -> API https://${API_SERVICE_IP}:443/version ($(grep -o '"gitVersion": *"[^"]*"' <<<"${out}"))"
else fail "pod -> API ${API_SERVICE_IP}:443: ${out:-}"; fi
if out="$(in_pod get -sa "https://kubernetes.default.svc/api/v1/namespaces/${NS}/pods" 2>&1)"; then
  fail "pod's default ServiceAccount may list pods (RBAC not enforced?)"
elif [[ "${out}" == *Forbidden* || "${out}" == *forbidden* ]]; then
  pass "pod -> https://kubernetes.default.svc authenticates as its ServiceAccount (RBAC: forbidden to list pods)"
else fail "pod -> kubernetes.default.svc: ${out:-}"; fi

token="$(K create token default --audience weft-ca --duration 10m)"
review="$(kubectl_admin create -o jsonpath='{.status.authenticated} {.status.user.username} {.status.audiences}' -f - <<EOF
apiVersion: authentication.k8s.io/v1
kind: TokenReview
spec:
  token: ${token}
  audiences: [weft-ca]
EOF
)"
if [[ "${review}" == "true system:serviceaccount:${NS}:default "*weft-ca* ]]; then
  pass "TokenReview (audience weft-ca): ${review}"
else fail "TokenReview: ${review}"; fi
wrong="$(kubectl_admin create -o jsonpath='{.status.authenticated}' -f - <<EOF
apiVersion: authentication.k8s.io/v1
kind: TokenReview
spec:
  token: ${token}
  audiences: [some-other-audience]
EOF
)"
if [[ "${wrong}" != "true" ]]; then
  pass "TokenReview rejects the token for another audience"
else fail "TokenReview accepted a token for another audience"; fi

if K logs "${pods[1]}" -c echo | grep "serving on" >/dev/null; then
  pass "kubectl logs (API server -> kubelet)"
else fail "kubectl logs"; fi

K delete deployment echo --wait=false >/dev/null
kubectl_admin delete namespace "${NS}" --wait=false >/dev/null
if [[ ${FAILED} -ne 0 ]]; then
  die "smoke test failed"
fi
step "smoke test passed in $((SECONDS - _T0))s"
