#!/usr/bin/env python3
"""iperf_result.py JSON NAME HZ [A0 A1 B0 B1]: results.tsv rows
(METRIC<tab>CONFIG<tab>VALUE; run.sh adds the section and repetition) for
one iperf3 run: throughput, and with the proxies' CPU ticks (client A,
server B) read before and after the iperf3 client ran, their CPU seconds
per GB moved.

Exits non-zero, with the reason on standard error, when the run failed or
its JSON does not say what is needed.

Throughput is iperf3's receiver rate after the warm-up (-O): `end.sum_received`.

CPU per GB: the CPU ticks cover the whole client run, warm-up included, so
the bytes must too. iperf3's end sums leave the omitted (warm-up) seconds
out, its intervals list them (`"omitted": true`); both are the sender's
count. GB moved = end.sum_sent.bytes + the omitted intervals' bytes, i.e.
every byte sent in the window the CPU was measured over. GB = 1e9 bytes.
"""
import sys

from result_rows import Failed, main as run


def total_sent_bytes(r):
    """Bytes sent over the whole run, the omitted warm-up included."""
    e = r["end"]
    sent = e["sum_sent"]["bytes"]
    omit = r.get("start", {}).get("test_start", {}).get("omit", 0)
    warm = [iv["sum"]["bytes"] for iv in r.get("intervals", []) if iv["sum"].get("omitted")]
    if omit and not warm:
        raise Failed(f"iperf3 omitted {omit} s but its JSON lists no omitted interval: "
                     "cannot count the warm-up's bytes that its CPU is counted with")
    return sent + sum(warm)


def rows(r, name, hz=None, ticks=None):
    """The rows for iperf3 JSON r; ticks = (a0, a1, b0, b1) or None."""
    if r.get("error"):
        raise Failed(f"iperf3: {r['error']}")
    try:
        recv = r["end"]["sum_received"]
        out = [("throughput_gbps", name, recv["bits_per_second"] / 1e9)]
        if ticks is not None:
            a0, a1, b0, b1 = ticks
            gb = total_sent_bytes(r) / 1e9
            if gb <= 0:
                raise Failed("iperf3 moved no bytes")
            out.append(("cpu_s_per_gb", f"{name}-client", (a1 - a0) / hz / gb))
            out.append(("cpu_s_per_gb", f"{name}-server", (b1 - b0) / hz / gb))
    except (KeyError, TypeError) as e:
        raise Failed(f"iperf3 JSON lacks {e}") from None
    return out


def main(argv):
    run(argv, __doc__.split("\n\n")[0], "iperf3", 2, lambda r, a, ticks: (rows(r, a[0], int(a[1]), ticks), None))


if __name__ == "__main__":
    main(sys.argv)
