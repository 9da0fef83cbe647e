#!/usr/bin/env bash
# Soak test: a release build of geobridge under mixed load for SECONDS (default 600) while
# several fake Videobridges flap (healthy, busy, unhealthy, hanging, garbage, draining).
#
#   bench/soak.sh [SECONDS] [REQUESTS_PER_SECOND]       (default 600 s, 60 requests/s)
#
# Passes when resident memory at the end is within 10% of its value after the first minute,
# the log has no ERROR line, and no request got a 500 or a transport failure. Everything
# listens on 127.0.0.1; every process it starts is stopped by its pid when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
rate=${2:-60}
bridge_count=6
[ "$seconds" -ge 90 ] || { echo "SECONDS must be at least 90 (memory is first read at 60 s)"; exit 64; }

cargo build --release --bin geobridge
work=$(mktemp -d /tmp/geobridge-soak.XXXXXX)
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT

# Fake bridges first: their ports go into the configuration.
python3 bench/soak.py bridges "$work/ports" "$bridge_count" $((seconds + 120)) &
pids+=($!)
for _ in $(seq 1 100); do [ -f "$work/ports" ] && break; sleep 0.1; done
regions=(eu-central eu-central us-east us-west ap-southeast-2 sa-east)
config=$work/geobridge.toml
cp data/geobridge.example.toml "$config"
i=0
while read -r port; do
  printf '\n[[bridges]]\nid = "jvb-soak-%s"\nregion = "%s"\nurl = "http://127.0.0.1:%s"\n' \
    "$i" "${regions[$((i % ${#regions[@]}))]}" "$port" >>"$config"
  i=$((i + 1))
done <"$work/ports"

lobby=lobby-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
admin=admin-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
GEOBRIDGE_LISTEN=127.0.0.1:0 GEOBRIDGE_STATE_DIR="$work/state" \
  GEOBRIDGE_GEO_DATABASE="$PWD/data/geobridge-city.mmdb" \
  GEOBRIDGE_LOBBY_CREDENTIALS="$lobby" GEOBRIDGE_ADMIN_CREDENTIALS="$admin" \
  GEOBRIDGE_PROBE_INTERVAL_MS=1000 GEOBRIDGE_PROBE_TIMEOUT_MS=500 RUST_LOG=info \
  "${CARGO_TARGET_DIR:-target}"/release/geobridge --config "$config" serve 2>"$work/geobridge.log" &
server=$!
pids+=("$server")
base=""
for _ in $(seq 1 1200); do
  base=$(grep -o 'listening on http://[0-9.:]*' "$work/geobridge.log" | cut -d' ' -f3 || true)
  [ -n "$base" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/geobridge.log"; exit 1; }
  sleep 0.1
done
[ -n "$base" ] || { echo "geobridge did not start"; exit 1; }
echo "geobridge pid $server at $base; $bridge_count flapping bridges; work dir $work"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$server/status"; }
python3 bench/soak.py load "$base" "$lobby" "$admin" "$seconds" "$rate" >"$work/load.txt" &
load=$!
pids+=("$load")
started=$SECONDS
first=""
echo "elapsed_s,rss_kb" >"$work/rss.csv"
while kill -0 "$load" 2>/dev/null; do
  sleep 5
  elapsed=$((SECONDS - started))
  rss=$(rss_kb)
  if [ $((elapsed % 30)) -lt 5 ]; then echo "$elapsed,$rss" >>"$work/rss.csv"; fi
  if [ -z "$first" ] && [ "$elapsed" -ge 60 ]; then
    first=$rss
    echo "RSS after the first minute ($elapsed s): $first kB"
  fi
done
load_status=0
wait "$load" || load_status=$?
last=$(rss_kb)
echo "RSS at the end ($((SECONDS - started)) s): $last kB"
cat "$work/load.txt"

plain() { sed 's/\x1b\[[0-9;]*m//g' "$work/geobridge.log"; }
errors=$(plain | grep -c -w ERROR || true)
warnings=$(plain | grep -c -w WARN || true)
growth=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.1f", (b - a) * 100 / a }')
echo "RSS change: $growth% (limit ±10%); ERROR lines: $errors; WARN lines: $warnings"
verdict=PASS
awk -v g="$growth" 'BEGIN { exit !(g <= 10 && g >= -10) }' || verdict=FAIL
[ "$errors" = 0 ] || { plain | grep -w ERROR | head -n 20; verdict=FAIL; }
[ "$load_status" = 0 ] || verdict=FAIL
echo "soak: $verdict (RSS samples in $work/rss.csv, log in $work/geobridge.log)"
[ "$verdict" = PASS ]
