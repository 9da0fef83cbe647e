#!/usr/bin/env bash
# Runs Schemathesis against /openapi.json of a release build of geobridge and fails on any
# 5xx, any answer that contradicts the document, or fewer than 1,000 requests in all.
#
#   scripts/schemathesis.sh [EXAMPLES_PER_OPERATION]      (default 100)
#
# Schemathesis (pinned below) is installed from PyPI into target/schemathesis-venv. The
# server and Schemathesis run inside a private network namespace that has only a loopback
# interface: generated bridge URLs make geobridge's prober connect to whatever host they
# name, and there those connections fail at once instead of leaving the machine. Needs root
# (for unshare). Lobby operations run with the lobby credential, admin ones with the admin
# credential; the read-only registry operations run with both.
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv=target/schemathesis-venv
server=""

stop_server() {
  if [ -n "$server" ]; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}

inside() {
  local examples=$1 root=$PWD work base=""
  ip link set lo up
  work=$(mktemp -d /tmp/geobridge-schemathesis.XXXXXX)
  trap stop_server EXIT
  local lobby admin
  lobby=lobby-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  admin=admin-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  GEOBRIDGE_LISTEN=127.0.0.1:0 GEOBRIDGE_STATE_DIR="$work/state" \
    GEOBRIDGE_GEO_DATABASE="$PWD/data/geobridge-city.mmdb" \
    GEOBRIDGE_LOBBY_CREDENTIALS="$lobby" GEOBRIDGE_ADMIN_CREDENTIALS="$admin" \
    GEOBRIDGE_PROBE_INTERVAL_MS=1000 GEOBRIDGE_PROBE_TIMEOUT_MS=500 RUST_LOG=info \
    "${CARGO_TARGET_DIR:-target}"/release/geobridge serve 2>"$work/geobridge.log" &
  server=$!
  for _ in $(seq 1 600); do
    base=$(grep -o 'listening on http://[0-9.:]*' "$work/geobridge.log" | cut -d' ' -f3 || true)
    [ -n "$base" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/geobridge.log"; return 1; }
    sleep 0.1
  done
  [ -n "$base" ] || { echo "geobridge did not start"; return 1; }
  echo "geobridge (pid $server) at $base; reports in $work"

  local readers='listRegions|getRegion|listBridges|getBridge'
  local public='getPublicKey|getJwks|getHealthz|getReadyz|getMetrics|getOpenapi'
  local failed=0
  run_as() {
    local name=$1 credential=$2 operations=$3
    echo "== schemathesis as $name: $operations"
    (cd "$work" && "$root/$venv/bin/st" run "$base/openapi.json" \
      -H "Authorization: Bearer $credential" \
      --include-operation-id-regex "^($operations)\$" \
      --checks all --exclude-checks positive_data_acceptance \
      --max-examples "$examples" --seed 8 --workers 2 --no-color \
      --generation-database none --output-sanitize false \
      --report har --report-har-path "$work/$name.har") || failed=1
  }
  run_as lobby "$lobby" "createRoom|addParticipant|selectRegion|$readers|$public"
  run_as admin "$admin" "putRegion|deleteRegion|putBridge|patchBridge|deleteBridge|$readers"

  python3 - "$work"/lobby.har "$work"/admin.har <<'PY' || failed=1
import json, sys
total, by_status = 0, {}
for path in sys.argv[1:]:
    for entry in json.load(open(path))["log"]["entries"]:
        status = entry["response"]["status"]
        by_status[status] = by_status.get(status, 0) + 1
        total += 1
server_errors = sum(n for s, n in by_status.items() if s >= 500)
print(f"requests: {total}; by status: {dict(sorted(by_status.items()))}")
print(f"5xx answers: {server_errors}")
sys.exit(1 if total < 1000 or server_errors else 0)
PY
  local errors
  plain() { sed 's/\x1b\[[0-9;]*m//g' "$work/geobridge.log"; }
  errors=$(plain | grep -c -E -w 'ERROR|panicked' || true)
  echo "ERROR or panic lines in the geobridge log: $errors"
  [ "$errors" = 0 ] || { plain | grep -E -w 'ERROR|panicked' | head -n 20; failed=1; }
  stop_server
  if [ "$failed" = 0 ]; then echo "schemathesis: PASS"; else echo "schemathesis: FAIL"; fi
  return "$failed"
}

if [ "${1:-}" = --inside ]; then
  inside "${2:-100}"
  exit
fi

if [ "$("$venv/bin/st" --version 2>/dev/null)" != "st, version $version" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$version"
fi
cargo build --release --bin geobridge
exec unshare --net bash "$0" --inside "${1:-100}"
