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

bash "$HERE/../scripts/npm_ci.sh" "$HERE"
npm run --silent build
log "built livehub/demos/static/vendor/centrifuge.js"
