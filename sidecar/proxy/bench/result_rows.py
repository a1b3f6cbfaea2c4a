"""What iperf_result.py and fortio_result.py share: the command line that
reads one tool run's JSON and prints its results.tsv rows
(METRIC<tab>CONFIG<tab>VALUE; run.sh adds the section and repetition), or
exits non-zero with the reason on standard error.
"""
import json
import sys


class Failed(Exception):
    """The run failed, or its JSON does not say what is needed."""


def main(argv, usage, tool, nargs, rows):
    """Runs `argv[0] JSON ARG... [A0 A1 B0 B1]` with nargs ARGs and,
    optionally, the proxies' CPU ticks (client A, server B) read before and
    after the tool ran. rows(r, args, ticks) returns the rows for the
    tool's JSON r and the reason the run failed, or None; ticks is
    (a0, a1, b0, b1) or None. It prints the rows it can, then exits
    non-zero if the run failed."""
    if len(argv) not in (2 + nargs, 6 + nargs):
        sys.exit(usage)
    try:
        with open(argv[1]) as f:
            r = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"{tool} left no JSON result: {e}")
    ticks = tuple(map(int, argv[2 + nargs:])) or None
    try:
        out, failure = rows(r, argv[2:2 + nargs], ticks)
    except Failed as e:
        sys.exit(str(e))
    for m, c, v in out:
        print(f"{m}\t{c}\t{v}")
    if failure:
        sys.exit(failure)
