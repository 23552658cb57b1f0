"""Two ``livehub serve`` nodes configured as Centrifugo v6 is (``engine.type: redis`` and
``engine.redis.address``, no livehub engine URL) form one hub on a redis-server of the test's
own; their readiness endpoint follows that Redis going away and coming back."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.servers import ROOT, free_port

from .harness import API_KEY, CONFIG, RedisServer, connect, unique_prefix, until


@contextlib.contextmanager
def nodes(tmp: Path, redis: RedisServer, count: int) -> Iterator[list[int]]:
    config = {
        **CONFIG,
        "engine": {
            "type": "redis",
            "redis": {
                "address": f"127.0.0.1:{redis.port}",
                "prefix": unique_prefix(),
                "connect_timeout": "500ms",
                "io_timeout": "1s",
            },
        },
    }
    path = tmp / "centrifugo.json"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEHUB_", "CENTRIFUGO_"))}
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_port() for _ in range(count)]
    try:
        for port in ports:
            log = (tmp / f"node-{port}.log").open("wb")
            cmd = [sys.executable, "-m", "livehub", "serve", "--config", str(path)]
            cmd += ["--host", "127.0.0.1", "--port", str(port)]
            procs.append(
                subprocess.Popen(
                    cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        yield ports
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for port in ports:
            print((tmp / f"node-{port}.log").read_text(errors="replace")[-3000:])


async def ready(http: httpx.AsyncClient, port: int) -> int:
    try:
        return (await http.get(f"http://127.0.0.1:{port}/health/ready")).status_code
    except httpx.HTTPError:
        return 0


async def test_two_nodes_from_a_centrifugo_engine_config_share_publications(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with nodes(tmp_path, redis_server, 2) as (a, b):
        async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
            for port in (a, b):
                await until(lambda p=port: ready_ok(http, p), f"node {port} ready", within=20)
            banner = (tmp_path / f"node-{a}.log").read_text()
            assert f"engine redis://127.0.0.1:{redis_server.port}/0?prefix=" in banner
            alice = await connect(f"ws://127.0.0.1:{a}/connection/websocket", "alice")
            bob = await connect(f"ws://127.0.0.1:{b}/connection/websocket", "bob")
            try:
                on_a = await alice.subscribe("chat:room")
                on_b = await bob.subscribe("chat:room")
                # a publication through node B's API reaches the subscriber on node A, and back
                reply = await http.post(
                    f"http://127.0.0.1:{b}/api/publish",
                    headers={"X-API-Key": API_KEY},
                    json={"channel": "chat:room", "data": {"from": "b"}},
                )
                assert "result" in reply.json()
                await bob.subs["chat:room"].publish({"from": "bob"})
                await alice.subs["chat:room"].publish({"from": "alice"})
                want = [{"from": "b"}, {"from": "bob"}, {"from": "alice"}]
                await until(lambda: [d for _, d in on_a.pubs] == want, "alice on node A got all three")
                await until(lambda: [d for _, d in on_b.pubs] == want, "bob on node B got all three")

                async def both_nodes() -> bool:
                    info = await http.post(
                        f"http://127.0.0.1:{a}/api/info", headers={"X-API-Key": API_KEY}, json={}
                    )
                    return len(info.json()["result"]["nodes"]) == 2

                await until(both_nodes, "node A sees two nodes", within=10)
            finally:
                await alice.client.disconnect()
                await bob.client.disconnect()


async def ready_ok(http: httpx.AsyncClient, port: int) -> bool:
    return await ready(http, port) == 200


async def test_readiness_fails_while_redis_is_down_and_recovers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with nodes(tmp_path, redis_server, 1) as (port,):
        async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
            await until(lambda: ready_ok(http, port), "ready with Redis up", within=20)
            await redis_server.shutdown_nosave()

            async def unavailable() -> bool:
                response = await http.get(f"http://127.0.0.1:{port}/health/ready")
                return response.status_code == 503 and "engine" in response.json()["reason"]

            await until(unavailable, "503 while Redis is down", within=10, every=0.2)
            assert (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200  # alive
            await redis_server.start()
            await until(lambda: ready_ok(http, port), "ready again once Redis is back", within=20, every=0.2)
