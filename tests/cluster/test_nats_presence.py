"""Two ``livehub serve`` processes on NATS alone (no Redis): presence is cluster-wide —
a client on node A shows in presence read on node B — and after kill -9 of node A its
clients leave presence within the presence TTL, while B's stay (refreshed past it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from livehub.engines.nats import delete_streams
from tests.engines.contract import NATS_URL, require_service

from .harness import PRESENCE_TTL, Cluster, connect, unique_prefix, until

CHANNEL = "chat:presence"


@pytest.fixture
async def nats_url() -> AsyncIterator[str]:
    """An engine URL of a prefix of its own; its stream and buckets are deleted after."""
    require_service(NATS_URL, "NATS")
    url = f"{NATS_URL}?prefix={unique_prefix()}&storage=memory&presence_ttl={PRESENCE_TTL:g}s"
    yield url
    await delete_streams(url)


@pytest.fixture
async def nats_cluster(tmp_path: Path, nats_url: str) -> AsyncIterator[Cluster]:
    nodes = Cluster(tmp_path, "")
    try:
        yield nodes
    finally:
        await nodes.close()
        print(nodes.logs())  # shown by pytest when the test failed


async def test_presence_spans_nats_nodes_and_a_killed_nodes_clients_leave(
    nats_cluster: Cluster, nats_url: str
) -> None:
    cluster = nats_cluster
    a, b = await cluster.start(2, engine=nats_url)
    alice = await connect(a.ws, "alice")
    bob = await connect(b.ws, "bob")
    alice_on_b = await connect(b.ws, "alice")  # a second tab: one more client, not one more user
    clients = (alice, bob, alice_on_b)
    try:
        for client in clients:
            await client.subscribe(CHANNEL)

        async def users_on_b() -> list[str]:
            presence = (await cluster.api(b, "presence", channel=CHANNEL))["result"]["presence"]
            return sorted(info["user"] for info in presence.values())

        # alice's client on A is in the presence read on B, through the API and by a client
        assert await users_on_b() == ["alice", "alice", "bob"]
        stats = (await cluster.api(b, "presence_stats", channel=CHANNEL))["result"]
        assert stats == {"num_clients": 3, "num_users": 2}
        seen_by_bob = await bob.subs[CHANNEL].presence()
        assert alice.client.client_id in seen_by_bob.clients  # the very client connected to A
        assert (await cluster.api(a, "presence_stats", channel=CHANNEL))["result"] == stats

        # live nodes refresh their clients past the TTL (client.presence_update_interval 1s)
        await asyncio.sleep(PRESENCE_TTL * 2)
        assert await users_on_b() == ["alice", "alice", "bob"]

        cluster.kill(a)
        killed_at = time.monotonic()
        await until(
            lambda: _equal(users_on_b(), ["alice", "bob"]),
            "the killed node's client gone from presence",
            within=PRESENCE_TTL + 2,
            every=0.1,
        )
        gone_after = time.monotonic() - killed_at

        async def stats_on_b() -> object:
            return (await cluster.api(b, "presence_stats", channel=CHANNEL))["result"]

        # presence and presence_stats are separate reads of the bucket: both converge on the removal
        await until(
            lambda: _equal(stats_on_b(), {"num_clients": 2, "num_users": 2}),
            "the killed node's client gone from presence_stats",
            within=PRESENCE_TTL + 2,
            every=0.1,
        )
        seen_by_bob = await bob.subs[CHANNEL].presence()
        assert alice.client.client_id not in seen_by_bob.clients
        print(f"nats presence: the killed node's client left presence {gone_after:.2f}s after kill -9")
    finally:
        for client in clients:
            await client.client.disconnect()


async def _equal(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc]
