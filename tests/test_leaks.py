"""What a client's bad input leaves behind: nothing.

Errors used to be shared module-level exception instances; each raise extended the same
traceback, keeping every raising frame — and the Sessions in them — alive forever. These
tests count what survives refused connections and error replies.
"""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path

import orjson
import pytest
import websockets

from livehub.app import create_app
from livehub.core.session import Session
from livehub.settings import Settings
from livehub.testing import ConnectionClosed, HubTestClient
from tests.servers import serve


def live_sessions() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Session))


async def test_refused_connections_leave_no_session_behind() -> None:
    app = create_app(Settings.model_validate({"client": {"insecure": True}}), demos=False)
    async with HubTestClient(app) as hub:
        before = live_sessions()
        for _ in range(200):
            conn = await hub.connect(handshake=False)
            await conn.send_raw('{"id": 1, "subscribe": {"channel": "x"}}')  # before connect: 3501
            closed = await conn.wait_closed()
            assert closed.code == 3501
            await conn.close()
        hub._connections.clear()  # the test client's own references
        await asyncio.sleep(0)
        assert live_sessions() - before == 0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def server_pid(port: int) -> int:
    """The pid listening on ``port`` (the ``livehub serve`` child of this test)."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inode = cols[9]
    assert inode is not None
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if any(f"socket:[{inode}]" == str(fd.readlink()) for fd in (proc / "fd").iterdir()):
                    return int(proc.name)
            except OSError:
                continue
    raise AssertionError("no process listens there")


async def test_many_error_replies_do_not_grow_server_memory(tmp_path: Path) -> None:
    """50,000 commands answered with an error (108: ``ping`` is not a command here): with
    shared exception instances this kept ~35 MB of frames; now the server stays flat."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"client": {"insecure": True}}))
    with serve(config) as port:
        pid = server_pid(port)
        uri = f"ws://127.0.0.1:{port}/connection/websocket"
        async with websockets.connect(uri, max_size=None) as ws:
            await ws.send('{"id": 1, "connect": {}}')
            assert "connect" in orjson.loads(await ws.recv())

            async def flood(rounds: int, start: int) -> None:
                for r in range(rounds):
                    ids = range(start + r * 500, start + (r + 1) * 500)
                    await ws.send("\n".join(f'{{"id": {i}, "ping": {{}}}}' for i in ids))
                    got = 0
                    while got < 500:
                        frame = await ws.recv()
                        got += frame.count('"code":108')

            await flood(10, 10)  # warm up: allocator pools, code paths
            before = rss_kb(pid)
            await flood(100, 100_000)
            grown = rss_kb(pid) - before
        assert grown < 8_000, f"server RSS grew {grown} KB over 50,000 error replies"


async def test_a_refused_connection_is_closed_not_kept(tmp_path: Path) -> None:
    """The server API's side of the same: a client refused at connect is gone from the node."""
    app = create_app(Settings.model_validate({"client": {"token": {"hmac_secret_key": "k" * 32}}}))
    async with HubTestClient(app) as hub:
        with pytest.raises(ConnectionClosed):
            conn = await hub.connect(token="not-a-jwt")
            await conn.wait_closed()
        assert app.state.node.sessions == {}
