"""Three ``livehub serve`` processes on one Redis behave as one hub: publications,
presence, server API commands and ``info`` reach across nodes."""

from __future__ import annotations

import asyncio

from .harness import PRESENCE_TTL, Cluster, connect, until


async def test_three_nodes_act_as_one_hub(cluster: Cluster) -> None:
    a, b, c = await cluster.start(3)
    alice = await connect(a.ws, "alice")
    bob = await connect(b.ws, "bob")
    try:
        on_a = await alice.subscribe("chat:room")
        on_b = await bob.subscribe("chat:room")

        # a client on B publishes; the client on A receives it (and B's own client too)
        await bob.subs["chat:room"].publish({"text": "from bob"})
        await until(lambda: [d for _, d in on_a.pubs] == [{"text": "from bob"}], "A got B's publication")
        await until(lambda: len(on_b.pubs) == 1, "B got its own publication")

        # node C's HTTP API publishes; A receives it, at the next offset
        reply = await cluster.api(c, "publish", channel="chat:room", data={"text": "from the API"})
        assert reply["result"]["offset"] == 2
        await until(lambda: len(on_a.pubs) == 2, "A got C's API publication")
        assert on_a.pubs[1] == (2, {"text": "from the API"})

        # presence is cluster-wide, from any node's API and from a client
        presence = (await cluster.api(c, "presence", channel="chat:room"))["result"]["presence"]
        assert sorted(info["user"] for info in presence.values()) == ["alice", "bob"]
        stats = (await cluster.api(a, "presence_stats", channel="chat:room"))["result"]
        assert stats == {"num_clients": 2, "num_users": 2}
        seen_by_alice = await alice.subs["chat:room"].presence()
        assert sorted(info.user for info in seen_by_alice.clients.values()) == ["alice", "bob"]

        # info lists the three nodes, with their own clients
        async def three_nodes() -> list[dict[str, object]] | None:
            nodes = (await cluster.api(c, "info"))["result"]["nodes"]
            return nodes if len(nodes) == 3 and sum(n["num_clients"] for n in nodes) == 2 else None

        nodes = await until(three_nodes, "info listing 3 nodes with 2 clients", within=10)
        assert len({n["uid"] for n in nodes}) == 3 and len({n["name"] for n in nodes}) == 3
        assert sorted(n["num_clients"] for n in nodes) == [0, 1, 1]

        # server-side subscribe and unsubscribe through C reach bob's connection on B
        assert (await cluster.api(c, "subscribe", user="bob", channel="chat:extra"))["result"] == {}
        await until(lambda: "chat:extra" in bob.events.server_subs, "bob subscribed server-side")
        assert (await cluster.api(c, "unsubscribe", user="bob", channel="chat:room"))["result"] == {}
        await until(lambda: on_b.unsubscribed == [2000], "bob unsubscribed server-side (2000)")

        # refresh with expired=true through C ends bob's connection on B (3005: it reconnects)
        assert (await cluster.api(c, "refresh", user="bob", expired=True))["result"] == {}
        await until(lambda: 3005 in bob.events.connecting, "bob's connection expired by C's API")

        # disconnect of alice through C closes her connection on A (3503: no reconnect)
        assert (await cluster.api(c, "disconnect", user="alice"))["result"] == {}
        await until(lambda: alice.events.disconnects == [3503], "alice disconnected by C's API")
        assert bob.events.disconnects == []
    finally:
        await alice.client.disconnect()
        await bob.client.disconnect()


async def test_presence_lives_with_its_node(cluster: Cluster) -> None:
    """Live nodes refresh their clients' presence past its TTL; a killed node's clients
    leave presence after the TTL, and the node leaves ``info``."""
    a, b = await cluster.start(2)
    alice = await connect(a.ws, "alice")
    bob = await connect(b.ws, "bob")
    try:
        await alice.subscribe("chat:presence")
        await bob.subscribe("chat:presence")

        async def users() -> list[str]:
            presence = (await cluster.api(a, "presence", channel="chat:presence"))["result"]["presence"]
            return sorted(info["user"] for info in presence.values())

        assert await users() == ["alice", "bob"]
        await asyncio.sleep(PRESENCE_TTL * 2)
        assert await users() == ["alice", "bob"]  # refreshed by both nodes

        async def nodes() -> int:
            return len((await cluster.api(a, "info"))["result"]["nodes"])

        await until(lambda: _equal(nodes(), 2), "info lists both nodes", within=10)
        cluster.kill(b)
        await until(lambda: _equal(users(), ["alice"]), "bob gone from presence", within=PRESENCE_TTL + 5)
        await until(lambda: _equal(nodes(), 1), "node B gone from info", within=12)
        assert await users() == ["alice"]
    finally:
        await alice.client.disconnect()
        await bob.client.disconnect()


async def _equal(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc]
