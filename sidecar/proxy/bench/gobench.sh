#!/usr/bin/env bash
# gobench.sh BEFORE [AFTER]: the proxy's in-process Go benchmarks
# (sidecar/proxy/*_bench_test.go, bench_test.go) at two revisions,
# interleaved — before, after, before, after … COUNT times — then
# benchstat before vs after. Only benchmarks that exist at both revisions
# compare; benchstat shows the others in one column.
#
# Each revision's test binary is built once from a temporary detached
# worktree (so neither side sees uncommitted edits of the working tree),
# then the binaries alternate in one loop: a disturbance of the machine
# lands on both sides alike. Two runs per repetition and side: the timed
# benchmarks ($TIMED, -benchtime $BENCHTIME) and the memory ones ($MEM,
# -benchtime=1x: each iteration opens and closes 1,000 connections).
#
# Usage: sidecar/proxy/bench/gobench.sh 70d1025 [HEAD]   (OUT, COUNT, TIMED,
# MEM, BENCHTIME in the environment). Heavy: run it under
# `flock /tmp/weft-heavy.lock` on a shared machine. Output in $OUT:
# before.txt, after.txt, benchstat.txt.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
BEFORE=${1:?usage: gobench.sh BEFORE [AFTER]}
AFTER=${2:-HEAD}
OUT=${OUT:-/tmp/weft-gobench}
COUNT=${COUNT:-6}
TIMED=${TIMED:-^Benchmark(ThroughputDirect|ThroughputMeshPair|RequestLatency|EgressHTTPRequest)$}
MEM=${MEM:-^Benchmark(IdleConnMemory|ConnMemory)$}
BENCHTIME=${BENCHTIME:-1s}
mkdir -p "$OUT"

WT=
trap '[ -z "$WT" ] || git -C "$ROOT" worktree remove --force "$WT"' EXIT
for side in before after; do
	rev=$BEFORE
	[ "$side" = before ] || rev=$AFTER
	commit=$(git -C "$ROOT" rev-parse --verify "$rev^{commit}")
	WT=$(mktemp -d /tmp/weft-gobench-wt.XXXXXX)
	git -C "$ROOT" worktree add --detach -q "$WT" "$commit"
	echo "building the $side test binary ($rev = $commit)"
	(cd "$WT" && go test -c -o "$OUT/proxy-$side.test" ./sidecar/proxy)
	git -C "$ROOT" worktree remove --force "$WT"
	WT=
	echo "$side $rev $commit" >"$OUT/$side.rev"
	: >"$OUT/$side.txt"
done
echo "building benchstat"
(cd "$HERE/benchstat" && go build -o "$OUT/benchstat" golang.org/x/perf/cmd/benchstat)

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/loadavg.txt"
for i in $(seq "$COUNT"); do
	for side in before after; do
		echo "repetition $i, $side (load $(cut -d' ' -f1-3 /proc/loadavg))"
		# The package directory: the tests' relative paths (testdata) resolve there.
		(cd "$ROOT/sidecar/proxy" &&
			timeout 600 "$OUT/proxy-$side.test" -test.run '^$' -test.bench "$TIMED" -test.benchtime "$BENCHTIME" -test.benchmem -test.count 1 &&
			timeout 600 "$OUT/proxy-$side.test" -test.run '^$' -test.bench "$MEM" -test.benchtime 1x -test.count 1) >>"$OUT/$side.txt"
	done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/loadavg.txt"
"$OUT/benchstat" before="$OUT/before.txt" after="$OUT/after.txt" | tee "$OUT/benchstat.txt"
