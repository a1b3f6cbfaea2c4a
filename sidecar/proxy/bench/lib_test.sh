#!/usr/bin/env bash
# Tests of lib.sh (run.sh's helpers) that need no load tool:
#   bash sidecar/proxy/bench/lib_test.sh
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
T=$(mktemp -d)
KIDS=()
trap 'for p in "${KIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$T"' EXIT
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1${2:+: $2}"; fail=$((fail + 1)); }
check() { # NAME COMMAND...: passes when COMMAND succeeds
	local name=$1
	shift
	if "$@"; then ok "$name"; else bad "$name"; fi
}
eq() { [ "$1" = "$2" ] || { echo "     got [$1], want [$2]" >&2; return 1; }; }
# fails COMMAND...: succeeds when COMMAND, run in a subshell (die exits), fails.
fails() { if ("$@") >/dev/null 2>&1; then return 1; fi; }
gt() { [ "$1" -gt "$2" ] 2>/dev/null || { echo "     got [$1], want > $2" >&2; return 1; }; }
ne() { [ "$1" != "$2" ]; }

# --- record, record_rows, fail_rep: rows carry section and repetition.
RES=$T/results.tsv SECTION=throughput REP=2
: >"$RES"
record throughput_gbps weft 9.5
check "record writes SECTION REP METRIC CONFIG VALUE" eq "$(cat "$RES")" $'throughput\t2\tthroughput_gbps\tweft\t9.5'
: >"$RES"
printf 'throughput_gbps\tstunnel\t9.2\ncpu_s_per_gb\tstunnel-client\t0.88\n' | record_rows
check "record_rows tags every row" eq "$(cut -f1,2 "$RES" | sort -u)" $'throughput\t2'
check "record_rows keeps the rows" eq "$(wc -l <"$RES")" 2
two_fields() { printf 'a\tb\n' | record_rows; }
check "record_rows refuses a row without 3 fields" fails two_fields
check "record refuses a tab in a field" fails record $'a\tb' c d
REP='' check "record refuses an unset repetition" fails record a b c
: >"$RES"
fail_rep "iperf3 stunnel" $'unable\tto connect\nsecond line' 2>/dev/null
check "fail_rep writes one failed row, tabs and newlines flattened" \
	eq "$(cat "$RES")" $'throughput\t2\tfailed\tiperf3 stunnel\tunable to connect second line'
check "report.py reads lib.sh's rows" python3 -c "
import sys; sys.path.insert(0, '$HERE'); import report
r = report.Results(open('$RES'))
assert ('throughput', 2) in r.failed, r.failed"

# --- child: the process under timeout, never timeout itself.
timeout 30 sleep 20 &
KIDS+=($!)
c=$(child "$!" sleep)
check "child finds the command under timeout" eq "$(cat "/proc/$c/comm" 2>/dev/null)" sleep
check "child's pid is not timeout's" ne "$c" "${KIDS[-1]}"
CHILD_WAIT_S=1 check "child fails on the wrong command name" fails child "${KIDS[-1]}" pair
sleep 20 &
KIDS+=($!)
CHILD_WAIT_S=1 check "child fails (no fallback) when there is no child" fails child "${KIDS[-1]}" sleep
out=$(CHILD_WAIT_S=1 child "${KIDS[-1]}" sleep 2>&1 >/dev/null)
check "child says why it failed" eq "${out:0:26}" "run.sh: no process 'sleep'"

# --- cpu_ticks and rss_kib: from /proc, failing for a process that is gone.
mkdir -p "$T/bin dir"
cp "$(command -v yes)" "$T/bin dir/busy loop"
# The kernel names the process after its file ("busy loop": a space in
# /proc/PID/stat's comm field, which splits naive field counting).
"$T/bin dir/busy loop" >/dev/null &
busy=$!
KIDS+=($busy)
sleep 0.5
t=$(cpu_ticks "$busy")
check "cpu_ticks counts a busy process's ticks (comm with a space)" gt "$t" 0
check "the comm really has a space" eq "$(cat /proc/$busy/comm)" "busy loop"
kill "$busy"
wait "$busy" 2>/dev/null
check "cpu_ticks fails for a process that is gone" fails cpu_ticks "$busy"
check "rss_kib reads VmRSS in KiB" gt "$(rss_kib $$)" 100
check "rss_kib fails for a process that is gone" fails rss_kib "$busy"

# --- units: KiB → MiB is ÷ 1024, not × 1e-3.
check "kib_to_mib 1024 = 1 MiB" eq "$(kib_to_mib 1024)" 1.000
check "kib_to_mib 11400 = 11.133 MiB (not 11.4)" eq "$(kib_to_mib 11400)" 11.133
check "kib_per_conn (31000 - 1000) / 1000" eq "$(kib_per_conn 1000 31000 1000)" 30.000

# --- wait_line
(sleep 0.2; echo "ready" >>"$T/log") &
check "wait_line sees a line written later" wait_line "$T/log" ready

# --- run.sh uses lib.sh's helpers, not copies of its own.
check "run.sh parses" bash -n "$HERE/run.sh"
check "run.sh sources lib.sh" grep -q '^\. "$HERE/lib.sh"' "$HERE/run.sh"
check "wait_line gives up after its SECS" fails wait_line "$T/log" never-written 1

# --- wait_port: a listener is seen without connecting to it.
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
time.sleep(30)
' >"$T/port" &
KIDS+=($!)
for _ in $(seq 200); do [ -s "$T/port" ] && break; sleep 0.01; done
port=$(cat "$T/port")
check "wait_port sees a listener" wait_port "$port"
check "wait_port did not connect to it" eq "$(ss -Htn state established "( dport = :$port )" | wc -l)" 0

# --- gone: waits for a pid that is not our child to end.
sleep 0.3 &
short=$!
check "gone returns once the process has ended" gone "$short" 5
sleep 60 &
long=$!
KIDS+=("$long")
check "gone fails on a process that stays" fails gone "$long" 1
kill "$long"

check "run.sh defines none of lib.sh's helpers" fails grep -Eq '^(child|cpu_ticks|rss_kib|record|record_rows|fail_rep|wait_line|wait_port|gone)\(\)' "$HERE/run.sh"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
