"""``livehub serve``: run the server, one process or ``--workers N`` (``livehub.serving``);
and ``livehub version``."""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from livehub import __version__
from livehub.cli.common import err, read_settings
from livehub.engines import engine_from_url
from livehub.logs import BANNER, LEVELS, configure_logging
from livehub.serving import CONFIG_ENV, draining_server, node_name, run_workers
from livehub.settings import ConfigError, Settings, TlsSettings, unknown_env_vars

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
    "    livehub serve --config config.toml --tls-cert cert.pem --tls-key key.pem\n\n"
    "    livehub serve --demos --log-format json\n\n"
    "    CENTRIFUGO_CLIENT_INSECURE=true livehub serve    # development: no tokens needed"
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
    log_level: Annotated[
        str | None,
        typer.Option(
            help="none, trace, debug, info, warn or error (default: log.level, info).", show_default=False
        ),
    ] = None,
    log_format: Annotated[
        str | None, typer.Option(help="text or json: one JSON object per line (default: log.format).")
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS/WSS with this PEM certificate (http_server.tls.cert_pem)."),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's PEM private key.")] = None,
    demos: Annotated[
        bool | None,
        typer.Option(
            "--demos/--no-demos",
            help="Serve the demo pages, their RPCs and the seed endpoints /ws /chat /echo "
            "(default: demos.enabled). Development only: their token route lets anyone in.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes sharing the listening socket, one hub; more than 1 needs a "
            "shared engine (redis://, nats://, postgresql://).",
        ),
    ] = 1,
) -> None:
    """Run the livehub server: the client endpoint /connection/websocket, the server API,
    /metrics, /health and /health/ready (and the admin page, the demos when enabled).

    Several processes act as one hub when they share a Redis, NATS or PostgreSQL engine: --workers N
    on one port, or several `livehub serve` on different ports or machines. Publications,
    presence, history and the server API's commands then reach clients on every node.
    """
    settings = read_settings(config)
    if engine:
        settings.engine.url = engine
    if (tls_cert is None) != (tls_key is None):
        err.print("[red]error:[/red] --tls-cert and --tls-key go together")
        raise typer.Exit(2)
    if tls_cert is not None and tls_key is not None:
        settings.http_server.tls = TlsSettings(enabled=True, cert_pem=str(tls_cert), key_pem=str(tls_key))
    if demos is not None:
        settings.demos.enabled = demos
    if log_format is not None:
        if log_format not in ("text", "json"):
            err.print(f"[red]error:[/red] --log-format {log_format}: text or json")
            raise typer.Exit(2)
        settings.log.format = log_format  # type: ignore[assignment]
    level = log_level or settings.log.level
    if level.lower() not in LEVELS:
        err.print(f"[red]error:[/red] --log-level {level}: one of {', '.join(LEVELS)}")
        raise typer.Exit(2)
    try:
        engine_from_url(settings.engine.url)
        if settings.http_server.tls.enabled:
            settings.http_server.tls.files()
    except (ValueError, ConfigError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if workers > 1 and urlsplit(settings.engine.url.split(",")[0].strip()).scheme == "memory":
        err.print(
            f"[red]error:[/red] --workers {workers} needs a shared engine: with memory:// each worker "
            "would be a separate hub whose clients never see the others' messages. "
            "Use --engine redis://host:6379 (or nats://, postgresql://), or --workers 1.",
            highlight=False,
        )
        raise typer.Exit(2)
    configure_logging(level, settings.log.format, settings.log.file)
    from livehub.app import create_app

    host = host or settings.http_server.address
    port = settings.http_server.port if port is None else port
    if workers > 1:
        sockets = bind_sockets(host, port)
        banner(settings, host, sockets[0].getsockname()[1], workers)
        # each worker builds its app from the same settings, passed through the environment
        if config is not None:
            os.environ[CONFIG_ENV] = str(config.resolve())
        else:
            os.environ.pop(CONFIG_ENV, None)
        os.environ["LIVEHUB_ENGINE__URL"] = settings.engine.url
        os.environ["LIVEHUB_LOG__FORMAT"] = settings.log.format
        os.environ["LIVEHUB_DEMOS__ENABLED"] = str(settings.demos.enabled).lower()
        tls = settings.http_server.tls
        if tls.enabled:
            os.environ["LIVEHUB_HTTP_SERVER__TLS__ENABLED"] = "true"
            os.environ["LIVEHUB_HTTP_SERVER__TLS__CERT_PEM"] = tls.cert_pem
            os.environ["LIVEHUB_HTTP_SERVER__TLS__KEY_PEM"] = tls.key_pem
        raise typer.Exit(run_workers(workers, sockets, level))
    app = create_app(settings)
    sockets = bind_sockets(host, port)
    bound = sockets[0].getsockname()[1]
    banner(settings, host, bound, workers)
    app.state.node.name = settings.node.name or node_name(bound)
    server = draining_server(app, app.state.node, level)
    server.run(sockets=sockets)  # uvicorn picks the loop: uvloop when installed


def _redacted(url: str) -> str:
    """An engine URL without its password."""
    return re.sub(r"(://[^:/@,]*:)[^@/,]*@", r"\1***@", url)


def banner(settings: Settings, host: str, port: int, workers: int) -> None:
    """What runs where, and every setting that is unsafe in production, at start."""
    log = logging.getLogger(BANNER)
    scheme = "https" if settings.http_server.tls.enabled else "http"
    shown = f"[{host}]" if ":" in host else host
    base = f"{scheme}://{shown}:{port}"
    log.info(
        "livehub %s, engine %s, listening on %s (clients: %s%s)%s",
        __version__,
        _redacted(settings.engine.url),
        base,
        base.replace("http", "ws", 1),
        settings.websocket.handler_prefix,
        f", {workers} workers" if workers > 1 else "",
    )
    warnings = []
    if settings.client.insecure:
        warnings.append("client.insecure is on: anyone may connect as anyone and use every channel")
    if settings.http_api.insecure:
        warnings.append("http_api.insecure is on: the server API answers without a key")
    if settings.admin.enabled and settings.admin.insecure:
        warnings.append("admin.insecure is on: the admin page needs no password")
    if settings.demos.enabled:
        warnings.append("the demos are on: their token route lets anyone connect as any user")
        if not settings.client.allowed_origins:
            warnings.append(
                "client.allowed_origins is empty: no browser page, the demos' included, may connect; "
                'set it (e.g. ["http://localhost:*"])'
            )
    if not settings.client.token.has_key and not (
        settings.client.insecure
        or settings.client.allow_anonymous_connect_without_token
        or settings.client.proxy.connect.enabled
    ):
        warnings.append("client.token has no key and anonymous access is off: no client can connect")
    for name in unknown_env_vars(settings):
        warnings.append(f"environment variable {name} is not a setting livehub reads; ignored")
    for text in warnings:
        log.warning("%s", text)


@commands.command(epilog="Example:\n\n    livehub version")
def version() -> None:
    """Print the version."""
    print(__version__)
