"""A FastAPI + SQLAlchemy app (tests/transactional_app.py) under ``livehub run`` on the real
PostgreSQL, PostgreSQL alone (the engine too), and a real client (the official
centrifuge-python SDK) subscribed over WebSocket:

* a transaction that rolls back after publishing: nothing is delivered;
* one that commits: delivered once, with the next offset;
* the node killed (SIGKILL) after the commit and before delivery: once it is started
  again the client, which reconnects by itself, gets the publication once, at the offset
  that follows, through recovery; a publication after the restart continues the stream.

"Before delivery" is made certain by holding the lock of the channel's stream row from
this test: the relay's publish of the committed row waits on it, the node is killed while
it waits, and the lock is released after the kill (the orphaned publish may then complete
in the database: the relay of the restarted node publishes the row again with the same
idempotency key, and it is not delivered twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from centrifuge import Client  # type: ignore[import-untyped]

from livehub.engines.postgres import drop_tables
from tests.cluster.harness import Watcher, until
from tests.engines.contract import POSTGRES_URL, require_service
from tests.servers import ROOT, free_port, wait_port

CHANNEL = "orders:new"


class App:
    """The app under ``livehub run`` in a process group of its own, on one port for its life."""

    def __init__(self, tmp: Path, prefix: str) -> None:
        self.port = free_port()
        self.log = tmp / "app.log"
        self.env = {
            **os.environ,
            "APP_DATABASE": POSTGRES_URL,
            "APP_ENGINE": f"{POSTGRES_URL}?prefix={prefix}_engine",
            "APP_TABLE": prefix,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "livehub", "run", "tests.transactional_app:app"]
        cmd += ["--port", str(self.port), "--log-level", "warning"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_port(self.port, self.proc, timeout=30)

    def kill(self) -> None:
        """kill -9: no shutdown, no goodbye to the client or the database."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service(POSTGRES_URL, "PostgreSQL")
    yield "lhtest_app_" + secrets.token_hex(4)


@pytest.fixture
async def app(tmp_path: Path, prefix: str) -> AsyncIterator[App]:
    db = await asyncpg.connect(POSTGRES_URL)
    await db.execute(f"CREATE TABLE {prefix}_orders (id serial PRIMARY KEY, item text)")
    served = App(tmp_path, prefix)
    try:
        served.start()
        yield served
    finally:
        served.kill()
        await db.execute(f"DROP TABLE IF EXISTS {prefix}_orders, {prefix}_outbox")
        await db.close()
        await drop_tables(served.env["APP_ENGINE"])
        print(served.log.read_text()[-5000:])  # shown when the test failed


async def test_rollback_commit_and_a_node_killed_between_commit_and_delivery(app: App, prefix: str) -> None:
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.port}", timeout=10.0, trust_env=False)
    db = await asyncpg.connect(POSTGRES_URL)
    client = Client(app.ws, headers={"X-User": "bob"}, proxy=None, max_reconnect_delay=0.5)
    watcher = Watcher()
    sub = client.new_subscription(CHANNEL, events=watcher)
    try:
        await client.connect()
        await sub.subscribe()
        await until(lambda: watcher.subscribed, "subscribed")

        # rolled back after publishing: nothing, ever
        response = await http.post("/orders", json={"item": "rolled back", "fail": True})
        assert response.status_code == 409
        # committed: delivered once, offset 1 (and the rolled-back one did not take an offset)
        response = await http.post("/orders", json={"item": "first"})
        assert response.status_code == 200
        await until(lambda: watcher.pubs, "the committed order delivered")
        assert watcher.pubs == [(1, {"id": 2, "item": "first"})]  # order 1 was rolled back: id 2

        # committed, then the node dies before delivering it
        lock = db.transaction()
        await lock.start()
        await db.execute(f"SELECT 1 FROM {prefix}_engine_stream WHERE channel = $1 FOR UPDATE", CHANNEL)
        response = await http.post("/orders", json={"item": "in flight"})
        assert response.status_code == 200  # the app's transaction committed

        async def relay_waiting() -> bool:
            waiting = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
                f"%{prefix}_engine_publish(%",
            )
            return bool(waiting)

        await until(relay_waiting, "the relay's publish waiting on the stream row")
        assert await db.fetchval(f"SELECT count(*) FROM {prefix}_outbox") == 1
        app.kill()
        await lock.rollback()  # the orphaned publish may now complete in the database
        await asyncio.sleep(0.5)
        assert watcher.pubs == [(1, {"id": 2, "item": "first"})]  # not delivered before the kill

        app.start()
        await until(
            lambda: len(watcher.pubs) >= 2, "the in-flight order delivered after the restart", within=20
        )
        response = await http.post("/orders", json={"item": "after restart"})
        assert response.status_code == 200
        await until(lambda: len(watcher.pubs) >= 3, "the order after the restart delivered")
        await asyncio.sleep(1.0)  # time for a duplicate to show, if there were one
        assert watcher.pubs == [
            (1, {"id": 2, "item": "first"}),
            (2, {"id": 3, "item": "in flight"}),
            (3, {"id": 4, "item": "after restart"}),
        ]
        assert watcher.subscribed[-1].was_recovering and watcher.subscribed[-1].recovered
        assert await db.fetchval(f"SELECT count(*) FROM {prefix}_outbox") == 0
        top = await db.fetchval(f"SELECT top FROM {prefix}_engine_stream WHERE channel = $1", CHANNEL)
        assert top == 3
    finally:
        await client.disconnect()
        await http.aclose()
        await db.close()
