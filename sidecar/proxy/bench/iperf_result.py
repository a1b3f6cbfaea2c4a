#!/usr/bin/env python3
"""iperf_result.py JSON NAME HZ [A0 A1 B0 B1]: results.tsv lines for one
iperf3 run: throughput, and with the proxies' CPU ticks (client A, server B)
before and after, their CPU seconds per GB moved. Exits non-zero with
iperf3's error when the run failed."""
import json
import sys

r = json.load(open(sys.argv[1]))
if r.get("error"):
    sys.exit(r["error"])
e = r["end"]["sum_received"]
print(f"throughput_gbps\t{sys.argv[2]}\t{e['bits_per_second'] / 1e9}")
if len(sys.argv) > 4:
    hz = int(sys.argv[3])
    a0, a1, b0, b1 = map(int, sys.argv[4:8])
    gb = e["bytes"] / 1e9
    print(f"cpu_s_per_gb\t{sys.argv[2]}-client\t{(a1 - a0) / hz / gb}")
    print(f"cpu_s_per_gb\t{sys.argv[2]}-server\t{(b1 - b0) / hz / gb}")
