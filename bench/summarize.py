#!/usr/bin/env python3
"""Reads `NAME rps=.. p50_us=.. p99_us=.. errors=.. non2xx=.. user_ns=.. kernel_ns=..
server_busy_pct=.. client_busy_pct=..` lines (one per wrk run; `client_cpu_ms` is ignored)
and prints the median of each figure per server, the geobridge/nginx ratios (of the medians
and round by round), and geobridge's against the control (`nginx-sized`) when it ran."""

import statistics
import sys

runs = {}
for line in sys.stdin:
    name, *fields = line.split()
    figures = {k: int(v) for k, v in (f.split("=") for f in fields)}
    figures.pop("client_cpu_ms", None)
    runs.setdefault(name, []).append(figures)
median = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
for name, m in median.items():
    print(f"{name:10} median of {len(runs[name])}: {m['rps']:>8.0f} req/s  "
          f"p50 {m['p50_us']:>6.0f} us  p99 {m['p99_us']:>6.0f} us  "
          f"errors {m['errors']:.0f}  non-2xx {m['non2xx']:.0f}  "
          f"CPU/request user {m['user_ns'] / 1000:.2f} us kernel {m['kernel_ns'] / 1000:.2f} us  "
          f"busy: server {m['server_busy_pct']:.0f} % client {m['client_busy_pct']:.0f} %")


def ratio(a, b):
    """a / b to two places, or n/a when b is 0 (a run that answered nothing)."""
    return f"{a / b:.2f}" if b else "n/a"


def per_round(a, b):
    """Each round's ratio of a's req/s to b's, in round order, with their median and range:
    the machine's speed drifts from round to round, and runs taken back to back share most
    of the drift."""
    rounds = list(zip(runs[a], runs[b]))
    shown = " ".join(ratio(x["rps"], y["rps"]) for x, y in rounds)
    pairs = [x["rps"] / y["rps"] for x, y in rounds if y["rps"]]
    if not pairs:
        return shown
    return (f"{shown} (median {statistics.median(pairs):.2f}, "
            f"range {min(pairs):.2f} to {max(pairs):.2f})")


g, n = median["geobridge"], median["nginx"]
print(f"ratio geobridge/nginx: req/s {ratio(g['rps'], n['rps'])} (target >= 1.0), "
      f"p99 {ratio(g['p99_us'], n['p99_us'])} (target <= 1.5)")
print(f"ratio per round, geobridge/nginx: {per_round('geobridge', 'nginx')}")
if "nginx-sized" in median:
    c = median["nginx-sized"]
    print(f"control: nginx answering a body as long as geobridge's ran at "
          f"{ratio(c['rps'], n['rps'])} of its own req/s; geobridge/control: req/s "
          f"{ratio(g['rps'], c['rps'])}, p99 {ratio(g['p99_us'], c['p99_us'])}")
    print(f"ratio per round, geobridge/control: {per_round('geobridge', 'nginx-sized')}")
if max(g["client_busy_pct"], n["client_busy_pct"]) >= 95:
    print("note: wrk kept its core >= 95 % busy: the client, not only the server, set the "
          "pace of these runs")
