"""What the commands share: the error console, reading a config, failing, JSON arguments, the
options several commands take, and where the server a config describes listens."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from livehub.settings import ConfigError, Settings, load_settings

err = Console(stderr=True, soft_wrap=True)

DEFAULT_WS_URL = "ws://localhost:8000/connection/websocket"

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="livehub/Centrifugo config file (JSON, TOML, YAML) to take keys and the address from.",
    ),
]

ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="LIVEHUB_HTTP_API__KEY",
        help="The server's http_api.key (default: the one in --config).",
        show_default=False,
    ),
]


def read_settings(config: Path | None) -> Settings:
    """The settings ``livehub serve --config config`` would run with; exit 2 if they are bad."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def parse_json(text: str, what: str) -> Any:
    """A JSON argument; ``-`` reads it from stdin."""
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except ValueError as exc:
        fail(
            f"{what} is not valid JSON ({exc}): {text[:80]!r}\n"
            "To send a string, quote it as JSON inside shell quotes: '\"hello\"'.",
            2,
        )


def _loopback_for(address: str) -> str:
    """Where to reach a server listening on ``address`` from this machine."""
    if address in ("", "0.0.0.0", "localhost"):
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address else address


def server_urls(settings: Settings) -> tuple[str, str]:
    """(WebSocket URL, HTTP API URL) of the server a config describes, as seen from this machine."""
    host = _loopback_for(settings.http_server.address)
    port = settings.http_server.port or 8000
    ws = f"ws://{host}:{port}{settings.websocket.handler_prefix}"
    api = f"http://{host}:{port}{settings.http_api.handler_prefix.rstrip('/')}"
    return ws, api
