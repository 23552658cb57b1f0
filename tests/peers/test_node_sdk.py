"""The official JavaScript SDK (npm ``centrifuge@5.8.0`` over ``ws``) against livehub.

The tests are tests/peers/node/sdk.test.mjs (the JSON build), sdk.protobuf.test.mjs
(the Protobuf build, alone and next to JSON clients) and sdk.map.test.mjs (map subscriptions),
run with Node's own test runner.
"""

from __future__ import annotations

import re

import pytest

from tests.peers.conftest import PEERS, ROOT, Server, run_suite, tail

TIMEOUT = 180


@pytest.mark.parametrize("test_file", ["sdk.test.mjs", "sdk.protobuf.test.mjs", "sdk.map.test.mjs"])
def test_centrifuge_js_sdk(provisioned: None, node_bin: str, livehub_server: Server, test_file: str) -> None:
    test_path = PEERS / "node" / test_file
    assert (PEERS / "node" / "node_modules" / "centrifuge").is_dir(), "run bash scripts/provision_peers.sh"
    command = [node_bin, "--test", "--test-reporter=tap", str(test_path.relative_to(ROOT))]
    proc = run_suite(command, ROOT, TIMEOUT, livehub_server)
    out = proc.stdout
    counts = {
        k: int(v) for k, v in re.findall(r"^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$", out, re.M)
    }
    assert proc.returncode == 0 and counts.get("fail") == 0 and counts.get("cancelled") == 0, (
        f"node --test {test_path.name} failed (exit {proc.returncode}, {counts}):\n{tail(out, 200)}\n\n"
        f"server log tail:\n{livehub_server.log_tail()}"
    )
    assert counts.get("pass", 0) > 0 and counts["pass"] == counts.get("tests"), counts
    assert counts.get("skipped") == 0 and counts.get("todo") == 0, f"no test may be skipped: {counts}"
