# shellcheck shell=bash disable=SC2034
# Shared settings and helpers of the local test cluster scripts (up.sh,
# down.sh, leftovers.sh, images.sh). Sourced, never run.

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"

# Paths (all overridable).
BIN_DIR="${WEFT_BIN_DIR:-${ROOT}/_output/bin}"
STATE_DIR="${WEFT_CLUSTER_DIR:-${ROOT}/_output/cluster}"
IMAGES_DIR="${WEFT_IMAGES_DIR:-${ROOT}/_output/images}"
PID_DIR="${STATE_DIR}/pids"
LOG_DIR="${STATE_DIR}/logs"
PKI_DIR="${STATE_DIR}/pki"
KUBECONFIG_PATH="${STATE_DIR}/kubeconfig"
CONTAINERD_DIR="${STATE_DIR}/containerd"
CONTAINERD_SOCK="${CONTAINERD_DIR}/containerd.sock"
CNI_CONF_DIR="${STATE_DIR}/cni/net.d"
CNI_IPAM_DIR="${STATE_DIR}/cni/networks"
KUBELET_DIR="${STATE_DIR}/kubelet"
DNS_HOSTS_FILE="${STATE_DIR}/coredns/hosts"
KUBECTL="${BIN_DIR}/kubectl"

# Addresses and ports. Only RFC 2544 test addresses that this cluster creates.
HOST_IP="198.18.255.1"       # on lo as /32: API server, kubelet, CoreDNS
POD_CIDR="198.18.0.0/24"
POD_GATEWAY="198.18.0.1"     # the bridge
SERVICE_CIDR="198.19.0.0/16"
API_SERVICE_IP="198.19.0.1"  # kubernetes.default
# IPv6 (the cluster is dual-stack, IPv4 first): RFC 5180's benchmarking
# prefix 2001:2::/48, the IPv6 counterpart of 198.18.0.0/15, never routed.
HOST_IP6="2001:2:0:ff::1"    # on lo as /128: the node's second InternalIP
POD_CIDR6="2001:2:0:18::/64"
POD_GATEWAY6="2001:2:0:18::1"
SERVICE_CIDR6="2001:2:0:19::/112"
BRIDGE="weft0"
CNI_NETWORK="weft"
NODE_NAME="weft-node"
CLUSTER_DOMAIN="cluster.local"
API_PORT=6443
ETCD_CLIENT_PORT=12379
ETCD_PEER_PORT=12380
KUBELET_PORT=10250
DNS_HEALTH_PORT=18054
DNS_READY_PORT=18181
KUBE_ROUTER_HEALTH_PORT=20244   # kube-router binds it on all addresses (no flag for the address)
PAUSE_IMAGE="weft/pause:v0"

# Components in start order; down stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns kube-router)

# Kernel settings up changes (saved to STATE_DIR/sysctl.orig, restored by down).
# The kubelet and kube-proxy also set some of these themselves.
SYSCTLS=(
  net.ipv4.ip_forward
  net.bridge.bridge-nf-call-iptables
  net.bridge.bridge-nf-call-ip6tables
  net.ipv6.conf.all.forwarding
  net.ipv4.conf.all.route_localnet
  vm.overcommit_memory
  vm.panic_on_oom
  kernel.panic
  kernel.panic_on_oops
  kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes
)

_T0=${SECONDS}
# step prints a progress line with the seconds since the script started.
step() { printf '[%s +%3ds] %s\n' "${SCRIPT_NAME:-cluster}" "$((SECONDS - _T0))" "$*"; }
warn() { printf '[%s +%3ds] WARNING: %s\n' "${SCRIPT_NAME:-cluster}" "$((SECONDS - _T0))" "$*" >&2; }
die() { printf '[%s +%3ds] ERROR: %s\n' "${SCRIPT_NAME:-cluster}" "$((SECONDS - _T0))" "$*" >&2; exit 1; }

require_root() { [[ ${EUID} -eq 0 ]] || die "run as root"; }

kubectl_admin() { "${KUBECTL}" --kubeconfig "${KUBECONFIG_PATH}" "$@"; }
ctr_k8s() { ctr --address "${CONTAINERD_SOCK}" -n k8s.io "$@"; }

# expected_exe NAME -> the binary a component's process runs.
expected_exe() {
  case "$1" in
    etcd) echo etcd ;;
    containerd) echo containerd ;;
    *) echo "$1" ;;
  esac
}

# pid_of NAME -> recorded PID if that process is alive and still runs the
# component (guards against recycled PIDs); empty otherwise.
pid_of() {
  local name=$1 pid exe
  [[ -f "${PID_DIR}/${name}.pid" ]] || return 0
  pid="$(cat "${PID_DIR}/${name}.pid" 2>/dev/null || true)"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 0
  proc_alive "${pid}" || return 0
  exe="$(basename "$(readlink "/proc/${pid}/exe" 2>/dev/null || true)")"
  [[ "${exe}" == "$(expected_exe "${name}")" ]] || return 0
  echo "${pid}"
}

# proc_alive PID: exists and is not a zombie.
proc_alive() {
  local state
  [[ -r "/proc/$1/stat" ]] || return 1
  state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null || true)"
  [[ -n "${state}" && "${state}" != "Z" && "${state}" != "X" ]]
}

# our_pids -> PIDs of processes that belong to this cluster although no
# PID file may name them: anything running a binary from BIN_DIR, anything
# whose command line names STATE_DIR (etcd, containerd, CoreDNS), and the
# containerd shims and container processes of our containerd.
our_pids() {
  local p exe cmd
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ "${p}" == "$$" || "${p}" == "${BASHPID}" ]] && continue
    exe="$(readlink "/proc/${p}/exe" 2>/dev/null || true)"
    [[ -n "${exe}" ]] || continue
    cmd="$(tr '\0' ' ' <"/proc/${p}/cmdline" 2>/dev/null || true)"
    if [[ "${exe}" == "${BIN_DIR}/"* ]] ||
      [[ "${cmd}" == *"${STATE_DIR}/"* && "$(basename "${exe}")" =~ ^(etcd|containerd|containerd-shim.*|runc)$ ]] ||
      grep -qs ":/k8s.io/" "/proc/${p}/cgroup"; then
      echo "${p}"
    fi
  done
}

# stop_pids TIMEOUT PID...: SIGTERM, wait until every one has exited, SIGKILL
# after TIMEOUT seconds, wait again.
stop_pids() {
  local timeout=$1 p left deadline
  shift
  [[ $# -gt 0 ]] || return 0
  kill -TERM "$@" 2>/dev/null || true
  deadline=$((SECONDS + timeout))
  while :; do
    left=()
    for p in "$@"; do proc_alive "${p}" && left+=("${p}"); done
    [[ ${#left[@]} -eq 0 ]] && return 0
    if ((SECONDS >= deadline)); then
      warn "SIGKILL to ${left[*]} (still running after ${timeout}s)"
      kill -KILL "${left[@]}" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    left=()
    for p in "$@"; do proc_alive "${p}" && left+=("${p}"); done
    [[ ${#left[@]} -eq 0 ]] && return 0
    sleep 0.2
  done
  warn "processes ${left[*]} did not exit"
  return 1
}

# our_mounts -> mount points of this cluster, deepest first.
our_mounts() {
  awk '{print $5}' /proc/self/mountinfo |
    grep -E "^(${STATE_DIR}/|/run/netns/cni-|/var/run/netns/cni-)" |
    awk '{print length($0) " " $0}' | sort -rn | cut -d' ' -f2- || true
}

# port_listening ADDR PORT
port_listening() {
  ss -Hltn "sport = :$2" 2>/dev/null | awk '{print $4}' | grep -E "^(\[?::\]?|0\.0\.0\.0|\*|$1):$2$" >/dev/null
}

# ipt_our_chains CMD TABLE -> KUBE-* and CNI-* chains.
ipt_our_chains() {
  "$1" -w 5 -t "$2" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) {print $2}' || true
}

# our_ipsets -> the ipsets kube-router's NetworkPolicy controller creates
# (KUBE-SRC-*, KUBE-DST-*, and their IPv6 twins inet6:KUBE-SRC-*, ...).
our_ipsets() {
  command -v ipset >/dev/null 2>&1 || return 0
  ipset list -n 2>/dev/null | grep -E '^(inet6:)?KUBE-(SRC|DST)-' || true
}

# ipt_our_builtin_rules CMD TABLE -> rules in built-in chains that jump to our
# chains or name our bridge / ranges ("-A ..." lines).
ipt_our_builtin_rules() {
  "$1" -w 5 -t "$2" -S 2>/dev/null |
    awk '$1 == "-A" && $2 ~ /^(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING)$/' |
    grep -E -- "-j (KUBE-|CNI-)|-g (KUBE-|CNI-)| ${BRIDGE} |198\.18\.0\.0/24|198\.19\.0\.0/16|2001:2:0:1[89]::" || true
}
