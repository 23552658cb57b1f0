"""A throwaway Redis Cluster for the ``redis-cluster`` engine: three masters on free
loopback ports, started from the ``redis-server`` binary for this test session and
stopped at its end. Missing binaries fail the tests with a clear message."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(n: int) -> list[int]:
    """Ports whose cluster bus port (+10000) is free too."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 29999)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


def _wait(check: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"redis cluster for tests: {what} within {timeout}s")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.fail(
            "the redis-cluster engine tests need redis-server and redis-cli (apt-get install redis-server)"
        )
    root: Path = tmp_path_factory.mktemp("redis-cluster")
    ports = _cluster_ports(3)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = root / str(port)
            node_dir.mkdir()
            procs.append(
                subprocess.Popen(
                    [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
                    + ["--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no"]
                    + ["--dir", str(node_dir)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        _wait(lambda: all(not _free(p) for p in ports), "nodes listening")
        addresses = [f"127.0.0.1:{p}" for p in ports]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )

        def ready() -> bool:
            for p in ports:
                info = subprocess.run([cli, "-p", str(p), "cluster", "info"], capture_output=True, text=True)
                if "cluster_state:ok" not in info.stdout:
                    return False
            return True

        _wait(ready, "cluster_state:ok on every node")
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
