"""The transports' fan-out benchmark (bench/stream_fanout.py) still measures: a few subscribers of
each transport, JSON and Protobuf, against its own ``livehub serve``; the script fails a run whose
delivery count is not exactly subscribers x messages, so a zero exit is that check passed."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.servers import ROOT, free_port

SCRIPT = ROOT / "bench" / "stream_fanout.py"


def test_every_transport_counts_its_deliveries_and_bytes() -> None:
    transports = ["websocket", "websocket_protobuf", "sse"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--subs", "5", "--messages", "20", "--reps", "1"]
        + ["--port", str(free_port()), "--transports", ",".join(transports)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(r["median"]) == transports
    assert all(m["deliveries_per_s"] > 0 for m in r["median"].values())
    per = {t: m["bytes_per_delivery"] for t, m in r["median"].items()}
    # the same publication: Protobuf's push is smaller than JSON's, SSE's event framing larger
    assert 0 < per["websocket_protobuf"] < per["websocket"] < per["sse"]
    assert set(r) >= {"websocket_protobuf_over_websocket_deliveries", "sse_over_websocket_deliveries"}


def test_unknown_transport_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--transports", "websocket,carrier_pigeon"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert done.returncode == 2 and "--transports" in done.stderr
