#!/usr/bin/env bash
# Provision the browser the demo tests drive: Debian's Chromium at /usr/bin/chromium.
#
# The tests use the Python `playwright` package (the `test` extra) with this system
# Chromium (`executable_path="/usr/bin/chromium"`); `playwright install` is never run, as it
# downloads a browser build of its own. Idempotent: nothing happens when Chromium is there.
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

log() { printf 'provision_browser: %s\n' "$*"; }
die() { printf 'provision_browser: error: %s\n' "$*" >&2; exit 1; }

if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "$CHROMIUM missing: installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null \
        || die "apt-get install chromium failed"
fi
[ -x "$CHROMIUM" ] || die "no Chromium at $CHROMIUM; the browser tests need it (Debian: apt-get install -y chromium)"
log "ready: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
