#!/usr/bin/env bash
# Lists anything the local test cluster left on this machine: processes,
# mounts, network links, iptables chains, the 198.18.255.1 address, listening
# ports, cgroups and the state dir. Exits 1 if there is anything, 0 if the
# machine is clean (used by the e2e suite to prove a clean teardown).
set -euo pipefail

SCRIPT_NAME=leftovers
# shellcheck source=test/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

found=0
report() { # WHAT ITEMS...
  local what=$1
  shift
  [[ $# -gt 0 && -n "$*" ]] || return 0
  found=1
  echo "${what}:"
  printf '  %s\n' "$@"
}

mapfile -t procs < <(our_pids)
if [[ ${#procs[@]} -gt 0 ]]; then
  lines=()
  for p in "${procs[@]}"; do
    lines+=("${p} $(tr '\0' ' ' <"/proc/${p}/cmdline" 2>/dev/null | cut -c1-150)")
  done
  report "processes" "${lines[@]}"
fi

mapfile -t mounts < <(our_mounts)
report "mounts" "${mounts[@]}"

netns=()
for n in /run/netns/cni-*; do [[ -e "${n}" ]] && netns+=("${n}"); done
report "network namespaces (/run/netns)" "${netns[@]}"

links=()
ip link show "${BRIDGE}" >/dev/null 2>&1 && links+=("${BRIDGE}")
while IFS= read -r l; do [[ -n "${l}" ]] && links+=("${l}"); done \
  < <(ip -o link show master "${BRIDGE}" 2>/dev/null | awk -F': ' '{print $2}')
report "links" "${links[@]}"

addrs=()
ip -o addr show dev lo 2>/dev/null | grep " ${HOST_IP}/32" >/dev/null && addrs+=("${HOST_IP}/32 on lo")
while IFS= read -r a; do [[ -n "${a}" ]] && addrs+=("${a}"); done \
  < <(ip -o -6 addr show 2>/dev/null | awk '$4 ~ /^2001:2:/ {print $4 " on " $2}' || true)
while IFS= read -r a; do [[ -n "${a}" ]] && addrs+=("${a}"); done \
  < <(ip -o -4 addr show 2>/dev/null | awk '$4 ~ /^198\.1[89]\./ {print $4 " on " $2}' | grep -v "^${HOST_IP}/32 on lo$" || true)
report "addresses" "${addrs[@]}"

rules=()
for cmd in iptables ip6tables; do
  command -v "${cmd}" >/dev/null 2>&1 || continue
  for t in filter nat mangle raw; do
    while IFS= read -r c; do [[ -n "${c}" ]] && rules+=("${cmd} -t ${t} chain ${c}"); done < <(ipt_our_chains "${cmd}" "${t}")
    while IFS= read -r r; do [[ -n "${r}" ]] && rules+=("${cmd} -t ${t} ${r}"); done < <(ipt_our_builtin_rules "${cmd}" "${t}")
  done
done
if command -v nft >/dev/null 2>&1; then
  for fam in ip ip6; do
    nft list table "${fam}" kube-proxy >/dev/null 2>&1 && rules+=("nft table ${fam} kube-proxy")
  done
fi
report "iptables" "${rules[@]}"

mapfile -t sets < <(our_ipsets)
report "ipsets" "${sets[@]}"

ports=()
for p in "${HOST_IP}:${API_PORT}" "127.0.0.1:${ETCD_CLIENT_PORT}" "127.0.0.1:${ETCD_PEER_PORT}" "${HOST_IP}:53" "${HOST_IP}:${KUBELET_PORT}" "127.0.0.1:${KUBE_ROUTER_HEALTH_PORT}"; do
  port_listening "${p%:*}" "${p##*:}" && ports+=("${p}")
done
report "listening ports" "${ports[@]}"

mapfile -t cgroups < <(find /sys/fs/cgroup -maxdepth 2 -type d -name k8s.io 2>/dev/null || true)
report "cgroups" "${cgroups[@]}"

cache=()
for f in /var/lib/cni/results/"${CNI_NETWORK}"-* /var/lib/cni/results/cni-loopback-*; do
  [[ -e "${f}" ]] && cache+=("${f}")
done
report "CNI result cache" "${cache[@]}"

[[ -e "${STATE_DIR}" ]] && report "state dir" "${STATE_DIR}"

if [[ ${found} -eq 0 ]]; then
  echo "clean: no leftovers of the weft test cluster"
  exit 0
fi
exit 1
