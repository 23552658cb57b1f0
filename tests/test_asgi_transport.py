"""The client endpoint's ASGI fallback (``livehub.transports.asgi``): one writer task per
connection sends the frames the outbox writes, in order, and pushes back once a few of
them wait; a slow client is still closed 3008, with the send it never took abandoned.

The first tests drive :class:`ASGITransport` with an ASGI ``send`` that blocks while its
peer takes nothing, as uvicorn's does while its socket pushes back; the last one serves the
Hub's route under plain uvicorn, through real sockets.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets

from livehub.core.outbox import Flusher, Outbox
from livehub.transports.asgi import CLOSE_TIMEOUT, ASGITransport
from tests.servers import free_port, wait_port
from tests.test_connection import client_frame, hub_app, raw_connect, running, server_frames


class Peer:
    """An ASGI ``send``: records each message, waits while ``taking`` is clear (returning
    without suspending when it is set, like uvicorn's), raises ``failure`` when set."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.taking = asyncio.Event()
        self.taking.set()
        self.failure: Exception | None = None

    async def __call__(self, message: dict[str, Any]) -> None:
        await self.taking.wait()
        if self.failure is not None:
            raise self.failure
        self.sent.append(message)

    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send"]


def close_message(code: int, reason: str) -> dict[str, Any]:
    return {"type": "websocket.close", "code": code, "reason": reason}


async def test_writes_are_taken_at_once_and_sent_in_order_by_one_task() -> None:
    peer = Peer()
    tasks = len(asyncio.all_tasks())
    transport = ASGITransport(peer)
    assert len(asyncio.all_tasks()) == tasks + 1  # the writer, for the connection's life
    for turn in range(3):
        assert all(transport.write(f"{turn}.{i}") for i in range(100))
        await asyncio.sleep(0)  # the writer's turn
        assert len(asyncio.all_tasks()) == tasks + 1  # no task per write
    await asyncio.wait_for(transport.drained(), 1)
    assert peer.texts() == [f"{turn}.{i}" for turn in range(3) for i in range(100)]
    await transport.close(1000, "bye")
    assert peer.sent[-1] == close_message(1000, "bye")
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == tasks  # the writer ended with the connection


async def test_the_send_runs_in_the_connections_context_whoever_writes() -> None:
    """Frames are written from the node's flush callback; the server's send (and any ASGI
    middleware wrapping it) still runs in the context of the connection it belongs to."""
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    seen: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        seen.append(who.get())

    who.set("connection 1")
    transport = ASGITransport(send)
    flushed = asyncio.Event()

    def flush() -> None:
        transport.write("frame")
        flushed.set()

    asyncio.get_running_loop().call_soon(flush, context=contextvars.Context())
    await flushed.wait()
    await asyncio.wait_for(transport.drained(), 1)
    assert seen == ["connection 1"]
    transport.stop()


async def test_push_back_above_the_threshold_until_everything_queued_is_sent() -> None:
    peer = Peer()
    transport = ASGITransport(peer, max_queued=10)
    peer.taking.clear()  # the socket pushes back
    assert transport.write("a" * 6) is True
    assert transport.write("b" * 4) is True  # 10 bytes queued: still taken
    assert transport.write("c") is False  # 11: push-back
    drained = asyncio.create_task(transport.drained())
    await asyncio.sleep(0.02)
    assert not drained.done() and peer.sent == []
    peer.taking.set()
    await asyncio.wait_for(drained, 1)
    assert peer.texts() == ["a" * 6, "b" * 4, "c"]
    assert transport.write("d" * 10) is True  # the queue is empty again
    transport.stop()


async def test_close_sends_what_is_queued_then_the_close_message() -> None:
    peer = Peer()
    transport = ASGITransport(peer)
    peer.taking.clear()
    assert transport.write("last words") is True
    closing = asyncio.create_task(transport.close(3000, "bye"))
    await asyncio.sleep(0.02)
    assert peer.sent == []
    peer.taking.set()
    await asyncio.wait_for(closing, 1)
    assert peer.sent == [{"type": "websocket.send", "text": "last words"}, close_message(3000, "bye")]
    with pytest.raises(ConnectionResetError):
        transport.write("after close")


async def test_a_slow_client_is_closed_3008_and_the_send_it_never_took_is_abandoned() -> None:
    """Through the outbox: the peer takes nothing, writes push back, the outbox's queue
    passes its limit and it closes the client as slow; the stuck send is dropped, so the
    close message is the only thing sent, and nothing is sent after it."""
    peer = Peer()
    peer.taking.clear()
    tasks = len(asyncio.all_tasks())
    transport = ASGITransport(peer, max_queued=100)
    outbox = Outbox(transport, 1000, 1, Flusher())
    for _ in range(30):  # 30 * 60 bytes: past both limits
        outbox.put("x" * 60)
        await asyncio.sleep(0)
    assert outbox.close_with is not None and outbox.close_with.code == 3008
    peer.taking.set()
    await asyncio.wait_for(outbox.wait_closed(), 1)
    await asyncio.sleep(0.01)
    assert peer.sent == [close_message(3008, "slow")]
    assert len(asyncio.all_tasks()) == tasks


async def test_a_failed_send_is_raised_to_the_outbox_and_ends_the_writer() -> None:
    """A send that raises (the socket broke) ends the writer; the next ``drained`` or
    ``write`` raises, so the outbox stops writing to it."""
    peer = Peer()
    tasks = len(asyncio.all_tasks())
    transport = ASGITransport(peer)
    peer.failure = OSError("connection reset by peer")
    assert transport.write("a") is True
    with pytest.raises(ConnectionResetError) as failed:
        await asyncio.wait_for(transport.drained(), 1)
    assert failed.value.__cause__ is peer.failure
    with pytest.raises(ConnectionResetError):
        transport.write("b")
    assert len(asyncio.all_tasks()) == tasks
    outbox = Outbox(ASGITransport(peer), 1000, 64, Flusher())
    outbox.put("m")  # taken; its send fails afterwards
    await asyncio.sleep(0.01)
    outbox.put("n")  # the next write tells the outbox, which gives up
    await asyncio.wait_for(outbox.wait_closed(), 1)
    assert outbox.close_with is not None and outbox.close_with.code == 3009  # write error


async def test_stop_ends_the_writer_whether_idle_or_stuck_in_a_send() -> None:
    peer = Peer()
    tasks = len(asyncio.all_tasks())
    idle = ASGITransport(peer)
    await asyncio.sleep(0)
    idle.stop()
    peer.taking.clear()
    stuck = ASGITransport(peer)
    stuck.write("never taken")
    await asyncio.sleep(0.01)
    stuck.stop()
    peer.taking.set()
    await asyncio.sleep(0.01)
    assert peer.sent == [] and len(asyncio.all_tasks()) == tasks


async def test_under_plain_uvicorn_a_peer_that_stops_reading_is_closed_3008_and_others_get_everything() -> (
    None
):
    """``uvicorn module:app`` serves the Hub's ASGI route. A client that stops reading
    fills its socket, uvicorn's send then waits, the writer's queue pushes back and the
    outbox closes the client as slow; a client that reads gets every publication in order.
    Once the stuck one reads again, it finds an unbroken run of publications and then
    the close frame with 3008."""
    app, hub = hub_app(client={"insecure": True, "queue_max_size": 256 * 1024})
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))  # not livehub's protocol
    async with running(server) as port:
        reader, writer = await raw_connect(port, rcvbuf=4096)
        writer.write(client_frame(b'{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"big"}}'))
        frames = server_frames(reader)
        replies = ""
        while '"id":2' not in replies:
            replies += (await anext(frames))[1].decode()
        writer.transport.pause_reading()  # from here on the stuck peer reads nothing
        address = f"ws://127.0.0.1:{port}/connection/websocket"
        async with websockets.connect(address, max_size=None) as fast:
            await fast.send('{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"big"}}')
            while '"id":2' not in await asyncio.wait_for(fast.recv(), 5):
                pass
            seen: list[int] = []
            blob = "x" * 30_000
            for i in range(300):  # 9 MB; one at a time: a reader as fast as the publisher is not slow
                await hub.publish("big", [i, blob])
                while len(seen) <= i:
                    for line in (await asyncio.wait_for(fast.recv(), 10)).split("\n"):
                        seen.append(json.loads(line)["push"]["pub"]["data"][0])
            assert seen == list(range(300))
        writer.transport.resume_reading()
        got: list[int] = []
        async with asyncio.timeout(15):
            async for opcode, payload in frames:
                if opcode == 0x8:
                    assert int.from_bytes(payload[:2], "big") == 3008
                    break
                got += [json.loads(line)["push"]["pub"]["data"][0] for line in payload.decode().split("\n")]
            else:
                pytest.fail("the connection ended without a close frame")
        assert got == list(range(len(got))) and len(got) < 300
        writer.close()


async def test_a_close_for_flooding_goes_first_and_a_peer_that_takes_nothing_is_let_go() -> None:
    """3013: what was queued for the flooder (its 111 replies) is dropped, not waited for;
    and when the server's send never returns (the peer reads nothing), the close gives up
    after ``CLOSE_TIMEOUT`` so the session ends instead of being held by its writer."""
    peer = Peer()
    transport = ASGITransport(peer)
    for i in range(100):
        transport.write(f"reply {i}")
    peer.taking.clear()  # from here on the peer takes nothing
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(transport.close(3013, "too many requests"), CLOSE_TIMEOUT + 1)
    assert loop.time() - started < CLOSE_TIMEOUT + 0.5
    assert len(peer.texts()) < 100  # the queued replies were not all waited for
    with pytest.raises(ConnectionResetError):
        transport.write("more")
    peer.taking.set()  # were the peer to read again: the close message is what comes next
    await asyncio.sleep(0.01)
    assert all(m["type"] == "websocket.send" for m in peer.sent)


async def test_a_close_that_the_peer_never_takes_returns_after_the_timeout() -> None:
    peer = Peer()
    transport = ASGITransport(peer)
    transport.write("x")
    await asyncio.sleep(0)
    peer.taking.clear()
    transport.write("y")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(transport.close(1000, "bye"), CLOSE_TIMEOUT + 1)  # would hang before
    assert CLOSE_TIMEOUT - 0.1 < loop.time() - started < CLOSE_TIMEOUT + 0.5


def masked_frame(payload: bytes) -> bytes:
    """A client text frame of any length (a mask of zeros: the payload goes as is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


FLOOD_APP = """
from fastapi import FastAPI
from livehub import Hub, Settings

limits = {"enabled": True, "total": {"enabled": True, "buckets": [{"interval": "1s", "rate": 100}]}}
hub = Hub(Settings(client={"insecure": True, "rate_limit": {"client_command": limits}}))
app = FastAPI()
app.include_router(hub.router)
"""


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_a_flooder_that_reads_nothing_stops_being_read_after_3013(tmp_path: Path, server: str) -> None:
    """The Hub's ASGI route under another ASGI server, a flooder in another process's shoes:
    it sends publish frames as fast as the socket takes them for 6 s and reads nothing, not
    even the close. Past 1,000 refusals it is closed 3013, and from then on the server takes
    (almost) nothing more from it: what it took in all, its CPU and its memory stay bounded."""
    (tmp_path / "floodapp.py").write_text(FLOOD_APP)
    port = free_port()
    if server == "uvicorn":
        cmd = [sys.executable, "-m", "uvicorn", "floodapp:app", "--port", str(port), "--log-level", "warning"]
    else:
        cmd = [sys.executable, "-m", "hypercorn", "floodapp:app", "-b", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(
            b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        time.sleep(0.3)
        sock.sendall(masked_frame(b'{"id":1,"connect":{}}'))
        frame = masked_frame(
            b"\n".join(b'{"id":%d,"publish":{"channel":"x","data":1}}' % i for i in range(2, 202))
        )
        sock.setblocking(False)
        cpu0, rss0 = proc_cpu_s(proc.pid), proc_rss_mb(proc.pid)
        taken = 0
        taken_at_2s = None
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < 6.0:
            if taken_at_2s is None and elapsed >= 2.0:
                taken_at_2s = taken
            try:
                taken += sock.send(frame)
            except BlockingIOError:
                time.sleep(0.005)
            except OSError:  # the server let the connection go: it reads nothing more either
                break
        cpu, rss = proc_cpu_s(proc.pid) - cpu0, proc_rss_mb(proc.pid) - rss0
        sock.close()
        # 1,000 refused commands take 5 frames (45 KB); the rest is socket buffers and the
        # server's own bounded queue. Reading on would be ~100 MB/s here.
        assert taken < 32 * 1024 * 1024
        assert taken_at_2s is None or taken - taken_at_2s < 4 * 1024 * 1024  # nothing more after 2 s
        assert cpu < 1.5
        assert rss < 32
    finally:
        proc.kill()
        proc.wait(10)
