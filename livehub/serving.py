"""Running the server: one process, or ``livehub serve --workers N`` processes as one hub.

With ``--workers N`` the parent binds the listening sockets and starts N worker
processes (multiprocessing "spawn": each imports livehub afresh) that accept on the
same sockets; the kernel spreads the connections among them. Each worker builds its app
from the settings as :func:`app_from_env` does — the config file named by
``LIVEHUB_CONFIG`` and the ``LIVEHUB_*`` environment variables — so the same factory
serves other process managers too::

    LIVEHUB_CONFIG=config.json uvicorn --factory livehub.serving:app_from_env --workers 4

Workers are separate nodes: they share nothing but the engine, so N > 1 needs a shared
one (``redis://``, ``nats://``, ``postgresql://``), through which they deliver each other's publications
and commands (``livehub.core.cluster``). Several ``livehub serve`` processes on different
ports or machines sharing one Redis are the same kind of cluster.

The parent restarts a worker that dies, and on SIGINT/SIGTERM stops every worker
(SIGTERM: each tells its clients to reconnect, 3001, and leaves the cluster). A worker
that cannot start (bad engine URL, app failing at startup) stops them all, exit code 1.
Workers end with the parent even if it is killed (Linux: ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, cast

import uvicorn
from fastapi import FastAPI

from livehub.core.node import Node
from livehub.logs import LEVELS, configure_logging
from livehub.settings import load_settings
from livehub.transports.websocket import client_protocol, config_node

log = logging.getLogger("livehub.serving")

#: The environment variable naming the config file for :func:`app_from_env` and workers.
CONFIG_ENV = "LIVEHUB_CONFIG"
#: A worker's exit code when its server could not start.
STARTUP_FAILURE = 3
#: How long stopping workers may take before they are killed.
STOP_TIMEOUT = 15.0


def app_from_env() -> FastAPI:
    """The standalone app, from ``$LIVEHUB_CONFIG`` (optional) and ``LIVEHUB_*`` variables."""
    from livehub.app import create_app

    return create_app(load_settings(os.environ.get(CONFIG_ENV) or None))


def node_name(port: int, worker: int | None = None) -> str:
    """``host_port`` as Centrifugo names nodes; workers sharing a port add their number."""
    name = f"{socket.gethostname()}_{port}"
    return name if worker is None else f"{name}_{worker}"


class DrainingServer(uvicorn.Server):
    """Asks every client to reconnect (3001), those of the app's own WebSocket route too,
    and waits a little for them to be told, before uvicorn closes connections.

    ``node``: the hub's; by default the one the served app's hub records (``livehub run``).
    """

    def __init__(self, config: uvicorn.Config, node: Node | None = None) -> None:
        super().__init__(config)
        self.node = node

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        node = self.node or config_node(self.config)
        if node is not None:
            await node.drain()
        await super().shutdown(sockets)


def draining_server(app: FastAPI, node: Node, log_level: str) -> DrainingServer:
    """uvicorn serving ``app`` as ``livehub serve`` and its workers do."""
    tls = node.settings.http_server.tls
    certfile, keyfile = tls.files() if tls.enabled else (None, None)
    config = uvicorn.Config(
        app,
        # the client endpoint is answered from the socket, not ASGI (uvicorn calls the
        # factory as it would a protocol class)
        http=cast(Any, client_protocol(node)),
        ws_max_size=node.settings.websocket.message_size_limit,
        ws_ping_interval=None,  # the protocol has its own pings
        ws_per_message_deflate=False,
        log_level=LEVELS[log_level.lower()],
        # JSON logs: uvicorn's loggers go through the root logger's handler (livehub.logs)
        log_config=None if node.settings.log.format == "json" else uvicorn.config.LOGGING_CONFIG,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        lifespan="on",
    )
    return DrainingServer(config, node)


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this process when the parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that took effect
        os._exit(0)


def _worker(sockets: list[socket.socket], log_level: str, index: int, parent: int) -> None:
    """One worker process: build the app from the environment and serve the shared sockets
    as ``livehub serve`` serves its own (the same uvicorn settings)."""
    _die_with_parent(parent)
    app = app_from_env()
    configure_logging(
        log_level, app.state.node.settings.log.format, app.state.node.settings.log.file, f"w{index}"
    )
    node: Node = app.state.node
    node.name = node_name(sockets[0].getsockname()[1], index)
    server = draining_server(app, node, log_level)
    server.run(sockets=sockets)  # uvicorn picks the loop: uvloop when installed
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def run_workers(count: int, sockets: list[socket.socket], log_level: str) -> int:
    """Run ``count`` workers on ``sockets`` until SIGINT/SIGTERM; returns the exit code.

    The settings reach the workers through the environment (``LIVEHUB_CONFIG`` and
    ``LIVEHUB_*``), which the caller sets before this.
    """
    ctx = multiprocessing.get_context("spawn")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    parent = os.getpid()

    def start(index: int) -> Any:
        proc = ctx.Process(
            target=_worker, args=(sockets, log_level, index, parent), name=f"livehub-worker-{index}"
        )
        proc.start()
        log.info("worker %d started, pid %d", index, proc.pid)
        return proc

    code = 0
    workers = [start(i) for i in range(count)]
    try:
        while not stop.wait(0.5):
            for i, proc in enumerate(workers):
                if proc.is_alive():
                    continue
                if proc.exitcode == STARTUP_FAILURE:
                    log.error("worker %d could not start: stopping", i)
                    code = 1
                    stop.set()
                    break
                log.warning("worker %d (pid %d) ended with %s: starting another", i, proc.pid, proc.exitcode)
                workers[i] = start(i)
    finally:
        for proc in workers:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in workers:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("worker pid %d did not stop in time: killing it", proc.pid)
                proc.kill()
                proc.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
