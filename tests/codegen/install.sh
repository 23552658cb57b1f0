#!/usr/bin/env bash
# Install the TypeScript compiler and the centrifuge SDK's types for tests/codegen, at the exact
# versions of package-lock.json, under .cache/codegen (downloaded code stays out of the tree).
# Idempotent: scripts/npm_ci.sh skips `npm ci` while the lock file is unchanged.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DEST="$ROOT/.cache/codegen"

mkdir -p "$DEST"
for file in package.json package-lock.json; do
    cmp -s "$HERE/$file" "$DEST/$file" || cp "$HERE/$file" "$DEST/$file"
done
bash "$ROOT/scripts/npm_ci.sh" "$DEST"
