"""centrifuge-python 0.7.0's own real-server suite (``tests/test_client.py`` of its PyPI sdist).

Run unchanged: every test class loops ``for use_protobuf in (False, True)``, so each runs
over JSON and over Protobuf (the ``centrifuge-protobuf`` subprotocol). It runs with the SDK's
own venv (websockets, protobuf) from the sdist root, so the sdist's ``centrifuge`` package
is the one under test.
"""

from __future__ import annotations

import re

from tests.peers.conftest import CACHE, Server, run_suite, tail

SDIST = CACHE / "centrifuge-python-0.7.0"
PYTHON = CACHE / "centrifuge-python-venv" / "bin" / "python"
# tests/test_client.py of the 0.7.0 sdist has 62 test methods; fewer means the suite was cut.
EXPECTED_TESTS = 62
TIMEOUT = 300


def test_centrifuge_python_real_server_suite(provisioned: None, livehub_server: Server) -> None:
    assert (SDIST / "tests" / "test_client.py").is_file(), f"{SDIST} is not provisioned"
    assert PYTHON.is_file(), f"{PYTHON} is missing: run bash scripts/provision_peers.sh"
    suite = (SDIST / "tests" / "test_client.py").read_text()
    assert "for use_protobuf in (False, True)" in suite, "the protobuf subtests are switched off"
    command = [str(PYTHON), "-m", "unittest", "tests.test_client", "-v"]
    proc = run_suite(command, SDIST, TIMEOUT, livehub_server)
    out = proc.stdout
    ran = re.search(r"^Ran (\d+) tests? in ", out, re.MULTILINE)
    verdict = re.search(r"^(OK|FAILED)\b.*$", out, re.MULTILINE)
    summary = f"{ran.group(0) if ran else 'no Ran line'} / {verdict.group(0) if verdict else 'no verdict'}"
    # The problems are listed after the per-test lines: show that part, not the tail of the logging.
    problems = out[out.find("\n=====") :] if "\n=====" in out else out
    assert proc.returncode == 0 and verdict and verdict.group(0) == "OK", (
        f"centrifuge-python tests/test_client.py failed (exit {proc.returncode}, {summary}):\n"
        f"{tail(problems, 150)}\n\nserver log tail:\n{livehub_server.log_tail()}"
    )
    assert ran and int(ran.group(1)) == EXPECTED_TESTS, f"expected {EXPECTED_TESTS} tests to run: {summary}"
