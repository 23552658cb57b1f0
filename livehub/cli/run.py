"""``livehub run module:app``: a FastAPI app embedding a Hub, served as ``livehub serve`` is.

In the spirit of ``fastapi run``: uvicorn serves the app, with livehub's HTTP protocol
(``livehub.transports.websocket:http_protocol``) so the hub's client endpoint is answered
straight from the socket; every other route, WebSocket routes included, goes through
uvicorn as usual. The same with a uvicorn or gunicorn command line: see the README.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from livehub.serving import DrainingServer
from livehub.transports.websocket import HTTP_PROTOCOL

commands = typer.Typer()


@commands.command(
    epilog="Examples:\n\n"
    "    livehub run main:app\n\n"
    "    livehub run main:app --host 0.0.0.0 --port 8000 --workers 4    # workers need a shared engine\n\n"
    "    livehub run main:app --reload                                  # development\n\n"
    "The same from uvicorn: uvicorn main:app --http " + HTTP_PROTOCOL
)
def run(
    app: Annotated[str, typer.Argument(help="The app to serve, as module:attribute (e.g. main:app).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes; more than 1 needs the hub on a shared engine "
            "(redis://, nats://, postgresql://).",
        ),
    ] = 1,
    reload: Annotated[bool, typer.Option(help="Restart when a source file changes (development).")] = False,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key file (wss://).")] = None,
    ssl_certfile: Annotated[Path | None, typer.Option(help="TLS certificate file (wss://).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    app_dir: Annotated[Path, typer.Option(help="Directory the app's module is imported from.")] = Path("."),
) -> None:
    """Serve a FastAPI app that embeds a livehub Hub, its client endpoint from the socket.

    The app is served by uvicorn; the hub's WebSocket endpoint is answered by livehub's
    protocol (no ASGI task per connection), everything else by the app as usual. An app
    without a hub is served as plain uvicorn would.
    """
    sys.path.insert(0, str(app_dir.resolve()))
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": HTTP_PROTOCOL,
        "log_level": log_level.lower(),
        "ssl_keyfile": str(ssl_keyfile) if ssl_keyfile else None,
        "ssl_certfile": str(ssl_certfile) if ssl_certfile else None,
    }
    if workers > 1 or reload:  # uvicorn's supervisors import the app in each process
        uvicorn.run(app, workers=workers, reload=reload, **options)
        return
    server = DrainingServer(uvicorn.Config(app, **options))
    server.run()  # uvicorn picks the loop: uvloop when installed
    if not server.started:
        raise typer.Exit(1)
