#!/usr/bin/env bash
# Sidecar benchmarks on loopback: bulk throughput (iperf3) through a weft
# sidecar pair vs direct vs an stunnel pair vs an HAProxy pair doing the
# same mTLS; added latency of 1 KB HTTP/1.1 requests (4 and 64 connections)
# and of gRPC unary calls at 1,000 req/s (fortio) through the pair vs
# direct, the L4 pair and the L7 pair (HTTP routing, pair -app-protocol)
# in the same repetitions; sidecar CPU per 1,000 req/s; RSS idle and with
# 1,000 idle connections; time from start to ready. See README.md.
#
# Pinning: the client side (load tool, client proxy) on CPU $CPU_CLIENT, the
# server side (server proxy, server app) on CPU $CPU_SERVER, for every
# configuration alike. Every run is bounded (timeout); each is repeated
# $REPS times, configurations interleaved.
#
# Needs: iperf3 stunnel4 haproxy (apt-get install -y iperf3 stunnel4
# haproxy), python3, go. Usage: sidecar/proxy/bench/run.sh [OUT_DIR]
#
# BEFORE=<git rev>: also builds the bench pair from that revision (a
# temporary detached worktree, the same build tags) into $BIN/pair-before
# and runs it as configuration "weft-before" in every section, beside
# "weft" (the working tree) and on the same ports once weft's pair has
# stopped, within each repetition; odd repetitions run weft first, even
# ones weft-before first, so neither side always follows the other.
# report.py adds a before/after table: after/before (or after − before)
# per repetition against the before's own spread over the repetitions.
#
# LAT_CONFIGS="<configurations>": the latency section's pairs, a subset of
# all six (weft and weft-l7 always among them); see lat_configs.
#
# Every results.tsv row carries its section and repetition (lib.sh), and
# report.py joins ratios on the repetition. A repetition whose load tool
# failed, whose fortio run had a response other than 200 or fell short of
# the requested rate, or whose proxy exited mid-run, is marked failed:
# report.py excludes it from both sides of every ratio, lists it, and the
# run exits non-zero. Set-up failures (a proxy that never becomes ready, a
# proxy PID that is not found) end the run at once.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
ROOT=$(cd "$HERE/../../.." && pwd)
OUT=${1:-${OUT:-/tmp/weft-bench}}
REPS=${REPS:-3}
IPERF_SECS=${IPERF_SECS:-10}
FORTIO_T=${FORTIO_T:-20s}
CPU_CLIENT=${CPU_CLIENT:-0}
CPU_SERVER=${CPU_SERVER:-1}
HOLD_N=${HOLD_N:-1000}
SETTLE=${SETTLE:-8}
SECTIONS=${SECTIONS:-throughput latency idle}
BEFORE=${BEFORE:-}
LAT_ALL="weft weft-l7 stdlib-l7 haproxy-l4 haproxy-l7 haproxy-plain"
LAT_CONFIGS=${LAT_CONFIGS:-$LAT_ALL}
for c in $LAT_CONFIGS; do
	[[ " $LAT_ALL " == *" $c "* ]] || { echo "LAT_CONFIGS: $c is none of: $LAT_ALL" >&2; exit 2; }
done
[[ " $LAT_CONFIGS " == *" weft "* && " $LAT_CONFIGS " == *" weft-l7 "* ]] ||
	{ echo "LAT_CONFIGS must hold weft and weft-l7 (the report's L4 and L7 pairs)" >&2; exit 2; }
BEFORE_L7=no
# fortio's requested rate, and how far short of it the achieved rate
# (ActualQPS) may fall before the repetition fails (a fraction).
QPS=1000
QPS_TOLERANCE=${QPS_TOLERANCE:-0.01}
# gRPC unary load: one connection (one channel) with this many calls in
# flight (fortio -s), as BenchmarkL7GRPCUnary's one ClientConn with 4.
GRPC_STREAMS=${GRPC_STREAMS:-4}
# Latency runs use little CPU; on a machine shared with other builds their
# tails measure the scheduler more than the proxy unless every process of
# the run (direct and pair alike) gets ahead of the builds: nice -n $LAT_NICE.
LAT_NICE=${LAT_NICE:--10}

BIN=$OUT/bin CERTS=$OUT/certs LOG=$OUT/log
mkdir -p "$BIN" "$CERTS" "$LOG"
RES=$OUT/results.tsv
: >"$RES"
SECTION=run REP=0
HZ=$(getconf CLK_TCK)

tools="python3 taskset pgrep go"
[[ " $SECTIONS " != *" throughput "* ]] || tools="$tools iperf3 stunnel4 haproxy"
[[ " $SECTIONS " != *" latency "* ]] || tools="$tools haproxy" # the HAProxy L7 pair
for tool in $tools; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y iperf3 stunnel4 haproxy)"
done

echo "building pair and fortio into $BIN"
(cd "$ROOT" && go build -tags grpcnotrace -o "$BIN/pair" ./sidecar/proxy/bench/pair) # the sidecar's build tags
# What "weft" is: HEAD plus any uncommitted edit under the pair's packages
# (other work in the same tree), counted and named so that a report says
# so. Compared with HEAD through an index of its own read from HEAD: the
# tree's shared index may be stale (sessions commit with private indexes),
# and git status against it would count files that equal HEAD. Only the
# packages' own files count (not their subdirectories, not *_test.go):
# what goes into the binary.
uncommitted_in_pair_packages() {
	local idx specs=(":(exclude,glob)**/*_test.go")
	idx=$(mktemp /tmp/weft-bench-index.XXXXXX)
	while read -r d; do specs+=(":(glob)$d/*"); done < <(cd "$ROOT" &&
		go list -deps -f '{{if not .Standard}}{{.Dir}}{{end}}' ./sidecar/proxy/bench/pair | grep "^$ROOT/" | sed "s|^$ROOT/||")
	(
		cd "$ROOT" && export GIT_INDEX_FILE=$idx && git read-tree HEAD &&
			{ git diff --name-only HEAD -- "${specs[@]}"; git ls-files --others --exclude-standard -- "${specs[@]}"; }
	) | sort -u
	rm -f "$idx"
}
record revision weft "HEAD=$(git -C "$ROOT" rev-parse HEAD)"
changed=$(uncommitted_in_pair_packages)
record uncommitted_files_in_pair_packages weft "$(printf '%s' "$changed" | grep -c . || true)"
for f in $changed; do record uncommitted_file weft "$f"; done
PAIRS=weft
if [ -n "$BEFORE" ]; then
	before_commit=$(git -C "$ROOT" rev-parse --verify "$BEFORE^{commit}") || die "BEFORE=$BEFORE is not a commit"
	wt=$(mktemp -d /tmp/weft-bench-before.XXXXXX)
	git -C "$ROOT" worktree add --detach -q "$wt" "$before_commit" || die "git worktree add $wt $before_commit failed"
	echo "building pair-before from $BEFORE ($before_commit)"
	brc=0
	(cd "$wt" && go build -tags grpcnotrace -o "$BIN/pair-before" ./sidecar/proxy/bench/pair) || brc=$?
	git -C "$ROOT" worktree remove --force "$wt"
	[ "$brc" = 0 ] || die "building pair at $BEFORE failed"
	record revision weft-before "$BEFORE=$before_commit"
	PAIRS="weft weft-before"
	# An older pair has no L7 mode (-app-protocol): then the latency section
	# compares the L4 pairs only.
	help=$("$BIN/pair-before" -h 2>&1 || true)
	[[ "$help" != *-app-protocol* ]] || BEFORE_L7=yes
	record pair_l7 weft-before "$BEFORE_L7"
fi
# pairs: the weft configurations in this repetition's order (weft first in
# odd repetitions, weft-before first in even ones).
pairs() {
	if [ "$PAIRS" = weft ] || [ $((REP % 2)) = 1 ]; then echo "$PAIRS"; else echo "weft-before weft"; fi
}
(cd "$HERE/tools" && go build -o "$BIN/fortio" fortio.org/fortio)
"$BIN/pair" -mode certs -certs "$CERTS"
cat "$CERTS/client.pem" "$CERTS/client.key" >"$CERTS/client-full.pem"
cat "$CERTS/server.pem" "$CERTS/server.key" >"$CERTS/server-full.pem"

# Ports: app 5201 (iperf3) / 8080 (fortio HTTP) / 8079 (fortio gRPC) / 7000
# (echo); weft pair 15001 -> 15006; stunnel 15101 -> 15106; haproxy 15201 -> 15206; plaintext
# relay pair 15301 -> 15306 (read/write) and 15401 -> 15406 (splice).
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# start NAME CPU CMD...: runs CMD pinned to CPU in the background, logs to
# $LOG/NAME.log; sets STARTED to its pid. The old log goes first: the
# background shell truncates it only when it gets to run, and a wait_line
# in between would read the previous run's "listening" (under load it did:
# stunnel dialled an iperf3 server not yet listening, "connection
# refused", and iperf3 failed with "control socket has closed").
start() {
	local name=$1 cpu=$2
	shift 2
	rm -f "$LOG/$name.log"
	taskset -c "$cpu" nice -n "$NICE" timeout "${RUN_TIMEOUT:-600}" "$@" >"$LOG/$name.log" 2>&1 &
	STARTED=$!
	PIDS+=("$STARTED")
}
# stop PID: ends one process started here (timeout's pid, or a proxy's under
# it), and waits until it is gone: the next configuration takes its ports.
stop() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	gone "$1" || die "pid $1 did not exit within 30 s of SIGTERM"
}
# (child, wait_line, wait_port, rss_kib, cpu_ticks, record, fail_rep: lib.sh)

# weft_pair APPPORT [NAME [PROTO]]: starts the client sidecar on 15001 and
# the server sidecar on 15006 forwarding to APPPORT; sets WC and WS to their
# pids (the pair processes, not timeout's) and records the time from start
# to ready as ready_ms NAME. NAME (logs, ready_ms) starts with weft-before
# for $BIN/pair-before, else $BIN/pair. PROTO is the service port's
# protocol (pair -app-protocol): tcp (default: the L4 pair; the flag is not
# passed, so a pair older than it runs too), http or grpc (the L7 pair).
weft_pair() {
	local t0 t1 name=${2:-weft} proto=${3:-tcp} bin=$BIN/pair mode=""
	local pflag=()
	[[ "$name" != weft-before* ]] || bin=$BIN/pair-before
	[[ "$name" != stdlib* ]] || mode=stdlib- # net/http's own L7 pair (pair's stdlib.go)
	[ "$proto" = tcp ] || pflag=(-app-protocol "$proto")
	rm -f "$LOG/$name-server.log" "$LOG/$name-client.log"
	t0=$(date +%s%N)
	start "$name-server" "$CPU_SERVER" "$bin" -mode "${mode}server" -certs "$CERTS" -listen 127.0.0.1:15006 -to "127.0.0.1:$1" "${pflag[@]}" ${PPROF:+-pprof 127.0.0.1:6061}
	WS=$(child "$STARTED" "$(basename "$bin")") || die "$name server sidecar: its PID was not found"
	wait_line "$LOG/$name-server.log" ready || die "$name server sidecar never became ready ($LOG/$name-server.log)"
	t1=$(date +%s%N)
	record ready_ms "$name" "$(((t1 - t0) / 1000))e-3"
	start "$name-client" "$CPU_CLIENT" "$bin" -mode "${mode}client" -certs "$CERTS" -listen 127.0.0.1:15001 -to 127.0.0.1:15006 "${pflag[@]}" ${PPROF:+-pprof 127.0.0.1:6060}
	WC=$(child "$STARTED" "$(basename "$bin")") || die "$name client sidecar: its PID was not found"
	wait_line "$LOG/$name-client.log" ready || die "$name client sidecar never became ready ($LOG/$name-client.log)"
}

stunnel_pair() {
	local common="foreground = yes
pid =
debug = 3
sslVersionMin = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
CAfile = $CERTS/ca.pem
verifyChain = yes"
	printf '%s\n[c]\nclient = yes\naccept = 127.0.0.1:15101\nconnect = 127.0.0.1:15106\ncert = %s\nkey = %s\n' \
		"$common" "$CERTS/client.pem" "$CERTS/client.key" >"$OUT/stunnel-client.conf"
	printf '%s\n[s]\naccept = 127.0.0.1:15106\nconnect = 127.0.0.1:%s\ncert = %s\nkey = %s\n' \
		"$common" "$1" "$CERTS/server.pem" "$CERTS/server.key" >"$OUT/stunnel-server.conf"
	start stunnel-server "$CPU_SERVER" stunnel4 "$OUT/stunnel-server.conf"
	SS=$STARTED
	SSP=$(child "$SS" stunnel4) || die "stunnel server: its PID was not found"
	start stunnel-client "$CPU_CLIENT" stunnel4 "$OUT/stunnel-client.conf"
	SC=$STARTED
	SCP=$(child "$SC" stunnel4) || die "stunnel client: its PID was not found"
	wait_port 15106 && wait_port 15101 || die "the stunnel pair never listened"
}

haproxy_pair() {
	local global="global
  nbthread 1
  ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
  ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256
  tune.ssl.default-dh-param 2048
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s"
	printf '%s\nfrontend f\n  bind 127.0.0.1:15201\n  default_backend b\nbackend b\n  server s 127.0.0.1:15206 ssl ssl-min-ver TLSv1.3 crt %s ca-file %s verify required\n' \
		"$global" "$CERTS/client-full.pem" "$CERTS/ca.pem" >"$OUT/haproxy-client.cfg"
	printf '%s\nfrontend f\n  bind 127.0.0.1:15206 ssl ssl-min-ver TLSv1.3 crt %s ca-file %s verify required\n  default_backend b\nbackend b\n  server s 127.0.0.1:%s\n' \
		"$global" "$CERTS/server-full.pem" "$CERTS/ca.pem" "$1" >"$OUT/haproxy-server.cfg"
	start haproxy-server "$CPU_SERVER" haproxy -db -f "$OUT/haproxy-server.cfg"
	HS=$STARTED
	HSP=$(child "$HS" haproxy) || die "HAProxy server: its PID was not found"
	start haproxy-client "$CPU_CLIENT" haproxy -db -f "$OUT/haproxy-client.cfg"
	HC=$STARTED
	HCP=$(child "$HC" haproxy) || die "HAProxy client: its PID was not found"
	wait_port 15206 && wait_port 15201 || die "the HAProxy pair never listened"
}

# haproxy_lat_pair APPPORT NAME PROTO: HAProxy as a sidecar pair in the
# weft pair's layout: the client side on 15001, the server side on 15006
# verifying the client's certificate (mutual TLS 1.3), the app on APPPORT;
# one thread each, pinned as every pair. PROTO tcp (haproxy-l4): mode tcp,
# bytes copied, as the L4 pair. PROTO http or grpc (haproxy-l7): the L7
# pair's hops — the client side parses each request from the app
# (HTTP/1.1, or h2c for grpc) and carries it on pooled HTTP/2 (ALPN h2,
# http-reuse always) to the server side, which passes it to the app
# (HTTP/1.1, or h2c for grpc); no header added (no forwardfor). A C proxy
# doing a sidecar's work in the same repetition: what this machine's CPU
# allows a pair. NAME haproxy-plain (PROTO tcp): mode tcp without TLS —
# the bytes copied and nothing else, the least any pair of proxies costs
# on this machine: the floor under every figure of the section. Sets WC
# and WS to the two haproxy processes' pids.
haproxy_lat_pair() {
	local app=$1 name=$2 mode=http front="" back="" alpn=" alpn h2" ctls stls
	if [ "$3" = tcp ]; then mode=tcp alpn=""; fi
	if [ "$3" = grpc ]; then front=" proto h2" back=" proto h2"; fi
	ctls=" ssl ssl-min-ver TLSv1.3$alpn crt $CERTS/client-full.pem ca-file $CERTS/ca.pem verify required"
	stls=" ssl ssl-min-ver TLSv1.3$alpn crt $CERTS/server-full.pem ca-file $CERTS/ca.pem verify required"
	if [[ "$name" == haproxy-plain* ]]; then
		[ "$mode" = tcp ] || die "$name: the plaintext pair is mode tcp only"
		ctls="" stls=""
	fi
	local global="global
  nbthread 1
  ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
  ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256
defaults
  mode $mode
  timeout connect 5s
  timeout client 60s
  timeout server 60s"
	[ "$mode" = tcp ] || global="$global
  http-reuse always"
	printf '%s\nfrontend f\n  bind 127.0.0.1:15001%s\n  default_backend b\nbackend b\n  server s 127.0.0.1:15006%s\n' \
		"$global" "$front" "$ctls" >"$OUT/$name-client.cfg"
	printf '%s\nfrontend f\n  bind 127.0.0.1:15006%s\n  default_backend b\nbackend b\n  server s 127.0.0.1:%s%s\n' \
		"$global" "$stls" "$app" "$back" >"$OUT/$name-server.cfg"
	start "$name-server" "$CPU_SERVER" haproxy -db -f "$OUT/$name-server.cfg"
	WS=$(child "$STARTED" haproxy) || die "$name server: its PID was not found"
	wait_port 15006 || die "$name server never listened ($LOG/$name-server.log)"
	start "$name-client" "$CPU_CLIENT" haproxy -db -f "$OUT/$name-client.cfg"
	WC=$(child "$STARTED" haproxy) || die "$name client: its PID was not found"
	wait_port 15001 || die "$name client never listened ($LOG/$name-client.log)"
}

# lat_pair APPPORT NAME PROTO: the latency section's pair of configuration
# NAME (weft_pair's, or haproxy_lat_pair's for haproxy-*); sets WC and WS.
lat_pair() {
	if [[ "$2" == haproxy-* ]]; then haproxy_lat_pair "$@"; else weft_pair "$@"; fi
}

# relay_pair BASE APPPORT [-splice]: the plaintext relay pair (no TLS) on
# BASE+1 -> BASE+6: the ceiling of any proxy pair in this layout.
relay_pair() {
	rm -f "$LOG/relay-server.log" "$LOG/relay-client.log"
	start relay-server "$CPU_SERVER" "$BIN/pair" -mode relay -listen "127.0.0.1:$(($1 + 6))" -to "127.0.0.1:$2" ${3:-}
	RS=$(child "$STARTED" pair) || die "relay server: its PID was not found"
	wait_line "$LOG/relay-server.log" ready || die "relay server never became ready"
	start relay-client "$CPU_CLIENT" "$BIN/pair" -mode relay -listen "127.0.0.1:$(($1 + 1))" -to "127.0.0.1:$(($1 + 6))" ${3:-}
	RC=$(child "$STARTED" pair) || die "relay client: its PID was not found"
	wait_line "$LOG/relay-client.log" ready || die "relay client never became ready"
}

NICE=0
echo "load average at start: $(loadavg)"
record loadavg start "$(loadavg | tr ' ' ,)"
# Kernel TLS (the "tls" ULP) is what would let a proxy splice its bytes and
# leave the record crypto to the kernel; say whether this kernel has it.
record kernel_tcp_ulps "$(uname -r)" "$(tr ' ' , </proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null || echo unknown)"
record cpu_model "$(nproc)-cpus" "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo | tr ' \t' '__')"

# 1. Bulk throughput, and the proxies' CPU seconds per GB moved. The CPU is
# read before and after the iperf3 client runs, so it covers the warm-up
# second (-O 1) too; iperf_result.py counts that second's bytes with it.
iperf() { # NAME PORT [CLIENT_PROXY_PID SERVER_PROXY_PID]
	local srv json=$LOG/iperf-$1-r$REP.json rc=0 out a0= a1= b0= b1=
	case $# in
	2) ;;
	4) [ -n "$3" ] && [ -n "$4" ] || die "iperf $1: a proxy's PID is missing" ;;
	*) die "iperf: NAME PORT [CLIENT_PROXY_PID SERVER_PROXY_PID]" ;;
	esac
	rm -f "$json"
	start iperf-server "$CPU_SERVER" iperf3 -s -1 --forceflush -p 5201
	srv=$STARTED
	wait_line "$LOG/iperf-server.log" "listening" || die "iperf3 server never listened"
	if [ $# = 4 ]; then
		a0=$(cpu_ticks "$3") || die "iperf $1: client proxy $3 gone before the run"
		b0=$(cpu_ticks "$4") || die "iperf $1: server proxy $4 gone before the run"
	fi
	taskset -c "$CPU_CLIENT" timeout $((IPERF_SECS + 20)) iperf3 -c 127.0.0.1 -p "$2" -t "$IPERF_SECS" -O 1 -J >"$json" || rc=$?
	if [ $# = 4 ]; then
		if ! a1=$(cpu_ticks "$3") || ! b1=$(cpu_ticks "$4"); then
			stop "$srv"
			fail_rep "iperf3 $1" "a proxy exited during the run"
			return
		fi
	fi
	stop "$srv"
	if out=$(python3 "$HERE/iperf_result.py" "$json" "$1" "$HZ" ${3:+$a0 $a1 $b0 $b1} 2>"$json.err") && [ "$rc" = 0 ]; then
		printf '%s\n' "$out" | record_rows
	else
		fail_rep "iperf3 $1" "iperf3 exit status $rc ($json): $(cat "$json.err")"
	fi
}
if [[ " $SECTIONS " == *" throughput "* ]]; then
SECTION=throughput
for REP in $(seq "$REPS"); do
	echo "throughput, repetition $REP (load $(loadavg))"
	record loadavg start "$(loadavg | tr ' ' ,)"
	iperf direct 5201
	for w in $(pairs); do
		weft_pair 5201 "$w"
		iperf "$w" 15001 "$WC" "$WS"
		stop "$WC"; stop "$WS"
	done
	stunnel_pair 5201
	iperf stunnel 15101 "$SCP" "$SSP"
	stop "$SC"; stop "$SS"
	haproxy_pair 5201
	iperf haproxy 15201 "$HCP" "$HSP"
	stop "$HC"; stop "$HS"
	relay_pair 15300 5201
	iperf relay 15301 "$RC" "$RS"
	stop "$RC"; stop "$RS"
	relay_pair 15400 5201 -splice
	iperf relay-splice 15401 "$RC" "$RS"
	stop "$RC"; stop "$RS"
done
fi

# 2. Added latency and CPU at 1,000 req/s. -uniform spreads the
# connections' requests over time: without it fortio fires every connection
# at once, and with 64 connections each hop queues a burst of 64 requests.
# Only 200s (gRPC: SERVING) may count: fortio_result.py fails the repetition
# on any other response, and when the achieved rate falls short of $QPS by
# more than QPS_TOLERANCE; the proxies' CPU is divided by the achieved rate.
NICE=$LAT_NICE
# fortio NAME PORT LOAD [CLIENT_PROXY_PID SERVER_PROXY_PID]: one fortio run
# of configuration NAME against 127.0.0.1:PORT. LOAD is cN (a 1 KiB
# HTTP/1.1 POST to fortio's echo over N keep-alive connections: rows
# NAME-cN) or grpc (gRPC unary pings with a 1 KiB payload, echoed, on one
# connection with GRPC_STREAMS calls in flight: rows NAME-grpc-c1).
fortio() {
	local name=$1 conns base=$LOG/fortio-$1-$3-r$REP rc=0 prc=0 out a0= a1= b0= b1= target
	case $# in
	3) ;;
	5) [ -n "$4" ] && [ -n "$5" ] || die "fortio $1: a proxy's PID is missing" ;;
	*) die "fortio: NAME PORT LOAD [CLIENT_PROXY_PID SERVER_PROXY_PID]" ;;
	esac
	case $3 in
	c[0-9]*) conns=${3#c} target=(-c "$conns" "http://127.0.0.1:$2/echo") ;;
	grpc) conns=1 name=$1-grpc target=(-grpc -ping -s "$GRPC_STREAMS" -c 1 "127.0.0.1:$2") ;;
	*) die "fortio $1: LOAD $3 is neither cN nor grpc" ;;
	esac
	rm -f "$base.json"
	if [ $# = 5 ]; then
		a0=$(cpu_ticks "$4") || die "fortio $1: client proxy $4 gone before the run"
		b0=$(cpu_ticks "$5") || die "fortio $1: server proxy $5 gone before the run"
	fi
	taskset -c "$CPU_CLIENT" nice -n "$NICE" timeout 60 "$BIN/fortio" load -quiet -qps "$QPS" -uniform -t "$FORTIO_T" -payload-size 1024 \
		-r 0.00001 -p 50,90,99 -json "$base.json" "${target[@]}" >"$base.log" 2>&1 || rc=$?
	if [ $# = 5 ]; then
		if ! a1=$(cpu_ticks "$4") || ! b1=$(cpu_ticks "$5"); then
			fail_rep "fortio $name-c$conns" "a proxy exited during the run"
			return
		fi
	fi
	out=$(python3 "$HERE/fortio_result.py" "$base.json" "$name" "$conns" "$QPS" "$QPS_TOLERANCE" "$HZ" ${4:+$a0 $a1 $b0 $b1} 2>"$base.err") || prc=$?
	# The rows are kept even when the run failed (its error count among
	# them); report.py leaves a failed repetition out of every figure.
	[ -z "$out" ] || printf '%s\n' "$out" | record_rows
	if [ "$rc" != 0 ] || [ "$prc" != 0 ]; then
		fail_rep "fortio $name-c$conns" "fortio exit status $rc ($base.log): $(cat "$base.err")"
	fi
}
# lat_configs: the latency section's pair configurations in this
# repetition's order: weft (the L4 pair), weft-l7 (the L7 pair: HTTP
# routing), stdlib-l7 (net/http's own L7 pair, pair -mode stdlib-*: the
# ceiling of an L7 sidecar built on net/http), haproxy-l4 and haproxy-l7
# (HAProxy's pairs: what a C proxy costs for the same hops), with BEFORE also
# weft-before (and weft-before-l7 when that revision's pair has an L7
# mode), rotated by one per repetition so that none always runs first (or
# always follows another). LAT_CONFIGS names a subset (in that order): a run
# with more, shorter repetitions of fewer pairs (REPS=8 FORTIO_T=10s
# LAT_CONFIGS="weft weft-l7 haproxy-plain haproxy-l7") gives report.py the
# five or more repetitions its confidence interval of a median added p99
# needs, in the time of three of every pair.
lat_configs() {
	local cs=($LAT_CONFIGS) i n
	if [ -n "$BEFORE" ]; then
		cs+=(weft-before)
		[ "$BEFORE_L7" != yes ] || cs+=(weft-before-l7)
	fi
	n=${#cs[@]}
	for ((i = 0; i < n; i++)); do echo "${cs[$(((i + REP - 1) % n))]}"; done
}
if [[ " $SECTIONS " == *" latency "* ]]; then
SECTION=latency
# The servers live for the whole section (RUN_TIMEOUT: start's bound):
# a latency repetition is twenty-one 20-s fortio runs (six pairs and direct,
# three loads each), twenty-seven with BEFORE.
RUN_TIMEOUT=$((REPS * 900)) start fortio-server "$CPU_SERVER" "$BIN/fortio" server -http-port 127.0.0.1:8080 -grpc-port 127.0.0.1:8079 -redirect-port disabled
FS=$STARTED
wait_port 8080 && wait_port 8079 || die "fortio server never listened"
for REP in $(seq "$REPS"); do
	echo "latency, repetition $REP (load $(loadavg))"
	# direct runs once per load, beside the first configuration of the
	# repetition; the others run on the same ports once it stopped. Each
	# configuration's pair serves the HTTP/1.1 runs (app: fortio's echo,
	# port 8080), then a pair of the same kind the gRPC run (app: fortio's
	# gRPC ping server, port 8079; the L7 server side speaks h2c to it).
	first=1
	for w in $(lat_configs); do
		proto=tcp gproto=tcp
		[[ "$w" != *-l7 ]] || proto=http gproto=grpc
		lat_pair 8080 "$w" "$proto"
		if [ "$REP" = 1 ]; then
			sleep 1
			c0=$(rss_kib "$WC") || die "client sidecar gone"
			s0=$(rss_kib "$WS") || die "server sidecar gone"
			record rss_1s_after_start_mib "$w-client" "$(kib_to_mib "$c0")"
			record rss_1s_after_start_mib "$w-server" "$(kib_to_mib "$s0")"
		fi
		for c in 4 64; do
			if [ "$first" = 1 ]; then
				record loadavg "c$c" "$(loadavg | tr ' ' ,)"
				fortio direct 8080 "c$c"
			fi
			fortio "$w" 15001 "c$c" "$WC" "$WS"
		done
		stop "$WC"; stop "$WS"
		lat_pair 8079 "$w-grpc" "$gproto"
		if [ "$first" = 1 ]; then
			record loadavg grpc "$(loadavg | tr ' ' ,)"
			fortio direct 8079 grpc
		fi
		fortio "$w" 15001 grpc "$WC" "$WS"
		stop "$WC"; stop "$WS"
		first=0
	done
done
stop "$FS"
fi

# 3. RSS with idle connections. VmRSS is in KiB; MiB = KiB / 1024.
NICE=0
if [[ " $SECTIONS " == *" idle "* ]]; then
SECTION=idle
RUN_TIMEOUT=$((REPS * 900)) start echo "$CPU_SERVER" "$BIN/pair" -mode echo -listen 127.0.0.1:7000
EC=$STARTED
wait_line "$LOG/echo.log" ready || die "echo server never became ready"
for REP in $(seq "$REPS"); do
	echo "idle connections, repetition $REP (load $(loadavg))"
	for w in $(pairs); do
		weft_pair 7000 "$w"
		# Settled: past the first quiet period, in which the sidecar hands its
		# start-up garbage back (memtune.ReleaseWhenQuiet, every 5 s).
		sleep "$SETTLE"
		c0=$(rss_kib "$WC") || die "client sidecar gone"
		s0=$(rss_kib "$WS") || die "server sidecar gone"
		rm -f "$LOG/hold.log"
		start hold "$CPU_CLIENT" "$BIN/pair" -mode hold -to 127.0.0.1:15001 -n "$HOLD_N" -for $((SETTLE + 30))s
		HD=$STARTED
		if ! wait_line "$LOG/hold.log" "holding $HOLD_N" 120; then
			fail_rep hold "did not hold $HOLD_N connections: $(tail -c 300 "$LOG/hold.log" 2>/dev/null)"
			stop "$HD"; stop "$WC"; stop "$WS"
			continue
		fi
		# Just after the burst of handshakes, before any quiet period...
		sleep 3
		cb=$(rss_kib "$WC") || die "client sidecar gone"
		sb=$(rss_kib "$WS") || die "server sidecar gone"
		# ...and settled, the connections idle.
		sleep "$SETTLE"
		c1=$(rss_kib "$WC") || die "client sidecar gone"
		s1=$(rss_kib "$WS") || die "server sidecar gone"
		# The hold must still be holding when the last sample is taken.
		kill -0 "$HD" 2>/dev/null || fail_rep hold "the hold process ended before the settled sample: $(tail -c 300 "$LOG/hold.log")"
		record rss_idle_mib "$w-client" "$(kib_to_mib "$c0")"
		record rss_idle_mib "$w-server" "$(kib_to_mib "$s0")"
		record "rss_${HOLD_N}conns_mib" "$w-client" "$(kib_to_mib "$c1")"
		record "rss_${HOLD_N}conns_mib" "$w-server" "$(kib_to_mib "$s1")"
		record rss_kib_per_conn "$w-client" "$(kib_per_conn "$c0" "$c1" "$HOLD_N")"
		record rss_kib_per_conn "$w-server" "$(kib_per_conn "$s0" "$s1" "$HOLD_N")"
		record rss_kib_per_conn_burst "$w-client" "$(kib_per_conn "$c0" "$cb" "$HOLD_N")"
		record rss_kib_per_conn_burst "$w-server" "$(kib_per_conn "$s0" "$sb" "$HOLD_N")"
		stop "$HD"
		stop "$WC"; stop "$WS"
	done
done
stop "$EC"
fi

SECTION=run REP=0
record loadavg end "$(loadavg | tr ' ' ,)"
echo "load average at end: $(loadavg)"
# report.py exits 1 when a repetition failed (or a figure has no data),
# after writing the whole report: so does the run.
rc=0
python3 "$HERE/report.py" "$RES" >"$OUT/report.md" || rc=$?
cat "$OUT/report.md"
[ "$rc" = 0 ] || echo "run.sh: the report is not clean (see its top): exit $rc" >&2
exit "$rc"
