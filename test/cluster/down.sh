#!/usr/bin/env bash
# Tears the local test cluster down completely, also after a failed or
# half-finished up.sh: every step tolerates missing pieces. It stops every
# component by its recorded PID (and any other process of ours, found by our
# paths) and waits until each has exited, removes the pods' containers and
# shims, unmounts everything under the state dir and the pods' network
# namespaces, deletes the bridge and its veths, removes only the KUBE-* and
# CNI-* iptables chains (and the built-in-chain rules that jump to them; this
# covers kube-router's KUBE-ROUTER-*, KUBE-POD-FW-*, KUBE-NWPLCY-*), then
# kube-router's ipsets (KUBE-SRC-*, KUBE-DST-*),
# removes 198.18.255.1 and 2001:2:0:ff::1 from lo, restores the sysctls and deletes the state dir.
set -uo pipefail

SCRIPT_NAME=down
# shellcheck source=test/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root

stop_component() { # NAME... (in parallel)
  local c p pids=()
  for c in "$@"; do
    p="$(pid_of "${c}")"
    [[ -n "${p}" ]] && pids+=("${p}")
  done
  [[ ${#pids[@]} -gt 0 ]] || return 0
  step "stopping $* (pids ${pids[*]})"
  stop_pids 30 "${pids[@]}"
}

remove_containers() {
  [[ -S "${CONTAINERD_SOCK}" && -n "$(pid_of containerd)" ]] || return 0
  local ids id n=0
  ids="$(ctr_k8s tasks ls -q 2>/dev/null || true)"
  for id in ${ids}; do
    ctr_k8s tasks kill -s SIGKILL "${id}" >/dev/null 2>&1 || true
    n=$((n + 1))
  done
  for id in ${ids}; do
    ctr_k8s tasks delete -f "${id}" >/dev/null 2>&1 || true
  done
  for id in $(ctr_k8s containers ls -q 2>/dev/null || true); do
    ctr_k8s containers delete "${id}" >/dev/null 2>&1 || true
  done
  step "removed ${n} container task(s)"
}

unmount_all() {
  local m n=0 pass
  for pass in 1 2 3; do
    local mounts
    mounts="$(our_mounts)"
    [[ -n "${mounts}" ]] || break
    while IFS= read -r m; do
      [[ -n "${m}" ]] || continue
      umount "${m}" 2>/dev/null || umount -l "${m}" 2>/dev/null || true
      n=$((n + 1))
    done <<<"${mounts}"
    [[ ${pass} -eq 3 ]] && warn "mounts left: ${mounts//$'\n'/ }"
  done
  rm -f /run/netns/cni-* 2>/dev/null || true
  [[ ${n} -gt 0 ]] && step "unmounted ${n} mount(s)"
  return 0
}

delete_links() {
  local l n=0
  for l in $(ip -o link show master "${BRIDGE}" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "${l}" 2>/dev/null && n=$((n + 1))
  done
  if ip link show "${BRIDGE}" >/dev/null 2>&1; then
    ip link del "${BRIDGE}" && step "deleted bridge ${BRIDGE} and ${n} veth(s)"
  fi
  return 0
}

clean_iptables() {
  local cmd t rule chain n=0
  for cmd in iptables ip6tables; do
    command -v "${cmd}" >/dev/null 2>&1 || continue
    for t in filter nat mangle raw; do
      # 1. rules in built-in chains that lead into our chains (or name our bridge/ranges)
      while IFS= read -r rule; do
        [[ -n "${rule}" ]] || continue
        # The rule comes from iptables -S and keeps its quoting: re-parse it.
        eval "${cmd} -w 5 -t ${t} -D ${rule#-A }" 2>/dev/null && n=$((n + 1))
      done < <(ipt_our_builtin_rules "${cmd}" "${t}")
      # 2. flush all our chains, then delete them (they reference each other)
      local chains
      chains="$(ipt_our_chains "${cmd}" "${t}")"
      for chain in ${chains}; do "${cmd}" -w 5 -t "${t}" -F "${chain}" 2>/dev/null || true; done
      for chain in ${chains}; do "${cmd}" -w 5 -t "${t}" -X "${chain}" 2>/dev/null && n=$((n + 1)); done
    done
  done
  # 3. kube-router's ipsets, only now that no rule references them
  local set
  for set in $(our_ipsets); do
    ipset destroy "${set}" 2>/dev/null && n=$((n + 1))
  done
  if command -v nft >/dev/null 2>&1; then
    local fam
    for fam in ip ip6; do
      nft list table "${fam}" kube-proxy >/dev/null 2>&1 && nft delete table "${fam}" kube-proxy && n=$((n + 1))
    done
  fi
  [[ ${n} -gt 0 ]] && step "removed ${n} iptables rule(s)/chain(s)"
  return 0
}

restore_sysctls() {
  [[ -f "${STATE_DIR}/sysctl.orig" ]] || return 0
  local line k v
  while IFS= read -r line; do
    k="${line%%=*}"
    v="${line#*=}"
    [[ -w "/proc/sys/${k//.//}" ]] && echo "${v}" >"/proc/sys/${k//.//}" 2>/dev/null
  done <"${STATE_DIR}/sysctl.orig"
  step "restored sysctls"
}

remove_cgroups() {
  # runc (cgroupfs driver) puts containers in /k8s.io/<id> of every hierarchy;
  # remove the empty directories it leaves, children first.
  local d
  for d in /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/k8s.io; do
    [[ -d "${d}" ]] || continue
    find "${d}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

main() {
  # Stop the kubelet first so that it does not restart what we remove.
  stop_component kubelet
  remove_containers
  stop_component kube-router kube-proxy coredns kube-scheduler kube-controller-manager
  stop_component containerd kube-apiserver
  stop_component etcd

  # Anything of ours left (no PID file after a crash, shims, container processes).
  local stray
  mapfile -t stray < <(our_pids)
  if [[ ${#stray[@]} -gt 0 ]]; then
    step "stopping ${#stray[@]} remaining process(es) of this cluster: ${stray[*]}"
    stop_pids 10 "${stray[@]}"
  fi

  local deadline=$((SECONDS + 30))
  while port_listening "${HOST_IP}" "${API_PORT}" && ((SECONDS < deadline)); do sleep 0.2; done
  port_listening "${HOST_IP}" "${API_PORT}" && warn "${HOST_IP}:${API_PORT} is still in use"

  unmount_all
  delete_links
  # The "external" hosts that make demo and the e2e suite start beside the
  # cluster (their netns takes its veth along).
  local ns
  local link
  for link in weft-demoext0 weft-ext0; do
    # the host end of their veths: gone with the netns, but only eventually
    ip link del "${link}" 2>/dev/null || true
  done
  for ns in weft-demo-ext weft-ext; do
    if ip netns list 2>/dev/null | grep "^${ns}\b" >/dev/null; then
      ip netns pids "${ns}" 2>/dev/null | xargs -r kill 2>/dev/null || true
      ip netns del "${ns}" && step "deleted netns ${ns}"
    fi
  done
  clean_iptables
  remove_cgroups
  if ip -o addr show dev lo | grep " ${HOST_IP}/32" >/dev/null; then
    ip addr del "${HOST_IP}/32" dev lo && step "removed ${HOST_IP}/32 from lo"
  fi
  if ip -o -6 addr show dev lo | grep " ${HOST_IP6}/128" >/dev/null; then
    ip -6 addr del "${HOST_IP6}/128" dev lo && step "removed ${HOST_IP6}/128 from lo"
  fi
  restore_sysctls
  rm -f /var/lib/cni/results/"${CNI_NETWORK}"-* /var/lib/cni/results/cni-loopback-* 2>/dev/null || true
  if [[ -f "${STATE_DIR}/created-var-lib-cni" ]]; then
    rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  fi
  if [[ -f "${STATE_DIR}/created-run-containerd" && ! -S /run/containerd/containerd.sock ]]; then
    rm -rf /run/containerd
  fi
  if [[ -d "${STATE_DIR}" ]]; then
    if [[ -n "$(our_mounts)" ]]; then
      warn "not removing ${STATE_DIR}: mounts remain"
    else
      rm -rf "${STATE_DIR}" && step "removed ${STATE_DIR}"
    fi
  fi
  if "${HERE}/leftovers.sh" >/dev/null 2>&1; then
    step "cluster down in $((SECONDS - _T0))s"
  else
    "${HERE}/leftovers.sh" >&2
    warn "leftovers remain (listed above)"
    return 1
  fi
}

main "$@"
