#!/usr/bin/env bash
# geobridge's GET /v1/regions/select against nginx + GeoIP2 mapping country (then continent)
# to the same example regions, on the same database, under the same wrk load: a random
# public IPv4 address per request. Each server is pinned to core 0, wrk to core 1.
# Runs A B C A B C A B C (10 s each by default) and prints requests/s, p50/p99 latency,
# CPU per request (user and kernel, from /proc), how busy wrk kept its own core, the ratios
# (of the medians, and of each round's pair, which share the machine's drift), geobridge's
# resident memory after the load and its time from start to /readyz = 200.
# A third server, a control, is run in each round too: the same nginx worker doing the
# same lookup and map but answering with a body as long as geobridge's (geobridge's own
# answer for one address, its region replaced by nginx's). It shows what the size of the
# answer alone costs the client and the kernel on this machine.
# Usage: bench/compare.sh [seconds per run] [rounds] [connections]
set -euo pipefail
# A failure inside a run's command substitution stops the script too.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
seconds=${1:-10}; rounds=${2:-3}; connections=${3:-64}
for n in "$seconds" "$rounds" "$connections"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [seconds] [rounds] [connections]," \
    "each a whole number of at least 1; got '$n'" >&2; exit 2; }
done
gb_port=18081; nginx_port=18082; sized_port=18083
# Something already answering on a port would be measured instead of the server started.
for port in "$gb_port" "$nginx_port" "$sized_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "compare.sh: port $port on 127.0.0.1 is in use; stop what listens there" >&2
    exit 1
  fi
done

need=()
command -v nginx >/dev/null || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_http_geoip2_module.so ] || need+=(libnginx-mod-http-geoip2)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q
# Write the build's output to disk now: otherwise the first fsync of geobridge's state
# database waits for it, and start-up would measure the compiler's writes.
sync
binary=${CARGO_TARGET_DIR:-target}/release/geobridge

work=$(mktemp -d /tmp/geobridge-bench.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

db=$(pwd)/data/geobridge-city.mmdb
python3 bench/nginx_map.py data/geobridge.example.toml data/country-centroids.csv > "$work/map.conf"
cat > "$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_http_geoip2_module.so;
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    geoip2 "$db" {
        \$geo_country source=\$arg_ip country iso_code;
        \$geo_continent source=\$arg_ip continent code;
    }
    include $work/map.conf;
    include $work/servers.conf;
}
CONF
# Appends to servers.conf a server on `port` answering the selection route with `body`,
# in which nginx fills in \$region.
serve_body() { # port body
  cat >> "$work/servers.conf" <<CONF
server {
    listen 127.0.0.1:$1;
    location = /v1/regions/select {
        default_type application/json;
        return 200 '$2';
    }
}
CONF
}
serve_body "$nginx_port" '{"region":"$region"}'

# geobridge: example regions, no bridges, quiet logs, signing tokens as by default (RS256)
# with a key made beforehand, as at every start but the very first (which makes one, about
# a second for 4,096 bits). Selections sign nothing; the key only counts for start-up.
"$binary" keygen --out "$work/jitsi-rsa.pem" >/dev/null
start_ns=$(date +%s%N)
GEOBRIDGE_LISTEN=127.0.0.1:$gb_port GEOBRIDGE_STATE_DIR="$work/state" \
  JITSI_RSA_JWT_KEY_FILE="$work/jitsi-rsa.pem" GEOBRIDGE_GEO_DATABASE="$db" RUST_LOG=warn \
  taskset -c 0 "$binary" serve 2>"$work/geobridge.log" &
gb_pid=$!; pids+=("$gb_pid")
# Waits for `url` while process `pid` lives, at most 60 s; on failure shows `log`.
wait_for() { # url pid log
  local deadline=$(( $(date +%s) + 60 ))
  until curl -sf "$1" >/dev/null 2>&1; do
    if ! kill -0 "$2" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
      echo "compare.sh: $1 never answered; log:" >&2; cat "$3" >&2; exit 1
    fi
    sleep 0.005
  done
}
wait_for "http://127.0.0.1:$gb_port/readyz" "$gb_pid" "$work/geobridge.log"
ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))

# The control's body: geobridge's answer for one address, its region left to nginx's map.
body=$(curl -sf "http://127.0.0.1:$gb_port/v1/regions/select?ip=81.2.69.142")
case $body in
  *[\'\\\$]*) echo "compare.sh: the answer has text nginx would misread" >&2; exit 1 ;;
esac
sized_body=$(printf '%s' "$body" | sed 's/"region":"eu-west"/"region":"$region"/')
[[ $sized_body == *'$region'* ]] || {
  echo "compare.sh: 81.2.69.142 is no longer chosen eu-west; update the control" >&2; exit 1; }
serve_body "$sized_port" "$sized_body"
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" &
pids+=("$!")
wait_for "http://127.0.0.1:$nginx_port/v1/regions/select?ip=8.8.8.8" "$!" "$work/nginx-error.log"
nginx_worker=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)

echo "nginx answer:     $(curl -s "http://127.0.0.1:$nginx_port/v1/regions/select?ip=81.2.69.142")"
echo "geobridge region: $(printf '%s' "$body" | grep -o '"region":"[a-z0-9-]*"' | head -1)"
control=$(curl -s "http://127.0.0.1:$sized_port/v1/regions/select?ip=8.8.8.8")
own=$(curl -s "http://127.0.0.1:$gb_port/v1/regions/select?ip=8.8.8.8")
echo "answer size for 8.8.8.8: geobridge ${#own} bytes, control ${#control} bytes" \
  "($(printf '%s' "$control" | head -c 24)...)"

cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; } # user and system clock ticks
run() { # name port pid
  local before after line
  before=$(cpu_ticks "$3")
  # wrk runs under python so that its own CPU time (getrusage) is known too.
  line=$(python3 -c "
import resource, subprocess, sys
out = subprocess.run(sys.argv[1:], capture_output=True, text=True, check=True).stdout
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(next(l for l in out.splitlines() if l.startswith('RESULT')),
      f'client_cpu_ms={(used.ru_utime + used.ru_stime) * 1000:.0f}')
" taskset -c 1 wrk -t1 -c"$connections" -d"${seconds}s" -s bench/random_ip.lua \
    "http://127.0.0.1:$2" | sed "s/^RESULT/$1/")
  after=$(cpu_ticks "$3")
  # CPU nanoseconds per request, user and kernel, over the whole run; the share of its
  # core that wrk used (near 100 %: the client, not the server, set the pace).
  echo "$line $(python3 -c "
import sys
(u0, s0), (u1, s1) = [map(int, x.split()) for x in sys.argv[1:3]]
line, seconds = sys.argv[3], int(sys.argv[4])
n = int(line.split('rps=')[1].split()[0]) * seconds
tick = 1e9 / int(sys.argv[5])
client = int(line.split('client_cpu_ms=')[1].split()[0]) / 10 / seconds
print(f'user_ns={(u1 - u0) * tick / n:.0f} kernel_ns={(s1 - s0) * tick / n:.0f}',
      f'server_busy_pct={((u1 - u0) + (s1 - s0)) * tick / 1e7 / seconds:.0f}',
      f'client_busy_pct={client:.0f}')
" "$before" "$after" "$line" "$seconds" "$(getconf CLK_TCK)")"
}
# Warm each up before measuring.
for port in "$gb_port" "$nginx_port" "$sized_port"; do
  taskset -c 1 wrk -t1 -c"$connections" -d2s -s bench/random_ip.lua "http://127.0.0.1:$port" \
    >/dev/null
done
results=()
for round in $(seq "$rounds"); do
  results+=("$(run geobridge $gb_port "$gb_pid")")
  results+=("$(run nginx $nginx_port "$nginx_worker")")
  results+=("$(run nginx-sized $sized_port "$nginx_worker")")
done
printf '%s\n' "${results[@]}"
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$gb_pid/status")

printf '%s\n' "${results[@]}" | python3 bench/summarize.py
echo "geobridge resident memory after load: $((rss_kb / 1024)) MiB (target < 64 MiB)"
echo "geobridge start to /readyz 200: ${ready_ms} ms (target < 300 ms)"
