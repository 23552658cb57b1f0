"""Bidirectional emulation without sticky sessions: an HTTP-streaming session on node A is driven
by ``/emulation`` requests sent to node B, which forwards them over the engine's control channel."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from .harness import CONFIG, Cluster, token, until


async def test_emulation_requests_to_another_node_reach_the_session(cluster: Cluster) -> None:
    cluster.config.write_text(
        json.dumps({**CONFIG, "http_stream": {"enabled": True}, "sse": {"enabled": True}})
    )
    a, b = await cluster.start(2)

    async def both_known() -> bool:
        for node in (a, b):
            if len((await cluster.api(node, "info"))["result"]["nodes"]) < 2:
                return False
        return True

    await until(both_known, "the two nodes see each other", within=15)
    connect = json.dumps({"id": 1, "connect": {"token": token("ann")}})
    async with (
        httpx.AsyncClient(timeout=10.0, trust_env=False) as http,
        http.stream("POST", f"http://127.0.0.1:{a.port}/connection/http_stream", content=connect) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()

        async def next_message() -> dict[str, Any]:
            async with asyncio.timeout(10):
                while True:
                    line = await anext(lines)
                    if line.strip():
                        message: dict[str, Any] = json.loads(line)
                        return message

        result = (await next_message())["connect"]
        session, node_a = result["session"], result["node"]

        async def emulate(node: Any, body: dict[str, Any]) -> int:
            reply = await http.post(f"http://127.0.0.1:{node.port}/emulation", json=body)
            return reply.status_code

        commands = [
            {"id": 2, "subscribe": {"channel": "chat:room"}},
            {"id": 3, "presence_stats": {"channel": "chat:room"}},
        ]
        data = "\n".join(json.dumps(c) for c in commands)
        assert await emulate(b, {"node": node_a, "session": session, "data": data}) == 204
        replies = [await next_message(), await next_message()]
        assert [r["id"] for r in replies] == [2, 3]
        assert replies[1]["presence_stats"] == {"num_clients": 1, "num_users": 1}
        # a publication through node B's API reaches the stream on A
        await cluster.api(b, "publish", channel="chat:room", data={"text": "hi"})
        push = (await next_message())["push"]
        assert push["channel"] == "chat:room" and push["pub"]["data"] == {"text": "hi"}
        # B answers 404 for a node it does not know; a session unknown on A is dropped there
        assert await emulate(b, {"node": "no-such-node", "session": session, "data": data}) == 404
        assert await emulate(b, {"node": node_a, "session": "no-such-session", "data": data}) == 204
        # the server API finds the session by its id on whichever node holds it
        disconnect = {"user": "ann", "session": session, "disconnect": {"code": 4001, "reason": "bye"}}
        assert "error" not in await cluster.api(b, "disconnect", **disconnect)
        assert (await next_message())["push"] == {"disconnect": {"code": 4001, "reason": "bye"}}
