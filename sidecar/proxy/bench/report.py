#!/usr/bin/env python3
"""Summarises run.sh's results.tsv (metric, config, value per line, in run
order) as Markdown: median and spread (min-max) of every measurement, the
ratios against the baselines of the same run, and the issue's targets."""
import statistics
import sys
from collections import defaultdict

vals = defaultdict(list)
other = []
for line in open(sys.argv[1]):
    metric, config, value = line.rstrip("\n").split("\t")
    try:
        v = float(value)
    except ValueError:
        other.append((metric, config, value))
        continue
    vals[(metric, config)].append(v)


def fmt(xs, digits=3):
    if not xs:
        return "n/a"
    med = statistics.median(xs)
    return f"{med:.{digits}g} ({min(xs):.{digits}g}–{max(xs):.{digits}g}, n={len(xs)})"


def verdict(ok):
    return "met" if ok else "**missed**"


print("| measurement | configuration | median (min–max, n) |")
print("|---|---|---|")
for (metric, config), xs in sorted(vals.items()):
    print(f"| {metric} | {config} | {fmt(xs)} |")
for metric, config, value in other:
    print(f"| {metric} | {config} | {value} |")

print()
print("| ratio / target | median (min–max) | target | verdict |")
print("|---|---|---|---|")
tp = {c: vals[("throughput_gbps", c)] for c in ("direct", "weft", "stunnel", "haproxy", "relay", "relay-splice")}
for base in ("stunnel", "haproxy", "direct", "relay", "relay-splice"):
    r = [w / b for w, b in zip(tp["weft"], tp[base]) if b]
    target = "≥ 1.5" if base == "stunnel" else ""
    v = verdict(statistics.median(r) >= 1.5) if base == "stunnel" and r else ""
    print(f"| throughput weft / {base} (same repetition) | {fmt(r)} | {target} | {v} |")
for side in ("client", "server"):
    w = vals[("cpu_s_per_gb", f"weft-{side}")]
    for base in ("stunnel", "haproxy"):
        r = [a / b for a, b in zip(w, vals[("cpu_s_per_gb", f"{base}-{side}")]) if b]
        print(f"| CPU per GB, weft / {base}, {side} side (lower is better) | {fmt(r)} | | |")
# The ceiling: a plaintext relay pair does a TLS pair's system calls and no
# cryptography, so no TLS pair beats it in this layout.
for relay in ("relay", "relay-splice"):
    r = [a / b for a, b in zip(tp[relay], tp["stunnel"]) if b]
    if r:
        print(f"| ceiling: plaintext {relay} pair / stunnel (same repetition) | {fmt(r)} | ≥ 1.5 needed for the target to be reachable | |")
for c in (4, 64):
    for p in (50, 90, 99):
        w = vals[(f"p{p}_ms", f"weft-c{c}")]
        d = vals[(f"p{p}_ms", f"direct-c{c}")]
        added = [a - b for a, b in zip(w, d)]
        target = "≤ 0.3 ms" if p == 99 else ""
        v = verdict(statistics.median(added) <= 0.3) if p == 99 and added else ""
        print(f"| added p{p} latency, {c} connections (ms) | {fmt(added)} | {target} | {v} |")
for side in ("client", "server"):
    for c in (4, 64):
        xs = vals[("vcpu_per_1000rps", f"weft-{side}-c{c}")]
        v = verdict(statistics.median(xs) <= 0.1) if xs else ""
        print(f"| vCPU per 1,000 req/s, {side} sidecar, {c} connections | {fmt(xs)} | ≤ 0.1 | {v} |")
    xs = vals[("rss_idle_mb", f"weft-{side}")]
    v = verdict(statistics.median(xs) <= 15) if xs else ""
    print(f"| idle RSS (MB), {side} sidecar | {fmt(xs)} | ≤ 15 | {v} |")
    xs = vals[("rss_kb_per_conn", f"weft-{side}")]
    v = verdict(statistics.median(xs) <= 30) if xs else ""
    print(f"| RSS per idle connection (KiB), {side} sidecar, settled | {fmt(xs)} | ≤ 30 | {v} |")
    xs = vals[("rss_kb_per_conn_burst", f"weft-{side}")]
    print(f"| RSS per idle connection (KiB), {side} sidecar, 3 s after the burst | {fmt(xs)} | | |")
print(f"| start to ready (ms), server sidecar | {fmt(vals[('ready_ms', 'weft')])} | | |")
