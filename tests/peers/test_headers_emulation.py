"""Headers emulation with the official JavaScript SDK: its ``headers`` option against an app
(``livehub run tests.peers.headers_app:app``) whose ``on_connect`` depends on a header.
The test is tests/peers/node/headers.test.mjs, run with Node's own test runner."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.peers.conftest import PEERS, ROOT, tail
from tests.servers import free_port, running

TIMEOUT = 120


def test_centrifuge_js_headers_option_reaches_on_connect(provisioned: None, node_bin: str) -> None:
    assert (PEERS / "node" / "node_modules" / "centrifuge").is_dir(), "run bash scripts/provision_peers.sh"
    port = free_port()
    serve = [sys.executable, "-m", "livehub", "run", "tests.peers.headers_app:app", "--port", str(port)]
    with running([*serve, "--log-level", "warning"], port):
        env = {**os.environ, "LIVEHUB_WS_URL": f"ws://127.0.0.1:{port}/connection/websocket"}
        test_file = str((PEERS / "node" / "headers.test.mjs").relative_to(ROOT))
        proc = subprocess.run(
            [node_bin, "--test", "--test-reporter=tap", test_file],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    counts = {k: int(v) for k, v in re.findall(r"^# (tests|pass|fail) (\d+)$", proc.stdout, re.M)}
    assert proc.returncode == 0 and counts.get("fail") == 0, f"{counts}\n{tail(proc.stdout, 80)}"
    assert counts.get("pass") == counts.get("tests") == 3, counts
