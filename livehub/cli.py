"""The ``livehub`` command."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from livehub import __version__
from livehub.engines import engine_from_url
from livehub.node import Node
from livehub.settings import ConfigError, Settings, load_settings

app = typer.Typer(help="livehub: real-time messaging server, Centrifugo-compatible.", no_args_is_help=True)
err = Console(stderr=True)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """``localhost`` means both loopbacks: clients may resolve it to ::1 or to 127.0.0.1."""
    hosts = ["127.0.0.1", "::1"] if host == "localhost" else [host]
    sockets = []
    for h in hosts:
        family = socket.AF_INET6 if ":" in h else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
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


class DrainingServer(uvicorn.Server):
    """Closes clients with 3001 (reconnect elsewhere) before uvicorn closes them with 1012."""

    def __init__(self, config: uvicorn.Config, node: Node) -> None:
        super().__init__(config)
        self.node = node

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.node.drain()
        await super().shutdown(sockets)


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option(help="Config file: JSON, TOML or YAML, Centrifugo v6 key names.")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on ('localhost' = 127.0.0.1 and ::1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8000].")] = None,
    engine: Annotated[
        str | None, typer.Option(help="Engine URL, e.g. memory:// [default: memory://].")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the livehub server: the client endpoint /connection/websocket and the demo pages."""
    settings = _settings(config)
    if engine:
        settings.engine.url = engine
    try:
        engine_from_url(settings.engine.url)
    except ValueError as exc:
        err.print(f"[red]error:[/red] engine: {exc}")
        raise typer.Exit(2) from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("livehub")
    for key in settings.unknown_keys():
        log.warning("config key %r is not used by livehub %s; ignored", key, __version__)
    from livehub.app import create_app

    host = host or settings.http_server.address
    port = settings.http_server.port if port is None else port
    app = create_app(settings)
    uv_config = uvicorn.Config(
        app,
        ws_max_size=settings.websocket.message_size_limit,
        ws_ping_interval=None,  # the protocol has its own pings
        ws_per_message_deflate=False,
        log_level=log_level.lower(),
        lifespan="on",
    )
    sockets = bind_sockets(host, port)
    log.info("livehub %s listening on %s port %d", __version__, host, sockets[0].getsockname()[1])
    server = DrainingServer(uv_config, app.state.node)
    asyncio.run(server.serve(sockets=sockets))


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:
    app(prog_name="livehub")


if __name__ == "__main__":
    main()
