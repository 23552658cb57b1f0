#!/usr/bin/env bash
# npm_ci.sh DIR — make sure Node.js >= 18 and npm are here (Debian's packages are installed when
# missing and this runs as root), then `npm ci` in DIR unless its package-lock.json is unchanged
# since the last install. Shared by frontend/build.sh and scripts/provision_peers.sh.
set -euo pipefail

DIR="${1:?usage: npm_ci.sh DIR}"
die() { printf 'npm_ci: error: %s\n' "$*" >&2; exit 1; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        printf "npm_ci: node/npm missing: installing Debian's nodejs and npm\n"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null && apt-get install -y -q nodejs npm >/dev/null \
            || die "apt-get install nodejs npm failed"
    fi
fi
command -v node >/dev/null 2>&1 \
    || die "node is not installed; Node.js >= 18 with npm is needed (Debian: apt-get install -y nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm is not installed (Debian: apt-get install -y npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 18 ] || die "node $(node --version) is too old: Node.js >= 18 is needed"

STAMP="$DIR/node_modules/.livehub-lock"
if [ ! -f "$STAMP" ] || ! cmp -s "$DIR/package-lock.json" "$STAMP"; then
    printf 'npm_ci: npm ci in %s\n' "$DIR"
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$DIR/package-lock.json" "$STAMP"
fi
