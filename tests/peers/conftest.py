"""Shared fixtures of the peer suites: the official SDKs, run against a real ``livehub serve``.

The SDK suites hard-code ``localhost:8000``, so the server runs there, as a subprocess
(``livehub serve --config tests/peers/config.json --host localhost --port 8000``), once
per test module. ``scripts/provision_peers.sh`` (run by ``make test``, and again here,
where it is a no-op when already done) puts the SDKs under ``.cache/peers`` and
``tests/peers/node/node_modules``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import ROOT, provision

PEERS = Path(__file__).resolve().parent
CONFIG = PEERS / "config.json"
CACHE = ROOT / ".cache" / "peers"
HOST = "localhost"
PORT = 8000
STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 10.0


def tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _loopbacks() -> list[tuple[int, str]]:
    """The addresses ``localhost`` means here: 127.0.0.1, and ::1 where the machine has it."""
    found: list[tuple[int, str]] = [(socket.AF_INET, "127.0.0.1")]
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.bind(("::1", 0))
            found.append((socket.AF_INET6, "::1"))
        except OSError:
            pass
    return found


def _port_answers(family: int, address: str, port: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((address, port)) == 0


def _http_answers(address: str, port: int) -> bool:
    """Any HTTP status counts (a plain GET of the WebSocket endpoint is an error)."""
    host = f"[{address}]" if ":" in address else address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/connection/websocket", timeout=1):
            pass
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


@dataclass
class Server:
    url: str
    ws_url: str
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log.read_text(errors="replace"), lines)


def _livehub_command() -> list[str]:
    script = Path(sys.executable).parent / "livehub"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "livehub"]
    return [*base, "serve", "--config", str(CONFIG), "--host", HOST, "--port", str(PORT)]


@pytest.fixture(scope="session")
def provisioned() -> None:
    """Runs scripts/provision_peers.sh (idempotent, fast once done)."""
    provision("scripts/provision_peers.sh", "the conformance tests need the official SDKs")


@pytest.fixture(scope="module")
def livehub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A ``livehub serve`` subprocess on localhost:8000 for the module's tests."""
    addresses = _loopbacks()
    busy = [a for f, a in addresses if _port_answers(f, a, PORT)]
    if busy:
        pytest.fail(
            f"port {PORT} is already in use on {', '.join(busy)}: the peer suites need "
            f"localhost:{PORT} for their own livehub server; stop whatever listens there "
            f"(e.g. `ss -ltnp 'sport = :{PORT}'`) and run again",
            pytrace=False,
        )
    log = tmp_path_factory.mktemp("livehub") / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(_livehub_command(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://{HOST}:{PORT}", f"ws://{HOST}:{PORT}/connection/websocket", log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not all(_http_answers(a, PORT) for _, a in addresses):
            if proc.poll() is not None:
                pytest.fail(
                    f"livehub serve exited with {proc.returncode} before answering on port "
                    f"{PORT}:\n{server.log_tail()}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"livehub serve did not answer on {HOST}:{PORT} "
                    f"({', '.join(a for _, a in addresses)}) within {STARTUP_TIMEOUT:.0f} s:\n"
                    f"{server.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def node_bin() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is not installed: the Node SDK suite needs Node.js >= 18 "
            "(Debian: apt-get install -y nodejs npm; then bash scripts/provision_peers.sh)",
            pytrace=False,
        )
    return node


def run_suite(
    command: list[str], cwd: Path, timeout: float, server: Server
) -> subprocess.CompletedProcess[str]:
    """Run a peer's test command to completion; a hang fails the test with both logs' tails."""
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output or ""
        pytest.fail(
            f"{command[0]} did not finish within {timeout} s; output tail:\n{tail(out)}\n\n"
            f"server log tail:\n{server.log_tail()}",
            pytrace=False,
        )
