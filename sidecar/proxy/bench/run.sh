#!/usr/bin/env bash
# Sidecar benchmarks on loopback: bulk throughput (iperf3) through a weft
# sidecar pair vs direct vs an stunnel pair vs an HAProxy pair doing the
# same mTLS; added latency of 1 KB HTTP/1.1 requests at 1,000 req/s (fortio)
# through the pair vs direct; sidecar CPU per 1,000 req/s; RSS idle and with
# 1,000 idle connections; time from start to ready. See README.md.
#
# Pinning: the client side (load tool, client proxy) on CPU $CPU_CLIENT, the
# server side (server proxy, server app) on CPU $CPU_SERVER, for every
# configuration alike. Every run is bounded (timeout); each is repeated
# $REPS times, configurations interleaved.
#
# Needs: iperf3 stunnel4 haproxy (apt-get install -y iperf3 stunnel4
# haproxy), python3, go. Usage: sidecar/proxy/bench/run.sh [OUT_DIR]
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
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
# Latency runs use little CPU; on a machine shared with other builds their
# tails measure the scheduler more than the proxy unless every process of
# the run (direct and pair alike) gets ahead of the builds: nice -n $LAT_NICE.
LAT_NICE=${LAT_NICE:--10}

BIN=$OUT/bin CERTS=$OUT/certs LOG=$OUT/log
mkdir -p "$BIN" "$CERTS" "$LOG"
RES=$OUT/results.tsv
: >"$RES"

for tool in iperf3 stunnel4 haproxy python3 taskset; do
	command -v $tool >/dev/null || { echo "run.sh: $tool not found (apt-get install -y iperf3 stunnel4 haproxy)" >&2; exit 1; }
done

echo "building pair and fortio into $BIN"
(cd "$ROOT" && go build -tags grpcnotrace -o "$BIN/pair" ./sidecar/proxy/bench/pair) # the sidecar's build tags
(cd "$HERE/tools" && go build -o "$BIN/fortio" fortio.org/fortio)
"$BIN/pair" -mode certs -certs "$CERTS"
cat "$CERTS/client.pem" "$CERTS/client.key" >"$CERTS/client-full.pem"
cat "$CERTS/server.pem" "$CERTS/server.key" >"$CERTS/server-full.pem"

# Ports: app 5201 (iperf3) / 8080 (fortio) / 7000 (echo); weft pair
# 15001 -> 15006; stunnel 15101 -> 15106; haproxy 15201 -> 15206; plaintext
# relay pair 15301 -> 15306 (read/write) and 15401 -> 15406 (splice).
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# start NAME CPU CMD...: runs CMD pinned to CPU in the background, logs to
# $LOG/NAME.log; sets STARTED to its pid.
start() {
	local name=$1 cpu=$2
	shift 2
	taskset -c "$cpu" nice -n "$NICE" timeout 600 "$@" >"$LOG/$name.log" 2>&1 &
	STARTED=$!
	PIDS+=("$STARTED")
}
# stop PID: ends one process started here.
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# pidof_child PID: the pid of the command under timeout.
child() { local c; for _ in $(seq 100); do c=$(pgrep -P "$1" | head -1) && [ -n "$c" ] && { echo "$c"; return; }; sleep 0.01; done; echo "$1"; }
wait_line() { # FILE TEXT: waits up to 10 s for TEXT in FILE
	for _ in $(seq 10000); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.001; done
	echo "run.sh: timed out waiting for '$2' in $1" >&2; return 1
}
wait_port() { for _ in $(seq 1000); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.01; done; return 1; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; } # metric config value
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# weft_pair APPPORT: starts the client sidecar on 15001 and the server
# sidecar on 15006 forwarding to APPPORT; sets WC and WS to their pids and
# records the time from start to ready.
weft_pair() {
	local t0 t1
	rm -f "$LOG/weft-server.log" "$LOG/weft-client.log"
	t0=$(date +%s%N)
	start weft-server "$CPU_SERVER" "$BIN/pair" -mode server -certs "$CERTS" -listen 127.0.0.1:15006 -to "127.0.0.1:$1" ${PPROF:+-pprof 127.0.0.1:6061}
	WS=$(child "$STARTED")
	wait_line "$LOG/weft-server.log" ready
	t1=$(date +%s%N)
	record ready_ms weft "$(((t1 - t0) / 1000))e-3"
	start weft-client "$CPU_CLIENT" "$BIN/pair" -mode client -certs "$CERTS" -listen 127.0.0.1:15001 -to 127.0.0.1:15006 ${PPROF:+-pprof 127.0.0.1:6060}
	WC=$(child "$STARTED")
	wait_line "$LOG/weft-client.log" ready
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
	start stunnel-client "$CPU_CLIENT" stunnel4 "$OUT/stunnel-client.conf"
	SC=$STARTED
	wait_port 15106 && wait_port 15101
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
	start haproxy-client "$CPU_CLIENT" haproxy -db -f "$OUT/haproxy-client.cfg"
	HC=$STARTED
	wait_port 15206 && wait_port 15201
}

# relay_pair BASE APPPORT [-splice]: the plaintext relay pair (no TLS) on
# BASE+1 -> BASE+6: the ceiling of any proxy pair in this layout.
relay_pair() {
	rm -f "$LOG/relay-server.log" "$LOG/relay-client.log"
	start relay-server "$CPU_SERVER" "$BIN/pair" -mode relay -listen "127.0.0.1:$(($1 + 6))" -to "127.0.0.1:$2" ${3:-}
	RS=$(child "$STARTED")
	wait_line "$LOG/relay-server.log" ready
	start relay-client "$CPU_CLIENT" "$BIN/pair" -mode relay -listen "127.0.0.1:$(($1 + 1))" -to "127.0.0.1:$(($1 + 6))" ${3:-}
	RC=$(child "$STARTED")
	wait_line "$LOG/relay-client.log" ready
}

NICE=0
echo "load average at start: $(loadavg)"
record loadavg start "$(loadavg | tr ' ' ,)"
# Kernel TLS (the "tls" ULP) is what would let a proxy splice its bytes and
# leave the record crypto to the kernel; say whether this kernel has it.
record kernel_tcp_ulps "$(uname -r)" "$(tr ' ' , </proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null || echo unknown)"
record cpu_model "$(nproc)-cpus" "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo | tr ' \t' '__')"

# 1. Bulk throughput, and the proxies' CPU seconds per GB moved.
iperf() { # NAME PORT [CLIENT_PROXY_PID SERVER_PROXY_PID]
	local try srv out a0= a1= b0= b1=
	for try in 1 2; do
		start iperf-server "$CPU_SERVER" iperf3 -s -1 --forceflush -p 5201
		srv=$STARTED
		wait_line "$LOG/iperf-server.log" "listening"
		if [ -n "${3:-}" ]; then a0=$(cpu_ticks "$3") b0=$(cpu_ticks "$4"); fi
		taskset -c "$CPU_CLIENT" timeout $((IPERF_SECS + 20)) iperf3 -c 127.0.0.1 -p "$2" -t "$IPERF_SECS" -O 1 -J >"$LOG/iperf-$1.json" || true
		if [ -n "${3:-}" ]; then a1=$(cpu_ticks "$3") b1=$(cpu_ticks "$4"); fi
		stop "$srv"
		if out=$(python3 "$HERE/iperf_result.py" "$LOG/iperf-$1.json" "$1" "$(getconf CLK_TCK)" ${3:+$a0 $a1 $b0 $b1} 2>&1); then
			echo "$out" >>"$RES"
			return
		fi
		echo "run.sh: iperf3 through $1 failed (try $try): $out" >&2
	done
}
for rep in $(seq "$REPS"); do
	[[ " $SECTIONS " == *" throughput "* ]] || break
	echo "throughput, repetition $rep (load $(loadavg))"
	record loadavg throughput "$(loadavg | tr ' ' ,)"
	iperf direct 5201
	weft_pair 5201
	iperf weft 15001 "$WC" "$WS"
	stop "$WC"; stop "$WS"
	stunnel_pair 5201
	iperf stunnel 15101 "$(child "$SC")" "$(child "$SS")"
	stop "$SC"; stop "$SS"
	haproxy_pair 5201
	iperf haproxy 15201 "$(child "$HC")" "$(child "$HS")"
	stop "$HC"; stop "$HS"
	relay_pair 15300 5201
	iperf relay 15301 "$RC" "$RS"
	stop "$RC"; stop "$RS"
	relay_pair 15400 5201 -splice
	iperf relay-splice 15401 "$RC" "$RS"
	stop "$RC"; stop "$RS"
done

# 2. Added latency and CPU at 1,000 req/s. -uniform spreads the
# connections' requests over time: without it fortio fires every connection
# at once, and with 64 connections each hop queues a burst of 64 requests.
NICE=$LAT_NICE
if [[ " $SECTIONS " == *" latency "* ]]; then
start fortio-server "$CPU_SERVER" "$BIN/fortio" server -http-port 127.0.0.1:8080 -grpc-port disabled -redirect-port disabled
FS=$STARTED
wait_port 8080
fortio() { # NAME PORT CONNS
	taskset -c "$CPU_CLIENT" nice -n "$NICE" timeout 60 "$BIN/fortio" load -quiet -qps 1000 -uniform -c "$3" -t "$FORTIO_T" -payload-size 1024 \
		-r 0.00001 -p 50,90,99 -json "$LOG/fortio-$1-c$3.json" "http://127.0.0.1:$2/echo" >/dev/null 2>&1
	python3 - "$LOG/fortio-$1-c$3.json" "$1" "$3" >>"$RES" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for p in r["DurationHistogram"]["Percentiles"]:
    print(f"p{int(p['Percentile'])}_ms\t{sys.argv[2]}-c{sys.argv[3]}\t{p['Value'] * 1e3}")
print(f"qps\t{sys.argv[2]}-c{sys.argv[3]}\t{r['ActualQPS']}")
codes = r.get("RetCodes", {})
if set(codes) - {"200", 200}:
    print(f"errors\t{sys.argv[2]}-c{sys.argv[3]}\t{codes}", file=sys.stderr)
EOF
}
for rep in $(seq "$REPS"); do
	echo "latency, repetition $rep (load $(loadavg))"
	weft_pair 8080
	if [ "$rep" = 1 ]; then
		sleep 1
		record rss_1s_after_start_mb weft-client "$(($(rss_kb "$WC")))e-3"
		record rss_1s_after_start_mb weft-server "$(($(rss_kb "$WS")))e-3"
	fi
	for c in 4 64; do
		record loadavg "latency-c$c" "$(loadavg | tr ' ' ,)"
		fortio direct 8080 "$c"
		a0=$(cpu_ticks "$WC") b0=$(cpu_ticks "$WS") t0=$(date +%s%N)
		fortio weft 15001 "$c"
		a1=$(cpu_ticks "$WC") b1=$(cpu_ticks "$WS") t1=$(date +%s%N)
		hz=$(getconf CLK_TCK)
		for side in client:$a0:$a1 server:$b0:$b1; do
			IFS=: read -r s x y <<<"$side"
			record vcpu_per_1000rps "weft-$s-c$c" "$(python3 -c "print(($y-$x)/$hz/(($t1-$t0)/1e9))")"
		done
	done
	stop "$WC"; stop "$WS"
done
stop "$FS"
fi

# 3. RSS with idle connections.
NICE=0
if [[ " $SECTIONS " == *" idle "* ]]; then
start echo "$CPU_SERVER" "$BIN/pair" -mode echo -listen 127.0.0.1:7000
EC=$STARTED
wait_line "$LOG/echo.log" ready
for rep in $(seq "$REPS"); do
	echo "idle connections, repetition $rep (load $(loadavg))"
	weft_pair 7000
	# Settled: past the first quiet period, in which the sidecar hands its
	# start-up garbage back (memtune.ReleaseWhenQuiet, every 5 s).
	sleep "$SETTLE"
	c0=$(rss_kb "$WC") s0=$(rss_kb "$WS")
	start hold "$CPU_CLIENT" "$BIN/pair" -mode hold -to 127.0.0.1:15001 -n "$HOLD_N" -for 40s
	HD=$STARTED
	wait_line "$LOG/hold.log" holding
	# Just after the burst of handshakes, before any quiet period...
	sleep 3
	cb=$(rss_kb "$WC") sb=$(rss_kb "$WS")
	# ...and settled, the connections idle.
	sleep "$SETTLE"
	c1=$(rss_kb "$WC") s1=$(rss_kb "$WS")
	record rss_idle_mb "weft-client" "${c0}e-3"
	record rss_idle_mb "weft-server" "${s0}e-3"
	record "rss_${HOLD_N}conns_mb" weft-client "${c1}e-3"
	record "rss_${HOLD_N}conns_mb" weft-server "${s1}e-3"
	record rss_kb_per_conn weft-client "$(python3 -c "print(($c1-$c0)/$HOLD_N)")"
	record rss_kb_per_conn weft-server "$(python3 -c "print(($s1-$s0)/$HOLD_N)")"
	record rss_kb_per_conn_burst weft-client "$(python3 -c "print(($cb-$c0)/$HOLD_N)")"
	record rss_kb_per_conn_burst weft-server "$(python3 -c "print(($sb-$s0)/$HOLD_N)")"
	stop "$HD"
	stop "$WC"; stop "$WS"
done
stop "$EC"
fi

record loadavg end "$(loadavg | tr ' ' ,)"
echo "load average at end: $(loadavg)"
python3 "$HERE/report.py" "$RES" | tee "$OUT/report.md"
