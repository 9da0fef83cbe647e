#!/usr/bin/env bash
# RS256 signing with a 4096-bit key: geobridge's issuing path (claims, JSON, signature) next
# to `openssl speed rsa4096`, both on one core of this machine. Prints both rates and the
# ratio; the target is at least 0.90. Each side runs ROUNDS times (default 2), alternating,
# and its best round counts, so a busy neighbour on a shared machine weighs less.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SECONDS_PER_RUN:-10}
rounds=${ROUNDS:-2}
pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)

cargo bench --bench sign --no-run -q 2>/dev/null || cargo bench --bench sign --no-run
best_ours=0
best_openssl=0
for _ in $(seq "$rounds"); do
  ours=$(GEOBRIDGE_BENCH_SECONDS=$seconds "${pin[@]}" cargo bench -q --bench sign 2>/dev/null \
    | awk '/^issued_per_second/ {print $2}')
  theirs=$("${pin[@]}" openssl speed -seconds "$seconds" rsa4096 2>/dev/null \
    | awk '/^rsa 4096 bits/ {print $6}')
  best_ours=$(awk -v a="$best_ours" -v b="$ours" 'BEGIN {print (b > a) ? b : a}')
  best_openssl=$(awk -v a="$best_openssl" -v b="$theirs" 'BEGIN {print (b > a) ? b : a}')
  echo "round: geobridge ${ours}/s, openssl ${theirs}/s"
done
echo "geobridge RS256-4096 tokens issued per second: $best_ours"
echo "openssl speed rsa4096 signatures per second:   $best_openssl"
awk -v a="$best_ours" -v b="$best_openssl" \
  'BEGIN {printf "ratio geobridge/openssl: %.2f (target >= 0.90)\n", a / b}'
