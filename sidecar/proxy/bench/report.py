#!/usr/bin/env python3
"""report.py RESULTS.TSV: summarises run.sh's results.tsv as Markdown on
standard output: median and spread (min–max) of every measurement, the
ratios against the baselines of the same repetition, and the issue's
targets.

results.tsv rows are SECTION<tab>REP<tab>METRIC<tab>CONFIG<tab>VALUE (see
lib.sh). Ratios and differences are JOINED ON THE REPETITION NUMBER within
a section, never paired by position in the file.

A repetition FAILS when run.sh marked it (a row with METRIC "failed": a load
tool failed, a fortio response was not a 200, the achieved rate fell short
of the requested one, a proxy exited mid-run, the hold lost its
connections) or when it lacks a value that another repetition of its
section has. A failed repetition is excluded from every figure of its
section and so from BOTH sides of every ratio; the report lists it at the
top, and report.py exits 1 after printing the whole report (so run.sh exits
non-zero too). Why not stop the run at the first failure: a run takes ~10
minutes on a shared machine and one failed repetition leaves the others
valid; why exit non-zero anyway: a report with a failed repetition must not
pass for a clean one. It also exits 1 when a ratio it should show has no
repetition with both sides.

The latency section holds the L4 pair ("weft") and the L7 pair ("weft-l7",
HTTP routing) beside direct, for HTTP/1.1 over 4 and 64 connections and
gRPC unary over one (WORKLOADS): each pair's added latency (pair − direct),
L7 − L4, and each sidecar's vCPU per 1,000 req/s, all joined on the
repetition; the issue's targets are added p99 ≤ 0.3 ms (HTTP/1.1) and
≤ 0.1 vCPU per 1,000 req/s per sidecar.

With run.sh's BEFORE=<rev>, configuration "weft-before" (the pair built
from that revision) runs beside "weft" and a before/after table follows:
after/before (after − before for latency percentiles) per repetition,
joined on its number, against the before's own spread over the repetitions
(min and max against its median, in the same form); "beyond noise" when
the median after/before lies outside that spread and every repetition
moved the same way, "within noise" otherwise.

Units: Gbit/s = 1e9 bit/s; GB = 1e9 bytes; MiB = 2^20 bytes; KiB = 2^10
bytes (/proc's "kB" is KiB).
"""
import math
import statistics
import sys
from collections import defaultdict

# Recorded in one repetition only, so not expected of the others.
ONCE = {"rss_1s_after_start_mib"}
SECTION_ORDER = {"run": 0, "throughput": 1, "latency": 2, "idle": 3}
# The idle-RSS target is "15 MB"; read as decimal MB (the stricter
# reading), in MiB.
IDLE_RSS_TARGET_MIB = 15e6 / 2**20
PROXIES = ("weft", "stunnel", "haproxy")
# run.sh's BEFORE=<rev>: the pair built from that revision, beside "weft".
BEFORE = "weft-before"
# The latency section's pair configurations: "weft" is the L4 pair,
# "weft-l7" the L7 pair (HTTP routing: pair -app-protocol http|grpc).
LAT_MODES = (("weft", "L4"), ("weft-l7", "L7"))
# (and the peers, LAT_PEERS: "stdlib-l7", net/http's own L7 pair —
# pair -mode stdlib-client and stdlib-server — the ceiling of an L7 sidecar
# built on net/http; "haproxy-l4" and "haproxy-l7", HAProxy's pairs)
# Its loads, as run.sh's fortio names their rows: (infix, connections,
# label). A configuration's rows are <config><infix>-c<connections> (the
# proxies' CPU <config><infix>-<side>-c<connections>); direct's likewise.
WORKLOADS = (("", 4, "HTTP/1.1, 4 connections"), ("", 64, "HTTP/1.1, 64 connections"),
             ("-grpc", 1, "gRPC unary, 1 connection"))
# The targets: added p99 ≤ 0.3 ms for HTTP/1.1 (none is stated for
# gRPC), ≤ 0.1 vCPU per 1,000 req/s per sidecar.
P99_TARGET_MS = 0.3
VCPU_TARGET = 0.1


def lat_cfg(config, infix, conns, side=None):
    """The results.tsv configuration of a latency row (side: a proxy's CPU)."""
    return f"{config}{infix}-{side}-c{conns}" if side else f"{config}{infix}-c{conns}"


# The latency section's peers (run.sh): net/http's own L7 pair, and
# HAProxy's L4 and L7 pairs (a C proxy doing the same hops: what this
# machine's CPU allows a sidecar pair, against the target); each
# (configuration, label, short label, the weft pair it is set against).
STDLIB = "stdlib-l7"
LAT_PEERS = ((STDLIB, "net/http L7 pair", "net/http L7", "weft-l7"),
             ("haproxy-l4", "HAProxy L4 pair", "HAProxy L4", "weft"),
             ("haproxy-l7", "HAProxy L7 pair", "HAProxy L7", "weft-l7"),
             ("haproxy-plain", "HAProxy plaintext pair", "HAProxy plaintext", "weft-l7"))
# The ceiling of the L7 vCPU target on the machine of the run: HAProxy's L7
# pair, the same hops (mutual TLS 1.3, HTTP parsed on each side, pooled
# HTTP/2 between them) in a C proxy, measured in the same repetitions. Where
# it misses the target too, the target lies beyond what this machine gives
# a pair doing that work; the plaintext pair (bytes copied, no TLS, no HTTP)
# is the floor under both.
CEILING = "haproxy-l7"
# The floor of the added-p99 target: HAProxy's plaintext pair, two
# processes that copy the bytes (no TLS, no HTTP), measured in the same
# repetitions. Where even it adds more than the target to the p99 (the
# machine's own cost of two more hops, each a wake-up of a process on a
# vCPU), no pair of proxies meets the target on this machine.
FLOOR = "haproxy-plain"


def has_config(res, config):
    """Whether the run measured configuration config (runs before it
    existed did not: their reports have no such rows, and are not failed for it)."""
    return any(c.startswith(config) for (s, r, m, c) in res.vals)


def before_has_l7(res):
    """Whether run.sh ran the BEFORE revision's pair in its L7 mode too
    (a pair older than -app-protocol has none: run.sh records pair_l7 no)."""
    return any((m, c, v) == ("pair_l7", BEFORE, "yes") for s, r, m, c, v in res.text)


class Results:
    def __init__(self, lines):
        self.vals = {}  # (section, rep, metric, config) -> float
        self.text = []  # non-numeric rows, as read
        self.failed = defaultdict(list)  # (section, rep) -> reasons
        self.reps = defaultdict(set)  # section -> repetitions seen
        for n, line in enumerate(lines, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            f = line.split("\t")
            if len(f) != 5:
                raise ValueError(
                    f"line {n}: {len(f)} columns, want 5 (SECTION REP METRIC CONFIG VALUE); "
                    f"a results.tsv of the old harness (3 columns) cannot be joined on repetitions: {line!r}")
            section, rep, metric, config, value = f
            try:
                rep = int(rep)
            except ValueError:
                raise ValueError(f"line {n}: repetition {rep!r} is not a number") from None
            self.reps[section].add(rep)
            if metric == "failed":
                self.failed[(section, rep)].append(f"{config}: {value}")
                continue
            try:
                v = float(value)
            except ValueError:
                self.text.append((section, rep, metric, config, value))
                continue
            key = (section, rep, metric, config)
            if key in self.vals:
                raise ValueError(f"line {n}: {metric} {config} recorded twice in {section} repetition {rep}")
            self.vals[key] = v
        # A repetition that lacks what another repetition of its section
        # has is incomplete (a dropped run): it fails like a marked one.
        keys = defaultdict(lambda: defaultdict(set))  # section -> rep -> keys
        for (s, r, m, c) in self.vals:
            if m not in ONCE:
                keys[s][r].add((m, c))
        for s, by_rep in keys.items():
            union = set().union(*by_rep.values())
            for r in sorted(self.reps[s]):
                if (s, r) in self.failed or s == "run":
                    continue
                missing = union - by_rep.get(r, set())
                if missing:
                    self.failed[(s, r)].append(
                        "incomplete, lacks " + ", ".join(f"{m} {c}" for m, c in sorted(missing)))

    def ok(self, section, rep):
        return (section, rep) not in self.failed

    def series(self, section, metric, config):
        """[(rep, value)] of the repetitions that did not fail."""
        return sorted((r, v) for (s, r, m, c), v in self.vals.items()
                      if (s, m, c) == (section, metric, config) and self.ok(s, r))

    def join(self, section, metric_a, config_a, metric_b, config_b, op):
        """[(rep, op(a, b))] over the repetitions of section that did not
        fail and hold both values: joined on the repetition number."""
        a = dict(self.series(section, metric_a, config_a))
        b = dict(self.series(section, metric_b, config_b))
        out = []
        for r in sorted(a.keys() & b.keys()):
            try:
                out.append((r, op(a[r], b[r])))
            except ZeroDivisionError:
                pass
        return out


def compare_specs(res):
    """The before/after comparisons ([sidecar-hardening]): (label, section,
    metric, after config, before config, op, higher_is_better). op "ratio"
    is after / before, "diff" after − before (latency percentiles: the
    direct baseline of the repetition cancels, so it is also added-after −
    added-before)."""
    specs = [("throughput, Gbit/s", "throughput", "throughput_gbps", "weft", BEFORE, "ratio", True)]
    for side in ("client", "server"):
        specs.append((f"CPU s per GB, {side} side", "throughput", "cpu_s_per_gb",
                      f"weft-{side}", f"{BEFORE}-{side}", "ratio", False))
    modes = [("", "weft", BEFORE)] + ([("L7 ", "weft-l7", f"{BEFORE}-l7")] if before_has_l7(res) else [])
    for prefix, after, before in modes:
        for infix, c, what in WORKLOADS:
            for pc in (50, 90, 99):
                specs.append((f"{prefix}p{pc} latency, {what}, ms", "latency", f"p{pc}_ms",
                              lat_cfg(after, infix, c), lat_cfg(before, infix, c), "diff", False))
        for infix, c, what in WORKLOADS:
            for side in ("client", "server"):
                specs.append((f"{prefix}vCPU per 1,000 req/s, {side}, {what}", "latency", "vcpu_per_1000rps",
                              lat_cfg(after, infix, c, side), lat_cfg(before, infix, c, side), "ratio", False))
    held = sorted({m for (s, r, m, c) in res.vals if s == "idle" and m.startswith("rss_") and m.endswith("conns_mib")})
    for side in ("client", "server"):
        for metric, what in [("rss_idle_mib", "idle RSS, MiB")] + [(m, m[4:-4].replace("conns", " conns") + ", RSS MiB")
                                                                    for m in held] + [
                ("rss_kib_per_conn", "RSS per idle connection, KiB, settled"),
                ("rss_kib_per_conn_burst", "RSS per idle connection, KiB, 3 s after the burst")]:
            specs.append((f"{what}, {side}", "idle", metric, f"weft-{side}", f"{BEFORE}-{side}", "ratio", False))
    return specs


def compare(res, section, metric, after, before, op):
    """(pairs, band): pairs = [(rep, after op before)] joined on the
    repetition (failed repetitions out of both sides); band = the before's
    own spread over its repetitions, as (min op median, max op median):
    how far the before differs from itself, the noise to judge pairs by."""
    f = (lambda a, b: a / b) if op == "ratio" else (lambda a, b: a - b)
    pairs = res.join(section, metric, after, metric, before, f)
    xs = [v for _, v in res.series(section, metric, before)]
    band = None
    if xs:
        med = statistics.median(xs)
        try:
            band = (f(min(xs), med), f(max(xs), med))
        except ZeroDivisionError:
            band = None
    return pairs, band


def noise_verdict(pairs, band, op, higher_is_better):
    """Beyond noise when both hold: the median of after-vs-before lies
    outside the before's own spread over the repetitions, and every
    repetition moved the same way (after/before all above 1 or all below;
    after − before all above 0 or all below: with 5 repetitions a chance
    of 1 in 16 under no change). Otherwise "within noise"."""
    if not pairs or band is None:
        return "**no data**"
    xs = [v for _, v in pairs]
    m = statistics.median(xs)
    one = 1.0 if op == "ratio" else 0.0
    consistent = min(xs) > one or max(xs) < one
    if band[0] <= m <= band[1] or not consistent:
        return "within noise"
    worse = (m < band[0]) if higher_is_better else (m > band[1])
    return "**regressed beyond noise**" if worse else "improved beyond noise"


def num(x, digits=3):
    """digits significant digits, never in exponent form for |x| ≥ 1."""
    return f"{x:.0f}" if abs(x) >= 10**digits else f"{x:.{digits}g}"


def fmt(pairs):
    if not pairs:
        return "n/a"
    xs = [v for _, v in pairs]
    reps = ",".join(str(r) for r, _ in pairs)
    return f"{num(statistics.median(xs))} ({num(min(xs))}–{num(max(xs))}, n={len(xs)}: reps {reps})"


# The coverage a median's confidence interval must reach before an added
# p99 is judged by it (order statistics: 5 repetitions are the fewest that
# reach 0.9, their min–max covering 93.75 %).
P99_CI_LEVEL = 0.9


def median_ci(xs, level=P99_CI_LEVEL):
    """(lo, hi, coverage): the distribution-free confidence interval of the
    median of xs — the order statistics x(k) and x(n+1-k) (1-based) for
    the largest k whose coverage, 1 - 2·P(Binomial(n, 1/2) < k), is at
    least level — or None when even min–max covers less (n < 5 at 0.9).
    No assumption on the distribution: only that the repetitions are
    independent draws of the same one."""
    xs = sorted(xs)
    n = len(xs)
    best = None
    below = 0.0  # P(B <= k-1)
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2**n
        coverage = 1 - 2 * below
        if coverage < level:
            break
        best = (xs[k - 1], xs[n - k], coverage)
    return best


def unresolved(added, direct):
    """Why an added-p99 figure cannot be held against the target ("" when
    it can).

    With 5 or more repetitions: when the distribution-free confidence
    interval of the median added p99 (median_ci) holds the target, the
    data cannot tell which side of it the pair lies. With fewer (no such
    interval at 90 %): when the median is negative (the proxy cannot take
    latency away: the baseline's own tail moved more than the proxy adds),
    or when the direct baseline's p99 itself moved by more than the target
    between the repetitions joined, so a difference of the target's size
    is noise. (That rule only grows stricter with more repetitions — the
    range of n draws widens with n — which is why the interval replaces it
    where it exists.)"""
    if not added:
        return ""
    ci = median_ci([v for _, v in added])
    if ci:
        lo, hi, coverage = ci
        if lo <= P99_TARGET_MS < hi:
            return (f"the {coverage:.0%} confidence interval of the median, "
                    f"{num(lo)}–{num(hi)} ms, holds the target")
        return ""
    if statistics.median(v for _, v in added) < 0:
        return "negative median (the baseline's own tail moved more than the proxy adds)"
    reps = {r for r, _ in added}
    d = [v for r, v in direct if r in reps]
    if d and max(d) - min(d) > P99_TARGET_MS:
        return f"the direct baseline's p99 ranged {num(min(d))}–{num(max(d))} ms over these repetitions, wider than the target"
    return ""


def ci_text(pairs):
    """The confidence interval of the median of [(rep, value)] in words ("" with
    too few repetitions for one)."""
    ci = median_ci([v for _, v in pairs]) if pairs else None
    return f"{ci[2]:.0%} CI of the median {num(ci[0])}–{num(ci[1])} ms" if ci else ""


def ci_note(added):
    """The confidence interval a resolved added-p99 verdict rests on, in
    brackets after it ("" with too few repetitions for one)."""
    t = ci_text(added)
    return f" ({t})" if t else ""


def render(res):
    """(Markdown, clean) for Results res."""
    body = []
    problems = []
    p = body.append

    def verdict(pairs, ok, section):
        if not pairs:
            if section in res.reps:
                problems.append(f"no {section} repetition yields this figure")
                return "**no data**"
            return ""
        return "met" if ok(statistics.median(v for _, v in pairs)) else "**missed**"

    p("| section | measurement | configuration | median (min–max, n: repetitions) |")
    p("|---|---|---|---|")
    keys = sorted({(s, m, c) for (s, r, m, c) in res.vals},
                  key=lambda k: (SECTION_ORDER.get(k[0], 9), k[0], k[1], k[2]))
    for s, m, c in keys:
        p(f"| {s} | {m} | {c} | {fmt(res.series(s, m, c))} |")
    p("")

    p("| ratio / target | median (min–max, n: repetitions) | target | verdict |")
    p("|---|---|---|---|")
    div = lambda a, b: a / b  # noqa: E731
    sub = lambda a, b: a - b  # noqa: E731
    T = "throughput"
    for base in ("stunnel", "haproxy", "direct", "relay", "relay-splice"):
        r = res.join(T, "throughput_gbps", "weft", "throughput_gbps", base, div)
        if base == "stunnel":
            p(f"| throughput weft / {base} (same repetition) | {fmt(r)} | ≥ 1.5 | {verdict(r, lambda x: x >= 1.5, T)} |")
        else:
            verdict(r, lambda x: True, T)
            p(f"| throughput weft / {base} (same repetition) | {fmt(r)} | | |")
    for side in ("client", "server"):
        for base in ("stunnel", "haproxy"):
            r = res.join(T, "cpu_s_per_gb", f"weft-{side}", "cpu_s_per_gb", f"{base}-{side}", div)
            verdict(r, lambda x: True, T)
            p(f"| CPU per GB, weft / {base}, {side} side, same repetition (lower is better) | {fmt(r)} | | |")
    # The ceiling: a plaintext relay pair does a TLS pair's system calls and no
    # cryptography, so no TLS pair beats it in this layout.
    for relay in ("relay", "relay-splice"):
        r = res.join(T, "throughput_gbps", relay, "throughput_gbps", "stunnel", div)
        verdict(r, lambda x: True, T)
        p(f"| ceiling: plaintext {relay} pair / stunnel (same repetition) | {fmt(r)} | ≥ 1.5 needed for the target to be reachable | |")
    # Added latency (pair − direct) of the L4 and the L7 pair, each load,
    # and what L7 adds to L4 (L7 − L4), all within a repetition.
    L = "latency"
    for infix, c, what in WORKLOADS:
        direct = lat_cfg("direct", infix, c)
        for config, mode in LAT_MODES:
            for pc in (50, 90, 99):
                r = res.join(L, f"p{pc}_ms", lat_cfg(config, infix, c), f"p{pc}_ms", direct, sub)
                label = f"{mode} added p{pc} latency, {what} (ms), same repetition"
                if pc == 99 and not infix:
                    v = verdict(r, lambda x: x <= P99_TARGET_MS, L)
                    why = unresolved(r, res.series(L, "p99_ms", direct))
                    v = f"**unresolved**: {why}" if why else v + ci_note(r)
                    p(f"| {label} | {fmt(r)} | ≤ {P99_TARGET_MS:g} ms | {v} |")
                else:
                    verdict(r, lambda x: True, L)
                    p(f"| {label} | {fmt(r)} | {'none stated' if pc == 99 else ''} | |")
        for pc in (50, 99):
            r = res.join(L, f"p{pc}_ms", lat_cfg("weft-l7", infix, c), f"p{pc}_ms", lat_cfg("weft", infix, c), sub)
            verdict(r, lambda x: True, L)
            p(f"| L7 − L4 p{pc} latency, {what} (ms), same repetition | {fmt(r)} | | |")
    # CPU per 1,000 req/s per sidecar, by the achieved rate.
    for infix, c, what in WORKLOADS:
        for side in ("client", "server"):
            for config, mode in LAT_MODES:
                xs = res.series(L, "vcpu_per_1000rps", lat_cfg(config, infix, c, side))
                p(f"| {mode} vCPU per 1,000 req/s (achieved rate), {side} sidecar, {what} | {fmt(xs)} | "
                  f"≤ {VCPU_TARGET:g} | {verdict(xs, lambda x: x <= VCPU_TARGET, L)} |")
            r = res.join(L, "vcpu_per_1000rps", lat_cfg("weft-l7", infix, c, side),
                         "vcpu_per_1000rps", lat_cfg("weft", infix, c, side), div)
            verdict(r, lambda x: True, L)
            p(f"| vCPU L7 / L4, {side} sidecar, {what}, same repetition | {fmt(r)} | | |")
            if has_config(res, CEILING):
                xs = res.series(L, "vcpu_per_1000rps", lat_cfg(CEILING, infix, c, side))
                v = verdict(xs, lambda x: x <= VCPU_TARGET, L)
                v = {"met": "the ceiling meets it", "**missed**": "**beyond this machine**: the ceiling misses it"}.get(v, v)
                p(f"| ceiling of the L7 vCPU target: HAProxy L7 pair, {side} side, {what}, same repetitions | {fmt(xs)} | "
                  f"≤ {VCPU_TARGET:g} for the target to be within this machine's reach | {v} |")
    # The peers: net/http's own L7 pair (pair -mode stdlib-*), the same two
    # HTTP hops per side and nothing of weft's, and HAProxy's L4 and L7
    # pairs (the same hops in C); each for runs that have it.
    for ceiling, pair, short, ours in LAT_PEERS:
        if not has_config(res, ceiling):
            continue
        for infix, c, what in WORKLOADS:
            direct = lat_cfg("direct", infix, c)
            r = res.join(L, "p50_ms", lat_cfg(ceiling, infix, c), "p50_ms", direct, sub)
            verdict(r, lambda x: True, L)
            p(f"| {pair} added p50 latency, {what} (ms), same repetition | {fmt(r)} | | |")
            r = res.join(L, "p99_ms", lat_cfg(ceiling, infix, c), "p99_ms", direct, sub)
            why = unresolved(r, res.series(L, "p99_ms", direct))
            if ceiling == FLOOR and not infix:
                v = verdict(r, lambda x: x <= P99_TARGET_MS, L)
                v = {"met": "the floor meets it",
                     "**missed**": "**beyond this machine**: two proxies copying bytes add more"}.get(v, v)
                v = f"**unresolved**: {why}" if why else v + ci_note(r)
                p(f"| floor of the added-p99 target: {pair} added p99 latency, {what} (ms), same repetition | "
                  f"{fmt(r)} | ≤ {P99_TARGET_MS:g} ms for the target to be within this machine's reach | {v} |")
            else:
                verdict(r, lambda x: True, L)
                p(f"| {pair} added p99 latency, {what} (ms), same repetition | {fmt(r)} | | "
                  f"{'**unresolved**: ' + why if why else ''} |")
            # weft's pair against the peer, each p99 of the same repetition:
            # the direct baseline drops out of the difference.
            mode = dict(LAT_MODES)[ours]
            r = res.join(L, "p99_ms", lat_cfg(ours, infix, c), "p99_ms", lat_cfg(ceiling, infix, c), sub)
            verdict(r, lambda x: True, L)
            p(f"| p99 weft {mode} − {short}, {what} (ms), same repetition | {fmt(r)} | | {ci_text(r)} |")
            for side in ("client", "server"):
                xs = res.series(L, "vcpu_per_1000rps", lat_cfg(ceiling, infix, c, side))
                verdict(xs, lambda x: True, L)
                p(f"| {pair} vCPU per 1,000 req/s (achieved rate), {side} side, {what} | {fmt(xs)} | | |")
                r = res.join(L, "vcpu_per_1000rps", lat_cfg(ours, infix, c, side),
                             "vcpu_per_1000rps", lat_cfg(ceiling, infix, c, side), div)
                verdict(r, lambda x: True, L)
                p(f"| vCPU weft {mode} / {short}, {side} sidecar, {what}, same repetition | {fmt(r)} | | |")
    I = "idle"
    for side in ("client", "server"):
        xs = res.series(I, "rss_idle_mib", f"weft-{side}")
        p(f"| idle RSS (MiB), {side} sidecar | {fmt(xs)} | ≤ 15 MB = {IDLE_RSS_TARGET_MIB:.2f} MiB | {verdict(xs, lambda x: x <= IDLE_RSS_TARGET_MIB, I)} |")
        xs = res.series(I, "rss_kib_per_conn", f"weft-{side}")
        p(f"| RSS per idle connection (KiB), {side} sidecar, settled | {fmt(xs)} | ≤ 30 KiB | {verdict(xs, lambda x: x <= 30, I)} |")
        xs = res.series(I, "rss_kib_per_conn_burst", f"weft-{side}")
        verdict(xs, lambda x: True, I)
        p(f"| RSS per idle connection (KiB), {side} sidecar, 3 s after the burst | {fmt(xs)} | | |")
    ready = sorted((SECTION_ORDER.get(s, 9), s, r, v) for (s, r, m, c), v in res.vals.items()
                   if (m, c) == ("ready_ms", "weft") and res.ok(s, r))
    p(f"| start to ready (ms), server sidecar, every section | {fmt([(f'{s}:{r}', v) for _, s, r, v in ready])} | | |")

    if any(c.startswith(BEFORE) for (s, r, m, c) in res.vals):
        p("")
        revs = {c: v for s, r, m, c, v in res.text if m == "revision"}
        p(f"Before/after: weft = {revs.get('weft', '?')}, weft-before = {revs.get(BEFORE, '?')}. "
          "after/before (or after − before) is taken per repetition, joined on its number; the noise is the "
          "before's own spread over the repetitions (its min and max against its median, in the same form). "
          "Verdict: beyond noise when the median after/before lies outside that spread AND every repetition "
          "moved the same way; within noise otherwise.")
        p("")
        p("| measurement | weft (after) | weft-before | after/before or after − before, same repetition | "
          "before's own spread (noise) | verdict |")
        p("|---|---|---|---|---|---|")
        for label, s, metric, after, before, op, hib in compare_specs(res):
            pairs, band = compare(res, s, metric, after, before, op)
            v = noise_verdict(pairs, band, op, hib)
            if v == "**no data**" and s in res.reps:
                problems.append(f"no {s} repetition yields {metric} {after} vs {before}")
            form = "after/before" if op == "ratio" else "after − before"
            bandtxt = "n/a" if band is None else f"{num(band[0])} – {num(band[1])}"
            p(f"| {label} | {fmt(res.series(s, metric, after))} | {fmt(res.series(s, metric, before))} | "
              f"{form} {fmt(pairs)} | {bandtxt} | {v} |")
        # Start to ready: every section's pairs, joined on (section, repetition).
        ready = {}
        for (s, r, m, c), v in res.vals.items():
            if m == "ready_ms" and c in ("weft", BEFORE) and res.ok(s, r):
                ready.setdefault(c, {})[(s, r)] = v
        a, b = ready.get("weft", {}), ready.get(BEFORE, {})
        pairs = [(f"{s}:{r}", a[k] / b[k]) for k in sorted(a.keys() & b.keys(),
                                                         key=lambda k: (SECTION_ORDER.get(k[0], 9), k[1]))
                 for s, r in [k] if b[k]]
        xs = list(b.values())
        band = (min(xs) / statistics.median(xs), max(xs) / statistics.median(xs)) if xs else None
        p(f"| start to ready, ms, server sidecar, every section | {fmt(sorted((f'{s}:{r}', v) for (s, r), v in a.items()))} | "
          f"{fmt(sorted((f'{s}:{r}', v) for (s, r), v in b.items()))} | after/before {fmt(pairs)} | "
          f"{'n/a' if band is None else f'{num(band[0])} – {num(band[1])}'} | {noise_verdict(pairs, band, 'ratio', False)} |")

    if res.text:
        p("")
        p("| section | rep | metric | configuration | value |")
        p("|---|---|---|---|---|")
        for s, r, m, c, v in res.text:
            p(f"| {s} | {r} | {m} | {c} | {v} |")

    head = []
    if res.failed:
        head.append(f"**{len(res.failed)} repetition(s) FAILED — excluded from every figure of their section "
                    "and from both sides of every ratio; this report is NOT clean (report.py exits 1):**")
        head.append("")
        for (s, r), why in sorted(res.failed.items(), key=lambda k: (SECTION_ORDER.get(k[0][0], 9), k[0][1])):
            head.append(f"- {s} repetition {r}: " + "; ".join(why))
        head.append("")
    if problems:
        head.append("**Figures without data (report.py exits 1):** " + "; ".join(sorted(set(problems))))
        head.append("")
    if not res.failed and not problems:
        head.append("Every repetition passed its checks (each tool succeeded; every fortio response a 200, "
                    "every gRPC call SERVING; "
                    "the achieved rate within tolerance of the requested one).")
        head.append("")
    runs = ", ".join(f"{s} {len(rs)}" for s, rs in sorted(res.reps.items(), key=lambda k: SECTION_ORDER.get(k[0], 9))
                     if s != "run")
    head.append(f"Repetitions per section: {runs or 'none'}. Ratios and differences are joined on the repetition "
                "number. Units: Gbit/s = 1e9 bit/s, GB = 1e9 bytes, MiB = 2^20 bytes, KiB = 2^10 bytes.")
    head.append("")
    return "\n".join(head + body) + "\n", not res.failed and not problems


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: report.py RESULTS.TSV")
    with open(argv[1]) as f:
        try:
            res = Results(f)
        except ValueError as e:
            sys.exit(f"report.py: {argv[1]}: {e}")
    text, clean = render(res)
    sys.stdout.write(text)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
