#!/usr/bin/env bash
# Provision the official SDKs that tests/peers runs against livehub.
#
#  * centrifuge-python 0.7.0: its PyPI sdist (the only package that ships its tests),
#    unpacked under .cache/peers/ with a venv of its own, run unchanged (JSON and Protobuf
#    subtests). Downloaded code stays in .cache/, never committed.
#  * centrifuge-js: `npm ci` in tests/peers/node (centrifuge@5.8.0 + ws, from package-lock.json).
#
# Idempotent: every step is skipped when its result is already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CACHE="$ROOT/.cache/peers"
PY_SERVER="${PY_SERVER:-$ROOT/.venv/bin/python}"
CP_VERSION="0.7.0"
CP_SRC="$CACHE/centrifuge-python-$CP_VERSION"
CP_VENV="$CACHE/centrifuge-python-venv"
CP_REQS=("websockets>=15,<18" "protobuf>=5.29.6,<8")
NODE_DIR="$ROOT/tests/peers/node"

log() { printf 'provision_peers: %s\n' "$*"; }
die() { printf 'provision_peers: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE"
[ -x "$PY_SERVER" ] || PY_SERVER="$(command -v python3 || true)"
[ -n "$PY_SERVER" ] || die "no python found (run 'make install' first)"

# --- centrifuge-python sdist ------------------------------------------------------------------
if [ ! -f "$CP_SRC/tests/test_client.py" ]; then
    log "downloading the centrifuge-python==$CP_VERSION sdist"
    dl="$(mktemp -d "$CACHE/dl.XXXXXX")"
    trap 'rm -rf "$dl"' EXIT
    "$PY_SERVER" -m pip download -q --no-deps --no-binary :all: -d "$dl" "centrifuge-python==$CP_VERSION"
    archive="$(ls "$dl"/centrifuge_python-"$CP_VERSION".tar.gz "$dl"/centrifuge-python-"$CP_VERSION".tar.gz 2>/dev/null | head -n1 || true)"
    [ -n "$archive" ] || die "pip download produced no centrifuge-python $CP_VERSION sdist in $dl"
    tar -xzf "$archive" -C "$dl"
    unpacked="$(find "$dl" -mindepth 1 -maxdepth 1 -type d | head -n1)"
    [ -f "$unpacked/tests/test_client.py" ] || die "the sdist has no tests/test_client.py"
    rm -rf "$CP_SRC"
    mv "$unpacked" "$CP_SRC"
    rm -rf "$dl"
    trap - EXIT
fi

# livehub speaks both encodings: the suite runs unchanged. Copies provisioned when livehub
# was JSON-only had their protobuf subtests switched off at run time: switch them back on.
if grep -q 'for use_protobuf in (False,)' "$CP_SRC/tests/test_client.py"; then
    log "restoring $CP_SRC/tests/test_client.py: protobuf subtests on"
    sed -i 's/for use_protobuf in (False,)/for use_protobuf in (False, True)/' "$CP_SRC/tests/test_client.py"
fi

CP_STAMP="$CP_VENV/.livehub-installed"
CP_WANT="${CP_REQS[*]}"
if [ ! -x "$CP_VENV/bin/python" ] || [ "$(cat "$CP_STAMP" 2>/dev/null)" != "$CP_WANT" ]; then
    log "creating the centrifuge-python test venv in $CP_VENV"
    rm -rf "$CP_VENV"
    "$PY_SERVER" -m venv "$CP_VENV"
    "$CP_VENV/bin/python" -m pip install -q --disable-pip-version-check "${CP_REQS[@]}"
    printf '%s' "$CP_WANT" >"$CP_STAMP"
fi

# --- centrifuge-js (npm) ----------------------------------------------------------------------
bash "$ROOT/scripts/npm_ci.sh" "$NODE_DIR"

log "ready (centrifuge-python $CP_VERSION in $CP_SRC, centrifuge-js in tests/peers/node/node_modules)"
