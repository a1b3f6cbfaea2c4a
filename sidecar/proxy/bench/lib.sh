# lib.sh: run.sh's helpers that need no load tool, in a file of their own so
# that lib_test.sh can test them. Sourced by run.sh; bash only.
#
# Globals: RES (results.tsv), SECTION (throughput, latency, idle; "run" for
# the run's own rows) and REP (the repetition, 0 for the run's own rows).
#
# results.tsv has five tab-separated columns:
#   SECTION  REP  METRIC  CONFIG  VALUE
# A row `SECTION REP failed WHAT REASON` marks that repetition of that
# section failed: report.py excludes the whole repetition from every figure
# and from both sides of every ratio, lists it, and exits non-zero.

# die MESSAGE: ends the run (set-up failures: a proxy that never becomes
# ready, a PID that is not found).
die() {
	echo "run.sh: $*" >&2
	exit 1
}

# record METRIC CONFIG VALUE: one results.tsv row for this section and
# repetition.
record() {
	case "$1$2$3" in *$'\t'* | *$'\n'*) die "record: tab or newline in a field: $1 / $2 / $3" ;; esac
	[ -n "${SECTION:-}" ] && [ -n "${REP:-}" ] || die "record $1 $2: SECTION and REP must be set"
	printf '%s\t%s\t%s\t%s\t%s\n' "$SECTION" "$REP" "$1" "$2" "$3" >>"$RES"
}

# record_rows: records the "METRIC<tab>CONFIG<tab>VALUE" lines on standard
# input (what iperf_result.py and fortio_result.py print).
record_rows() {
	local line m c v rest
	while IFS= read -r line; do
		[ -n "$line" ] || continue
		IFS=$'\t' read -r m c v rest <<<"$line"
		[ -n "$m" ] && [ -n "$c" ] && [ -n "$v" ] && [ -z "$rest" ] || die "record_rows: not METRIC<tab>CONFIG<tab>VALUE: $line"
		record "$m" "$c" "$v"
	done
}

# fail_rep WHAT REASON: marks this repetition of this section failed (see
# above) and says so on standard error.
fail_rep() {
	local why
	why=$(printf '%s' "${2:-}" | tr '\t\n' '  ' | cut -c1-400)
	record failed "$1" "${why:-failed}"
	echo "run.sh: $SECTION repetition $REP FAILED ($1): ${why:-failed}" >&2
}

# child PID COMM: the pid of the process named COMM (as in /proc/PID/comm)
# that `timeout` (PID, as started by run.sh's start) runs. Fails, saying so,
# when no such process appears within CHILD_WAIT_S seconds: a figure must
# never fall back to timeout's own CPU (about 0) or memory.
child() {
	local c= comm= i
	for i in $(seq $((${CHILD_WAIT_S:-2} * 100))); do
		c=$(pgrep -P "$1" | head -1) || true
		if [ -n "$c" ]; then
			comm=$(cat "/proc/$c/comm" 2>/dev/null) || comm=
			# Between timeout's fork and its exec the child is still "timeout".
			[ "$comm" = "$2" ] && { echo "$c"; return 0; }
		fi
		sleep 0.01
	done
	echo "run.sh: no process '$2' under pid $1 (found: ${c:-none}${comm:+ ($comm)})" >&2
	return 1
}

# wait_line FILE TEXT [SECS]: waits up to SECS (10) s for TEXT in FILE.
wait_line() {
	local end=$((SECONDS + ${3:-10}))
	while [ "$SECONDS" -le "$end" ]; do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.01
	done
	echo "run.sh: timed out waiting for '$2' in $1" >&2
	return 1
}

# wait_port PORT: waits up to 10 s for a listener on 127.0.0.1:PORT. It
# asks the kernel (ss) and never connects: a probe connection to a proxy's
# listener goes on through the proxy to the app, and an iperf3 server
# started meanwhile (-1: one test) took the probe for its one client, so
# the real client found no server ("control socket has closed").
wait_port() {
	for _ in $(seq 1000); do
		[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null | grep -F "127.0.0.1:$1 ")" ] && return 0
		sleep 0.01
	done
	echo "run.sh: nothing listens on 127.0.0.1:$1" >&2
	return 1
}

# rss_kib PID: VmRSS of PID in KiB (/proc says "kB"; it means 1024 bytes).
# Fails when the process or its VmRSS is gone.
rss_kib() {
	local v
	v=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null) || v=
	[ -n "$v" ] || { echo "run.sh: no VmRSS for pid $1" >&2; return 1; }
	echo "$v"
}

# cpu_ticks PID: utime + stime of PID in clock ticks (getconf CLK_TCK).
# Fails when the process is gone. Fields are counted after the ")" that
# ends the command name, which may itself hold spaces.
cpu_ticks() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || stat=
	[ -n "$stat" ] || { echo "run.sh: no /proc/$1/stat (process gone)" >&2; return 1; }
	# After "pid (comm) ", field 3 (state) is the first; utime and stime
	# are fields 14 and 15, i.e. the 12th and 13th.
	awk '{print $12 + $13}' <<<"${stat##*) }"
}

# kib_to_mib KIB: KiB → MiB (÷ 1024), 3 decimals.
kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.3f\n", k / 1024 }'; }

# kib_per_conn KIB_BEFORE KIB_AFTER N: (after − before) / N, in KiB.
kib_per_conn() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.3f\n", (b - a) / n }'; }

# gone PID [SECS]: waits up to SECS (30) s for PID to exit (a zombie
# counts as gone); fails, saying so, when it has not. A proxy's pid is
# timeout's child, not ours, so `wait` cannot tell when its listeners are
# free; the next configuration binds the same ports.
gone() {
	local end=$((SECONDS + ${2:-30})) stat
	while [ "$SECONDS" -le "$end" ]; do
		stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
		[ "$(awk '{print $1}' <<<"${stat##*) }")" != Z ] || return 0
		sleep 0.01
	done
	echo "run.sh: pid $1 still running after ${2:-30} s" >&2
	return 1
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
