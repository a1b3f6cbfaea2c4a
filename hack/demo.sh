#!/usr/bin/env bash
# hack/demo.sh — the newcomer's tour (make demo).
#
# Brings up the local cluster from test/cluster (or uses the cluster that
# $KUBECONFIG names), builds and loads weft's images, installs weft, applies
# examples/demo, shows the injected pods, makes client -> server requests,
# proves them encrypted with `weftctl verify`, shows `weftctl status`, and
# explains what you saw from the real results. Exits non-zero if any step or
# verification fails. Leaves everything running; prints how to clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)
export PATH=/usr/local/go/bin:$PATH
TAG=${TAG:-dev}
NS=weft-demo

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step=""
trap 'rc=$?; if [ $rc -ne 0 ]; then printf "\n\033[31mmake demo FAILED at: %s (exit %d)\033[0m\n" "$step" "$rc" >&2; fi' EXIT

step="cluster"
if [ -n "${KUBECONFIG:-}" ]; then
  bold "Using the cluster KUBECONFIG names ($KUBECONFIG)"
  echo "weft's images must be available to it as weft/<name>:$TAG (test/cluster/images.sh with REGISTRY=host:port pushes them)."
  LOCAL=0
else
  bold "Bringing up the local single-node cluster (test/cluster/up.sh)"
  test/cluster/up.sh
  export KUBECONFIG=$ROOT/_output/cluster/kubeconfig
  LOCAL=1
fi
KUBECTL=kubectl
[ -x _output/bin/kubectl ] && KUBECTL=$ROOT/_output/bin/kubectl
k() { "$KUBECTL" "$@"; }

if [ "$LOCAL" = 1 ] || [ -n "${REGISTRY:-}" ]; then
  step="images"
  bold "Building weft's images and loading them (test/cluster/images.sh)"
  TAG=$TAG REGISTRY=${REGISTRY:-} test/cluster/images.sh >/dev/null
  echo "loaded: weft/weft-controlplane weft/weft-injector weft/weft-sidecar weft/testapp (tag $TAG)"
fi

step="weftctl build"
mkdir -p _output/bin
CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -o _output/bin/weftctl ./cmd/weftctl
WEFTCTL=$ROOT/_output/bin/weftctl

step="weftctl check --pre"
bold "weftctl check --pre"
"$WEFTCTL" check --pre

step="weftctl install"
bold "weftctl install"
"$WEFTCTL" install --tag "$TAG" --pull-policy IfNotPresent --timeout 3m

step="apply examples/demo"
bold "kubectl apply -f examples/demo/"
k apply -f examples/demo/
k -n $NS rollout status deploy/client deploy/server-v1 deploy/server-v2 --timeout=3m

step="show injected pods"
bold "The pods of $NS, as the injector left them"
k -n $NS get pods -o custom-columns='POD:.metadata.name,READY:.status.containerStatuses[*].ready,INIT CONTAINERS (weft):.spec.initContainers[*].name,CONTAINERS:.spec.containers[*].name,SERVICE ACCOUNT:.spec.serviceAccountName'
INJECTED=$(k -n $NS get pods -o jsonpath='{range .items[*]}{.metadata.annotations.weft\.dev/injected}{"\n"}{end}' | grep -c version || true)
PODS=$(k -n $NS get pods --no-headers | wc -l)
[ "$INJECTED" = "$PODS" ] || { echo "only $INJECTED of $PODS pods were injected" >&2; exit 1; }
CLIENT=$(k -n $NS get pods -l app=client -o jsonpath='{.items[0].metadata.name}')

step="client -> server requests"
# The servers' pods are Ready, but their endpoints reach the client's
# sidecar a moment later (EndpointSlice controller, then the control plane's
# 100 ms debounce): wait for the slice, then call until both versions have
# answered.
for _ in $(seq 1 30); do
  READY=$(k -n $NS get endpointslices -l kubernetes.io/service-name=server -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}' | grep -c . || true)
  [ "$READY" -ge 2 ] && break
  sleep 1
done
bold "The client calls the server through the mesh (one connection per request, until both versions answered; at least 8)"
REPLIES=""
for i in $(seq 1 24); do
  R=""
  for try in $(seq 1 20); do
    if R=$(k -n $NS exec "$CLIENT" -c app -- /usr/local/bin/testapp get http://server/ 2>&1); then break; fi
    sleep 1
  done
  echo "$R"
  REPLIES+="$R"$'\n'
  if [ "$i" -ge 8 ] && grep -q "hello from server-v1" <<<"$REPLIES" && grep -q "hello from server-v2" <<<"$REPLIES"; then break; fi
done
echo "$REPLIES" | grep -q "hello from server-v1" || { echo "server-v1 never answered" >&2; exit 1; }
echo "$REPLIES" | grep -q "hello from server-v2" || { echo "server-v2 never answered" >&2; exit 1; }

step="weftctl verify"
bold "weftctl verify -n $NS (while the client keeps a connection busy)"
# A stream of requests on one keep-alive connection, so that both sidecars
# have a live connection to report; the handshake counters cover the rest.
k -n $NS exec "$CLIENT" -c app -- /usr/local/bin/testapp get -n 15000 http://server/ >/dev/null 2>&1 &
LOAD=$!
sleep 1.5
VERIFY_RC=0
VERIFY=$("$WEFTCTL" verify -n $NS 2>&1) || VERIFY_RC=$?
echo "$VERIFY"
wait $LOAD || true

step="weftctl status"
bold "weftctl status -n $NS"
STATUS_RC=0
STATUS=$("$WEFTCTL" status -n $NS 2>&1) || STATUS_RC=$?
echo "$STATUS"

step="egress audit"
EGRESS="skipped"
if [ "$LOCAL" = 1 ]; then
  # The "external" HTTPS API: a host outside the cluster, in its own network
  # namespace on this machine (198.18.101.10), known to the client as
  # api.partner.example; it also serves plain HTTP on port 80, which the
  # client knows as files.partner.example. test/cluster/down.sh removes it.
  bold "Starting an external HTTPS API outside the cluster (netns weft-demo-ext, 198.18.101.10)"
  # A previous run's servers go with their namespace.
  ip netns pids weft-demo-ext 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip link del weft-demoext0 2>/dev/null || true
  ip netns del weft-demo-ext 2>/dev/null || true
  ip netns add weft-demo-ext
  ip link add weft-demoext0 type veth peer name eth0 netns weft-demo-ext
  ip addr add 198.18.101.1/24 dev weft-demoext0
  ip link set weft-demoext0 up
  ip -n weft-demo-ext link set lo up
  ip -n weft-demo-ext addr add 198.18.101.10/24 dev eth0
  ip -n weft-demo-ext link set eth0 up
  ip -n weft-demo-ext route add default via 198.18.101.1
  nohup ip netns exec weft-demo-ext "$ROOT/_output/images/bin/testapp" serve -tls -addr :443 -name api.partner.example \
    >"$ROOT/_output/demo-external.log" 2>&1 &
  nohup ip netns exec weft-demo-ext "$ROOT/_output/images/bin/testapp" serve -addr :80 -name files.partner.example \
    >"$ROOT/_output/demo-external-http.log" 2>&1 &
  sleep 1
  bold "weftctl egress audit -n $NS (after the client calls https://api.partner.example, outside the cluster)"
  k -n $NS exec "$CLIENT" -c app -- /usr/local/bin/testapp get -k -n 3 https://api.partner.example/
  AUDIT=""
  for _ in 1 2 3 4 5 6 7 8 9 10; do # audit events reach the control plane asynchronously
    AUDIT=$("$WEFTCTL" egress audit -n $NS 2>&1) || true
    echo "$AUDIT" | grep -q "api.partner.example" && break
    sleep 1
  done
  echo "$AUDIT"
  if echo "$AUDIT" | grep -q "api.partner.example"; then
    EGRESS="recorded"
  else
    echo "the client's egress to api.partner.example is missing from the audit" >&2
    exit 1
  fi

  step="egress allow-list"
  # client-egress has defaultAction Deny: its Allow rules are an allow-list.
  # files.partner.example (the same external host, plain HTTP) is named by no
  # rule: in Audit mode it goes out, flagged; in Enforce mode the client's
  # sidecar answers 403 itself, naming the policy, although the mesh's
  # outbound policy is ALLOW_ANY. (The 403 needs an HTTP rule on the port,
  # status.example.com on 80; elsewhere the connection is just closed.)
  bold "Audit mode: the client calls http://files.partner.example/, a host client-egress does not name (let through, flagged)"
  for try in $(seq 1 10); do
    if k -n $NS exec "$CLIENT" -c app -- /usr/local/bin/testapp get http://files.partner.example/; then break; fi
    [ "$try" = 10 ] && { echo "files.partner.example did not answer in Audit mode" >&2; exit 1; }
    sleep 1
  done
  bold "kubectl -n $NS patch egresspolicy client-egress: mode Enforce"
  k -n $NS patch egresspolicy client-egress --type merge -p '{"spec":{"mode":"Enforce"}}'
  k -n $NS get egresspolicy client-egress
  bold "Enforce mode: the same request is refused by the client's sidecar"
  REFUSAL=""
  for _ in $(seq 1 30); do # the control plane pushes the new configuration within a second or two
    REFUSAL=$(k -n $NS exec "$CLIENT" -c app -- /usr/local/bin/testapp get http://files.partner.example/ 2>/dev/null) || true
    grep -q "^403 .*denied by $NS/client-egress default" <<<"$REFUSAL" && break
    sleep 1
  done
  echo "$REFUSAL"
  grep -q "^403 .*denied by $NS/client-egress default" <<<"$REFUSAL" || {
    echo "under Enforce, http://files.partner.example/ was not refused with a 403 naming $NS/client-egress" >&2
    exit 1
  }
  bold "Enforce mode: what the policy allows still goes out (https://api.partner.example/)"
  k -n $NS exec "$CLIENT" -c app -- /usr/local/bin/testapp get -k https://api.partner.example/
  bold "weftctl egress audit -n $NS --events --decision deny --destination files.partner.example"
  REFUSED=""
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    REFUSED=$("$WEFTCTL" egress audit -n $NS --events --decision deny --destination files.partner.example 2>&1) || true
    grep -q "$NS/client-egress#default" <<<"$REFUSED" && break
    sleep 1
  done
  echo "$REFUSED"
  grep -q "$NS/client-egress#default" <<<"$REFUSED" || {
    echo "the refused request to files.partner.example is missing from the audit" >&2
    exit 1
  }
  bold "kubectl -n $NS patch egresspolicy client-egress: back to mode Audit, as examples/demo applies it"
  k -n $NS patch egresspolicy client-egress --type merge -p '{"spec":{"mode":"Audit"}}'
  EGRESS="enforced"
else
  echo "skipped: the external host of the tour lives on the local test cluster's machine."
fi

step="explain"
bold "What you just saw"
ENC=$(echo "$VERIFY" | grep -c ': ENCRYPTED: ' || true)
SYNCED=$(echo "$STATUS" | grep -c ' SYNCED ' || true)
LIVE=$(echo "$VERIFY" | grep -c ' yes .*spiffe://' || true)
V1=$(echo "$REPLIES" | grep -c "server-v1" || true)
V2=$(echo "$REPLIES" | grep -c "server-v2" || true)
cat <<TXT
- $INJECTED of $PODS pods in $NS were injected: each runs weft-init (it installed the traffic
  capture rules, then exited) and weft-proxy, a native sidecar holding the pod's SPIFFE identity.
- The client's $((V1 + V2)) requests to http://server/ were answered $V1 time(s) by server-v1 and $V2 by
  server-v2: the client's sidecar balanced the connections over both versions, over mTLS to each server
  sidecar, which checked the client's SPIFFE ID against the AuthorizationPolicy server-allow-client.
- weftctl verify found $ENC pod(s) ENCRYPTED: each sidecar's mTLS handshake counters, and the
  plaintext probe weftctl sent from this machine (outside the mesh) to each declared port was refused.
  $LIVE live connection end(s) were reported by the sidecars themselves, with the peer's SPIFFE ID,
  TLS version and cipher (0 if the client's requests were already done: the counters remain).
- weftctl status shows $SYNCED xDS resource type(s) SYNCED: every sidecar runs the configuration
  the control plane computed for it, with no NACK.
TXT
case "$EGRESS" in
  enforced) echo "- weftctl egress audit listed the client's connections to api.partner.example, which left the
  cluster: who (the client's SPIFFE ID), where (SNI, IP, port), bytes each way, and the EgressPolicy rule that
  matched (client-egress, Audit mode: recorded, not blocked). weftctl egress suggest -n $NS turns it into a policy.
- client-egress is an allow-list (defaultAction: Deny): http://files.partner.example/, which no rule names,
  went out flagged in Audit mode; switched to Enforce, the client's sidecar refused it with a 403 naming
  $NS/client-egress default, and the audit recorded the refusal (rule default), while api.partner.example,
  which a rule allows, still went out. The policy is back in Audit mode.";;
  *) echo "- egress audit: skipped (the tour's external host exists only with the local test cluster).";;
esac
if [ $VERIFY_RC -ne 0 ]; then
  echo "verify exited $VERIFY_RC: something in $NS is NOT proven encrypted (see its Why: lines above)." >&2
  exit 1
fi
if [ $STATUS_RC -ne 0 ]; then
  echo "status exited $STATUS_RC: a sidecar rejected its configuration (see NACKED above)." >&2
  exit 1
fi

step="done"
bold "Clean up"
cat <<TXT
  $KUBECTL delete -f examples/demo/     # the demo namespaces
  $WEFTCTL uninstall                    # weft
TXT
[ "$LOCAL" = 1 ] && echo "  test/cluster/down.sh                  # the local cluster"
cat <<TXT
Explore first: examples/demo/README.md (try a pod that opts out, and watch verify say NOT ENCRYPTED).
  export KUBECONFIG=$KUBECONFIG
make demo took $(( $(date +%s) - START ))s.
TXT
