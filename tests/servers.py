"""Run ``livehub serve`` as a real process on a loopback port, for end-to-end tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"livehub serve exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def running(cmd: list[str], port: int, **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` in the repo, wait until ``port`` answers, yield the process; then stop it
    (SIGTERM, SIGKILL if it hangs)."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, cwd=ROOT, **popen)
    try:
        wait_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serve(config: str | Path | None, port: int | None = None, host: str = "127.0.0.1") -> Iterator[int]:
    """Start ``livehub serve``, yield its port, stop it."""
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "livehub",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    if config is not None:
        cmd += ["--config", str(config)]
    with running(cmd, port):
        yield port


def provision(script: str, what: str) -> None:
    """Run a set-up script of the repo (``scripts/…``, ``frontend/build.sh``); on failure,
    fail the test with why it was needed and the end of the script's output."""
    proc = subprocess.run(
        ["bash", str(ROOT / script)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.rstrip().splitlines()[-60:])
        pytest.fail(f"{script} failed (exit {proc.returncode}), {what}:\n{tail}", pytrace=False)
