#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what the tests use, then runs them.
#   openssl (command line)  verifies RS256 and HS256 tokens, makes test keys
#   prosody (Debian)        runs deploy/prosody/mod_geobridge_region.lua in a real Prosody
#   PyJWT + cryptography    verify tokens against the JWKS document (tests/jwt/verify.py)
# Each is installed only when missing, so a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYJWT_VERSION=2.15.1

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v prosody >/dev/null || need_apt+=(prosody)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  # Installing Prosody must not start its daemon: tests run their own on 127.0.0.1 only.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
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

cargo test --workspace --all-targets
