#!/usr/bin/env bash
# Build the browser bundle of the official `centrifuge` SDK for the demo pages:
#   npm ci (centrifuge and esbuild, exact versions from package-lock.json) && npm run build
# writes livehub/demos/static/vendor/centrifuge.js (gitignored: built third-party code is
# never committed). Node.js and npm: Debian's packages are installed when missing and this
# runs as root; otherwise the script stops and says what to install.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

log() { printf 'frontend: %s\n' "$*"; }
die() { printf 'frontend: error: %s\n' "$*" >&2; exit 1; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "node/npm missing: installing Debian's nodejs and npm"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null && apt-get install -y -q nodejs npm >/dev/null \
            || die "apt-get install nodejs npm failed"
    fi
fi
command -v node >/dev/null 2>&1 \
    || die "node is not installed; the demo bundle needs Node.js >= 18 with npm (Debian: apt-get install -y nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm is not installed (Debian: apt-get install -y npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 18 ] || die "node $(node --version) is too old: the build needs Node.js >= 18"

STAMP="node_modules/.livehub-lock"
if [ ! -x node_modules/.bin/esbuild ] || ! cmp -s package-lock.json "$STAMP"; then
    log "npm ci"
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json "$STAMP"
fi
npm run --silent build
log "built livehub/demos/static/vendor/centrifuge.js"
