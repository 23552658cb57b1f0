#!/usr/bin/env bash
# js_shared_poll.sh CJS_DIR — run the centrifuge-js repository's shared poll tests
# (src/shared_poll.test.ts and src/shared_poll.protobuf.test.ts) against `livehub serve` with
# that repository's centrifugo_test.json, and print jest's summary.
#
# The tests start their own poll backend (ports 3010 and 3011, every interface); the config names
# it host.docker.internal (that CI runs Centrifugo in Docker): here it is 127.0.0.1. Options of
# the config this run does not exercise and livehub may refuse (the http_stream and sse
# transports, client.concurrency) are left out.
# Fixed ports (8000, 3010, 3011): run it under `flock /tmp/livehub-heavy.lock`.
set -euo pipefail

CJS="$(cd "${1:?usage: js_shared_poll.sh CENTRIFUGE_JS_DIR}" && pwd)"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [ ! -d "$CJS/node_modules/ts-jest" ]; then  # the repository has a yarn.lock, no package-lock
    (cd "$CJS" && npm install --ignore-scripts --no-audit --no-fund --legacy-peer-deps --loglevel=error)
fi

"$ROOT/.venv/bin/python" - "$CJS/centrifugo_test.json" "$WORK/config.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
for key in ("http_stream", "sse"):
    config.pop(key, None)
config["client"].pop("concurrency", None)
for proxy in config.get("proxies", []):
    proxy["endpoint"] = proxy["endpoint"].replace("host.docker.internal", "127.0.0.1")
json.dump(config, open(sys.argv[2], "w"))
PY

"$ROOT/.venv/bin/python" -m livehub serve --host 127.0.0.1 --port 8000 --config "$WORK/config.json" \
    --log-level warning > "$WORK/serve.log" 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 150); do
    (echo > /dev/tcp/127.0.0.1/8000) 2>/dev/null && break
    kill -0 $SERVE 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
    sleep 0.1
done

cd "$CJS"
status=0
timeout 900 npx jest --forceExit src/shared_poll.test.ts src/shared_poll.protobuf.test.ts > "$WORK/jest.log" 2>&1 \
    || status=$?
grep -E "✕|Tests:" "$WORK/jest.log" || tail -40 "$WORK/jest.log"
exit $status
