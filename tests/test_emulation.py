"""HTTP-streaming and SSE with bidirectional emulation (``livehub.transports.emulation`` and
``livehub.transports.streaming``), served by uvicorn in this process through real sockets:
the wire format of both streams, ``/emulation`` and its refusals, the limits, a client that
never reads, the disconnect push, and the hub embedded in an app. The official SDK runs
against them in tests/peers/test_node_emulation.py, across two nodes too."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Header

from livehub import Client, Hub, Settings
from livehub.app import create_app
from livehub.core.control import COMMANDS, Emulate, Target, command_from_wire
from livehub.core.node import Node
from livehub.protocol import protobuf
from livehub.protocol.protobuf import delimited
from livehub.transports.streaming import DELIMITED, INBOX_LIMIT, NDJSON, SSE, StreamConnection
from tests.test_connection import running, served_by_livehub
from tests.test_session import eventually

STREAMING = {"http_stream": {"enabled": True}, "sse": {"enabled": True}}
WAIT = 5.0


def settings(**extra: Any) -> Settings:
    base: dict[str, Any] = {
        "client": {"insecure": True, "allowed_origins": ["http://allowed.example"]},
        "channel": {"without_namespace": {"presence": True, "history_size": 10, "history_ttl": "60s"}},
        "http_api": {"insecure": True},
        "prometheus": {"enabled": True},
        **STREAMING,
    }
    for key, value in extra.items():
        base[key] = {**base.get(key, {}), **value}
    return Settings(**base)


@asynccontextmanager
async def served(s: Settings) -> AsyncIterator[tuple[str, Node]]:
    """The standalone app on a free port, as ``livehub serve`` runs it: (base URL, node)."""
    app = create_app(s)
    async with running(served_by_livehub(app)) as port:
        yield f"http://127.0.0.1:{port}", app.state.node


class Stream:
    """A streaming response read message by message (NDJSON lines or SSE events)."""

    def __init__(self, response: httpx.Response, sse: bool) -> None:
        self.response = response
        self.sse = sse
        self._lines = response.aiter_lines()

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                line = await anext(self._lines)
                if self.sse:
                    if not line.startswith("data: "):
                        continue
                    line = line.removeprefix("data: ")
                if line.strip():
                    message: dict[str, Any] = json.loads(line)
                    return message

    async def reply(self, command_id: int) -> dict[str, Any]:
        while True:
            message = await self.next()
            if message.get("id") == command_id:
                return message


@asynccontextmanager
async def stream(
    http: httpx.AsyncClient, base: str, kind: str, connect: dict[str, Any], **kwargs: Any
) -> AsyncIterator[tuple[Stream, dict[str, Any]]]:
    """Open an http_stream or SSE connection; yields it and its connect reply."""
    command = json.dumps({"id": 1, "connect": connect})
    if kind == "sse":
        request = http.stream("GET", f"{base}/connection/sse", params={"cf_connect": command}, **kwargs)
    elif kind == "sse_post":
        request = http.stream("POST", f"{base}/connection/sse", content=command, **kwargs)
    else:
        request = http.stream("POST", f"{base}/connection/http_stream", content=command, **kwargs)
    async with request as response:
        assert response.status_code == 200, response.status_code
        s = Stream(response, kind.startswith("sse"))
        yield s, await s.next()


async def emulate(
    http: httpx.AsyncClient, base: str, reply: dict[str, Any], *commands: dict[str, Any]
) -> int:
    result = reply["connect"]
    data = "\n".join(json.dumps(c) for c in commands)
    body = {"node": result["node"], "session": result["session"], "data": data}
    return (await http.post(f"{base}/emulation", json=body)).status_code


@pytest.mark.parametrize("kind", ["http_stream", "sse", "sse_post"])
async def test_a_session_over_a_stream_with_its_commands_through_emulation(kind: str) -> None:
    async with served(settings()) as (base, node), httpx.AsyncClient(timeout=WAIT) as http:
        async with stream(http, base, kind, {}) as (s, connected):
            result = connected["connect"]
            assert result["node"] == node.id
            assert result["session"] and result["session"] != result["client"]
            session = node.sessions[result["client"]]
            transport = kind.removesuffix("_post")
            assert Client.of(session).transport == transport
            assert await emulate(http, base, connected, {"id": 2, "subscribe": {"channel": "news"}}) == 204
            assert "subscribe" in await s.reply(2)
            await node.publish("news", b'{"n":1}')
            push = (await s.next())["push"]
            assert (push["channel"], push["pub"]["data"], push["pub"]["offset"]) == ("news", {"n": 1}, 1)
            assert (
                await emulate(
                    http,
                    base,
                    connected,
                    {"id": 3, "publish": {"channel": "news", "data": {"n": 2}}},
                    {"id": 4, "presence_stats": {"channel": "news"}},
                )
                == 204
            )
            replies = [await s.next() for _ in range(3)]
            assert {"id": 3, "publish": {}} in replies
            assert {"id": 4, "presence_stats": {"num_clients": 1, "num_users": 1}} in replies
            scraped = (await http.get(f"{base}/metrics")).text
            assert f'livehub_node_num_clients_by_transport{{transport="{transport}"}} 1.0' in scraped
        # the client went away: its session is over
        await eventually(lambda: not node.sessions, "the session to end with its stream")
        assert not node.stream_sessions


async def test_sse_events_and_the_disconnect_push_ending_the_stream() -> None:
    async with served(settings()) as (base, node), httpx.AsyncClient(timeout=WAIT) as http:
        command = json.dumps({"id": 1, "connect": {}})
        async with http.stream("GET", f"{base}/connection/sse", params={"cf_connect": command}) as response:
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"].startswith("private, no-cache")
            body = response.aiter_bytes()
            raw = b""
            while b"\n\n" not in raw:
                raw += await anext(body)
            assert raw.startswith(b'\r\ndata: {"id":1,"connect":{')
            reply = json.loads(raw.split(b"data: ", 1)[1].split(b"\n\n")[0])
            client = reply["connect"]["client"]
            reply_status = await http.post(
                f"{base}/api/disconnect",
                json={"user": "", "client": client, "disconnect": {"code": 4001, "reason": "bye"}},
            )
            assert reply_status.status_code == 200
            async with asyncio.timeout(WAIT):
                async for chunk in body:  # ends with the body
                    raw += chunk
            assert raw.endswith(b'data: {"push":{"disconnect":{"code":4001,"reason":"bye"}}}\n\n')


async def test_protobuf_http_stream_and_protobuf_emulation() -> None:
    async with served(settings()) as (base, node), httpx.AsyncClient(timeout=WAIT) as http:
        connect = delimited(bytes([0x08, 0x01, 0x22, 0x00]))  # Command{id: 1, connect: {}}
        headers = {"content-type": "application/octet-stream"}
        async with http.stream(
            "POST", f"{base}/connection/http_stream", content=connect, headers=headers
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/octet-stream"
            chunks = r.aiter_bytes()
            buf = await anext(chunks)
            n, pos = protobuf.read_varint(buf, 0)
            reply = protobuf._fields(buf[pos : pos + n])
            result = protobuf._fields(reply[5][0])  # Reply.connect
            client, session, node_id = (result[k][0].decode() for k in (1, 9, 10))  # type: ignore[union-attr]
            assert node_id == node.id and client in node.sessions
            # Command{id: 2, rpc: {method: "x"}} through a Protobuf EmulationRequest
            command = delimited(bytes([0x08, 0x02, 0x6A, 0x03, 0x12, 0x01]) + b"x")
            request = (
                bytes([0x0A, len(node_id)])
                + node_id.encode()
                + bytes([0x12, len(session)])
                + session.encode()
            )
            request += bytes([0x1A, len(command)]) + command
            answer = await http.post(f"{base}/emulation", content=request, headers=headers)
            assert answer.status_code == 204
            buf = await anext(chunks)
            n, pos = protobuf.read_varint(buf, 0)
            reply = protobuf._fields(buf[pos : pos + n])
            assert reply[1] == [2]
            assert protobuf._fields(reply[2][0])[1] == [108]  # type: ignore[arg-type]  # no RPC handler


async def test_emulation_refusals() -> None:
    s = settings(emulation={"max_request_body_size": 1024})
    async with served(s) as (base, node), httpx.AsyncClient(timeout=WAIT) as http:
        url = f"{base}/emulation"
        async with stream(http, base, "http_stream", {}) as (_, connected):
            good = connected["connect"]
            ping = json.dumps({"id": 5, "presence": {"channel": "x"}})
            cases = [
                ({"node": good["node"], "session": "nope", "data": ping}, 404),  # no such session
                ({"node": "other-node", "session": good["session"], "data": ping}, 404),  # no such node
                ({"node": good["node"], "session": good["session"]}, 400),  # no data
                ({"node": good["node"], "session": good["session"], "data": {"id": 1}}, 400),  # not a string
                (["not", "an", "object"], 400),
                ({"node": good["node"], "session": good["session"], "data": "x" * 2000}, 413),
            ]
            for body, status in cases:
                assert (await http.post(url, json=body)).status_code == status, body
            assert (await http.post(url, content=b"{not json")).status_code == 400
            assert (await http.get(url)).status_code == 405
            assert (await http.post(url, json={**good, "data": ping})).status_code == 204
        # the session is gone with its stream
        body = {"node": good["node"], "session": good["session"], "data": ping}
        await eventually(lambda: not node.stream_sessions, "the session to end with its stream")
        assert (await http.post(url, json=body)).status_code == 404


async def test_stream_refusals_limits_origin_and_cors() -> None:
    s = settings(http_stream={"max_request_body_size": 1024}, sse={"max_request_body_size": 1024})
    async with served(s) as (base, node), httpx.AsyncClient(timeout=WAIT) as http:
        stream_url, sse_url = f"{base}/connection/http_stream", f"{base}/connection/sse"
        assert (await http.post(stream_url, content=b"x" * 2000)).status_code == 413
        assert (await http.post(stream_url, content=b"")).status_code == 400
        assert (await http.get(stream_url)).status_code == 405
        assert (await http.get(sse_url)).status_code == 400  # no cf_connect
        assert (await http.get(sse_url, params={"cf_connect": "x" * 2000})).status_code == 413
        assert (await http.post(sse_url, content=b"x" * 2000)).status_code == 413
        connect = json.dumps({"id": 1, "connect": {}})
        evil = {"origin": "http://evil.example"}
        assert (await http.post(stream_url, content=connect, headers=evil)).status_code == 403
        good = {"origin": "http://allowed.example"}
        preflight = await http.options(
            f"{base}/emulation", headers={**good, "access-control-request-method": "POST"}
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "http://allowed.example"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        async with http.stream("POST", stream_url, content=connect, headers=good) as r:
            assert r.status_code == 200
            assert r.headers["access-control-allow-origin"] == "http://allowed.example"
    # off by default, as in Centrifugo
    async with (
        served(Settings(client={"insecure": True})) as (base, _),
        httpx.AsyncClient(timeout=WAIT) as http,
    ):
        for path in ("/connection/http_stream", "/connection/sse", "/emulation"):
            assert (await http.post(f"{base}{path}", content=b"{}")).status_code == 404


async def test_connection_limit_counts_streams_too() -> None:
    s = settings(client={"connection_limit": 1})
    async with served(s) as (base, node), httpx.AsyncClient(timeout=WAIT) as http:
        async with stream(http, base, "sse", {}):
            connect = json.dumps({"id": 1, "connect": {}})
            refused = await http.post(f"{base}/connection/http_stream", content=connect)
            assert refused.status_code == 503
        await eventually(lambda: not node.sessions, "the first stream's session to end")
        async with stream(http, base, "http_stream", {}) as (_, connected):
            assert "connect" in connected


async def test_a_stream_that_is_never_read_is_closed_slow_and_memory_stays_bounded() -> None:
    """The client reads the connect and subscribe replies, then nothing: its socket buffers
    fill, then its outbox passes queue_max_size, and the session is closed (3008) and
    forgotten, while publications go on."""
    queue_max = 64 * 1024
    s = settings(client={"queue_max_size": queue_max})
    async with served(s) as (base, node), httpx.AsyncClient(timeout=WAIT) as http:
        port = int(base.rsplit(":", 1)[1])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        body = b'{"id":1,"connect":{}}'
        writer.write(
            b"POST /connection/http_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        raw = b""
        async with asyncio.timeout(WAIT):
            while b'"session":"' not in raw or b"}}" not in raw:
                raw += await reader.read(4096)
        session_id = raw.split(b'"session":"')[1].split(b'"')[0].decode()
        stream_session = node.stream_sessions[session_id].session
        command = json.dumps({"id": 2, "subscribe": {"channel": "firehose"}})
        status = await emulate(
            http, base, {"connect": {"node": node.id, "session": session_id}}, json.loads(command)
        )
        assert status == 204
        await eventually(lambda: "firehose" in stream_session.subs, "the subscription")
        blob = b'"' + b"x" * 30_000 + b'"'
        published = 0
        async with asyncio.timeout(30):
            while stream_session.id in node.sessions:
                await node.publish("firehose", blob)
                published += 1
                await asyncio.sleep(0.002)
        assert stream_session.outbox.close_with is not None
        assert stream_session.outbox.close_with.code == 3008
        assert stream_session.outbox.peak <= queue_max
        assert session_id not in node.stream_sessions
        assert published * len(blob) > 4 * queue_max  # far more than what was kept
        writer.close()


async def test_the_hub_embedded_in_an_app_with_on_connect_dependencies() -> None:
    hub = Hub(settings())
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(hub.router)

    @hub.on_connect
    async def connect(x_user: Annotated[str, Header()] = "") -> str | None:
        return x_user or None

    @hub.rpc("whoami")
    async def whoami(client: Client, request: Any) -> dict[str, str]:
        return {"user": client.user, "transport": client.transport}

    async with running(served_by_livehub(app)) as port, httpx.AsyncClient(timeout=WAIT) as http:
        base = f"http://127.0.0.1:{port}"
        for kind in ("http_stream", "sse"):
            async with stream(http, base, kind, {}, headers={"X-User": "ann"}) as (s, connected):
                assert await emulate(http, base, connected, {"id": 2, "rpc": {"method": "whoami"}}) == 204
                assert (await s.reply(2))["rpc"] == {"data": {"user": "ann", "transport": kind}}


def test_the_emulation_control_command_travels_as_text_or_base64() -> None:
    assert COMMANDS["emulation"] is Emulate
    for frame in ('{"id":2,"presence":{"channel":"x"}}', b"\x05\x08\x02\x42\x01\x78"):
        command = Emulate(Target("", session="s1"), node="n1", frame=frame)
        wire = json.loads(json.dumps({"t": command.kind, **command.to_wire()}))
        assert command_from_wire(wire) == command


async def test_an_emulation_command_acts_only_on_its_node_and_session() -> None:
    node = Node(Settings())
    fed: list[str | bytes] = []

    class Fake:
        session: Any = None

        def feed(self, frame: str | bytes) -> bool:
            fed.append(frame)
            return True

    node.stream_sessions["s1"] = Fake()
    assert Emulate(Target("", session="s1"), node="another", frame="a").apply_now(node) == 0
    assert Emulate(Target("", session="s2"), node=node.id, frame="b").apply_now(node) == 0
    assert Emulate(Target("", session="s1"), node=node.id, frame="c").apply_now(node) == 1
    assert fed == ["c"]


def test_stream_formats_frame_what_the_outbox_joins() -> None:
    assert SSE.frame('{"a":1}\n{"b":2}') == b'data: {"a":1}\n\ndata: {"b":2}\n\n'  # an event per message
    assert NDJSON.frame('{"a":1}\n{"b":2}') == b'{"a":1}\n{"b":2}\n'
    assert DELIMITED.frame(b"\x02\x08\x01") == b"\x02\x08\x01"


async def test_a_streaming_sessions_inbox_is_bounded_and_handled_in_order() -> None:
    release = asyncio.Event()
    handled: list[str | bytes] = []

    class Slow:
        closing = False

        async def handle_frame(self, frame: str | bytes) -> None:
            await release.wait()
            handled.append(frame)

    connection = StreamConnection(Slow())  # type: ignore[arg-type]
    assert all(connection.feed(str(i)) for i in range(INBOX_LIMIT))
    await asyncio.sleep(0)  # the first frame is being handled: one place freed
    assert connection.feed("last")
    assert not connection.feed("one too many")
    release.set()
    await eventually(lambda: len(handled) == INBOX_LIMIT + 1, "every queued frame")
    assert handled == [str(i) for i in range(INBOX_LIMIT)] + ["last"]
    await connection.stop()
    assert not connection.feed("after stop")


async def test_a_unidirectional_stream_takes_no_commands_but_its_own() -> None:
    handled: list[str | bytes] = []

    class Quick:
        closing = False

        async def handle_frame(self, frame: str | bytes) -> None:
            handled.append(frame)

    connection = StreamConnection(Quick(), accepts_commands=False)  # type: ignore[arg-type]
    assert not connection.feed("from /emulation")
    assert connection.queue("connect")
    await eventually(lambda: handled == ["connect"], "the server's own frame")
