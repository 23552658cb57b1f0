"""The Protobuf encoding over real sockets, under both transports (livehub's own protocol
below ASGI, and the ASGI route under plain uvicorn): JSON and Protobuf subscribers of one
channel, some with fossil deltas, get the same publications; a Protobuf client's commands
reach JSON clients; each connection gets only its own kind of frame.

The Protobuf side is read and written with the ``client_pb2`` module centrifuge-python
ships (a test dependency; livehub does not import it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import websockets
from centrifuge.protocol import client_pb2 as pb
from fastapi import FastAPI
from google.protobuf.message import Message

from livehub import Hub
from livehub.protocol.fossil import apply_delta
from livehub.protocol.protobuf import delimited, read_varint
from livehub.settings import Settings

DELTA = {"history_size": 100, "history_ttl": "60s", "allowed_delta_types": ["fossil"]}
DOC = {"title": "a fairly long document title", "body": "x" * 200}


@contextlib.asynccontextmanager
async def serving(own_protocol: bool, **client: Any) -> AsyncIterator[tuple[Hub, str]]:
    """A FastAPI app with a Hub, served in this loop on a loopback port; yields its endpoint."""
    hub = Hub(Settings(client={"insecure": True, **client}, channel={"without_namespace": DELTA}))
    app = FastAPI()
    app.include_router(hub.router)
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "on"}
    if own_protocol:
        options["http"] = "livehub.transports.websocket:http_protocol"
    server = uvicorn.Server(uvicorn.Config(app, **options))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 -- uvicorn sets a flag, no event
                await asyncio.sleep(0.02)
        yield hub, f"ws://127.0.0.1:{sock.getsockname()[1]}/connection/websocket"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


class Peer:
    """A minimal SDK: commands out, replies and publications in, in either encoding."""

    def __init__(self, ws: websockets.ClientConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary
        self.next_id = 0
        self.base = b""
        #: The data of every publication, deltas applied, with its offset.
        self.pubs: list[tuple[int, bytes]] = []
        self.deltas = 0

    async def command(self, method: str, params: dict[str, Any], pb_params: Message) -> Any:
        self.next_id += 1
        if self.binary:
            command = pb.Command(id=self.next_id)
            getattr(command, method).CopyFrom(pb_params)
            await self.ws.send(delimited(command.SerializeToString()))
        else:
            await self.ws.send(json.dumps({"id": self.next_id, method: params}))
        async with asyncio.timeout(10):
            while True:  # publications may come first
                for message in await self.messages():
                    if message["id"] == self.next_id:
                        return message

    async def messages(self) -> list[dict[str, Any]]:
        """The messages of one frame, as ``{"id", "push"|method: ...}`` dicts (pubs recorded)."""
        frame = await asyncio.wait_for(self.ws.recv(), 10)
        assert isinstance(frame, bytes) is self.binary, "a frame of the other encoding"
        out = []
        if self.binary:
            assert isinstance(frame, bytes)
            pos = 0
            while pos < len(frame):
                n, pos = read_varint(frame, pos)
                reply = pb.Reply()
                reply.ParseFromString(frame[pos : pos + n])
                pos += n
                if reply.HasField("push") and reply.push.HasField("pub"):
                    p = reply.push.pub
                    self._pub(p.offset, p.data, p.delta)
                out.append({"id": reply.id, "reply": reply})
        else:
            assert isinstance(frame, str)
            for line in frame.split("\n"):
                message = json.loads(line)
                pub = message.get("push", {}).get("pub")
                if pub is not None:
                    data = pub["data"]
                    raw = (
                        data.encode()
                        if isinstance(data, str)
                        else json.dumps(data, separators=(",", ":")).encode()
                    )
                    self._pub(pub.get("offset", 0), raw, pub.get("delta", False))
                out.append({"id": message.get("id", 0), "reply": message})
        return out

    def _pub(self, offset: int, data: bytes, delta: bool) -> None:
        if delta:
            self.deltas += 1
            data = apply_delta(self.base, data)
        self.base = data
        self.pubs.append((offset, data))


async def connect(url: str, binary: bool) -> Peer:
    protocol = "centrifuge-protobuf" if binary else "centrifuge-json"
    ws = await websockets.connect(url, subprotocols=[protocol])  # type: ignore[list-item]
    assert ws.subprotocol == protocol
    peer = Peer(ws, binary)
    await peer.command("connect", {}, pb.ConnectRequest())
    return peer


@pytest.mark.parametrize("own_protocol", [True, False], ids=["livehub-protocol", "asgi"])
async def test_json_and_protobuf_subscribers_get_the_same_publications(own_protocol: bool) -> None:
    async with serving(own_protocol) as (hub, url):
        peers = []
        for binary in (False, True):
            for delta in ("", "fossil"):
                for _ in range(2):
                    peer = await connect(url, binary)
                    params = {"channel": "news", "delta": delta}
                    reply = await peer.command("subscribe", params, pb.SubscribeRequest(**params))
                    assert "error" not in str(reply["reply"])[:20]
                    peers.append(peer)
        docs = [json.dumps({**DOC, "n": n}, separators=(",", ":")).encode() for n in range(20)]
        for doc in docs[:10]:
            await hub.node.publish("news", doc)
        # a Protobuf client publishes the rest: its commands reach every subscriber
        publisher = peers[-1]
        for doc in docs[10:]:
            reply = await publisher.command("publish", {}, pb.PublishRequest(channel="news", data=doc))
            assert reply["reply"].HasField("publish")
        for peer in peers:
            async with asyncio.timeout(10):
                while len(peer.pubs) < len(docs):
                    await peer.messages()
        expected = [(n + 1, doc) for n, doc in enumerate(docs)]
        for peer in peers:
            assert peer.pubs == expected
        delta_peers = [p for i, p in enumerate(peers) if i % 4 >= 2]
        assert all(p.deltas > 0 for p in delta_peers)  # deltas were sent, in both encodings
        assert all(p.deltas == 0 for p in peers if p not in delta_peers)
        for peer in peers:
            await peer.ws.close()


@pytest.mark.parametrize("own_protocol", [True, False], ids=["livehub-protocol", "asgi"])
async def test_a_text_frame_on_a_protobuf_connection_closes_3506(own_protocol: bool) -> None:
    async with serving(own_protocol) as (_hub, url):
        peer = await connect(url, binary=True)
        await peer.ws.send('{"id":2,"presence_stats":{"channel":"news"}}')
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(peer.ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 3506


@pytest.mark.parametrize("own_protocol", [True, False], ids=["livehub-protocol", "asgi"])
async def test_malformed_protobuf_closes_3501_and_batches_are_answered_in_order(own_protocol: bool) -> None:
    async with serving(own_protocol) as (_hub, url):
        peer = await connect(url, binary=True)
        commands = [
            pb.Command(id=10 + i, presence_stats=pb.PresenceStatsRequest(channel=f"c{i}")) for i in range(3)
        ]
        await peer.ws.send(b"".join(delimited(c.SerializeToString()) for c in commands))
        ids: list[int] = []
        async with asyncio.timeout(10):
            while len(ids) < 3:
                ids += [m["id"] for m in await peer.messages()]
        assert ids == [10, 11, 12]
        await peer.ws.send(b"\x05\x08\x01")  # a length past the end of the frame
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(peer.ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 3501


@pytest.mark.parametrize("own_protocol", [True, False], ids=["livehub-protocol", "asgi"])
async def test_binary_payloads_between_protobuf_clients_live_and_recovered(own_protocol: bool) -> None:
    """Data that is not UTF-8 (nor JSON) travels untouched between Protobuf clients, as
    deltas live and in full in a recovering subscribe reply."""
    async with serving(own_protocol) as (_hub, url):
        live = await connect(url, binary=True)
        first = pb.SubscribeRequest(channel="bin", delta="fossil", recoverable=True, positioned=True)
        reply = await live.command("subscribe", {}, first)
        epoch = reply["reply"].subscribe.epoch
        assert reply["reply"].subscribe.delta and epoch
        blobs = [bytes(range(256)) + bytes([0xFF, 0xC3, n]) for n in range(5)]
        publisher = await connect(url, binary=True)
        for blob in blobs:
            await publisher.command("publish", {}, pb.PublishRequest(channel="bin", data=blob))
        async with asyncio.timeout(10):
            while len(live.pubs) < len(blobs):
                await live.messages()
        assert live.pubs == [(n + 1, blob) for n, blob in enumerate(blobs)] and live.deltas > 0
        late = await connect(url, binary=True)
        request = pb.SubscribeRequest(recover=True, offset=0, epoch=epoch)
        request.MergeFrom(first)
        recovered = (await late.command("subscribe", {}, request))["reply"].subscribe
        assert recovered.recovered and [(p.offset, p.data) for p in recovered.publications] == live.pubs


@pytest.mark.parametrize("own_protocol", [True, False], ids=["livehub-protocol", "asgi"])
async def test_pings_are_empty_replies_and_empty_commands_are_pongs(own_protocol: bool) -> None:
    async with serving(own_protocol, ping_interval=0.4, pong_timeout=0.3) as (hub, url):
        peer = await connect(url, binary=True)
        for _ in range(3):  # answered pings keep the connection; each ping is one empty Reply
            assert await asyncio.wait_for(peer.ws.recv(), 5) == b"\x00"
            await peer.ws.send(b"\x00")
        assert len(hub.node.sessions) == 1
        assert await asyncio.wait_for(peer.ws.recv(), 5) == b"\x00"  # not answered: closed, no pong
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(peer.ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 3012
