"""``livehub bench``: drive the load generator (``livehub.cli.loadgen``) against a livehub on this
machine, with a progress bar, and print what it measured."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from livehub.cli.common import (
    DEFAULT_WS_URL,
    ApiKeyOption,
    ConfigOption,
    err,
    fail,
    read_settings,
    server_urls,
)
from livehub.cli.loadgen import Bench, BenchError, BenchOptions, BenchResult
from livehub.cli.tokens import mint_token, signing_keys

commands = typer.Typer()


def api_url_for(ws_url: str, prefix: str = "/api") -> str:
    """The HTTP API next to a WebSocket endpoint: same host and port, path ``prefix``."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, prefix.rstrip("/"), "", ""))


def is_loopback(host: str) -> bool:
    """True if ``host`` is a loopback address or a name resolving only to loopback addresses."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


@commands.command(
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
    api_key: ApiKeyOption = None,
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
    settings = read_settings(config)
    if url is None:
        url = server_urls(settings)[0] if config else DEFAULT_WS_URL
    if urlsplit(url).scheme not in ("ws", "wss"):
        fail(f"--url must be a ws:// URL, got {url!r}", 2)
    api_url = api_url or api_url_for(url, settings.http_api.handler_prefix)
    for u in (url, api_url):
        host = urlsplit(u).hostname or ""
        if not is_loopback(host):
            fail(f"bench only targets this machine: {host or u!r} is not a loopback address", 2)
    key = api_key if api_key is not None else settings.http_api.key
    conn_secret, sub_secret = signing_keys(settings, secret)
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
            fail(str(exc))
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
