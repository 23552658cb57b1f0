"""The client endpoint of ``livehub serve`` at the WebSocket level (``livehub.connection``):
pings, fragments, closes, protocol violations, other paths, and a peer that stops reading.

The peer SDK tests cover the protocol above this; here raw frames are sent where a
well-behaved client library would refuse to.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated

import httpx
import pytest
import websockets
from fastapi import Header

from livehub import Hub
from livehub.app import create_app
from livehub.protocol.websocket import OP_TEXT, _apply_mask_py
from livehub.serving import draining_server
from livehub.settings import Settings
from tests.servers import serve

CONFIG = """
[client]
insecure = true
[demos]
enabled = true  # the seed's /ws is another WebSocket path of the app
[channel.without_namespace]
history_size = 10
history_ttl = "60s"
"""


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    path: Path = tmp_path_factory.mktemp("connection") / "config.toml"
    path.write_text(CONFIG)
    with serve(path) as p:
        yield p


def url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/connection/websocket"


async def closed_with(ws: websockets.ClientConnection) -> int:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_commands_in_fragments_and_websocket_pings(port: int) -> None:
    async with websockets.connect(url(port), subprotocols=[websockets.Subprotocol("centrifuge-json")]) as ws:
        assert ws.subprotocol == "centrifuge-json"
        await ws.send(iter(['{"id":1,"con', 'nect":{}}\n{"id":2,"subscribe":', '{"channel":"frag"}}']))
        frame = await asyncio.wait_for(ws.recv(), 5)
        assert '"id":1,"connect"' in frame and '"id":2,"subscribe"' in frame
        pong = await ws.ping(b"abc")
        await asyncio.wait_for(pong, 5)  # times out unless the server answers with a pong
        await ws.send('{"id":3,"publish":{"channel":"frag","data":"é"}}')
        frames = ""
        while '"id":3' not in frames:
            frames += await asyncio.wait_for(ws.recv(), 5)
        assert '"data":"é"' in frames


async def test_client_close_is_answered(port: int) -> None:
    ws = await websockets.connect(url(port))
    await ws.send('{"id":1,"connect":{}}')
    await asyncio.wait_for(ws.recv(), 5)
    await asyncio.wait_for(ws.close(4000, "bye"), 5)
    rcvd = ws.protocol.close_rcvd
    assert rcvd is not None and rcvd.code == 4000  # echoed, as RFC 6455 asks


async def test_invalid_utf8_closes_1007(port: int) -> None:
    reader, writer = await raw_connect(port)
    writer.write(client_frame(b'{"id":1,"connect":{"data":"\xff"}}'))
    assert await read_close_code(reader) == 1007
    writer.close()


async def test_unmasked_frame_closes_1002(port: int) -> None:
    reader, writer = await raw_connect(port)
    writer.write(b"\x81\x02{}")
    assert await read_close_code(reader) == 1002
    writer.close()


async def test_bad_upgrades_get_http_errors(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 7\r\n\r\n"
    )
    response = await asyncio.wait_for(reader.read(), 5)  # answered, then closed
    assert response.startswith(b"HTTP/1.1 426 ")
    assert b"Sec-WebSocket-Version: 13" in response
    writer.close()


async def test_other_websocket_paths_are_the_apps(port: int) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), 5) == "Message text was: hi"


async def test_a_peer_that_stops_reading_is_closed_and_others_get_everything(port: int) -> None:
    """The stuck peer's socket buffers fill (at most 4 MiB here), then its outbox passes
    queue_max_size (1 MiB): it is dropped, while a subscriber that reads gets all 300
    publications in order."""
    reader, writer = await raw_connect(port, rcvbuf=4096)
    writer.write(client_frame(b'{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"firehose"}}'))
    replies = ""
    frames = server_frames(reader)
    while '"id":2' not in replies:
        replies += (await anext(frames))[1].decode()
    # from here on the stuck peer reads nothing
    async with websockets.connect(url(port), max_size=None) as fast, websockets.connect(url(port)) as pub:
        await fast.send('{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"firehose"}}')
        await asyncio.wait_for(fast.recv(), 5)
        await pub.send('{"id":1,"connect":{}}')
        await asyncio.wait_for(pub.recv(), 5)
        seen: list[int] = []

        async def read() -> None:
            while len(seen) < 300:
                for line in (await asyncio.wait_for(fast.recv(), 10)).split("\n"):
                    message = json.loads(line)
                    if "push" in message:
                        seen.append(message["push"]["pub"]["data"][0])

        reading = asyncio.create_task(read())
        blob = "x" * 30_000
        for i in range(300):  # one at a time: a reader as fast as the publisher is not slow
            await pub.send(json.dumps({"id": i + 2, "publish": {"channel": "firehose", "data": [i, blob]}}))
            await asyncio.wait_for(pub.recv(), 5)
        await reading
        assert seen == list(range(300))
    # 9 MB went the stuck peer's way: the server gave up on it (close frame behind the
    # stuck bytes, then the socket dropped), so reading now ends
    async with asyncio.timeout(15):
        while await reader.read(1 << 20):
            pass
    writer.close()


async def test_upgrade_in_pieces_with_a_frame_right_behind_it(port: int) -> None:
    request = (
        b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for piece in (request[:3], request[3:40], request[40:] + client_frame(b'{"id":1,"connect":{}}')):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.05)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    opcode, payload = await anext(server_frames(reader))
    assert opcode == OP_TEXT and payload.startswith(b'{"id":1,"connect":')
    writer.close()


async def test_http_requests_on_the_same_port_reach_the_app(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for _ in range(2):  # the second one on the kept-alive connection
            response = await http.get("/openapi.json")
            assert response.status_code == 200 and "paths" in response.json()
        # the endpoint's URL without an upgrade is the app's too (no HTTP route there)
        assert (await http.get("/connection/websocket")).status_code == 404


async def test_an_app_that_authenticates_at_the_upgrade_keeps_its_on_connect() -> None:
    """With ``Hub.on_connect`` the client endpoint goes through the app's route (where the
    dependency runs), even when served the way ``livehub serve`` serves."""
    hub = Hub(Settings())

    @hub.on_connect
    def by_header(x_user: Annotated[str, Header()] = "") -> str | None:
        return x_user or None

    app = create_app(hub.settings, hub=hub, demos=False)
    server = draining_server(app, hub.node, "warning")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 -- uvicorn sets a flag, no event
                await asyncio.sleep(0.02)
        address = f"ws://127.0.0.1:{sock.getsockname()[1]}/connection/websocket"
        async with websockets.connect(address, additional_headers={"X-User": "erin"}) as ws:
            await ws.send('{"id":1,"connect":{}}')
            assert '"id":1,"connect"' in await asyncio.wait_for(ws.recv(), 5)
            assert [s.user for s in hub.node.sessions.values()] == ["erin"]
        async with websockets.connect(address) as anonymous:
            await anonymous.send('{"id":1,"connect":{}}')
            assert await closed_with(anonymous) == 3501  # no user, anonymous access off
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)


# -- raw client helpers


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    mask = os.urandom(4)
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + _apply_mask_py(payload, mask)


async def raw_connect(port: int, rcvbuf: int = 0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    writer.write(
        b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    return reader, writer


async def server_frames(reader: asyncio.StreamReader) -> AsyncIterator[tuple[int, bytes]]:
    """Server frames (unmasked, unfragmented) as ``(opcode, payload)``."""
    buffer = b""
    while True:
        while len(buffer) >= 2:
            length = buffer[1] & 0x7F
            header = 2 if length < 126 else 4 if length == 126 else 10
            if length >= 126:
                length = int.from_bytes(buffer[2:header], "big")
            if len(buffer) < header + length:
                break
            yield buffer[0] & 0x0F, buffer[header : header + length]
            buffer = buffer[header + length :]
        data = await asyncio.wait_for(reader.read(65536), 5)
        if not data:
            return
        buffer += data


async def read_close_code(reader: asyncio.StreamReader) -> int:
    async for opcode, payload in server_frames(reader):
        if opcode == 0x8:
            return int.from_bytes(payload[:2], "big")
    raise AssertionError("the connection ended without a close frame")
