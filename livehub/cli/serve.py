"""``livehub serve``: run the server, one process or ``--workers N`` (``livehub.serving``);
and ``livehub version``."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from livehub import __version__
from livehub.cli.common import err, read_settings
from livehub.engines import engine_from_url
from livehub.serving import CONFIG_ENV, draining_server, node_name, run_workers

commands = typer.Typer()


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """``localhost`` means both loopbacks: clients may resolve it to ::1 or to 127.0.0.1."""
    hosts = ["127.0.0.1", "::1"] if host == "localhost" else [host]
    sockets = []
    for h in hosts:
        family = socket.AF_INET6 if ":" in h else socket.AF_INET
        # proto must say TCP: the event loop sets TCP_NODELAY on accepted sockets only then, and
        # without it a response written in two parts waits 40 ms for a delayed ACK (keep-alive).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((h, port))
        except OSError as exc:
            sock.close()
            if h == "::1" and len(hosts) > 1:
                continue  # no IPv6 loopback on this machine
            err.print(f"[red]error:[/red] cannot listen on {h}:{port}: {exc.strerror}")
            raise typer.Exit(1) from None
        sock.listen(2048)
        sock.set_inheritable(True)
        sockets.append(sock)
        if port == 0:
            port = sock.getsockname()[1]
    return sockets


@commands.command(
    epilog="Examples:\n\n"
    "    livehub genconfig && livehub serve --config config.json\n\n"
    "    livehub serve --config config.toml --host 0.0.0.0 --port 8000\n\n"
    "    livehub serve --config config.toml --engine redis://127.0.0.1:6379 --workers 4\n\n"
    "    LIVEHUB_CLIENT__INSECURE=true livehub serve    # development: no tokens needed"
)
def serve(
    config: Annotated[
        Path | None, typer.Option(help="Config file: JSON, TOML or YAML, Centrifugo v6 key names.")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on ('localhost' = 127.0.0.1 and ::1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default: 8000).")] = None,
    engine: Annotated[
        str | None, typer.Option(help="Engine URL, e.g. memory:// (default: memory://).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes sharing the listening socket, one hub; more than 1 needs a "
            "shared engine (redis://, nats://).",
        ),
    ] = 1,
) -> None:
    """Run the livehub server: the client endpoint /connection/websocket and the demo pages.

    Several processes act as one hub when they share a Redis or NATS engine: --workers N
    on one port, or several `livehub serve` on different ports or machines. Publications,
    presence, history and the server API's commands then reach clients on every node.
    """
    settings = read_settings(config)
    if engine:
        settings.engine.url = engine
    try:
        engine_from_url(settings.engine.url)
    except ValueError as exc:
        err.print(f"[red]error:[/red] engine: {exc}")
        raise typer.Exit(2) from None
    if workers > 1 and urlsplit(settings.engine.url.split(",")[0].strip()).scheme == "memory":
        err.print(
            f"[red]error:[/red] --workers {workers} needs a shared engine: with memory:// each worker "
            "would be a separate hub whose clients never see the others' messages. "
            "Use --engine redis://host:6379 (or nats://), or --workers 1.",
            highlight=False,
        )
        raise typer.Exit(2)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("livehub")
    for key in settings.unknown_keys():
        log.warning("config key %r is not used by livehub %s; ignored", key, __version__)
    from livehub.app import create_app

    host = host or settings.http_server.address
    port = settings.http_server.port if port is None else port
    if workers > 1:
        sockets = bind_sockets(host, port)
        log.info("livehub %s listening on %s port %d", __version__, host, sockets[0].getsockname()[1])
        # each worker builds its app from the same settings, passed through the environment
        if config is not None:
            os.environ[CONFIG_ENV] = str(config.resolve())
        else:
            os.environ.pop(CONFIG_ENV, None)
        os.environ["LIVEHUB_ENGINE__URL"] = settings.engine.url
        raise typer.Exit(run_workers(workers, sockets, log_level))
    app = create_app(settings)
    sockets = bind_sockets(host, port)
    log.info("livehub %s listening on %s port %d", __version__, host, sockets[0].getsockname()[1])
    app.state.node.name = node_name(sockets[0].getsockname()[1])
    server = draining_server(app, app.state.node, log_level)
    server.run(sockets=sockets)  # uvicorn picks the loop: uvloop when installed


@commands.command(epilog="Example:\n\n    livehub version")
def version() -> None:
    """Print the version."""
    print(__version__)
