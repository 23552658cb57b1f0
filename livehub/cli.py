"""The ``livehub`` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

import httpx
import jwt
import orjson
import typer
import uvicorn
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from websockets.exceptions import ConnectionClosed

from livehub import __version__
from livehub.engines import engine_from_url
from livehub.loadgen import (
    Bench,
    BenchError,
    BenchOptions,
    BenchResult,
    ProtocolError,
    api_url_for,
    decode_frame,
    is_loopback,
    mint_token,
    open_client,
    server_urls,
    subscription_secret,
)
from livehub.node import Node
from livehub.serving import CONFIG_ENV, node_name, run_workers
from livehub.settings import ConfigError, Settings, load_settings
from livehub.transport import ClientEndpoint

app = typer.Typer(
    help="livehub: real-time messaging server, Centrifugo-compatible.",
    epilog="Quick start (each command has --help with examples):\n\n"
    "    livehub genconfig                                  # config.json with fresh keys\n\n"
    "    livehub serve --config config.json\n\n"
    "    livehub sub news --config config.json              # in another terminal\n\n"
    '    livehub publish news \'{"text": "hi"}\' --config config.json',
    no_args_is_help=True,
)
err = Console(stderr=True, soft_wrap=True)


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


class DrainingServer(uvicorn.Server):
    """Closes clients with 3001 (reconnect elsewhere) before uvicorn closes them with 1012."""

    def __init__(self, config: uvicorn.Config, node: Node) -> None:
        super().__init__(config)
        self.node = node

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.node.drain()
        await super().shutdown(sockets)


@app.command(
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
    settings = _settings(config)
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
    uv_config = uvicorn.Config(
        ClientEndpoint(app, app.state.node),  # the client endpoint skips routing and middleware
        ws_max_size=settings.websocket.message_size_limit,
        ws_ping_interval=None,  # the protocol has its own pings
        ws_per_message_deflate=False,
        log_level=log_level.lower(),
        lifespan="on",
    )
    sockets = bind_sockets(host, port)
    log.info("livehub %s listening on %s port %d", __version__, host, sockets[0].getsockname()[1])
    app.state.node.name = node_name(sockets[0].getsockname()[1])
    server = DrainingServer(uv_config, app.state.node)
    asyncio.run(server.serve(sockets=sockets))


@app.command(epilog="Example:\n\n    livehub version")
def version() -> None:
    """Print the version."""
    print(__version__)


# -- helpers for the client-side commands


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _parse_json(text: str, what: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except ValueError as exc:
        _fail(
            f"{what} is not valid JSON ({exc}): {text[:80]!r}\n"
            "To send a string, quote it as JSON inside shell quotes: '\"hello\"'.",
            2,
        )


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="livehub/Centrifugo config file (JSON, TOML, YAML) to take keys and the address from.",
    ),
]


# -- publish


@app.command(
    epilog="Examples:\n\n"
    '    livehub publish news \'{"text": "hello"}\' --config config.json\n\n'
    "    livehub publish chat:room1 '\"just a string\"' --api-key KEY --url http://127.0.0.1:9000\n\n"
    "    echo '{\"n\": 1}' | livehub publish news - --config config.json"
)
def publish(
    channel: Annotated[str, typer.Argument(metavar="CHANNEL", help="Channel to publish into, e.g. news.")],
    data: Annotated[
        str,
        typer.Argument(
            metavar="DATA", help='JSON to publish (object, array, number, "quoted string"); - reads stdin.'
        ),
    ],
    url: Annotated[
        str | None,
        typer.Option(
            help="Server URL; /api is appended when it has no path. "
            "(default: http://localhost:8000, or the address in --config)",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="LIVEHUB_HTTP_API__KEY",
            help="The server's http_api.key (default: the one in --config).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Publish DATA into CHANNEL through the server HTTP API; prints the offset and epoch.

    Every subscriber of CHANNEL receives DATA. When the channel keeps history, the reply
    holds the publication's position in the stream: its offset and the stream's epoch.
    The API key is the server's http_api.key: give it with --api-key, or give the server's
    config file with --config, which also tells where the server listens.
    """
    payload = _parse_json(data, "DATA")
    settings = _settings(config)
    key = api_key if api_key is not None else settings.http_api.key
    prefix = settings.http_api.handler_prefix.rstrip("/")
    if url is None:
        endpoint = server_urls(settings)[1] if config else "http://localhost:8000" + prefix
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            _fail(f"--url must be an http:// or https:// URL, got {url!r}", 2)
        endpoint = url.rstrip("/") if parts.path.strip("/") else url.rstrip("/") + prefix
    headers = {"X-API-Key": key} if key else {}
    try:
        response = httpx.post(
            f"{endpoint}/publish", json={"channel": channel, "data": payload}, headers=headers, timeout=10
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the server API at {endpoint}: {exc}")
    if response.status_code == 401:
        _fail(
            f"the server rejected the API key (HTTP 401 from {endpoint}): "
            + ("wrong key; " if key else "no key given; ")
            + "pass the server's http_api.key with --api-key or its config with --config"
        )
    if response.status_code != 200:
        _fail(f"HTTP {response.status_code} from {endpoint}/publish: {response.text[:300]}")
    try:
        reply = response.json()
    except ValueError:
        _fail(f"{endpoint}/publish did not answer JSON: {response.text[:300]!r}")
    if not isinstance(reply, dict):
        _fail(f"unexpected reply from {endpoint}/publish: {reply!r}")
    error = reply.get("error")
    if error:
        _fail(f"the server refused: error {error.get('code')}: {error.get('message')}")
    result = reply.get("result") or {}
    if "offset" in result or "epoch" in result:
        print(f"published to {channel}: offset {result.get('offset', 0)}, epoch {result.get('epoch', '')}")
    else:
        print(f"published to {channel} (the channel keeps no history: no offset)")


# -- sub


@app.command(
    epilog="Examples:\n\n"
    "    livehub sub news --config config.json --user 42\n\n"
    '    livehub sub news --token "$(livehub token --user 42 --config config.json)"\n\n'
    "    livehub sub news --url ws://127.0.0.1:9000/connection/websocket --count 1 --timeout 30\n\n"
    "    livehub sub news --config config.json --raw | jq .text"
)
def sub(
    channel: Annotated[str, typer.Argument(metavar="CHANNEL", help="Channel to subscribe to, e.g. news.")],
    url: Annotated[
        str | None,
        typer.Option(
            help="WebSocket endpoint (default: ws://localhost:8000/connection/websocket, "
            "or the address in --config)",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Connection JWT (see `livehub token`).", show_default=False)
    ] = None,
    sub_token: Annotated[
        str | None,
        typer.Option(
            help="Subscription JWT, for channels that need one ($private ones).", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
    secret: Annotated[
        str | None,
        typer.Option(help="HMAC secret to mint the tokens with, instead of --config.", show_default=False),
    ] = None,
    user: Annotated[
        str, typer.Option(help="User id of the tokens minted from --config/--secret.")
    ] = "livehub-cli",
    count: Annotated[int, typer.Option(min=0, help="Exit (0) after this many publications; 0: never.")] = 0,
    timeout: Annotated[
        float,
        typer.Option(
            min=0, help="Give up after this many seconds (exit 1 if --count was not reached); 0: never."
        ),
    ] = 0,
    raw: Annotated[
        bool, typer.Option("--raw", help="Print only the data of each publication, one JSON a line.")
    ] = False,
) -> None:
    """Subscribe to CHANNEL and print its publications as they arrive, like tail -f.

    One line per publication: local time, offset in the channel's stream (- without
    history) and the JSON data. Subscribers joining and leaving are shown dimmed when the
    channel reports them. Stop with Ctrl-C.

    Authentication: --token JWT; or --config (or --secret) with --user, to mint the
    connection and subscription tokens from client.token.hmac_secret_key; or nothing,
    when the server lets anonymous clients in (client.insecure).
    """
    sub_secret = ""
    if config is not None or secret is not None:
        settings = _settings(config)
        conn_secret = secret or settings.client.token.hmac_secret_key
        sub_secret = secret or subscription_secret(settings)
        if url is None and config is not None:
            url = server_urls(settings)[0]
        if token is None:
            if conn_secret:
                token = mint_token(conn_secret, user)
            elif not (settings.client.insecure or settings.client.allow_anonymous_connect_without_token):
                _fail(f"{config} has no client.token.hmac_secret_key to mint a token with: pass --token", 2)
    if sub_token is None and sub_secret:
        # a subscription token must name the connection's user: anonymous without a token
        sub_user = _token_user(token) if token else ""
        sub_token = mint_token(sub_secret, sub_user, channel=channel)
    url = url or "ws://localhost:8000/connection/websocket"
    if urlsplit(url).scheme not in ("ws", "wss"):
        _fail(f"--url must be a ws:// or wss:// URL, got {url!r}", 2)
    tail = _Tail(url, channel, token or "", sub_token or "", count, raw, timeout)
    raise typer.Exit(asyncio.run(tail.main()))


def _token_user(token: str) -> str:
    """The user a connection token names (not verified: the server does that)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return ""
    user = claims.get("sub", "")
    return user if isinstance(user, str) else ""


class _Stdout(Console):
    def on_broken_pipe(self) -> None:
        """Rich exits from inside the event loop here; let ``sub`` end its connection instead."""
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise BrokenPipeError


class _Tail:
    """``livehub sub``: one connection, one subscription, a line per publication."""

    def __init__(
        self, url: str, channel: str, token: str, sub_token: str, count: int, raw: bool, timeout: float
    ) -> None:
        self.url, self.channel, self.token, self.sub_token = url, channel, token, sub_token
        self.count, self.raw, self.timeout = count, raw, timeout
        self.received = 0
        self.client_id = ""
        self.out = _Stdout(soft_wrap=True, highlight=False)

    async def main(self) -> int:
        timeout = self.timeout
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        run = asyncio.create_task(self.run())
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({run, stopped}, timeout=timeout or None, return_when="FIRST_COMPLETED")
        stopped.cancel()
        if run in done:
            return run.result()
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        if stop.is_set():
            return 0
        err.print(f"timed out after {timeout:g}s: {self.received} publication(s) received", style="yellow")
        return 1 if self.count and self.received < self.count else 0

    async def run(self) -> int:
        try:
            ws, result, pushes = await open_client(
                self.url, self.channel, token=self.token, sub_token=self.sub_token, join_leave=True
            )
        except ProtocolError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            return 1
        except (OSError, TimeoutError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
            err.print(
                f"[red]error:[/red] cannot connect to {escape(self.url)}: {escape(reason)}", highlight=False
            )
            return 1
        err.print(
            f"subscribed to {escape(self.channel)} as client {result.get('client', '?')}; Ctrl-C to stop",
            style="dim",
            highlight=False,
        )
        pong = bool(result.get("pong"))
        self.client_id = result.get("client", "")
        try:
            for push in pushes:
                if (rc := self.push(push)) is not None:
                    return rc
            async for frame in ws:
                for msg in decode_frame(frame):
                    if not msg:
                        if pong:
                            await ws.send("{}")
                    elif "push" in msg and (rc := self.push(msg["push"])) is not None:
                        return rc
        except ConnectionClosed:
            pass
        except BrokenPipeError:  # e.g. `livehub sub news | head -1`: the reader is done
            return 0
        finally:
            await ws.close()
        err.print(
            f"[red]the server closed the connection:[/red] {ws.close_code} {escape(ws.close_reason or '')}",
            highlight=False,
        )
        return 1

    def push(self, push: dict[str, Any]) -> int | None:
        """Print one push; an exit code when the command is done."""
        channel = push.get("channel", "")
        where = "" if channel == self.channel else f"{channel}  "
        now = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        if "pub" in push:
            pub = push["pub"]
            data = orjson.dumps(pub.get("data")).decode()
            if self.raw:
                self.out.print(data, markup=False)
            else:
                offset = f"#{pub['offset']}" if pub.get("offset") else "-"
                self.out.print(Text.assemble((now, "dim"), "  ", where, (offset, "cyan"), "  ", data))
            self.received += 1
            if self.count and self.received >= self.count:
                return 0
        elif "join" in push or "leave" in push:
            kind = "join" if "join" in push else "leave"
            info = push[kind].get("info", {})
            if not self.raw and info.get("client") != self.client_id:
                line = f"{now}  {where}{kind}  user={info.get('user', '')} client={info.get('client', '')}"
                self.out.print(Text(line, style="dim"))
        elif "unsubscribe" in push and channel == self.channel:
            u = push["unsubscribe"]
            err.print(f"unsubscribed by the server: {u.get('code')} {u.get('reason', '')}", style="red")
            return 1
        return None


# -- token


@app.command(
    epilog="Examples:\n\n"
    "    livehub token --user 42 --config config.json\n\n"
    "    livehub token --user 42 --channel '$secret' --ttl 600 --secret \"$HMAC_SECRET\"\n\n"
    '    livehub token --user 42 --info \'{"name": "Alice"}\' --ttl 0 --config config.json'
)
def token(
    user: Annotated[
        str, typer.Option(help='User id: the token\'s sub claim ("" for anonymous).', show_default=False)
    ],
    channel: Annotated[
        str | None,
        typer.Option(help="Make a subscription token for this channel (channel claim).", show_default=False),
    ] = None,
    ttl: Annotated[
        int, typer.Option(min=0, help="Seconds until the token expires (exp claim); 0: never.")
    ] = 3600,
    info: Annotated[
        str | None,
        typer.Option(
            help="JSON shown to others in presence and join/leave (info claim).", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
    secret: Annotated[
        str | None,
        typer.Option(
            help="HMAC secret (default: client.token.hmac_secret_key of --config).", show_default=False
        ),
    ] = None,
) -> None:
    """Print an HS256 JWT that the server accepts: a connection token, or with --channel a
    subscription token.

    Clients pass a connection token in their connect command (the SDKs' token option) and a
    subscription token when subscribing to a channel that needs one. The token is signed
    with the server's client.token.hmac_secret_key (for subscription tokens,
    client.subscription_token.hmac_secret_key when that is enabled), read from --config, or
    given with --secret. Only the token is printed, so it can be used as $(livehub token ...).
    """
    info_value = _parse_json(info, "--info") if info is not None else None
    if secret is None:
        settings = _settings(config)
        secret = subscription_secret(settings) if channel else settings.client.token.hmac_secret_key
        if not secret:
            where = f"{config} has no" if config else "no --secret, no --config and no"
            _fail(f"{where} client.token.hmac_secret_key: cannot sign a token", 2)
    print(mint_token(secret, user, channel=channel or "", ttl=ttl, info=info_value))


# -- genconfig


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
Every setting and its default: livehub/settings.py. LIVEHUB_CLIENT__INSECURE=true style
environment variables override this file. Keep this file secret: it holds the keys."""

_COMMENTS = {
    "http_server": "Where `livehub serve` listens (--host and --port override it).",
    "client": "Client connections, at ws://HOST:PORT/connection/websocket.",
    "client.token": "Clients connect with a JWT signed with this secret (HS256).\n"
    "Make one with: livehub token --user 42 --config {name}",
    "client.allowed_origins": 'Browser pages allowed to connect, e.g. "https://example.com" or\n'
    '"http://localhost:*"; empty: same-origin pages and non-browser clients only.',
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
            "allowed_origins": [],
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


@app.command(
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
        _fail(
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
        _fail(f"{output} exists: pass --force to overwrite it")
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror}")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    err.print(f"wrote {output}; start the server with: livehub serve --config {output}", highlight=False)


# -- checkconfig


@app.command(
    epilog="Examples:\n\n    livehub checkconfig config.json\n\n"
    "    livehub checkconfig /etc/centrifugo/config.yaml && systemctl restart livehub"
)
def checkconfig(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Config file: JSON, TOML or YAML (by suffix).")
    ],
) -> None:
    """Check a config file: exit 0 if `livehub serve` would accept it, 2 if not.

    Reads FILE (and the LIVEHUB_* environment overrides) as `livehub serve --config FILE`
    does. A bad value is reported with the key it is under. Keys livehub does not use (a
    Centrifugo config may have many) are listed as warnings and do not fail the check.
    """
    settings = _settings(file)
    try:
        engine_from_url(settings.engine.url)
    except ValueError as exc:
        _fail(f"{file}: engine.url: {exc}", 2)
    for key in settings.unknown_keys():
        err.print(
            f"[yellow]warning:[/yellow] {escape(key)}: not used by livehub {__version__}; ignored",
            highlight=False,
        )
    client = settings.client
    if not (client.token.hmac_secret_key or client.token.rsa_public_key or client.token.ecdsa_public_key):
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


# -- bench


@app.command(
    epilog="Examples:\n\n"
    "    livehub bench --config config.json\n\n"
    "    livehub bench --config config.json --connections 5000 --rate 0 --duration 30\n\n"
    "    livehub bench --url ws://127.0.0.1:9000/connection/websocket --api-key KEY --connections 100"
)
def bench(
    url: Annotated[
        str | None,
        typer.Option(
            help="WebSocket endpoint of a livehub on this machine "
            "(default: ws://localhost:8000/connection/websocket, or the address in --config)",
            show_default=False,
        ),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option(help="Server HTTP API URL (default: /api next to --url).", show_default=False),
    ] = None,
    config: ConfigOption = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="LIVEHUB_HTTP_API__KEY",
            help="The server's http_api.key (default: the one in --config).",
            show_default=False,
        ),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            help="HMAC secret for the clients' tokens (default: from --config).", show_default=False
        ),
    ] = None,
    channel: Annotated[str, typer.Option(help="Channel to use.")] = "bench",
    connections: Annotated[
        int, typer.Option(min=1, max=20000, help="Subscriber connections to open.")
    ] = 1000,
    rate: Annotated[
        float, typer.Option(min=0, max=100000, help="Publications per second; 0: as fast as --window allows.")
    ] = 100,
    duration: Annotated[float, typer.Option(min=0.1, max=600, help="Seconds to publish for.")] = 10,
    window: Annotated[
        int,
        typer.Option(
            min=1, max=100000, help="Publications at most that some subscriber has not received yet."
        ),
    ] = 100,
    payload: Annotated[
        int, typer.Option(min=0, max=60000, help="Extra bytes of padding in each publication.")
    ] = 0,
) -> None:
    """Measure a livehub running on this machine: N subscribers, one publisher, the latency.

    Opens --connections subscriber connections to CHANNEL, then publishes through the server
    HTTP API at --rate for --duration seconds, each publication carrying the time it was
    sent. Prints the connect rate, the publications and deliveries per second, the latency
    from publish to receipt (p50, p90, p99, max) and how many deliveries were lost.

    Only loopback addresses are accepted: this is a tool to size a server you run, not
    to load someone else's. Tokens are minted from --config (or --secret); the server must
    let the clients subscribe to CHANNEL. One Python process drives every connection, so
    at high delivery rates the numbers are a lower bound on what the server can do.
    """
    settings = _settings(config)
    if url is None:
        url = server_urls(settings)[0] if config else "ws://localhost:8000/connection/websocket"
    if urlsplit(url).scheme not in ("ws", "wss"):
        _fail(f"--url must be a ws:// URL, got {url!r}", 2)
    api_url = api_url or api_url_for(url, settings.http_api.handler_prefix)
    for u in (url, api_url):
        host = urlsplit(u).hostname or ""
        if not is_loopback(host):
            _fail(f"bench only targets this machine: {host or u!r} is not a loopback address", 2)
    key = api_key if api_key is not None else settings.http_api.key
    conn_secret = secret or settings.client.token.hmac_secret_key
    sub_secret = secret or subscription_secret(settings)
    ttl = int(duration) + 600
    opts = BenchOptions(
        ws_url=url,
        api_url=api_url,
        channel=channel,
        connections=connections,
        rate=rate,
        duration=duration,
        window=window,
        payload=payload,
        api_key=key,
        token=mint_token(conn_secret, "livehub-bench", ttl=ttl) if conn_secret else "",
        sub_token=mint_token(sub_secret, "livehub-bench", channel=channel, ttl=ttl) if sub_secret else "",
    )
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def report(phase: str, done: float, result: BenchResult) -> None:
            if phase not in tasks:
                total = connections if phase == "connect" else 1.0
                tasks[phase] = progress.add_task(phase, total=total, detail="")
            if phase == "connect":
                detail = f"{result.connect_failures} failed" if result.connect_failures else ""
            elif phase == "publish":
                detail = f"{result.published} published"
            else:
                detail = ""
            progress.update(tasks[phase], completed=done, detail=detail)

        try:
            result = asyncio.run(Bench(opts, report).run())
        except BenchError as exc:
            progress.stop()
            _fail(str(exc))
        except KeyboardInterrupt:
            progress.stop()
            err.print("interrupted")
            raise typer.Exit(130) from None
    _print_bench(opts, result)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _print_bench(opts: BenchOptions, r: BenchResult) -> None:
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"livehub bench: {opts.connections} subscribers on {opts.channel!r}, {opts.duration:g} s")
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    failed = f" ({r.connect_failures} failed: {r.first_connect_error})" if r.connect_failures else ""
    table.add_row("connections", f"{r.connections}{failed}")
    table.add_row("connect rate", f"{r.connections / r.connect_seconds if r.connect_seconds else 0:,.0f}/s")
    errors = f" ({r.publish_errors} errors: {r.first_publish_error})" if r.publish_errors else ""
    table.add_row("publications", f"{r.published}{errors}")
    pub_rate = r.published / r.publish_seconds if r.publish_seconds else 0
    table.add_row("publish rate", f"{pub_rate:,.1f}/s")
    table.add_row("deliveries", f"{r.delivered:,}")
    table.add_row("deliveries/s", f"{r.delivered / r.publish_seconds if r.publish_seconds else 0:,.0f}")
    for p in (50, 90, 99):
        table.add_row(f"latency p{p}", _ms(r.latency.percentile(p)))
    table.add_row("latency max", _ms(r.latency.max))
    table.add_row("lost", str(r.lost))
    if r.duplicates:
        table.add_row("duplicates", str(r.duplicates))
    if r.disconnected:
        table.add_row("disconnected", str(r.disconnected))
    if r.stalled:
        table.add_row("stalled", "yes: subscribers stopped receiving for 5 s")
    out.print(table)


def main() -> None:
    app(prog_name="livehub")


if __name__ == "__main__":
    main()
