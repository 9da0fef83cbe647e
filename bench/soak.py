#!/usr/bin/env python3
"""Helpers for bench/soak.sh: flapping fake Videobridges and a bounded mixed load.

    soak.py bridges PORTS_FILE COUNT SECONDS    fake bridges on 127.0.0.1, flapping
    soak.py load BASE LOBBY ADMIN SECONDS RATE  mixed requests until SECONDS have passed

Standard library only. Everything listens on or talks to 127.0.0.1 and stops by itself.
"""

import http.client
import json
import os
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

IDLE = {"stress_level": 0.05, "participants": 3, "conferences": 1, "healthy": True}
BUSY = {"stress_level": 0.95, "participants": 400, "conferences": 30}
DRAINING = {"stress_level": 0.2, "drain": True}
GRACEFUL = {"stress_level": 0.1, "graceful_shutdown": True}

# What a bridge does in each phase; phases last a few seconds and differ per bridge.
PHASES = ["idle", "idle", "busy", "unhealthy", "idle", "hang", "garbage", "draining",
          "idle", "graceful", "no-stats", "refused-json"]


def bridge_handler(index, started):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def phase(self):
            period = 3 + index  # seconds per phase: bridges flap out of step
            step = int((time.monotonic() - started) / period) + index
            return PHASES[step % len(PHASES)]

        def answer(self, status, body, kind="application/json"):
            data = body.encode()
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            phase = self.phase()
            if phase == "hang":
                time.sleep(1.5)  # longer than the probe timeout
            if self.path == "/about/health":
                if phase == "unhealthy":
                    return self.answer(500, "ice failed", "text/plain")
                return self.answer(200, "", "text/plain")
            if self.path == "/colibri/stats":
                stats = {"busy": BUSY, "draining": DRAINING, "graceful": GRACEFUL}
                if phase == "garbage":
                    return self.answer(200, "{not json")
                if phase == "no-stats":
                    return self.answer(404, "not found", "text/plain")
                if phase == "refused-json":
                    return self.answer(503, "{}")
                return self.answer(200, json.dumps(stats.get(phase, IDLE)))
            return self.answer(404, "", "text/plain")

    return Handler


class QuietServer(ThreadingHTTPServer):
    """A probe that timed out hangs up before the answer is written: not worth a trace."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def bridges(ports_file, count, seconds):
    started = time.monotonic()
    servers = []
    for index in range(count):
        server = QuietServer(("127.0.0.1", 0), bridge_handler(index, started))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    with open(ports_file + ".tmp", "w") as out:
        out.write("\n".join(str(s.server_address[1]) for s in servers) + "\n")
    # Renamed into place so that the reader never sees half a list.
    os.replace(ports_file + ".tmp", ports_file)
    time.sleep(seconds)
    for server in servers:
        server.shutdown()


PUBLIC_IPS = ["81.2.69.142", "8.8.8.8", "1.1.1.1", "185.60.216.35", "203.0.113.7",
              "2001:4860:4860::8888", "133.242.0.1", "200.160.2.3", "41.203.64.1",
              "101.0.86.43", "10.20.1.1", "192.168.1.1", "::ffff:81.2.69.142"]


class Load:
    def __init__(self, base, lobby, admin):
        host, port = base.replace("http://", "").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.lobby, self.admin = lobby, admin
        self.rooms = []
        self.lock = threading.Lock()
        self.counts = {}

    def request(self, conn, method, path, credential, body=None):
        headers = {"authorization": f"Bearer {credential}"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["content-type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        text = response.read()
        route = path.split("?")[0]
        if "/participants" in route:
            route = "/v1/rooms/{room}/participants"
        with self.lock:
            key = f"{method} {route} {response.status}"
            self.counts[key] = self.counts.get(key, 0) + 1
        return response.status, text

    def one(self, conn, rng):
        roll = rng.random()
        ip = rng.choice(PUBLIC_IPS)
        user = {"id": f"u-{rng.randrange(10**6)}", "name": "Soak Tester"}
        if roll < 0.35:
            return self.request(conn, "GET", f"/v1/regions/select?ip={ip}", self.lobby)
        if roll < 0.60:
            status, text = self.request(conn, "POST", "/v1/rooms", self.lobby,
                                        {"user": user, "client_ip": ip})
            if status == 201:
                with self.lock:
                    self.rooms.append(json.loads(text)["room"])
                    del self.rooms[:-200]
            return status, text
        if roll < 0.80:
            with self.lock:
                room = rng.choice(self.rooms) if self.rooms else "no-such-room"
            return self.request(conn, "POST", f"/v1/rooms/{room}/participants", self.lobby,
                                {"user": user, "client_ip": ip})
        if roll < 0.92:
            return self.request(conn, "GET", "/v1/regions", self.lobby)
        if roll < 0.96:
            return self.request(conn, "GET", "/v1/bridges", self.admin)
        return self.request(conn, "GET", "/v1/regions/select?ip=not-an-ip", self.lobby)

    def worker(self, seed, deadline, interval):
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            try:
                self.one(conn, rng)
            except (OSError, http.client.HTTPException) as error:
                with self.lock:
                    key = f"transport {type(error).__name__}"
                    self.counts[key] = self.counts.get(key, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()


def load(base, lobby, admin, seconds, rate):
    workers = 8
    runner = Load(base, lobby, admin)
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=runner.worker, args=(i, deadline, workers / rate))
               for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(runner.counts.values())
    print(f"requests: {total} in {seconds} s")
    for key in sorted(runner.counts):
        print(f"  {runner.counts[key]:8d}  {key}")
    bad = sum(n for k, n in runner.counts.items()
              if k.endswith(" 500") or k.startswith("transport"))
    print(f"5xx (500) or transport failures: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "bridges":
        bridges(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif sys.argv[1] == "load":
        sys.exit(load(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]),
                      float(sys.argv[6])))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
