"""Unidirectional transports against a real ``livehub serve``: a raw WebSocket client
(uni_websocket), a curl-like streaming HTTP client (uni_http_stream, uni_sse), publications
through the HTTP API, server-side subscriptions only (token ``channels``, the personal
channel, ``/api/subscribe``), token expiry, bad input, and a client that never reads."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
import websockets

from tests.servers import serve

SECRET = "uni-test-secret-key-of-32-bytes!"
API_KEY = "uni-api-key"
WAIT = 5.0


def token(user: str, channels: list[str] | None = None, ttl: int = 3600) -> str:
    claims: dict[str, Any] = {"sub": user, "exp": int(time.time()) + ttl}
    if channels is not None:
        claims["channels"] = channels
    return jwt.encode(claims, SECRET, algorithm="HS256")


CONFIG: dict[str, Any] = {
    "client": {
        "token": {"hmac_secret_key": SECRET},
        "ping_interval": "1s",  # and WebSocket pings to uni_websocket clients
        "pong_timeout": "0.9s",  # their pong may be late on a loaded machine
        "expired_close_delay": 0,
        "subscribe_to_user_personal_channel": {"enabled": True},
        "queue_max_size": 262144,
    },
    "http_api": {"key": API_KEY},
    "uni_websocket": {"enabled": True},
    "uni_sse": {"enabled": True},
    "uni_http_stream": {"enabled": True, "max_request_body_size": 1024},
    "channel": {
        "without_namespace": {"allow_user_limited_channels": True},
        "namespaces": [{"name": "news", "join_leave": True, "force_push_join_leave": True}],
    },
}


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    config = tmp_path_factory.mktemp("uni") / "config.json"
    config.write_text(json.dumps(CONFIG))
    with serve(config) as port:
        yield port


async def api(port: int, method: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"http://127.0.0.1:{port}/api/{method}", json=body, headers={"X-API-Key": API_KEY}
        )
    reply.raise_for_status()
    result: dict[str, Any] = reply.json()
    assert "error" not in result, result
    return result


async def publish(port: int, channel: str, data: Any) -> None:
    await api(port, "publish", {"channel": channel, "data": data})


class Lines:
    """A streaming HTTP response read line by line, each wait bounded."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self) -> str:
        return await asyncio.wait_for(anext(self._lines), WAIT)

    async def next_json(self, skip_pings: bool = True) -> dict[str, Any]:
        while True:
            line = await self.next()
            if not line.strip():
                continue
            message: dict[str, Any] = json.loads(line.removeprefix("data: "))
            if message or not skip_pings:
                return message

    async def until(self, key: str) -> dict[str, Any]:
        for _ in range(50):
            message = await self.next_json()
            if key in message:
                return message
        raise AssertionError(f"no {key!r} message")


def http_stream(client: httpx.AsyncClient, port: int, body: Any) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.stream("POST", f"http://127.0.0.1:{port}/connection/uni_http_stream", content=content)


async def ws_next(ws: Any, skip_pings: bool = True) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if message or not skip_pings:
            return message


async def ws_until(ws: Any, key: str) -> dict[str, Any]:
    for _ in range(50):
        message = await ws_next(ws)
        if key in message:
            return message
    raise AssertionError(f"no {key!r} message")


# -- uni_websocket


async def test_uni_websocket_gets_the_connect_push_then_publications_of_its_token_channels(port: int) -> None:
    url = f"ws://127.0.0.1:{port}/connection/uni_websocket"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"token": token("alice", ["news:a"])}))
        connect = (await ws_next(ws))["connect"]
        assert connect["client"] and connect["session"] and connect["ping"] == 1
        assert "pong" not in connect and set(connect["subs"]) == {"#alice", "news:a"}
        join = await ws_next(ws)
        assert join == {"channel": "news:a", "join": {"info": {"user": "alice", "client": connect["client"]}}}
        await publish(port, "news:a", {"text": "hello"})
        await publish(port, "#alice", {"text": "personal"})
        assert (await ws_until(ws, "pub")) == {
            "channel": "news:a",
            "pub": {"data": {"text": "hello"}, "time": pytest.approx(time.time() * 1000, abs=5000)},
        }
        assert (await ws_until(ws, "pub"))["pub"]["data"] == {"text": "personal"}
        # anything it sends after its connect request is ignored; it is still served
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "news:b"}}))
        await publish(port, "news:b", {"n": 0})
        await publish(port, "news:a", {"n": 1})
        pub = await ws_until(ws, "pub")
        assert pub["channel"] == "news:a" and pub["pub"]["data"] == {"n": 1}


async def test_uni_websocket_is_pinged_with_empty_objects_and_never_asked_for_a_pong(port: int) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{port}/connection/uni_websocket") as ws:
        await ws.send(json.dumps({"token": token("pinged")}))
        assert "connect" in await ws_next(ws)
        pings = 0
        deadline = time.monotonic() + 3.5  # ping 1 s, pong timeout 0.9 s: three pings unanswered
        while time.monotonic() < deadline:
            message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert message == {}, message
            pings += 1
        assert pings >= 2
        assert ws.close_code is None


async def test_uni_websocket_sends_frame_pings_and_closes_a_peer_that_never_answers_them(port: int) -> None:
    """Besides its ``{}`` messages, a uni_websocket client gets WebSocket pings (every
    client.ping_interval, 1 s here); one that answers none is closed with 3012 (no pong)
    after client.pong_timeout (0.9 s). The websockets library answers them: the test above."""
    from tests.test_connection import server_frames

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_never_reading_request("uni_websocket", json.dumps({"token": token("mute")}).encode()))
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)).startswith(b"HTTP/1.1 101 ")
    seen: list[tuple[int, bytes]] = []
    async with asyncio.timeout(2 * WAIT):
        async for opcode, payload in server_frames(reader):
            seen.append((opcode, payload))
            if opcode == 0x8:
                break
    writer.close()
    opcodes = [opcode for opcode, _ in seen]
    assert 0x9 in opcodes, "no WebSocket ping"
    assert json.loads(seen[0][1])["connect"]["client"]
    assert json.loads(seen[-2][1]) == {"disconnect": {"code": 3012, "reason": "no pong"}}
    assert int.from_bytes(seen[-1][1][:2], "big") == 3012


async def test_uni_websocket_connect_request_in_the_url(port: int) -> None:
    query = quote(json.dumps({"token": token("url-user", ["news:url"])}))
    async with websockets.connect(f"ws://127.0.0.1:{port}/connection/uni_websocket?cf_connect={query}") as ws:
        assert set((await ws_next(ws))["connect"]["subs"]) == {"#url-user", "news:url"}
    # JSON only: a Protobuf offer is not taken up
    url = f"ws://127.0.0.1:{port}/connection/uni_websocket?format=protobuf&cf_connect={query}"
    async with websockets.connect(url, subprotocols=["centrifuge-protobuf"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol is None
        assert "connect" in await ws_next(ws)


async def test_uni_websocket_refusals(port: int) -> None:
    url = f"ws://127.0.0.1:{port}/connection/uni_websocket"
    # no token (and not insecure): 3501, after a disconnect push with the same code
    async with websockets.connect(url) as ws:
        await ws.send("{}")
        assert (await ws_next(ws)) == {"disconnect": {"code": 3501, "reason": "bad request"}}
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT)
        assert ws.close_code == 3501
    # a bad signature: 3500 invalid token
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"token": token("x")[:-2] + "xx"}))
        assert (await ws_next(ws))["disconnect"]["code"] == 3500
    # an expired token (an error reply for SDKs) closes a unidirectional client with 3005
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"token": token("late", ttl=-10)}))
        assert (await ws_next(ws)) == {"disconnect": {"code": 3005, "reason": "connection expired"}}
    # not JSON, or not a connect request
    for bad in ("not json", "[1]", '{"token": 5}'):
        async with websockets.connect(url) as ws:
            await ws.send(bad)
            assert (await ws_next(ws))["disconnect"]["code"] == 3501
    # a bad cf_connect: 400 before the upgrade
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url + "?cf_connect=%7Bnope"):
            pass
    assert refused.value.response.status_code == 400


async def test_uni_websocket_closes_when_its_token_expires(port: int) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{port}/connection/uni_websocket") as ws:
        await ws.send(json.dumps({"token": token("expiring", ttl=2)}))
        assert (await ws_next(ws))["connect"]["ttl"] <= 2
        assert (await ws_until(ws, "disconnect")) == {
            "disconnect": {"code": 3005, "reason": "connection expired"}
        }
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT)
        assert ws.close_code == 3005


# -- uni_http_stream


async def test_uni_http_stream_streams_newline_delimited_pushes(port: int) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        async with http_stream(client, port, {"token": token("bob", ["news:h"])}) as response:
            assert response.status_code == 200
            lines = Lines(response)
            connect = (await lines.next_json())["connect"]
            assert set(connect["subs"]) == {"#bob", "news:h"}
            assert (await lines.next_json())["join"]["info"]["user"] == "bob"
            await publish(port, "news:h", {"n": 1})
            assert (await lines.until("pub"))["pub"]["data"] == {"n": 1}
            # a server-side subscription made through the API: a subscribe push, then its publications
            await api(port, "subscribe", {"user": "bob", "channel": "news:later"})
            assert (await lines.until("subscribe"))["channel"] == "news:later"
            await publish(port, "news:later", {"n": 2})
            assert (await lines.until("pub")) == {
                "channel": "news:later",
                "pub": {"data": {"n": 2}, "time": pytest.approx(time.time() * 1000, abs=5000)},
            }
            # disconnected through the API: the disconnect push ends the stream
            await api(port, "disconnect", {"user": "bob", "disconnect": {"code": 4500, "reason": "bye"}})
            assert (await lines.until("disconnect")) == {"disconnect": {"code": 4500, "reason": "bye"}}
            with pytest.raises(StopAsyncIteration):
                await lines.next()


async def test_uni_http_stream_user_limited_channel_of_the_token(port: int) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        async with http_stream(client, port, {"token": token("carol", ["dm#carol,dave"])}) as response:
            lines = Lines(response)
            assert "dm#carol,dave" in (await lines.next_json())["connect"]["subs"]
            await publish(port, "dm#carol,dave", {"text": "hi carol"})
            assert (await lines.until("pub"))["pub"]["data"] == {"text": "hi carol"}


async def test_uni_http_stream_refuses_bad_requests(port: int) -> None:
    base = f"http://127.0.0.1:{port}/connection/uni_http_stream"
    async with httpx.AsyncClient(timeout=WAIT) as client:
        assert (await client.get(base)).status_code == 405
        assert (await client.post(base, content=b"{nope")).status_code == 400
        assert (await client.post(base, content=b'{"token": 1}')).status_code == 400
        too_big = json.dumps({"token": "x" * 2000}).encode()  # max_request_body_size: 1024
        assert (await client.post(base, content=too_big)).status_code == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            for _ in range(10):
                yield b" " * 200

        assert (await client.post(base, content=chunks())).status_code == 413
        preflight = await client.options(base, headers={"Origin": "https://elsewhere.example"})
        assert preflight.status_code == 204 and "access-control-allow-origin" not in preflight.headers
        # a browser origin not in client.allowed_origins is refused before any app code
        refused = await client.post(base, content=b"{}", headers={"Origin": "https://elsewhere.example"})
        assert refused.status_code == 403
        # no token: the stream says why it ends
        async with client.stream("POST", base, content=b"{}") as response:
            assert response.status_code == 200
            assert (await Lines(response).next_json()) == {
                "disconnect": {"code": 3501, "reason": "bad request"}
            }


# -- uni_sse


async def test_uni_sse_event_source_with_the_connect_request_in_the_url(port: int) -> None:
    query = quote(json.dumps({"token": token("erin", ["news:sse"])}))
    url = f"http://127.0.0.1:{port}/connection/uni_sse?cf_connect={query}"
    async with httpx.AsyncClient(timeout=WAIT) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "content-length" not in response.headers
        lines = Lines(response)
        assert (await lines.next()) == ""  # the opening line
        first = await lines.next()
        assert first.startswith('data: {"connect":') and (await lines.next()) == ""
        await publish(port, "news:sse", {"n": 7})
        assert (await lines.until("pub"))["pub"]["data"] == {"n": 7}


async def test_uni_sse_by_post_and_its_end_when_the_token_expires(port: int) -> None:
    url = f"http://127.0.0.1:{port}/connection/uni_sse"
    body = json.dumps({"token": token("frank", ttl=2)}).encode()
    async with (
        httpx.AsyncClient(timeout=WAIT) as client,
        client.stream("POST", url, content=body) as response,
    ):
        lines = Lines(response)
        assert (await lines.until("connect"))["connect"]["expires"] is True
        assert (await lines.until("disconnect")) == {
            "disconnect": {"code": 3005, "reason": "connection expired"}
        }
        with pytest.raises(StopAsyncIteration):  # then the response ends
            while True:
                assert not (await lines.next()).strip()


# -- a client that never reads


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (``VmHWM``: its peak so far), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def _server_pid(port: int) -> int:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            inode = fields[9]
            break
    else:
        raise AssertionError("no listener")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if fd.readlink().name == f"socket:[{inode}]":
                    return int(proc.name)
        except OSError:
            continue
    raise AssertionError("no process owns the listener")


#: Publications of 64 KiB sent to a client that never reads (20 MB).
FLOOD = 320
_WARMED: set[int] = set()


def _never_reading_request(transport: str, connect: bytes) -> bytes:
    """The opening request of a raw client of ``transport`` with ``connect`` as its connect request."""
    if transport == "uni_websocket":
        return (
            f"GET /connection/uni_websocket?cf_connect={quote(connect)} HTTP/1.1\r\nHost: x\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    return (
        b"POST /connection/uni_http_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(connect)}\r\n\r\n".encode()
        + connect
    )


@pytest.mark.parametrize("transport", ["uni_http_stream", "uni_websocket"])
async def test_a_client_that_never_reads_is_closed_as_slow_and_memory_stays_bounded(
    port: int, transport: str
) -> None:
    """A raw socket sends its connect request and never reads: the server keeps at most its
    bounded queues (client.queue_max_size 256 KiB here, the writer's 64 KiB, the socket
    buffers) and closes it (3008); its memory does not follow the 20 MB published to it.

    The server's peak memory (VmHWM) is measured against itself: 20 MB published once with no
    subscriber first (the API's own high-water mark), then 20 MB more to the client that never
    reads."""
    pid = _server_pid(port)
    pad = "x" * 65536
    if not _WARMED:  # once per server
        for i in range(FLOOD):
            await publish(port, "news:flood", {"i": i, "pad": pad})
        _WARMED.add(port)
    body = json.dumps({"token": token("sloth", ["news:flood"])}).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.sendall(_never_reading_request(transport, body))
        await asyncio.sleep(0.5)
        info = await api(port, "info", {})
        assert sum(node["num_clients"] for node in info["result"]["nodes"]) == 1
        before = _rss_kb(pid, "VmHWM")
        for i in range(FLOOD):
            await publish(port, "news:flood", {"i": i, "pad": pad})
        peak = _rss_kb(pid, "VmHWM")
        info = await api(port, "info", {})
        clients = sum(node["num_clients"] for node in info["result"]["nodes"])
        assert clients == 0, "the client that never reads is still connected"
        grown_mb = (peak - before) / 1024
        print(
            f"server peak RSS before {before / 1024:.1f} MB, after {peak / 1024:.1f} MB (+{grown_mb:.1f} MB)"
        )
        assert grown_mb < 8, f"server memory grew by {grown_mb:.1f} MB for a client that never reads"
    finally:
        sock.close()


def test_uni_sections_take_centrifugos_keys_and_refuse_what_livehub_lacks(tmp_path: Path) -> None:
    from livehub.settings import ConfigError, load_settings

    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    settings = load_settings(config)
    assert settings.uni_http_stream.max_request_body_size == 1024
    assert settings.uni_sse.handler_prefix == "/connection/uni_sse"
    assert settings.uni_websocket.handler_prefix == "/connection/uni_websocket"
    config.write_text(
        json.dumps(
            {
                "uni_websocket": {"enabled": True, "compression": True, "write_timeout": 0},
                "uni_sse": {"connect_code_to_http_response": {"enabled": True}},
                "uni_http_stream": {"max_request_body_siz": 5},
            }
        )
    )
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    problems = str(refused.value)
    assert "uni_websocket.compression: Centrifugo's option, not supported" in problems
    assert "write_timeout" not in problems  # switched off: honoured by not having it
    assert "uni_sse.connect_code_to_http_response: Centrifugo's option" in problems
    assert "did you mean uni_http_stream.max_request_body_size?" in problems
