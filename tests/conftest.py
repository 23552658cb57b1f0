"""Markers saying what a test needs besides Python, put on every test at collection, so that
``pytest -m "not redis and not subprocess ..."`` (``make unit``) runs the tests that need nothing.

Markers (registered in pyproject.toml; ``--strict-markers`` refuses any other):

* ``redis``, ``nats``, ``postgres``: a running service (``scripts/services.sh``);
* ``browser``, ``peers``, ``cluster``: the suites under tests/<that name>/ (Chromium, the
  official SDKs ``make peers`` downloads, several ``livehub serve`` processes on Redis);
* ``subprocess``: the test starts a process (``livehub serve``, the CLI, uvicorn, node, tsc);
* ``slow``: a property-based test asking Hypothesis for more examples than its default 100.

How a test gets them (rules, in :func:`needs`):

1. its directory: tests/browser, tests/peers, tests/cluster (the cluster also needs Redis);
2. its module imports a service's client library (``redis``, ``nats``, ``asyncpg``, ``psycopg``);
3. a fixture it uses is named after a service (``redis_cluster``, ``nats_url``, ...);
4. its ``engine`` parameter (the engine contract) names a service: ``redis-shards`` is Redis;
5. what it can reach: the test function, its fixtures and the functions and classes of the
   tests package they name, followed through their code: the ``subprocess`` module or
   ``asyncio.create_subprocess_*`` make it ``subprocess``; a path into tests/peers/ or
   .cache/peers (files ``make peers`` downloads) makes it ``peers``.

``--isolated`` (``make unit`` passes it) checks the rules at run time: a test that starts a
process or connects to the Redis, NATS or PostgreSQL port fails, naming what it did.
"""

from __future__ import annotations

import dis
import functools
import inspect
import socket
import subprocess
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

#: Suites by directory, and what else each of them needs.
DIRECTORIES = {
    "browser": {"browser", "subprocess"},
    "peers": {"peers", "subprocess"},
    "cluster": {"cluster", "redis", "subprocess"},
}
#: Top-level packages of the services' client libraries.
LIBRARIES = {
    "redis": "redis",
    "nats": "nats",
    "asyncpg": "postgres",
    "psycopg": "postgres",
    "psycopg2": "postgres",
}
SERVICES = ("redis", "nats", "postgres")
#: The ports of the services the tests use (scripts/services.sh): refused under --isolated.
SERVICE_PORTS = {6379: "Redis", 4222: "NATS", 5432: "PostgreSQL"}
SUBPROCESS_CALLS = {"create_subprocess_exec", "create_subprocess_shell"}
#: Bytecode reading a module global (``serve(...)``), and an attribute (``server.serve(...)``).
GLOBAL_OPS = {"LOAD_GLOBAL", "LOAD_NAME"}
ATTRIBUTE_OPS = {"LOAD_ATTR", "LOAD_METHOD"}
DOWNLOADS = (TESTS / "peers", ROOT / ".cache" / "peers")
#: Hypothesis' default number of examples; asking for more makes a test ``slow``.
HYPOTHESIS_DEFAULT_EXAMPLES = 100


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--isolated",
        action="store_true",
        help="fail any test that starts a process or connects to Redis, NATS or PostgreSQL (make unit)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker in sorted(needs(item)):
            item.add_marker(marker)


def needs(item: pytest.Item) -> set[str]:
    """The markers of a test, by the rules of this module's docstring."""
    found: set[str] = set()
    path = Path(str(item.path)).resolve()
    if path.is_relative_to(TESTS):
        parts = path.relative_to(TESTS).parts
        found |= DIRECTORIES.get(parts[0], set()) if len(parts) > 1 else set()
    module = getattr(item, "module", None)
    if module is not None:
        found |= {LIBRARIES[root] for root in map(_library, vars(module).values()) if root in LIBRARIES}
    fixtures: list[str] = list(getattr(item, "fixturenames", ()))
    found |= {name.split("_")[0] for name in fixtures if name.split("_")[0] in SERVICES}
    callspec = getattr(item, "callspec", None)
    engine = str(callspec.params.get("engine", "")) if callspec is not None else ""
    if engine.split("-")[0] in SERVICES:
        found.add(engine.split("-")[0])
    function = getattr(item, "function", None)
    if function is not None:
        for root in (function, *_fixture_functions(item)):
            found |= reach(root)
    settings = getattr(function, "_hypothesis_internal_use_settings", None)
    if getattr(function, "is_hypothesis_test", False) and settings is not None:
        if settings.max_examples > HYPOTHESIS_DEFAULT_EXAMPLES:
            found.add("slow")
    return found


def _library(value: Any) -> str:
    """The top-level package a module global comes from (``redis`` for ``redis.asyncio``)."""
    name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
    return name.split(".")[0] if isinstance(name, str) else ""


def _fixture_functions(item: pytest.Item) -> Iterator[Any]:
    info = getattr(item, "_fixtureinfo", None)
    for definitions in getattr(info, "name2fixturedefs", {}).values():
        for definition in definitions:
            yield definition.func


def _in_tests(value: Any) -> bool:
    """Code of the tests package, to follow; not this module's (it names ``subprocess`` only to
    recognise it)."""
    module = str(getattr(value, "__module__", "") or "")
    return module.startswith("tests") and module != __name__


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """A code object and those nested in it (inner functions, lambdas, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


_SCANS: dict[types.CodeType, tuple[set[str], list[Any]]] = {}


def _scan(function: Any, code: types.CodeType) -> tuple[set[str], list[Any]]:
    """What one function's own code shows (marks), and the tests' functions and classes it
    names, to follow. Read from the bytecode, so ``server.serve()`` (an attribute) is not
    taken for the ``serve`` global; remembered, as many tests share their helpers."""
    if code in _SCANS:
        return _SCANS[code]
    marks: set[str] = set()
    followed: list[Any] = []
    loads = [(i.opname, i.argval) for c in _codes(code) for i in dis.get_instructions(c)]
    if any(op in ATTRIBUTE_OPS and name in SUBPROCESS_CALLS for op, name in loads):
        marks.add("subprocess")
    scope: dict[str, Any] = getattr(function, "__globals__", {})
    for name in sorted({name for op, name in loads if op in GLOBAL_OPS and name in scope}):
        target = scope[name]
        if target is subprocess or _library(target) == "subprocess":
            marks.add("subprocess")
        elif isinstance(target, Path) and any(target.is_relative_to(d) for d in DOWNLOADS):
            marks.add("peers")
        elif _in_tests(target) and (inspect.isfunction(target) or isinstance(target, type)):
            followed.append(target)
    _SCANS[code] = (marks, followed)
    return marks, followed


_REACHED: dict[int, tuple[Any, set[str]]] = {}


def reach(root: Any) -> set[str]:
    """``subprocess`` and ``peers`` if the code reachable from ``root`` starts processes or
    reads the downloaded SDKs. Only the tests package is followed: the library under test is
    what the marks are about, not what it may do. Remembered per root (fixtures are shared)."""
    if id(root) in _REACHED:
        return _REACHED[id(root)][1]
    found: set[str] = set()
    seen: set[int] = set()
    todo = [root]
    while todo and len(seen) < 2000:  # the tests package is far smaller; a bound all the same
        value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, functools.partial):
            todo.append(value.func)
            continue
        if isinstance(value, type):
            if _in_tests(value):
                todo.extend(v for v in vars(value).values())
            continue
        if isinstance(value, staticmethod | classmethod):
            todo.append(value.__func__)
            continue
        if isinstance(value, property):
            todo.extend(f for f in (value.fget, value.fset) if f is not None)
            continue
        hypothesis = getattr(value, "hypothesis", None)
        if hypothesis is not None:
            todo.append(getattr(hypothesis, "inner_test", None))
        function = inspect.unwrap(value) if callable(value) else value
        code = getattr(function, "__code__", None)
        if not isinstance(code, types.CodeType):
            continue
        marks, followed = _scan(function, code)
        found |= marks
        todo.extend(followed)
    _REACHED[id(root)] = (root, found)  # the root is kept, so its id is not reused
    return found


# -- --isolated: the rules, checked while the tests run


class ServiceUsed(AssertionError):
    """Raised where a test selected as needing nothing starts a process or reaches a service."""


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--isolated"):
        _forbid_services()


def _forbid_services() -> None:
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse_process(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        raise ServiceUsed(f"--isolated: this test starts a process ({args!r}); conftest.py should mark it")

    def check(address: Any) -> None:
        port = address[1] if isinstance(address, tuple) and len(address) >= 2 else None
        if port in SERVICE_PORTS:
            raise ServiceUsed(
                f"--isolated: this test connects to {SERVICE_PORTS[port]} ({address!r}); "
                "conftest.py should mark it"
            )

    # asyncio's connections call these too: it makes its sockets with socket.socket
    def guarded_connect(self: socket.socket, address: Any) -> None:
        check(address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return connect_ex(self, address)

    subprocess.Popen.__init__ = refuse_process  # type: ignore[method-assign,assignment]
    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
