"""centrifuge-python's own suite against a livehub configured *only* by the environment block
of that SDK's docker-compose.yml (which configures Centrifugo v6 with CENTRIFUGO_* variables:
no config file, no livehub names).

The block is read at run time from the SDK's PyPI sdist (``make peers`` puts it in
``.cache/peers``), so what is tested is what the SDK's authors wrote, not a copy.
The whole suite runs (every class, as test_centrifuge_python.py runs it with
tests/peers/config.json): the environment alone must be enough for all of it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.peers.conftest import (
    CACHE,
    HOST,
    PORT,
    STARTUP_TIMEOUT,
    Server,
    _http_answers,
    _loopbacks,
    _port_answers,
    run_suite,
    tail,
)
from tests.peers.test_centrifuge_python import EXPECTED_TESTS
from tests.servers import ROOT, stop

SDIST = CACHE / "centrifuge-python-0.7.0"
PYTHON = CACHE / "centrifuge-python-venv" / "bin" / "python"


def compose_environment() -> dict[str, str]:
    compose = yaml.safe_load((SDIST / "docker-compose.yml").read_text())
    entries = compose["services"]["centrifugo"]["environment"]
    if isinstance(entries, dict):
        return {str(k): str(v) for k, v in entries.items()}
    return dict(str(entry).split("=", 1) for entry in entries)


@pytest.fixture(scope="module")
def compose_server(provisioned: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    addresses = _loopbacks()
    if any(_port_answers(f, a, PORT) for f, a in addresses):
        pytest.fail(f"port {PORT} is in use: the SDK's suite needs localhost:{PORT}", pytrace=False)
    environment = compose_environment()
    assert environment["CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEHUB_", "CENTRIFUGO_"))}
    env.update(environment, PYTHONUNBUFFERED="1")
    log = tmp_path_factory.mktemp("compose") / "server.log"
    cmd = [sys.executable, "-m", "livehub", "serve", "--host", HOST, "--port", str(PORT)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://{HOST}:{PORT}", f"ws://{HOST}:{PORT}/connection/websocket", log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not all(_http_answers(a, PORT) for _, a in addresses):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"livehub serve did not start:\n{server.log_tail()}", pytrace=False)
            time.sleep(0.1)
        yield server
    finally:
        stop(proc)


def test_sdk_suite_against_the_compose_environment_only(compose_server: Server) -> None:
    log = compose_server.log.read_text()
    assert "not a setting livehub reads" not in log, log  # every variable of the block is honoured
    command = [str(PYTHON), "-m", "unittest", "tests.test_client", "-v"]
    proc = run_suite(command, SDIST, 300, compose_server)
    ran = re.search(r"^Ran (\d+) tests? in ", proc.stdout, re.MULTILINE)
    verdict = re.search(r"^(OK|FAILED)\b.*$", proc.stdout, re.MULTILINE)
    problems = proc.stdout[proc.stdout.find("\n=====") :] if "\n=====" in proc.stdout else proc.stdout
    assert proc.returncode == 0 and verdict and verdict.group(0) == "OK", (
        f"{ran.group(0) if ran else 'no Ran line'}:\n{tail(problems, 120)}\n\n"
        f"server log tail:\n{compose_server.log_tail()}"
    )
    assert ran and int(ran.group(1)) == EXPECTED_TESTS, ran.group(0) if ran else "no Ran line"
