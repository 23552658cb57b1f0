"""tests/conftest.py's marking: what it finds in code, and what it found in this run's tests.

``make unit`` trusts these marks to leave out every test that needs a service or starts a
process; ``--isolated`` checks the same at run time.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.conftest import DOWNLOADS, needs, reach
from tests.servers import serve

PEER_FILE = DOWNLOADS[0] / "config.json"


def _starts_a_process() -> None:
    subprocess.run(["true"], check=True)


def _through_a_helper() -> None:
    _starts_a_process()


async def _through_asyncio() -> None:
    import asyncio

    await asyncio.create_subprocess_exec("true")


def _calls_serve() -> None:
    with serve(None):
        pass


def _a_method_named_serve(server: Any) -> None:
    server.serve()  # an attribute, not tests.servers.serve


def _in_a_lambda() -> Any:
    return lambda: _starts_a_process()


def _reads_peer_files() -> str:
    return PEER_FILE.read_text()


class _Harness:
    def start(self) -> None:
        _starts_a_process()


def _uses_a_harness() -> None:
    _Harness().start()


def _nothing() -> int:
    return len([1, 2])


@pytest.mark.parametrize(
    ("function", "marks"),
    [
        (_starts_a_process, {"subprocess"}),
        (_through_a_helper, {"subprocess"}),
        (_through_asyncio, {"subprocess"}),
        (_calls_serve, {"subprocess"}),
        (_a_method_named_serve, set()),
        (_in_a_lambda, {"subprocess"}),
        (_reads_peer_files, {"peers"}),
        (_uses_a_harness, {"subprocess"}),
        (_nothing, set()),
    ],
)
def test_reach_follows_the_tests_code(function: Any, marks: set[str]) -> None:
    assert reach(function) == marks


def test_this_run_is_marked(request: pytest.FixtureRequest) -> None:
    """Whatever this run collected keeps the rules: the engine contract is marked by its
    engine, service suites by their library, and a test marked nothing needs nothing."""
    for item in request.session.items:
        marks = {m.name for m in item.iter_markers()}
        assert needs(item) <= marks
        engine = getattr(getattr(item, "callspec", None), "params", {}).get("engine")
        if engine is not None:
            assert ("redis" in marks) == engine.startswith("redis"), item.nodeid
            assert ("nats" in marks) == (engine == "nats"), item.nodeid
    mine = {m.name for m in request.node.iter_markers()}
    assert not mine & {"redis", "nats", "postgres", "subprocess", "peers"}
