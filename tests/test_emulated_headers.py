"""Headers emulation (Centrifugo v6, with 6.9's allow-list): headers an SDK sends inside its
``connect`` command reach the app's ``on_connect`` dependencies and the ``Client`` handle as
request headers, if ``client.emulated_headers`` lists them; a real header of the same name
wins. And the unidirectional transports embedded in an app (``hub.router``), under plain
uvicorn (the ASGI routes) and under livehub's protocol (``livehub run``), with ``on_connect``.
Real servers on loopback sockets; raw WebSocket and streaming HTTP clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
import websockets
from centrifuge.protocol import client_pb2 as pb
from fastapi import FastAPI, Header

from livehub import Client, ConnectResult, Error, Hub, Settings
from livehub.protocol.commands import ConnectParams, parse_command
from livehub.protocol.protobuf import decode_frame, delimited
from tests.test_connection import running, served_by_livehub

WAIT = 5.0


def headers_app(**client: Any) -> tuple[FastAPI, Hub]:
    """An app whose users are named by the ``X-Token`` header (a real or an emulated one)."""
    settings = Settings(
        client=client,
        uni_websocket={"enabled": True},
        uni_sse={"enabled": True},
        uni_http_stream={"enabled": True},
    )
    hub = Hub(settings)
    app = FastAPI()
    app.include_router(hub.router)

    @hub.on_connect
    async def connect(x_token: Annotated[str | None, Header()] = None) -> ConnectResult | None:
        return ConnectResult(user=x_token, channels=["news"]) if x_token else None

    @hub.rpc("whoami")
    async def whoami(
        client: Client, request: Any, x_token: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        return {
            "user": client.user,
            "transport": client.transport,
            "x_token": x_token,
            "headers": {k: v for k, v in client.headers.items() if k.startswith("x-")},
        }

    return app, hub


@asynccontextmanager
async def serving(app: FastAPI, own_protocol: bool) -> AsyncIterator[int]:
    server = (
        served_by_livehub(app) if own_protocol else uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    )
    async with running(server) as port:
        yield port


async def call(ws: Any, command: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(command))
    while True:
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if reply.get("id") == command["id"]:
            return reply


async def closed_with(ws: Any) -> int | None:
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    return ws.close_code


BOTH = pytest.mark.parametrize("own_protocol", [True, False], ids=["livehub-protocol", "plain-uvicorn"])


# -- parsing


def test_the_connect_commands_headers_are_parsed_in_json_and_protobuf() -> None:
    command = parse_command({"id": 1, "connect": {"headers": {"X-Token": "alice"}}})
    assert command.request == ConnectParams(headers={"X-Token": "alice"})
    frame = pb.Command(id=1, connect=pb.ConnectRequest(headers={"X-Token": "alice"})).SerializeToString()
    assert decode_frame(delimited(frame))[0].request == ConnectParams(headers={"X-Token": "alice"})
    from livehub.protocol.codes import Disconnect

    with pytest.raises(Disconnect):  # header values are strings
        parse_command({"id": 1, "connect": {"headers": {"X-Token": 1}}})


def test_emulated_headers_setting_is_lowercased_and_checked() -> None:
    assert Settings(client={"emulated_headers": ["X-Token", "Authorization"]}).client.emulated_headers == [
        "x-token",
        "authorization",
    ]
    with pytest.raises(ValueError, match="not header names"):
        Settings(client={"emulated_headers": ["bad header"]})


# -- bidirectional WebSocket: what on_connect and the Client see


@BOTH
async def test_an_allowed_emulated_header_reaches_on_connect_and_the_client(own_protocol: bool) -> None:
    app, _ = headers_app(emulated_headers=["X-Token"])
    async with serving(app, own_protocol) as port:
        url = f"ws://127.0.0.1:{port}/connection/websocket"
        async with websockets.connect(url) as ws:
            connect = {"headers": {"X-Token": "alice", "X-Admin": "yes"}}
            reply = await call(ws, {"id": 1, "connect": connect})
            assert "news" in reply["connect"]["subs"]
            who = (await call(ws, {"id": 2, "rpc": {"method": "whoami"}}))["rpc"]["data"]
            # X-Admin is not allowed: dropped, for on_connect and every later callback
            assert who == {
                "user": "alice",
                "transport": "websocket",
                "x_token": "alice",
                "headers": {"x-token": "alice"},
            }


@BOTH
async def test_a_header_not_allowed_is_dropped_and_a_real_header_wins(own_protocol: bool) -> None:
    app, _ = headers_app(emulated_headers=["x-token"])
    async with serving(app, own_protocol) as port:
        url = f"ws://127.0.0.1:{port}/connection/websocket"
        async with websockets.connect(url) as ws:  # only a header outside the list: no user
            await ws.send(json.dumps({"id": 1, "connect": {"headers": {"X-Other": "alice"}}}))
            assert await closed_with(ws) == 3501
        async with websockets.connect(url, additional_headers={"X-Token": "bob"}) as ws:
            reply = await call(ws, {"id": 1, "connect": {"headers": {"X-Token": "mallory"}}})
            assert "connect" in reply
            who = (await call(ws, {"id": 2, "rpc": {"method": "whoami"}}))["rpc"]["data"]
            assert who["user"] == "bob" and who["headers"] == {"x-token": "bob"}


@BOTH
async def test_without_the_allow_list_emulated_headers_are_ignored(own_protocol: bool) -> None:
    app, _ = headers_app()
    async with serving(app, own_protocol) as port:
        url = f"ws://127.0.0.1:{port}/connection/websocket"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"headers": {"X-Token": "alice"}}}))
            assert await closed_with(ws) == 3501
        async with websockets.connect(url, additional_headers={"X-Token": "carol"}) as ws:
            assert "connect" in await call(ws, {"id": 1, "connect": {}})
            who = (await call(ws, {"id": 2, "rpc": {"method": "whoami"}}))["rpc"]["data"]
            assert who["user"] == "carol"


# -- unidirectional transports embedded in the app


async def next_message(receive: Any) -> dict[str, Any]:
    while True:
        text = await asyncio.wait_for(receive(), WAIT)
        text = text.removeprefix("data: ").strip() if isinstance(text, str) else text
        if text and text != "{}":
            message: dict[str, Any] = json.loads(text)
            return message


@BOTH
async def test_uni_websocket_embedded_with_on_connect(own_protocol: bool) -> None:
    app, hub = headers_app(emulated_headers=["x-token"])
    async with serving(app, own_protocol) as port:
        url = f"ws://127.0.0.1:{port}/connection/uni_websocket"
        async with websockets.connect(url, additional_headers={"X-Token": "dana"}) as ws:
            await ws.send("{}")
            connect = (await next_message(ws.recv))["connect"]
            assert set(connect["subs"]) == {"news"}
            await hub.publish("news", {"n": 1})
            await hub.publish("news", {"n": 2})
            assert (await next_message(ws.recv))["pub"]["data"] == {"n": 1}
            assert (await next_message(ws.recv))["pub"]["data"] == {"n": 2}  # one message per frame
            [client] = hub.connections("dana")
            assert client.transport == "uni_websocket"
        # the connect request's own headers, allowed: the same as an SDK's
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"headers": {"x-token": "emil"}}))
            assert "connect" in await next_message(ws.recv)
            assert [c.user for c in hub.connections()] == ["emil"]
        with pytest.raises(websockets.InvalidStatus) as refused:  # a bad cf_connect
            async with websockets.connect(url + "?cf_connect=%7Bnope"):
                pass
        assert refused.value.response.status_code == 400


@BOTH
@pytest.mark.parametrize("transport", ["uni_http_stream", "uni_sse"])
async def test_uni_http_embedded_with_on_connect(own_protocol: bool, transport: str) -> None:
    app, hub = headers_app()
    async with serving(app, own_protocol) as port:
        url = f"http://127.0.0.1:{port}/connection/{transport}"
        async with (
            httpx.AsyncClient(timeout=WAIT) as http,
            http.stream("POST", url, content=b"{}", headers={"X-Token": "fay"}) as response,
        ):
            lines = response.aiter_lines()
            assert set((await next_message(lines.__anext__))["connect"]["subs"]) == {"news"}
            await hub.publish("news", {"n": 3})
            assert (await next_message(lines.__anext__))["pub"]["data"] == {"n": 3}
            [client] = hub.connections("fay")
            assert client.transport == transport and client.headers["x-token"] == "fay"
        async with asyncio.timeout(WAIT):  # the client went away: the session ends
            while hub.connections():  # noqa: ASYNC110 -- nothing to wait on but the node's state
                await asyncio.sleep(0.02)


@pytest.mark.parametrize("mapped", [True, False])
async def test_a_refused_unidirectional_connect_ends_with_the_mapped_disconnect(mapped: bool) -> None:
    """on_connect refuses with error 101: no error reply for a unidirectional client, the
    stream ends with client.connect_code_to_unidirectional_disconnect's code (3004 unmapped)."""
    transforms = [{"code": 101, "to": {"code": 4501, "reason": "unauthorized"}}]
    settings = Settings(
        uni_http_stream={"enabled": True},
        client={"connect_code_to_unidirectional_disconnect": {"enabled": mapped, "transforms": transforms}},
    )
    hub = Hub(settings)
    app = FastAPI()
    app.include_router(hub.router)

    @hub.on_connect
    async def refuse() -> None:
        raise Error(101, "unauthorized")

    async with serving(app, own_protocol=True) as port:
        url = f"http://127.0.0.1:{port}/connection/uni_http_stream"
        async with (
            httpx.AsyncClient(timeout=WAIT) as http,
            http.stream("POST", url, content=b"{}") as response,
        ):
            lines = [json.loads(line) async for line in response.aiter_lines() if line.strip()]
    expected = (
        {"code": 4501, "reason": "unauthorized"}
        if mapped
        else {"code": 3004, "reason": "internal server error"}
    )
    assert lines == [{"disconnect": expected}]


async def test_hub_test_client_sends_emulated_headers() -> None:
    from livehub.testing import ConnectionClosed, HubTestClient

    app, _ = headers_app(emulated_headers=["x-token"])
    async with HubTestClient(app) as hub_client:
        alice = await hub_client.connect(connect_headers={"X-Token": "alice"})
        assert (await alice.rpc("whoami", {}))["user"] == "alice"
        with pytest.raises(ConnectionClosed) as refused:  # no credentials: 3501
            await hub_client.connect(connect_headers={"X-Not-Listed": "alice"})
        assert refused.value.code == 3501


def test_emulated_scope_keeps_allowed_names_under_real_headers_and_drops_what_a_header_cannot_be() -> None:
    from livehub.core.headers import MAX_EMULATED, emulated_scope

    scope = {"type": "websocket", "headers": [(b"x-token", b"real")], "query_string": b""}
    sent = {
        "X-Token": "emulated",
        "Authorization": "Bearer t",
        "X-Bad": "a\r\nb",
        "X-Wide": "é€",
        "X-No": "1",
    }
    allowed = ["x-token", "authorization", "x-bad", "x-wide"]
    out = emulated_scope(scope, sent, allowed)
    assert out is not None and out is not scope and scope["headers"] == [(b"x-token", b"real")]
    assert out["headers"] == [(b"x-token", b"real"), (b"authorization", b"Bearer t")]
    assert emulated_scope(scope, {"X-No": "1"}, allowed) is scope  # nothing kept: the same scope
    many = {f"x-h{i}": "v" for i in range(MAX_EMULATED + 10)}
    kept = emulated_scope(None, many, list(many))
    assert kept is not None and len(kept["headers"]) == MAX_EMULATED


def test_proxies_forward_real_headers_only() -> None:
    """Centrifugo 6.9: a proxy's http_headers carries the handshake's headers, never emulated
    ones (which the callbacks in process see when client.emulated_headers lists them)."""
    from livehub.core.headers import emulated_scope
    from livehub.core.proxy import forwarded_headers
    from livehub.settings import ProxySettings

    scope = {"type": "websocket", "headers": [(b"x-real", b"1")], "query_string": b""}
    out = emulated_scope(scope, {"X-Token": "alice"}, ["x-token"])
    assert out is not None and (b"x-token", b"alice") in out["headers"]
    proxy = ProxySettings(endpoint="http://127.0.0.1:9/connect", http_headers=["x-real", "x-token"])
    assert forwarded_headers(proxy, out) == {"x-real": "1"}
