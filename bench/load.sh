#!/usr/bin/env bash
# Starts a release geobridge on 127.0.0.1 with a 4096-bit key and runs bench/load.py
# against it: /healthz latency alone, then during a burst of room requests (each signs an
# RS256 token). Arguments are passed to load.py (--workers N, --seconds S).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q
work=$(mktemp -d)
log="$work/geobridge.log"
GEOBRIDGE_LISTEN=127.0.0.1:0 GEOBRIDGE_STATE_DIR="$work/state" \
  "${CARGO_TARGET_DIR:-target}"/release/geobridge serve 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 600); do
  grep -q "listening on http://" "$log" && break
  sleep 0.1
done
base=$(grep -o "listening on http://[0-9.:]*" "$log" | head -1 | sed 's/listening on //')
echo "geobridge at $base, $(nproc) cores; signing key: 4096-bit RSA"
python3 bench/load.py "$base" "$@"
