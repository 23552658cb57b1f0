"""Two ``livehub serve`` processes on PostgreSQL alone (no Redis, no NATS): each sees the
other's publications (small ones in the NOTIFY payload, a large one read back by id) and
presence; after kill -9 of one node its clients reconnect to the other through a loopback
proxy and recover every publication once, in order, and the dead node's client leaves
presence within the presence TTL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from livehub.engines.postgres import drop_tables
from tests.engines.contract import POSTGRES_URL, require_service

from .harness import PRESENCE_TTL, Cluster, Proxy, SDKClient, connect, unique_prefix, until

CHANNEL = "chat:postgres"
TOTAL = 120
KILL_AT = 40
INTERVAL = 0.02


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """An engine URL of a prefix (tables) of its own, dropped after the test."""
    require_service(POSTGRES_URL, "PostgreSQL")
    url = f"{POSTGRES_URL}?prefix={unique_prefix()}&presence_ttl={PRESENCE_TTL:g}s"
    yield url
    await drop_tables(url)


@pytest.fixture
async def postgres_cluster(tmp_path: Path, postgres_url: str) -> AsyncIterator[Cluster]:
    nodes = Cluster(tmp_path, "")
    try:
        yield nodes
    finally:
        await nodes.close()
        print(nodes.logs())  # shown by pytest when the test failed


async def test_two_nodes_on_postgresql_alone(postgres_cluster: Cluster, postgres_url: str) -> None:
    cluster = postgres_cluster
    a, b = await cluster.start(2, engine=postgres_url)
    proxy = Proxy([a.port, b.port])  # A while it lives, then B
    await proxy.start()
    clients: list[SDKClient] = []
    try:
        alice = await connect(proxy.ws, "alice")  # on A
        bob = await connect(b.ws, "bob")
        clients = [alice, bob]
        assert proxy.connected_to == [a.port]
        old_client = alice.client.client_id
        seen_by_alice = await alice.subscribe(CHANNEL)
        seen_by_bob = await bob.subscribe(CHANNEL)

        # publications cross nodes, both ways; a large one (past NOTIFY's 8000 bytes) too
        await cluster.api(a, "publish", channel=CHANNEL, data={"n": 1})
        await cluster.api(b, "publish", channel=CHANNEL, data={"n": 2})
        big = "x" * 20_000
        await cluster.api(a, "publish", channel=CHANNEL, data={"n": 3, "big": big})
        for watcher in (seen_by_alice, seen_by_bob):
            await until(lambda w=watcher: len(w.pubs) >= 3, "three publications on both nodes")
            assert [(o, d["n"]) for o, d in watcher.pubs] == [(1, 1), (2, 2), (3, 3)]
            assert watcher.pubs[2][1]["big"] == big

        # presence is the cluster's: read on either node
        for node in (a, b):
            presence = (await cluster.api(node, "presence", channel=CHANNEL))["result"]["presence"]
            assert sorted(info["user"] for info in presence.values()) == ["alice", "bob"]
        assert (await bob.subs[CHANNEL].presence()).clients.keys() >= {alice.client.client_id}

        # a stream of publications through B; A is killed in the middle of it
        killed_at = 0.0

        async def publish() -> None:
            nonlocal killed_at
            for n in range(4, TOTAL + 1):
                await cluster.api(b, "publish", channel=CHANNEL, data={"n": n})
                if n == KILL_AT:
                    cluster.kill(a)
                    killed_at = time.monotonic()
                await asyncio.sleep(INTERVAL)

        await asyncio.wait_for(publish(), timeout=60)
        for watcher in (seen_by_alice, seen_by_bob):
            await until(
                lambda w=watcher: w.pubs and w.pubs[-1][0] >= TOTAL, "the last publication", within=30
            )
            assert watcher.offsets() == list(range(1, TOTAL + 1))  # every one, once, in order
            assert [d["n"] for _, d in watcher.pubs] == list(range(1, TOTAL + 1))
        assert proxy.connected_to[-1] == b.port
        again = seen_by_alice.subscribed[-1]
        assert again.was_recovering and again.recovered
        recovered_after = seen_by_alice.times[-1] - killed_at

        # alice's client on the dead node leaves presence; her new one (on B) and bob stay

        async def clients_on_b() -> set[str]:
            presence = (await cluster.api(b, "presence", channel=CHANNEL))["result"]["presence"]
            return set(presence)

        await until(
            lambda: _without(clients_on_b(), old_client),
            "the killed node's client gone from presence",
            within=PRESENCE_TTL + 5,
            every=0.2,
        )
        print(f"postgres cluster: alice recovered on B {recovered_after:.2f}s after kill -9 of A")
    finally:
        for client in clients:
            await client.client.disconnect()
        await proxy.close()


async def _without(clients: object, gone: str) -> bool:
    now: set[str] = await clients  # type: ignore[misc]
    return len(now) == 2 and gone not in now
