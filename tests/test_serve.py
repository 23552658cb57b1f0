"""``livehub serve`` end to end over real sockets: listening, bad input, origin check, shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.servers import ROOT, free_port, serve, wait_port

CONFIG = """
[client]
insecure = true
allowed_origins = ["https://app.example"]
[websocket]
message_size_limit = 1024
[channel.without_namespace]
history_size = 10
history_ttl = "60s"
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "config.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def port(config: Path) -> Iterator[int]:
    with serve(config, host="localhost") as p:
        yield p


async def connect_and_subscribe(url: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url)
    await ws.send('{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"news"}}')
    frame = await asyncio.wait_for(ws.recv(), 5)
    assert '"id":1,"connect"' in frame and '"id":2,"subscribe"' in frame
    return ws


async def test_localhost_listens_on_both_loopbacks(port: int) -> None:
    a = await connect_and_subscribe(f"ws://127.0.0.1:{port}/connection/websocket")
    b = await connect_and_subscribe(f"ws://[::1]:{port}/connection/websocket")
    await a.send('{"id":3,"publish":{"channel":"news","data":{"n":1}}}')
    for ws in (a, b):
        frames = ""
        while '"pub"' not in frames:
            frames += await asyncio.wait_for(ws.recv(), 5)
        assert '"data":{"n":1}' in frames
    await a.close()
    await b.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", 3501),
        ('{"id":1,"subscribe":{"channel":"x"}}', 3501),  # first command must be connect
        ('{"id":1,"connect":{}}\n{"id":2,"connect":{}}', 3501),
        ('{"id":1,"connect":{"token":"not-a-jwt"}}', 3500),
        ('{"id":1,"connect":{"data":"' + "x" * 2000 + '"}}', 1009),
        (b"\x00binary", 3506),
    ],
)
async def test_bad_input_closes_with_protocol_code(port: int, frame: str | bytes, code: int) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket") as ws:
        await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == code


async def test_server_survives_bad_clients(port: int) -> None:
    """After all the bad input above, the node still serves a normal client."""
    ws = await connect_and_subscribe(f"ws://127.0.0.1:{port}/connection/websocket")
    await ws.close()


async def test_foreign_origin_is_refused(port: int) -> None:
    url = f"ws://127.0.0.1:{port}/connection/websocket"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, origin=websockets.Origin("https://evil.example"))
    assert refused.value.response.status_code == 403
    ok = await websockets.connect(url, origin=websockets.Origin("https://app.example"))
    await ok.close()


async def wait_listening(port: int) -> None:
    async with asyncio.timeout(15):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


async def test_shutdown_asks_clients_to_reconnect(config: Path) -> None:
    p = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "livehub",
        "serve",
        "--config",
        str(config),
        "--port",
        str(p),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_listening(p)
        ws = await connect_and_subscribe(f"ws://127.0.0.1:{p}/connection/websocket")
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (3001, "shutdown")
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
        # uvicorn re-raises the signal once it has shut down cleanly
        assert proc.returncode in (0, -signal.SIGTERM)
        assert b"Traceback" not in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_the_access_log_does_not_show_the_api_key(tmp_path: Path) -> None:
    """``?api_key=`` is a documented way to authenticate; the access log must not keep the key."""
    key = "k-" + "s3cr3t" * 4
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"http_api": {"key": key}}))
    port = free_port()
    cmd = [sys.executable, "-m", "livehub", "serve", "--config", str(config), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        wait_port(port, proc)
        reply = httpx.post(f"http://127.0.0.1:{port}/api/info?api_key={key}", json={}, timeout=5)
        assert reply.status_code == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    log = out + err
    assert "/api/info?api_key=[redacted]" in log
    assert key not in log
