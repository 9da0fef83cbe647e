#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and reports executions, coverage and crashes.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, every target)
#
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz, which it
# installs from crates.io when missing. The targets are built without a sanitizer (the code
# under test is safe Rust) but with debug assertions, so overflows panic. A crash leaves its
# input in fuzz/artifacts/TARGET/ and the log in fuzz/logs/TARGET.log; turn it into a
# regression test in the normal test suite. Exit status 1 when any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=(forwarded_headers request_bodies stats_json select_query config_toml pem_key http_router)
if [ $# -gt 0 ]; then targets=("$@"); fi
flags=(--sanitizer none --debug-assertions)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz build "${flags[@]}"

dict_for() {
  case $1 in
    forwarded_headers) echo fuzz/dicts/forwarded.dict ;;
    config_toml) echo fuzz/dicts/toml.dict ;;
    pem_key) echo fuzz/dicts/pem.dict ;;
    *) echo fuzz/dicts/json.dict ;;
  esac
}

# RSA keys to start pem_key from, made fresh rather than kept in the repository.
seed_keys() {
  local dir=fuzz/corpus/pem_key
  mkdir -p "$dir"
  command -v openssl >/dev/null || return 0
  [ -f "$dir/pkcs8.pem" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
    -out "$dir/pkcs8.pem" 2>/dev/null
  [ -f "$dir/pkcs1.pem" ] || openssl genrsa -traditional -out "$dir/pkcs1.pem" 2048 2>/dev/null
}
seed_keys

mkdir -p fuzz/logs
summary=()
crashed=0
for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  seeds=()
  [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
  log=fuzz/logs/$target.log
  echo "== $target: $seconds s"
  status=0
  # libFuzzer stops itself after max_total_time; the outer timeout is a backstop.
  timeout --kill-after=10 $((seconds + 300)) \
    cargo +nightly fuzz run "${flags[@]}" "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -dict="$(dict_for "$target")" >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
  corp=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
  if [ "$status" = 0 ]; then
    result=ok
  else
    crashed=1
    artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n 1 | cut -d' ' -f5 || true)
    result="CRASH (status $status) ${artifact:-see $log}"
  fi
  summary+=("$(printf '%-18s %12s %9s %7s %7s %7s  %s' "$target" "${runs:-?}" \
    "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")")
done

echo
printf '%-18s %12s %9s %7s %7s %7s  %s\n' target execs exec/s cov ft corpus result
printf '%s\n' "${summary[@]}"
exit "$crashed"
