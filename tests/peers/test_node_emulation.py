"""The official JavaScript SDK (npm ``centrifuge@5.8.0``) over HTTP-streaming (JSON, Protobuf) and
SSE with bidirectional emulation, against real ``livehub serve`` processes.

tests/peers/node/sdk.emulation.test.mjs runs twice: against one node (memory engine), and
against two nodes on Redis with the SDK's stream on node A and its emulation requests
(``emulationEndpoint``) and the server API calls sent to node B, as a load balancer without
sticky sessions would spread them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis

from tests.peers.conftest import PEERS, ROOT, tail
from tests.servers import free_port, running

TIMEOUT = 300
PING_INTERVAL = 2.0
REDIS_URL = os.environ.get("LIVEHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = 4


def _config(tmp: Path) -> Path:
    config = json.loads((PEERS / "config.json").read_text())
    config["client"].update(ping_interval=f"{PING_INTERVAL:g}s", pong_timeout="1s")
    config["http_stream"] = {"enabled": True}
    config["sse"] = {"enabled": True}
    path = tmp / "config.json"
    path.write_text(json.dumps(config))
    return path


@contextmanager
def _serve(config: Path, log: Path, engine: str = "") -> Iterator[int]:
    port = free_port()
    cmd = [sys.executable, "-m", "livehub", "serve", "--config", str(config)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    if engine:
        cmd += ["--engine", engine]
    with log.open("wb") as out, running(cmd, port, stdout=out, stderr=subprocess.STDOUT):
        yield port


def _nodes_known(port: int, count: int) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/info", data=b"{}", headers={"X-API-Key": "api_key"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=2) as response:
        return len(json.loads(response.read())["result"]["nodes"]) >= count


def _run(node_bin: str, env: dict[str, str], logs: list[Path]) -> None:
    test_path = PEERS / "node" / "sdk.emulation.test.mjs"
    assert (PEERS / "node" / "node_modules" / "eventsource").is_dir(), "run bash scripts/provision_peers.sh"
    command = [node_bin, "--test", "--test-reporter=tap", str(test_path.relative_to(ROOT))]
    try:
        proc = subprocess.run(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output or ""
        pytest.fail(f"node did not finish within {TIMEOUT} s:\n{tail(out)}", pytrace=False)
    out = proc.stdout
    counts = {
        k: int(v) for k, v in re.findall(r"^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$", out, re.M)
    }
    server_logs = "\n".join(f"--- {log.name}\n{tail(log.read_text(errors='replace'), 40)}" for log in logs)
    assert proc.returncode == 0 and counts.get("fail") == 0 and counts.get("cancelled") == 0, (
        f"node --test failed (exit {proc.returncode}, {counts}):\n{tail(out, 200)}\n\n{server_logs}"
    )
    assert counts.get("pass", 0) > 0 and counts["pass"] == counts.get("tests"), counts
    assert counts.get("skipped") == 0 and counts.get("todo") == 0, f"no test may be skipped: {counts}"


def test_emulation_one_node(provisioned: None, node_bin: str, tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    with _serve(_config(tmp_path), log) as port:
        env = {
            "LIVEHUB_HTTP_URL": f"http://127.0.0.1:{port}",
            "LIVEHUB_PING_INTERVAL_MS": str(int(PING_INTERVAL * 1000)),
        }
        _run(node_bin, env, [log])


def test_emulation_across_nodes_without_sticky_sessions(
    provisioned: None, node_bin: str, tmp_path: Path
) -> None:
    prefix = f"emul-{uuid.uuid4().hex[:8]}"
    engine = f"{REDIS_URL}/{REDIS_DB}?prefix={prefix}&presence_ttl=3s"
    config = _config(tmp_path)
    logs = [tmp_path / "node-a.log", tmp_path / "node-b.log"]
    try:
        with ExitStack() as stack:
            port_a = stack.enter_context(_serve(config, logs[0], engine))
            port_b = stack.enter_context(_serve(config, logs[1], engine))
            deadline = time.monotonic() + 15
            while not (_nodes_known(port_a, 2) and _nodes_known(port_b, 2)):
                assert time.monotonic() < deadline, "the two nodes did not see each other within 15 s"
                time.sleep(0.2)
            env = {
                "LIVEHUB_HTTP_URL": f"http://127.0.0.1:{port_a}",
                "LIVEHUB_EMULATION_URL": f"http://127.0.0.1:{port_b}/emulation",
                "LIVEHUB_API_URL": f"http://127.0.0.1:{port_b}",
                "LIVEHUB_PING_INTERVAL_MS": str(int(PING_INTERVAL * 1000)),
            }
            _run(node_bin, env, logs)
            # the commands really crossed: node B forwarded them, node A held the sessions
            assert "POST /emulation" in logs[1].read_text()
            assert "POST /emulation" not in logs[0].read_text()
    finally:
        client = redis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB}")
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
