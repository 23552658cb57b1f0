"""``livehub publish`` (through the server HTTP API) and ``livehub sub`` (a WebSocket client
printing a channel's publications, like tail -f)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from websockets.exceptions import ConnectionClosed

from livehub.cli.common import (
    DEFAULT_WS_URL,
    ApiKeyOption,
    ConfigOption,
    err,
    fail,
    parse_json,
    read_settings,
    server_urls,
)
from livehub.cli.tokens import mint_token, signing_keys, token_user
from livehub.cli.wsclient import ClientRefused, decode_frame, open_client

commands = typer.Typer()


@commands.command(
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
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Publish DATA into CHANNEL through the server HTTP API; prints the offset and epoch.

    Every subscriber of CHANNEL receives DATA. When the channel keeps history, the reply
    holds the publication's position in the stream: its offset and the stream's epoch.
    The API key is the server's http_api.key: give it with --api-key, or give the server's
    config file with --config, which also tells where the server listens.
    """
    payload = parse_json(data, "DATA")
    settings = read_settings(config)
    key = api_key if api_key is not None else settings.http_api.key
    prefix = settings.http_api.handler_prefix.rstrip("/")
    if url is None:
        endpoint = server_urls(settings)[1] if config else "http://localhost:8000" + prefix
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            fail(f"--url must be an http:// or https:// URL, got {url!r}", 2)
        endpoint = url.rstrip("/") if parts.path.strip("/") else url.rstrip("/") + prefix
    headers = {"X-API-Key": key} if key else {}
    try:
        response = httpx.post(
            f"{endpoint}/publish", json={"channel": channel, "data": payload}, headers=headers, timeout=10
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach the server API at {endpoint}: {exc}")
    if response.status_code == 401:
        fail(
            f"the server rejected the API key (HTTP 401 from {endpoint}): "
            + ("wrong key; " if key else "no key given; ")
            + "pass the server's http_api.key with --api-key or its config with --config"
        )
    if response.status_code != 200:
        fail(f"HTTP {response.status_code} from {endpoint}/publish: {response.text[:300]}")
    try:
        reply = response.json()
    except ValueError:
        fail(f"{endpoint}/publish did not answer JSON: {response.text[:300]!r}")
    if not isinstance(reply, dict):
        fail(f"unexpected reply from {endpoint}/publish: {reply!r}")
    error = reply.get("error")
    if error:
        fail(f"the server refused: error {error.get('code')}: {error.get('message')}")
    result = reply.get("result") or {}
    if "offset" in result or "epoch" in result:
        print(f"published to {channel}: offset {result.get('offset', 0)}, epoch {result.get('epoch', '')}")
    else:
        print(f"published to {channel} (the channel keeps no history: no offset)")


@commands.command(
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
        settings = read_settings(config)
        conn_secret, sub_secret = signing_keys(settings, secret)
        if url is None and config is not None:
            url = server_urls(settings)[0]
        if token is None:
            if conn_secret:
                token = mint_token(conn_secret, user)
            elif not (settings.client.insecure or settings.client.allow_anonymous_connect_without_token):
                fail(f"{config} has no client.token.hmac_secret_key to mint a token with: pass --token", 2)
    if sub_token is None and sub_secret:
        # a subscription token must name the connection's user: anonymous without a token
        sub_user = token_user(token) if token else ""
        sub_token = mint_token(sub_secret, sub_user, channel=channel)
    url = url or DEFAULT_WS_URL
    if urlsplit(url).scheme not in ("ws", "wss"):
        fail(f"--url must be a ws:// or wss:// URL, got {url!r}", 2)
    tail = _Tail(url, channel, token or "", sub_token or "", count, raw, timeout)
    raise typer.Exit(asyncio.run(tail.main()))


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
        except ClientRefused as exc:
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
