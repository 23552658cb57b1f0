"""Redis restarts empty under two nodes: they reconnect by themselves, fail fast while it
is down, and clients learn that history was lost (``recovered: false``, a new epoch)
instead of silently skipping a gap."""

from __future__ import annotations

import time

import pytest
from centrifuge import ReplyError  # type: ignore[import-untyped]

from .harness import Cluster, RedisServer, connect, engine_url, until


async def test_nodes_survive_a_redis_restart(cluster: Cluster, redis_server: RedisServer) -> None:
    engine = engine_url(cluster.prefix, base=redis_server.url, db=0, connect_timeout="500ms", io_timeout="1s")
    a, b = await cluster.start(2, engine=engine)
    alice = await connect(a.ws, "alice")
    try:
        busy = await alice.subscribe("stream:busy")  # gets publications after the restart
        quiet = await alice.subscribe("stream:quiet")  # gets none: the position check finds out
        for n in range(1, 6):
            for channel in ("stream:busy", "stream:quiet"):
                await cluster.api(b, "publish", channel=channel, data={"n": n})
        await until(lambda: busy.offsets() == [1, 2, 3, 4, 5], "alice got the busy channel")
        await until(lambda: quiet.offsets() == [1, 2, 3, 4, 5], "alice got the quiet channel")
        old_epoch = busy.subscribed[0].stream_position.epoch
        assert old_epoch

        await redis_server.shutdown_nosave()

        # the API fails fast with error 100, and so does a client's publish
        started = time.monotonic()
        reply = await cluster.api(b, "publish", channel="stream:busy", data={"n": "lost"})
        assert reply == {"error": {"code": 100, "message": "internal server error"}}
        assert time.monotonic() - started < 3.0
        with pytest.raises(ReplyError) as refused:
            await alice.subs["stream:busy"].publish({"n": "refused"})
        assert refused.value.code == 100
        assert alice.client.state.value == "connected"  # the connection itself stays

        await redis_server.start()  # same port, nothing in it

        async def published_again() -> dict[str, object] | None:
            reply = await cluster.api(b, "publish", channel="stream:busy", data={"n": "after"})
            return reply.get("result")

        result = await until(published_again, "the API publishes again", within=15, every=0.5)
        assert result["epoch"] != old_epoch  # the stream began again

        def resubscribed_unrecovered(watcher: object) -> bool:
            subscribed = watcher.subscribed[1:]  # type: ignore[attr-defined]
            return any(s.was_recovering and not s.recovered for s in subscribed)

        # the client was made to resubscribe (2500) and told it could not recover
        await until(lambda: resubscribed_unrecovered(busy), "busy channel resubscribed, not recovered", 15)
        await until(lambda: resubscribed_unrecovered(quiet), "quiet channel resubscribed, not recovered", 15)
        for watcher in (busy, quiet):
            assert 2500 in watcher.subscribing
            assert watcher.subscribed[-1].stream_position.epoch != old_epoch
        new_epoch = busy.subscribed[-1].stream_position.epoch
        # no publication of the new epoch was taken for a continuation of the old one
        assert busy.offsets()[:5] == [1, 2, 3, 4, 5]
        assert all(offset > 0 for offset in busy.offsets()[5:])

        # and the stream flows again, cross-node, in the new epoch
        top = (await cluster.api(b, "history", channel="stream:busy"))["result"]
        assert top["epoch"] == new_epoch
        await cluster.api(b, "publish", channel="stream:busy", data={"n": "flowing"})
        await until(
            lambda: busy.pubs and busy.pubs[-1] == (top["offset"] + 1, {"n": "flowing"}),
            "alice gets publications of the new epoch",
            within=10,
        )

        async def two_nodes() -> bool:
            return len((await cluster.api(a, "info"))["result"]["nodes"]) == 2

        await until(two_nodes, "the nodes see each other again", within=10)
    finally:
        await alice.client.disconnect()
