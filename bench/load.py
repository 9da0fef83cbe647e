#!/usr/bin/env python3
"""Load test: a burst of room requests (RS256 signing) mixed with /healthz checks.

Signing runs on tokio's blocking threads, so a burst of room requests must not slow the
async workers that answer /healthz (and run the prober). Measures /healthz latency alone,
then during the burst, and prints both with the burst's throughput.

usage: load.py BASE_URL [--workers N] [--seconds S]
"""

import argparse
import http.client
import json
import multiprocessing as mp
import time
import urllib.parse

ROOM_BODY = json.dumps(
    {"user": {"id": "u-load", "name": "Load Test"}, "client_ip": "81.2.69.142"}
).encode()


def connect(base):
    url = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=30)


def rooms(base, seconds, out):
    conn, latencies, failures = connect(base), [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        conn.request("POST", "/v1/rooms", ROOM_BODY, {"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        failures += response.status != 201
    out.put(("rooms", latencies, failures))


def health(base, seconds, out):
    conn, latencies, failures = connect(base), [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        failures += response.status != 200
        time.sleep(0.01)
    out.put(("health", latencies, failures))


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def summary(name, latencies, failures):
    return (
        f"{name}: {len(latencies)} requests, {failures} failed, "
        f"p50 {percentile(latencies, 50):.2f} ms, p99 {percentile(latencies, 99):.2f} ms, "
        f"max {max(latencies) * 1000:.2f} ms"
    )


def phase(base, seconds, workers):
    out = mp.Queue()
    procs = [mp.Process(target=health, args=(base, seconds, out))]
    procs += [mp.Process(target=rooms, args=(base, seconds, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    merged = {}
    for kind, latencies, failures in results:
        lat, fail = merged.get(kind, ([], 0))
        merged[kind] = (lat + latencies, fail + failures)
    return merged


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    quiet = phase(args.base, 3, 0)
    print(summary("/healthz alone          ", *quiet["health"]))
    burst = phase(args.base, args.seconds, args.workers)
    print(summary("/healthz during burst   ", *burst["health"]))
    room_latencies, room_failures = burst["rooms"]
    print(summary(f"POST /v1/rooms x{args.workers:<2} conns", room_latencies, room_failures))
    print(f"rooms per second during the burst: {len(room_latencies) / args.seconds:.1f}")


if __name__ == "__main__":
    main()
