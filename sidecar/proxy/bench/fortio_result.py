#!/usr/bin/env python3
"""fortio_result.py JSON NAME CONNS QPS TOLERANCE HZ [A0 A1 B0 B1]:
results.tsv rows (METRIC<tab>CONFIG<tab>VALUE; run.sh adds the section and
repetition) for one `fortio load -json` run at QPS requested req/s over
CONNS connections: p50/p90/p99 in ms, the achieved rate, the count of
responses other than 200, and, with the proxies' CPU ticks (client A,
server B) read before and after the fortio run, each proxy's vCPU per
1,000 req/s at the achieved rate.

It prints the rows it can, and exits non-zero with the reason on standard
error when the run FAILED: fortio reported an error; any response was not
a 200 (fortio's DurationHistogram, and so its percentiles, counts every
request, 2xx/418 "OK" or not, and socket errors as code -1: a latency is
only a 200's latency if every request was a 200); or the achieved rate
(ActualQPS) fell short of QPS by more than TOLERANCE (a fraction: 0.01 = 1 %).
A gRPC run (`fortio load -grpc`, RunType "GRPC ...") counts its calls in
RetCodes by health status, "SERVING" for a call that succeeded (a ping
too) and "ERROR" for a failed one: there only SERVING counts.

What fortio's JSON holds (v1.68, fhttp.HTTPRunnerResults and
periodic.RunnerResults): RetCodes {"200": n, "-1": socket errors, ...};
DurationHistogram {Count, Percentiles [{Percentile, Value (s)}], ...}
over all requests; ErrorsDurationHistogram over the ones fortio calls
errors (not 2xx or 418); ActualQPS = DurationHistogram.Count /
ActualDuration; ActualDuration in ns; "error"/"message"/"exception" when
the run did not start (e.g. a failed warm-up request).

vCPU per 1,000 req/s = CPU s / ActualDuration s / (ActualQPS / 1000), i.e.
CPU seconds per 1,000 requests actually served. The CPU window is the fortio
process's lifetime, which also holds its warm-up (one request per
connection, and the connections' handshakes) that ActualDuration leaves
out: that is charged to the run, so the figure can err high, never low.
"""
import sys

from result_rows import Failed, main as run


def rows(r, name, conns, qps, tolerance, hz=None, ticks=None):
    """(rows, failure reason or None) for fortio JSON r."""
    cfg = f"{name}-c{conns}"
    if r.get("error"):
        raise Failed(f"fortio: {r.get('message', '')}: {r.get('exception', '')}")
    try:
        h = r["DurationHistogram"]
        codes = {str(k): int(v) for k, v in (r.get("RetCodes") or {}).items()}
        total = int(h["Count"])
        ok_code = "SERVING" if str(r.get("RunType", "")).startswith("GRPC") else "200"
        ok = codes.get(ok_code, 0)
        actual_qps = float(r["ActualQPS"])
        duration_s = float(r["ActualDuration"]) / 1e9
        out = [(f"p{p['Percentile']:g}_ms", cfg, p["Value"] * 1e3) for p in h.get("Percentiles", [])]
    except (KeyError, TypeError, ValueError) as e:
        raise Failed(f"fortio JSON lacks or mangles {e}") from None
    errors = total - ok
    out.append(("qps", cfg, actual_qps))
    out.append(("errors", cfg, errors))
    problems = []
    if total == 0:
        problems.append("fortio made no request")
    if sum(codes.values()) != total:
        problems.append(f"RetCodes count {sum(codes.values())} requests, the histogram {total}")
    if errors:
        problems.append(f"{errors} of {total} responses were not {ok_code} (RetCodes {codes})")
    if actual_qps < qps * (1 - tolerance):
        problems.append(f"achieved {actual_qps:.2f} req/s, requested {qps:g} (short by more than {tolerance:.1%})")
    if ticks is not None and total and duration_s > 0 and actual_qps > 0:
        a0, a1, b0, b1 = ticks
        for side, t0, t1 in (("client", a0, a1), ("server", b0, b1)):
            vcpu = (t1 - t0) / hz / duration_s
            out.append(("vcpu_per_1000rps", f"{name}-{side}-c{conns}", vcpu / (actual_qps / 1000)))
    elif ticks is not None:
        problems.append("no achieved rate to divide the proxies' CPU by")
    return out, "; ".join(problems) or None


def main(argv):
    run(argv, __doc__.split("\n\n")[0], "fortio", 5,
        lambda r, a, ticks: rows(r, a[0], int(a[1]), float(a[2]), float(a[3]), int(a[4]), ticks))


if __name__ == "__main__":
    main(sys.argv)
