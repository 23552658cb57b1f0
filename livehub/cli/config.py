"""``livehub genconfig`` (a starter config, commented in TOML and YAML) and ``livehub checkconfig``."""

from __future__ import annotations

import json
import os
import secrets
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from livehub import __version__
from livehub.cli.common import err, fail, read_settings
from livehub.engines import engine_from_url
from livehub.settings import ConfigError, unknown_env_vars

commands = typer.Typer()


class ConfigFormat(StrEnum):
    json = "json"
    toml = "toml"
    yaml = "yaml"


_SUFFIXES = {
    ".json": ConfigFormat.json,
    ".toml": ConfigFormat.toml,
    ".yaml": ConfigFormat.yaml,
    ".yml": ConfigFormat.yaml,
}

_HEADER = """livehub configuration (Centrifugo v6 key names: a Centrifugo config runs unchanged).
Run:   livehub serve --config {name}
Check: livehub checkconfig {name}
Every setting and its default: livehub/settings.py. Environment variables override this file,
spelled as Centrifugo's (CENTRIFUGO_CLIENT_INSECURE=true) or livehub's (LIVEHUB_CLIENT__INSECURE=true).
Keep this file secret: it holds the keys."""

_COMMENTS = {
    "http_server": "Where `livehub serve` listens (--host and --port override it).",
    "client": "Client connections, at ws://HOST:PORT/connection/websocket.",
    "client.token": "Clients connect with a JWT signed with this secret (HS256).\n"
    "Make one with: livehub token --user 42 --config {name}",
    "client.allowed_origins": 'Browser pages allowed to connect, e.g. "https://example.com" or\n'
    '"http://localhost:*"; empty: no browser page, only clients that send no Origin.',
    "client.insecure": "true lets anyone connect without a token and use every channel: development only.",
    "http_api": "The server HTTP API (POST /api/publish, /api/history, ...): requests\n"
    "carry the header `X-API-Key: <key>`. Try: livehub publish news '{{\"a\":1}}' --config {name}",
    "channel": "Channel options. Channels named ns:rest use the options of the namespace ns,\n"
    "listed under channel.namespaces (each with a name and the options below).",
    "channel.without_namespace": "Options of channels without a namespace (no ':' in the name).",
    "channel.without_namespace.allow_subscribe_for_client": "Any user with a connection token may subscribe\n"
    "($private channels still need a subscription token).",
    "channel.without_namespace.presence": "Who is subscribed: presence and presence_stats.",
    "channel.without_namespace.join_leave": "Tell subscribers who comes and goes (join/leave).",
    "channel.without_namespace.history_size": "Keep the last 100 publications for 5 minutes, so that\n"
    "clients recover what they missed when they reconnect.",
    "engine": "memory:// keeps everything in this process; redis://HOST:6379 shares channels\n"
    "between several livehub processes.",
}


def _starter_config() -> dict[str, Any]:
    return {
        "http_server": {"address": "127.0.0.1", "port": 8000},
        "client": {
            "token": {"hmac_secret_key": secrets.token_urlsafe(32)},
            "allowed_origins": ["http://localhost:8000", "http://127.0.0.1:8000"],
            "insecure": False,
        },
        "http_api": {"key": secrets.token_urlsafe(24)},
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "presence": True,
                "join_leave": True,
                "history_size": 100,
                "history_ttl": "300s",
                "force_recovery": True,
            }
        },
        "engine": {"url": "memory://"},
    }


def _comment(path: str, name: str, indent: str = "") -> list[str]:
    text = _COMMENTS.get(path)
    if text is None:
        return []
    return [f"{indent}# {line}".rstrip() for line in text.format(name=name).splitlines()]


def _scalar(value: Any) -> str:
    """A value both TOML and YAML read as JSON does (strings in JSON quotes, [] lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _to_toml(config: dict[str, Any], name: str) -> str:
    lines = [f"# {line}".rstrip() for line in _HEADER.format(name=name).splitlines()]

    def table(path: str, values: dict[str, Any]) -> None:
        scalars = [(k, v) for k, v in values.items() if not isinstance(v, dict)]
        tables = [(k, v) for k, v in values.items() if isinstance(v, dict)]
        if scalars:
            lines.append("")
            lines.extend(_comment(path, name))
            lines.append(f"[{path}]")
            for k, v in scalars:
                lines.extend(_comment(f"{path}.{k}", name))
                lines.append(f"{k} = {_scalar(v)}")
        elif path in _COMMENTS:
            lines.append("")
            lines.extend(_comment(path, name))
        for k, v in tables:
            table(f"{path}.{k}", v)

    for key, value in config.items():
        table(key, value)
    return "\n".join(lines) + "\n"


def _to_yaml(config: dict[str, Any], name: str) -> str:
    lines = [f"# {line}".rstrip() for line in _HEADER.format(name=name).splitlines()]

    def mapping(prefix: str, values: dict[str, Any], indent: str) -> None:
        for k, v in values.items():
            path = f"{prefix}{k}"
            if not indent:
                lines.append("")
            lines.extend(_comment(path, name, indent))
            if isinstance(v, dict):
                lines.append(f"{indent}{k}:")
                mapping(path + ".", v, indent + "  ")
            else:
                lines.append(f"{indent}{k}: {_scalar(v)}")

    mapping("", config, "")
    return "\n".join(lines) + "\n"


@commands.command(
    epilog="Examples:\n\n"
    "    livehub genconfig                      # writes config.json\n\n"
    "    livehub genconfig --format toml        # writes config.toml, with comments\n\n"
    "    livehub genconfig --output /etc/livehub/config.yaml --force\n\n"
    "    livehub genconfig --output - --format yaml   # to stdout"
)
def genconfig(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="File to write; - for stdout (default: config.FORMAT).", show_default=False
        ),
    ] = None,
    format: Annotated[
        ConfigFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="json, toml or yaml (default: from --output's suffix, else json).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the file if it exists.")] = False,
) -> None:
    """Write a starter config with a fresh random token secret and API key.

    The config uses Centrifugo v6 key names: client.token.hmac_secret_key signs client
    tokens, http_api.key guards the server API, and channels without a namespace allow
    subscribers, presence, join/leave and 5 minutes of history. TOML and YAML files explain
    each key in comments (JSON has none). An existing file is kept unless --force is given.
    """
    suffix_format = _SUFFIXES.get(output.suffix.lower()) if output is not None else None
    fmt = format or suffix_format or ConfigFormat.json
    if output is None:
        output = Path(f"config.{fmt.value}")
    elif str(output) != "-" and suffix_format != fmt:
        fail(
            f"{output} does not end in .{fmt.value}: livehub reads a config's format from its suffix",
            2,
        )
    config = _starter_config()
    name = output.name if str(output) != "-" else f"config.{fmt.value}"
    if fmt is ConfigFormat.json:
        text = json.dumps(config, indent=2) + "\n"
    elif fmt is ConfigFormat.toml:
        text = _to_toml(config, name)
    else:
        text = _to_yaml(config, name)
    if str(output) == "-":
        sys.stdout.write(text)
        return
    try:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
        fd = os.open(output, flags, 0o600)  # it holds secrets
    except FileExistsError:
        fail(f"{output} exists: pass --force to overwrite it")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    err.print(f"wrote {output}; start the server with: livehub serve --config {output}", highlight=False)


@commands.command(
    epilog="Examples:\n\n    livehub checkconfig config.json\n\n"
    "    livehub checkconfig /etc/centrifugo/config.yaml && systemctl restart livehub"
)
def checkconfig(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Config file: JSON, TOML or YAML (by suffix).")
    ],
) -> None:
    """Check a config file: exit 0 if `livehub serve` would accept it, 2 if not.

    Reads FILE (and the CENTRIFUGO_* and LIVEHUB_* environment overrides) as `livehub serve
    --config FILE` does. Every key is honoured or refused: a bad value, an unknown key (with
    a suggestion for a typo) and a Centrifugo option livehub does not support (unless the
    file switches it off) each fail the check, named by their key.
    """
    settings = read_settings(file)
    try:
        engine_from_url(settings.engine.url)
        if settings.http_server.tls.enabled:
            settings.http_server.tls.files()
    except (ValueError, ConfigError) as exc:
        fail(f"{file}: engine: {exc}" if isinstance(exc, ValueError) else f"{exc}", 2)
    for name in unknown_env_vars(settings):
        err.print(
            f"[yellow]warning:[/yellow] environment variable {escape(name)} is not a setting "
            f"livehub {__version__} reads; ignored",
            highlight=False,
        )
    client = settings.client
    if not client.token.has_key:
        if not (client.insecure or client.allow_anonymous_connect_without_token):
            err.print(
                "[yellow]warning:[/yellow] client.token has no key and anonymous access is off: "
                "no client can connect",
                highlight=False,
            )
    if client.insecure:
        err.print("[yellow]warning:[/yellow] client.insecure is on: for development only", highlight=False)
    if not settings.http_api.key and not settings.http_api.insecure:
        err.print(
            "[yellow]warning:[/yellow] http_api.key is empty: the server API refuses every call",
            highlight=False,
        )
    print("config is valid")
