"""The client endpoint served from the socket (``livehub.transports.websocket``): pings,
fragments, closes, protocol violations, other paths, a peer that stops reading, the app's
connect hook at the handshake, the handshake's deadline, and how uvicorn finds the hub.

The peer SDK tests cover the protocol above this; here raw frames are sent where a
well-behaved client library would refuse to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
import websockets
from fastapi import FastAPI, Header, WebSocket

from livehub import Hub
from livehub.app import create_app
from livehub.models import Credentials
from livehub.protocol.codes import Error
from livehub.protocol.websocket import OP_CONTINUATION, OP_PING, OP_TEXT, _apply_mask_py
from livehub.serving import draining_server
from livehub.settings import Settings
from livehub.transports.websocket import ClientConnection
from tests.servers import self_signed, serve

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
    """With ``Hub.on_connect`` the client endpoint's on_connect runs, even when served the
    way ``livehub serve`` serves."""
    hub = Hub(Settings())

    @hub.on_connect
    def by_header(x_user: Annotated[str, Header()] = "") -> str | None:
        return x_user or None

    app = create_app(hub.settings, hub=hub, demos=False)
    async with running(draining_server(app, hub.node, "warning")) as port:
        address = url(port)
        async with websockets.connect(address, additional_headers={"X-User": "erin"}) as ws:
            await ws.send('{"id":1,"connect":{}}')
            assert '"id":1,"connect"' in await asyncio.wait_for(ws.recv(), 5)
            assert [s.user for s in hub.node.sessions.values()] == ["erin"]
        async with websockets.connect(address) as anonymous:
            await anonymous.send('{"id":1,"connect":{}}')
            assert await closed_with(anonymous) == 3501  # no user, anonymous access off


@contextlib.asynccontextmanager
async def running(server: uvicorn.Server) -> AsyncIterator[int]:
    """Serve in this event loop on a free loopback port; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 -- uvicorn sets a flag, no event
                await asyncio.sleep(0.02)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)


def hub_app(**settings: Any) -> tuple[FastAPI, Hub]:
    """A FastAPI app embedding a Hub (anonymous clients may use every channel)."""
    settings.setdefault("client", {}).setdefault("insecure", True)
    hub = Hub(Settings(**settings))
    app = FastAPI()
    app.include_router(hub.router)
    return app, hub


def served_by_livehub(app: Any, **options: Any) -> uvicorn.Server:
    """uvicorn as ``uvicorn module:app --http livehub.transports.websocket:http_protocol``."""
    options.setdefault("log_level", "warning")
    return uvicorn.Server(uvicorn.Config(app, http="livehub.transports.websocket:http_protocol", **options))


def connections(server: uvicorn.Server) -> list[ClientConnection]:
    return [c for c in server.server_state.connections if isinstance(c, ClientConnection)]


async def test_the_connect_hook_sees_the_handshake_as_an_asgi_scope() -> None:
    """``node.connect_hook`` is awaited at the parsed upgrade, on the socket-level path:
    its scope carries what the request said, its Credentials make the user, its Error is
    the reply to ``connect``, its crash is HTTP 500."""
    app, hub = hub_app(client={"insecure": False})
    scopes: list[dict[str, Any]] = []

    async def hook(scope: dict[str, Any]) -> Credentials | Error | None:
        scopes.append(scope)
        headers = dict(scope["headers"])
        if b"x-crash" in headers:
            raise RuntimeError("the app's bug")
        await asyncio.sleep(0.05)  # a database, say: the handshake waits for it
        user = headers.get(b"x-user", b"").decode()
        return Credentials(user) if user else Error(101, "unauthorized")

    hub.node.connect_hook = hook
    server = served_by_livehub(app)
    async with running(server) as port:
        address = f"ws://127.0.0.1:{port}/connection/websocket?room=a%20b"
        headers = {"X-User": "erin", "Cookie": "sid=1"}
        async with websockets.connect(
            address, additional_headers=headers, subprotocols=[websockets.Subprotocol("centrifuge-json")]
        ) as ws:
            await ws.send('{"id":1,"connect":{}}')
            assert '"id":1,"connect"' in await asyncio.wait_for(ws.recv(), 5)
            assert len(connections(server)) == 1  # served from the socket, not the route
            [session] = hub.node.sessions.values()
            assert session.user == "erin" and session.scope is scopes[0]
        scope = scopes[0]
        assert scope["type"] == "websocket" and scope["scheme"] == "ws" and scope["http_version"] == "1.1"
        assert scope["path"] == "/connection/websocket" and scope["raw_path"] == b"/connection/websocket"
        assert scope["query_string"] == b"room=a%20b" and scope["root_path"] == ""
        assert scope["server"] == ("127.0.0.1", port) and scope["client"][0] == "127.0.0.1"
        assert (b"x-user", b"erin") in scope["headers"] and (b"cookie", b"sid=1") in scope["headers"]
        assert scope["subprotocols"] == ["centrifuge-json"] and scope["state"] == {}
        async with websockets.connect(address) as refused:
            await refused.send('{"id":1,"connect":{}}')
            assert json.loads(await asyncio.wait_for(refused.recv(), 5)) == {
                "id": 1,
                "error": {"code": 101, "message": "unauthorized"},
            }
        with pytest.raises(websockets.InvalidStatus) as crashed:
            await websockets.connect(address, additional_headers={"X-Crash": "1"})
        assert crashed.value.response.status_code == 500


async def test_over_tls_the_hook_sees_wss_and_frames_sent_behind_the_request_wait_for_it(
    tmp_path: Path,
) -> None:
    """``livehub run --ssl-certfile``: the scope says ``wss``; a client that sends its
    ``connect`` right behind the upgrade request (before the 101) is answered once the
    hook has decided, not before."""
    cert, key = self_signed(tmp_path)
    app, hub = hub_app(client={"insecure": False})
    decided = asyncio.Event()

    async def hook(scope: dict[str, Any]) -> Credentials:
        await asyncio.sleep(0.2)
        decided.set()
        return Credentials(f"{scope['scheme']}-user")

    hub.node.connect_hook = hook
    async with running(served_by_livehub(app, ssl_keyfile=str(key), ssl_certfile=str(cert))) as port:
        context = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        writer.write(UPGRADE + client_frame(b'{"id":1,"connect":{}}'))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ") and decided.is_set()
        opcode, payload = await anext(server_frames(reader))
        assert opcode == OP_TEXT and payload.startswith(b'{"id":1,"connect":')
        assert [s.user for s in hub.node.sessions.values()] == ["wss-user"]
        writer.close()


async def test_a_connect_hook_that_does_not_answer_in_time_is_refused_503() -> None:
    app, hub = hub_app(websocket={"handshake_timeout": 0.3})
    answered = asyncio.Event()

    async def never(scope: dict[str, Any]) -> None:
        await asyncio.sleep(60)
        answered.set()

    hub.node.connect_hook = never
    async with running(served_by_livehub(app)) as port:
        start = time.monotonic()
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url(port), open_timeout=5)
        assert refused.value.response.status_code == 503
        assert time.monotonic() - start < 2
    assert not answered.is_set()


async def test_http_protocol_finds_the_hub_behind_middleware_and_leaves_other_apps_alone() -> None:
    """``--http livehub.transports.websocket:http_protocol``: the hub is looked up in the
    served app (through an ``.app`` chain of ASGI middleware); an app without one is
    served entirely by uvicorn's own protocol."""
    app, hub = hub_app()

    class Wrapper:  # an ASGI middleware wrapping the app from outside
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    server = served_by_livehub(Wrapper(app))
    async with running(server) as port, websockets.connect(url(port)) as ws:
        await ws.send('{"id":1,"connect":{}}')
        assert '"id":1,"connect"' in await asyncio.wait_for(ws.recv(), 5)
        assert len(connections(server)) == 1

    plain = FastAPI()

    @plain.websocket("/connection/websocket")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())

    @plain.get("/hello")
    async def hello() -> str:
        return "hi"

    server = served_by_livehub(plain)
    async with running(server) as port:
        async with websockets.connect(url(port)) as ws:
            await ws.send("echo")
            assert await asyncio.wait_for(ws.recv(), 5) == "echo"
            assert connections(server) == []
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/hello")).json() == "hi"


async def test_an_unfinished_upgrade_is_dropped_after_the_handshake_timeout() -> None:
    """Half a request head, or one sent a byte at a time, gets 408 and the socket closed
    once ``websocket.handshake_timeout`` has passed since the connection opened."""
    app, _ = hub_app(websocket={"handshake_timeout": 0.5})
    async with running(served_by_livehub(app)) as port:
        half = await asyncio.open_connection("127.0.0.1", port)
        half[1].write(b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\n")
        trickle = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()
        dripping = b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        for byte in dripping[:4]:  # a byte each 0.1 s: would take 7 s to finish
            trickle[1].write(bytes((byte,)))
            await asyncio.sleep(0.1)
        for reader, writer in (half, trickle):
            response = await asyncio.wait_for(reader.read(), 5)  # answered, then closed
            assert response.startswith(b"HTTP/1.1 408 "), response
            writer.close()
        assert time.monotonic() - start < 2.5


async def test_a_client_that_never_sends_connect_is_closed_3502() -> None:
    """After the upgrade, ``client.stale_close_delay`` bounds the wait for ``connect``:
    pings and a frame never finished do not keep the connection."""
    app, _ = hub_app(client={"insecure": True, "stale_close_delay": 0.5})
    async with running(served_by_livehub(app)) as port:
        reader, writer = await raw_connect(port)
        writer.write(client_frame(b"", OP_PING) + client_frame(b'{"id":1,"con', OP_TEXT, fin=False))
        start = time.monotonic()
        assert await read_close_code(reader) == 3502
        assert time.monotonic() - start < 3
        writer.close()


async def test_empty_continuation_frames_count_against_the_message_size_limit() -> None:
    app, _ = hub_app(websocket={"message_size_limit": 4096})
    async with running(served_by_livehub(app)) as port:
        reader, writer = await raw_connect(port)
        writer.write(client_frame(b'{"id":1,', OP_TEXT, fin=False))
        writer.write(client_frame(b"", OP_CONTINUATION, fin=False) * 1000)  # 6 bytes each on the wire
        assert await read_close_code(reader) == 1009
        writer.close()


async def test_a_peer_that_does_not_read_is_not_read_and_its_pings_cost_nothing() -> None:
    """Fill the way to a client that reads nothing until its socket pushes back, then
    flood pings and commands from it: the server stops reading it (the client's own
    writes stall), the bytes buffered for it stay bounded, and one pong answers a read's
    worth of pings."""
    app, hub = hub_app(client={"insecure": True, "queue_max_size": 64 << 20})
    server = served_by_livehub(app)
    async with running(server) as port:
        reader, writer = await raw_connect(port, rcvbuf=4096)
        writer.write(client_frame(b'{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"big"}}'))
        replies = ""
        frames = server_frames(reader)
        while '"id":2' not in replies:
            replies += (await anext(frames))[1].decode()
        [conn] = connections(server)
        writer.transport.pause_reading()  # from here on nothing is read, not even into a buffer
        blob = "x" * 60_000
        async with asyncio.timeout(20):
            while conn.write_buffer_size() < 64 * 1024:  # over uvicorn's high-water mark
                await hub.publish("big", [blob])
                await asyncio.sleep(0)
        buffered = conn.write_buffer_size()
        ping = client_frame(b"p" * 125, OP_PING)
        command = client_frame(b'{"id":9,"presence":{"channel":"big"}}')
        sent = 0
        stalled = False
        while sent < 64 << 20:  # at most 64 MiB of pings and commands, unread by the server
            writer.write((ping * 400 + command) * 10)
            sent += (len(ping) * 400 + len(command)) * 10
            try:
                await asyncio.wait_for(writer.drain(), 1)
            except TimeoutError:
                stalled = True  # the server stopped reading: its socket and ours are full
                break
        assert stalled, f"the server read {sent} bytes from a peer that reads nothing"
        await asyncio.sleep(0.5)
        assert conn.write_buffer_size() <= buffered + 64 * 1024
        writer.transport.abort()


# -- raw client helpers


def client_frame(payload: bytes, opcode: int = OP_TEXT, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    assert len(payload) < 126
    return bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload))) + mask + _apply_mask_py(payload, mask)


UPGRADE = (
    b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


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
