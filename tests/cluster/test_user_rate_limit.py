"""``client.rate_limit.user_command`` across a cluster: two ``livehub serve`` nodes on one
Redis take a user's commands from the same buckets (one atomic script in Redis), whichever
node each of the user's connections is on; other users and anonymous limits are apart."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import websockets

from .harness import CONFIG, Cluster, token

#: 5 publishes per minute per user (no refill within the test), 10 per minute in all.
USER_LIMITS = {
    "enabled": True,
    "publish": {"enabled": True, "buckets": [{"interval": "60s", "rate": 5}]},
    "total": {"enabled": True, "buckets": [{"interval": "60s", "rate": 10}]},
}


async def connected(url: str, user: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url)
    await ws.send(json.dumps({"id": 1, "connect": {"token": token(user)}}))
    assert '"connect"' in str(await asyncio.wait_for(ws.recv(), 10))
    return ws


async def publish(ws: websockets.ClientConnection, ids: range) -> dict[int, dict[str, Any]]:
    frame = "\n".join(
        json.dumps({"id": i, "publish": {"channel": "open:room", "data": {"n": i}}}) for i in ids
    )
    await ws.send(frame)
    answers: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(10):
        while len(answers) < len(ids):
            for line in str(await ws.recv()).splitlines():
                reply = json.loads(line)
                if reply.get("id") in ids:
                    answers[reply["id"]] = reply
    return answers


def refused(answers: dict[int, dict[str, Any]]) -> list[int]:
    return sorted(i for i, a in answers.items() if a.get("error", {}).get("code") == 111)


async def test_a_users_connections_on_two_nodes_share_one_bucket(cluster: Cluster) -> None:
    config = copy.deepcopy(CONFIG)
    config["client"]["rate_limit"] = {"user_command": USER_LIMITS}
    config["channel"]["namespaces"].append({"name": "open", "allow_publish_for_client": True})
    cluster.config.write_text(json.dumps(config))
    a, b = await cluster.start(2)
    alice_a, alice_b = await connected(a.ws, "alice"), await connected(b.ws, "alice")
    bob_b = await connected(b.ws, "bob")
    try:
        assert refused(await publish(alice_a, range(2, 5))) == []  # 3 of alice's 5
        # on the other node: 2 more go through, then her bucket is empty there too
        answers = await publish(alice_b, range(2, 6))
        assert refused(answers) == [4, 5]
        assert all(answers[i]["error"]["temporary"] for i in (4, 5))
        assert refused(await publish(alice_a, range(10, 12))) == [10, 11]  # and on the first
        assert refused(await publish(bob_b, range(2, 7))) == []  # bob has his own 5
        # her other commands still take from ``total`` (10): 5 publishes taken, 5 left
        history = "\n".join(json.dumps({"id": i, "history": {"channel": "open:room"}}) for i in range(20, 27))
        await alice_b.send(history)
        codes: dict[int, int] = {}
        async with asyncio.timeout(10):
            while len(codes) < 7:
                for line in str(await alice_b.recv()).splitlines():
                    reply = json.loads(line)
                    codes[reply["id"]] = reply.get("error", {}).get("code", 0)
        assert sorted(codes.values()).count(111) == 2
    finally:
        for ws in (alice_a, alice_b, bob_b):
            await ws.close()
