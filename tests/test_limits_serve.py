"""Limits end to end: ``livehub serve`` (the socket-level endpoint) and the ASGI route under a
plain uvicorn, over real sockets. Each limit refuses what it should, with the answer
Centrifugo gives, counts it in ``/metrics``, and lets the rest through."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
import websockets
from fastapi import FastAPI

from livehub import Hub, Settings
from tests.servers import free_port, serve

SECRET = "limits-test-secret-that-is-32-bytes-long"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/connection/websocket"


async def connected(port: int, **kwargs: Any) -> websockets.ClientConnection:
    ws = await websockets.connect(url(port), **kwargs)
    await ws.send('{"id":1,"connect":{}}')
    assert '"connect"' in await asyncio.wait_for(ws.recv(), 5)
    return ws


async def refused_status(port: int, **kwargs: Any) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url(port), **kwargs)
    return refused.value.response.status_code


def metric(port: int, name: str, **labels: str) -> float:
    """One sample of ``/metrics`` (0 when absent)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name + ("{" + selector + "}" if selector else "")) + r" (\S+)"
    found = re.search("^" + pattern + "$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def until_closed(ws: websockets.ClientConnection) -> tuple[int, list[str]]:
    """Read frames until the server closes; its close code and what came before."""
    frames: list[str] = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(5):
            while True:
                frames.append(str(await ws.recv()))
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, frames


def replies(frames: list[str]) -> dict[int, dict[str, Any]]:
    out = {}
    for frame in frames:
        for line in frame.splitlines():
            message = json.loads(line)
            if "id" in message:
                out[message["id"]] = message
    return out


# -- connection limits at the upgrade (livehub serve)


async def test_connection_limit_refuses_with_503_and_counts_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[client]\ninsecure = true\nconnection_limit = 2\n")
    with serve(config) as port:
        a, b = await connected(port), await connected(port)
        assert await refused_status(port) == 503
        assert metric(port, "livehub_client_limit_refusals_total", reason="connection_limit") == 1
        assert metric(port, "centrifugo_node_client_connection_limit_total") == 1
        await a.close()
        async with asyncio.timeout(5):  # the slot comes back once the server saw the close
            while True:
                try:
                    c = await connected(port)
                    break
                except websockets.InvalidStatus:
                    await asyncio.sleep(0.05)
        await b.close()
        await c.close()


async def test_connection_limit_per_ip(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[client]\ninsecure = true\nconnection_limit_per_ip = 1\n")
    with serve(config) as port:
        a = await connected(port)
        assert await refused_status(port) == 503
        assert metric(port, "livehub_client_limit_refusals_total", reason="connection_limit_per_ip") == 1
        await a.close()


async def test_connection_rate_limit(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[client]\ninsecure = true\nconnection_rate_limit = 3\n")
    with serve(config) as port:
        statuses = []
        opened = []
        for _ in range(8):  # far faster than 3 a second
            try:
                opened.append(await websockets.connect(url(port)))
                statuses.append(101)
            except websockets.InvalidStatus as exc:
                statuses.append(exc.response.status_code)
        assert statuses[:3] == [101, 101, 101]
        assert 503 in statuses[3:]
        assert metric(port, "livehub_client_limit_refusals_total", reason="connection_rate_limit") >= 1
        await asyncio.sleep(1.1)  # the bucket refills
        opened.append(await connected(port))
        for ws in opened:
            await ws.close()


# -- origin


async def test_empty_allowed_origins_refuses_every_browser_origin(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[client]\ninsecure = true\n")
    with serve(config) as port:
        # the page's origin is this very host: still refused (DNS rebinding looks exactly so)
        same_host = websockets.Origin(f"http://127.0.0.1:{port}")
        assert await refused_status(port, origin=same_host) == 403
        assert metric(port, "livehub_client_limit_refusals_total", reason="origin") == 1
        ws = await connected(port)  # no Origin: not a browser, not concerned
        await ws.close()


async def test_allowed_origin_glob_admits_any_port(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[client]\ninsecure = true\nallowed_origins = ["http://127.0.0.1:*"]\n')
    with serve(config) as port:
        ws = await connected(port, origin=websockets.Origin(f"http://127.0.0.1:{port}"))
        await ws.close()
        assert await refused_status(port, origin=websockets.Origin("http://localhost:1")) == 403


# -- command rate limits


RATE_LIMITED = """
[client]
insecure = true
[client.rate_limit.client_command]
enabled = true
[client.rate_limit.client_command.publish]
enabled = true
buckets = [{interval = "1s", rate = 5}]
[client.rate_limit.client_command.default]
enabled = true
buckets = [{interval = "1s", rate = 100}]
"""


async def test_commands_over_their_rate_get_111_and_do_nothing(tmp_path: Path) -> None:
    with serve(write_config(tmp_path, RATE_LIMITED)) as port:
        watcher = await websockets.connect(url(port))
        await watcher.send('{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"news"}}')
        async with asyncio.timeout(5):
            got = ""
            while '"id":2' not in got:
                got += str(await watcher.recv())
        sender = await connected(port)
        publish = '{{"id":{0},"publish":{{"channel":"news","data":{{"n":{0}}}}}}}'
        publishes = "\n".join(publish.format(i) for i in range(2, 14))
        await sender.send(publishes)
        answers: dict[int, dict[str, Any]] = {}
        async with asyncio.timeout(5):
            while len(answers) < 12:
                answers.update(replies([str(await sender.recv())]))
        errors = [i for i, a in answers.items() if a.get("error", {}).get("code") == 111]
        assert len(errors) == 7 and all(i not in errors for i in range(2, 7))
        assert all(answers[i]["error"]["temporary"] for i in errors)
        # the watcher got the 5 that were allowed, and nothing of the 7 refused
        pubs: list[int] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                while True:
                    for line in str(await watcher.recv()).splitlines():
                        message = json.loads(line)
                        if "pub" in message.get("push", {}):
                            pubs.append(message["push"]["pub"]["data"]["n"])
        assert sorted(pubs) == [2, 3, 4, 5, 6]
        # other commands have their own bucket (default): not refused
        await sender.send('{"id":50,"presence_stats":{"channel":"news"}}')
        reply = json.loads(await asyncio.wait_for(sender.recv(), 5))
        assert reply["id"] == 50 and reply.get("error", {}).get("code") != 111
        assert metric(port, "livehub_client_limit_refusals_total", reason="command_rate_limit") == 7
        await sender.close()
        await watcher.close()


async def test_a_flooding_connection_is_closed_with_3013(tmp_path: Path) -> None:
    with serve(write_config(tmp_path, RATE_LIMITED)) as port:
        flooder = await connected(port)
        # 100/s is the largest rate: past 1000 refusals within a second the connection is closed
        frame = "\n".join(f'{{"id":{i},"publish":{{"channel":"x","data":{{}}}}}}' for i in range(2, 1202))
        await flooder.send(frame)
        code, frames = await until_closed(flooder)
        assert code == 3013
        assert sum(1 for a in replies(frames).values() if a.get("error", {}).get("code") == 111) >= 1000
        assert metric(port, "livehub_client_limit_refusals_total", reason="command_flood") == 1
        calm = await connected(port)  # the node serves others meanwhile
        await calm.close()


# -- channel limit at connect


def token(channels: list[str]) -> str:
    return jwt.encode({"sub": "u1", "channels": channels}, SECRET, algorithm="HS256")


async def test_token_channels_over_channel_limit_close_with_3505(tmp_path: Path) -> None:
    config = f"""
[client]
channel_limit = 3
[client.token]
hmac_secret_key = "{SECRET}"
[channel.without_namespace]
allow_subscribe_for_client = true
"""
    with serve(write_config(tmp_path, config)) as port:
        ws = await websockets.connect(url(port))
        many = [f"c{i}" for i in range(1000)]
        await ws.send(json.dumps({"id": 1, "connect": {"token": token(many)}}))
        code, frames = await until_closed(ws)
        assert code == 3505 and not frames  # no connect reply, no channel joined
        assert metric(port, "livehub_client_limit_refusals_total", reason="channel_limit") == 1
        assert metric(port, "centrifugo_node_num_channels") == 0
        ws = await websockets.connect(url(port))
        await ws.send(json.dumps({"id": 1, "connect": {"token": token(["a", "b", "c"])}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert sorted(reply["connect"]["subs"]) == ["a", "b", "c"]
        await ws.close()


# -- the ASGI route (a plain uvicorn: no livehub protocol)


@contextlib.asynccontextmanager
async def asgi_server(settings: dict[str, Any], calls: list[str]) -> AsyncIterator[int]:
    hub = Hub(Settings(**settings))
    app = FastAPI()
    app.include_router(hub.router)

    async def hook(scope: dict[str, Any]) -> None:
        calls.append("hook")  # app code: must not run for a refused connection
        return None

    hub.node.connect_hook = hook
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
                await asyncio.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        await task


async def test_asgi_route_checks_origin_and_limits_before_app_code() -> None:
    calls: list[str] = []
    settings = {"client": {"insecure": True, "connection_limit": 1}}
    async with asgi_server(settings, calls) as port:
        refused = await refused_status(port, origin=websockets.Origin(f"http://127.0.0.1:{port}"))
        assert refused == 403 and calls == []
        ws = await connected(port)
        assert calls == ["hook"]
        assert await refused_status(port) == 503
        assert calls == ["hook"]
        await ws.close()
        async with asyncio.timeout(5):
            while True:
                try:
                    again = await connected(port)
                    break
                except websockets.InvalidStatus:
                    await asyncio.sleep(0.05)
        await again.close()


FLOOD_GUARDED = """
[client]
insecure = true
[client.rate_limit.client_command]
enabled = true
[client.rate_limit.client_command.total]
enabled = true
buckets = [{interval = "1s", rate = 20}]
[client.rate_limit.client_command.publish]
enabled = true
buckets = [{interval = "1s", rate = 10}]
"""
# (low rates: the flood rule — refusals in one second past 10x the largest rate, here 200 — is
# then passed however slowly a loaded machine answers the flooder's commands)


async def test_others_get_every_message_while_one_client_floods(tmp_path: Path) -> None:
    """The regression of the chaos figure (bench/chaos_flood.py), small: a flooder is answered
    111 and closed with 3013 (again after each reconnect), and a steady stream reaches its
    subscriber whole and in order meanwhile."""
    with serve(write_config(tmp_path, FLOOD_GUARDED)) as port:
        watcher = await websockets.connect(url(port))
        await watcher.send('{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"news"}}')
        async with asyncio.timeout(5):
            got = ""
            while '"id":2' not in got:
                got += str(await watcher.recv())
        publisher = await connected(port)
        flood_frame = "\n".join(
            '{"id":' + str(i) + ',"publish":{"channel":"spam","data":{}}}' for i in range(2, 202)
        )
        flooder_stats = {"111": 0, "3013": 0}
        stop = asyncio.Event()

        async def flooder() -> None:
            for _ in range(20):  # reconnects, bounded
                if stop.is_set():
                    return
                ws = await connected(port, close_timeout=0.1)
                try:
                    while not stop.is_set():
                        await ws.send(flood_frame)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.001):
                                flooder_stats["111"] += str(await ws.recv()).count('"code":111')
                except websockets.ConnectionClosed as exc:
                    if exc.rcvd is not None and exc.rcvd.code == 3013:
                        flooder_stats["3013"] += 1
                finally:
                    await ws.close()

        async def stream() -> None:
            for n in range(30):  # 8 a second: under the publish limit (10/s)
                await publisher.send(f'{{"id":{n + 10},"publish":{{"channel":"news","data":{{"n":{n}}}}}}}')
                await asyncio.sleep(0.125)

        flooding = asyncio.create_task(flooder())
        await asyncio.sleep(0.3)  # the flood is on before the stream starts
        await stream()
        received: list[int] = []
        async with asyncio.timeout(10):
            while len(received) < 30:
                for line in str(await watcher.recv()).splitlines():
                    push = json.loads(line).get("push", {})
                    if "pub" in push:
                        received.append(push["pub"]["data"]["n"])
        stop.set()
        await flooding
        assert received == list(range(30))
        assert flooder_stats["111"] > 0 and flooder_stats["3013"] >= 1
        assert metric(port, "livehub_client_limit_refusals_total", reason="command_flood") >= 1
        await publisher.close()
        await watcher.close()


USER_LIMITED = f"""
[client.token]
hmac_secret_key = "{SECRET}"
[client.rate_limit.user_command]
enabled = true
[client.rate_limit.user_command.publish]
enabled = true
buckets = [{{interval = "60s", rate = 3}}]
[[channel.namespaces]]
name = "open"
allow_publish_for_client = true
"""


async def test_user_command_limit_is_shared_by_a_users_connections_on_the_memory_engine(
    tmp_path: Path,
) -> None:
    """With the memory engine the buckets of ``user_command`` live in the node: both of a
    user's connections take from them; another user has their own."""

    def user_token(user: str) -> str:
        return jwt.encode({"sub": user}, SECRET, algorithm="HS256")

    async def as_user(port: int, user: str) -> websockets.ClientConnection:
        ws = await websockets.connect(url(port))
        await ws.send(json.dumps({"id": 1, "connect": {"token": user_token(user)}}))
        assert '"connect"' in str(await asyncio.wait_for(ws.recv(), 5))
        return ws

    async def codes(ws: websockets.ClientConnection, ids: range) -> list[int]:
        frame = "\n".join(json.dumps({"id": i, "publish": {"channel": "open:x", "data": {}}}) for i in ids)
        await ws.send(frame)
        answers: dict[int, dict[str, Any]] = {}
        async with asyncio.timeout(5):
            while len(answers) < len(ids):
                answers.update(replies([str(await ws.recv())]))
        return [answers[i].get("error", {}).get("code", 0) for i in ids]

    with serve(write_config(tmp_path, USER_LIMITED)) as port:
        first, second, other = (
            await as_user(port, "alice"),
            await as_user(port, "alice"),
            await as_user(port, "bob"),
        )
        assert await codes(first, range(2, 4)) == [0, 0]
        assert await codes(second, range(2, 4)) == [0, 111]
        assert await codes(other, range(2, 5)) == [0, 0, 0]
        assert metric(port, "livehub_client_limit_refusals_total", reason="user_command_rate_limit") == 1
        for ws in (first, second, other):
            await ws.close()
