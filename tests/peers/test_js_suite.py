"""The centrifuge-js repository's own test suite (jest, src/*.test.ts) against ``livehub serve``.

scripts/js_suite.py runs it as the SDK's CI does (its centrifugo_test.json, localhost:8000) and
fails when a test that tests/peers/js_suite_expected.json lists as passing did not pass; add the
tests a change makes pass to that list (``make js-suite JS_SUITE_ARGS=--update-expected``).

The suite needs the SDK's git repository, which this machine cannot clone (README, "Tests"). Without
it the test is skipped with that reason (``-ra`` prints it in the summary), or fails when
LIVEHUB_REQUIRE_JS_SUITE=1. Run it under the heavy-tests lock: it takes port 8000 and ~10 minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.peers.conftest import ROOT, tail

SCRIPT = ROOT / "scripts" / "js_suite.py"
EXPECTED = ROOT / "tests" / "peers" / "js_suite_expected.json"
RESULTS = ROOT / ".cache" / "centrifuge-js" / "results.json"
NO_SOURCE = 3  # js_suite.py's exit status when the SDK's repository is not here
TIMEOUT = 1800


def test_centrifuge_js_repository_suite() -> None:
    command = [sys.executable, str(SCRIPT), "--expected", str(EXPECTED)]
    try:
        proc = subprocess.run(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output or ""
        pytest.fail(f"scripts/js_suite.py did not finish within {TIMEOUT} s:\n{tail(out)}", pytrace=False)
    if proc.returncode == NO_SOURCE:
        reason = "centrifuge-js repository suite not run: " + proc.stdout.strip().removeprefix(
            "js_suite: error: "
        )
        if os.environ.get("LIVEHUB_REQUIRE_JS_SUITE") == "1":
            pytest.fail(reason + "\n(LIVEHUB_REQUIRE_JS_SUITE=1: required)", pytrace=False)
        pytest.skip(reason)
    print(proc.stdout)  # the table, shown with -s or on failure
    assert proc.returncode in (0, 1), f"scripts/js_suite.py could not run the suite:\n{tail(proc.stdout)}"
    report = json.loads(RESULTS.read_text())
    failures = {
        f"{file} :: {test['name']}": test.get("message", "")
        for file, result in report["files"].items()
        for test in result["tests"]
        if test["status"] == "failed"
    }
    regressions = [
        f"{line}\n    {failures.get(line.rsplit(' (', 1)[0], '').replace(chr(10), chr(10) + '    ')}"
        for line in report["regressions"]
    ]
    assert not regressions, (
        f"{len(regressions)} test(s) of centrifuge-js {report['commit'][:12]} listed as passing in "
        f"{EXPECTED.relative_to(ROOT)} did not pass (server log: .cache/centrifuge-js/server.log):\n"
        + "\n".join(regressions)
        + "\n\n"
        + tail(proc.stdout, 30)
    )
