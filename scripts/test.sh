#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what the tests use, starts a throwaway
# PostgreSQL server on 127.0.0.1 for the store tests, runs the tests, and stops the server.
#   openssl (command line)  verifies RS256 and HS256 tokens, makes test keys
#   prosody (Debian)        runs deploy/prosody/mod_geobridge_region.lua in a real Prosody
#   PyJWT + cryptography    verify tokens against the JWKS document (tests/jwt/verify.py)
#   postgresql              the store tests' second backend
# Each is installed only when missing, so a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYJWT_VERSION=2.15.1

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v prosody >/dev/null || need_apt+=(prosody)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# prometheus and promtool check the metrics, the alert rules and the dashboard queries.
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  (
    # Installing must not start Prosody's or PostgreSQL's daemons: the tests start their own,
    # on 127.0.0.1 only.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod +x "$policy"
      trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  )
fi

have_pyjwt() {
  python3 -c "import sys, jwt, cryptography; sys.exit(jwt.__version__ != '$PYJWT_VERSION')" \
    2>/dev/null
}
if ! have_pyjwt; then
  spec="pyjwt[crypto]==$PYJWT_VERSION"
  python3 -m pip install -q --disable-pip-version-check "$spec" 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages "$spec"
  have_pyjwt
fi

if [ -z "${GEOBRIDGE_TEST_POSTGRES:-}" ]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  pg_port=${GEOBRIDGE_TEST_POSTGRES_PORT:-55432}
  pg_dir=$(mktemp -d /tmp/geobridge-pg.XXXXXX)
  as_pg=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$pg_dir"
    as_pg=(runuser -u postgres --)
  fi
  "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres >/dev/null
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
  stop_pg() { "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null || true; rm -rf "$pg_dir"; }
  trap stop_pg EXIT
  export GEOBRIDGE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port/postgres"
fi

cargo test --workspace --all-targets
