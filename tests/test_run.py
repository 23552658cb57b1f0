"""An app embedding a Hub (examples/fastapi_app.py) under every way of running it, driven by
the official centrifuge-python SDK: connect, subscribe, publish, receive, RPC, disconnect.

``livehub run``, ``uvicorn --http livehub...:http_protocol`` and gunicorn with
``livehub.workers.UvicornWorker`` serve the client endpoint from the socket
(``livehub.transports.websocket``); hypercorn serves it through the Hub's ASGI route
(``livehub.transports.asgi``), the fallback for every other ASGI server.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from centrifuge import (  # type: ignore[import-untyped]
    Client,
    ClientState,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
)

from livehub.transports.websocket import HTTP_PROTOCOL
from tests.servers import free_port, running

#: Resolves connections with ``node.connect_hook``: the socket-level path resolves it at the handshake.
EMBEDDED = "tests.embedded_app:app"
#: Resolves connections with ``Hub.on_connect`` (a FastAPI dependency of the Hub's route).
EXAMPLE = "examples.fastapi_app:app"
SERVERS: dict[str, str] = {
    "livehub run": "-m livehub run {app} --port {port} --log-level warning",
    "uvicorn --http": f"-m uvicorn {{app}} --http {HTTP_PROTOCOL} --port {{port}} --log-level warning",
    "gunicorn": "-m gunicorn {app} -k livehub.workers.UvicornWorker -b 127.0.0.1:{port} --log-level warning",
    "hypercorn": "-m hypercorn {app} --bind 127.0.0.1:{port} --log-level warning",
}
#: (server, app): the socket-level servers with both kinds of app; hypercorn (the ASGI route) with
#: the example, whose on_connect is the route's dependency.
RUNS = [(s, a) for s in SERVERS if s != "hypercorn" for a in (EMBEDDED, EXAMPLE)] + [("hypercorn", EXAMPLE)]


@pytest.fixture(scope="module", params=RUNS, ids=[f"{s}-{a.split('.')[0]}" for s, a in RUNS])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(URL of the client endpoint, the app served)."""
    server, app = request.param
    port = free_port()
    args = SERVERS[server].format(app=app, port=port).split()
    with running([sys.executable, *args], port):
        yield f"ws://127.0.0.1:{port}/connection/websocket", app


class Events(SubscriptionEventHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.publications: asyncio.Queue[Any] = asyncio.Queue()
        self.subscribed = asyncio.Event()

    async def on_publication(self, ctx: PublicationContext) -> None:
        await self.publications.put(ctx.pub)

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.set()


async def test_sdk_connect_subscribe_publish_receive_rpc_disconnect(served: tuple[str, str]) -> None:
    url, app = served
    bob, alice = Client(url, headers={"X-User": "bob"}), Client(url, headers={"X-User": "alice"})
    bob_events, alice_events = Events(), Events()
    bob_sub = bob.new_subscription("chat:lobby", events=bob_events)
    alice_sub = alice.new_subscription("chat:lobby", events=alice_events)
    try:
        await bob.connect()
        await bob_sub.subscribe()
        await asyncio.wait_for(bob_events.subscribed.wait(), 5)
        await alice.connect()
        await alice_sub.subscribe()
        await asyncio.wait_for(alice_events.subscribed.wait(), 5)

        await alice_sub.publish({"text": "hello"})
        for events in (bob_events, alice_events):
            pub = await asyncio.wait_for(events.publications.get(), 5)
            assert pub.data["text"] == "hello" and pub.data["sent_at"] > 0 and pub.info.user == "alice"

        result = await alice.rpc("roll", {"sides": 20})
        assert result.data["sides"] == 20 and 1 <= result.data["value"] <= 20
        if app == EMBEDDED:  # the scope livehub built from the handshake: no route was involved
            seen = (await alice.rpc("scope", None)).data
            assert seen["path"] == "/connection/websocket" and "router" not in seen["keys"]
            assert set(seen["keys"]) >= {
                "type",
                "headers",
                "query_string",
                "client",
                "server",
                "subprotocols",
            }

        present = await bob_sub.presence()
        assert sorted(c.user for c in present.clients.values()) == ["alice", "bob"]
        await alice.disconnect()
        assert alice.state == ClientState.DISCONNECTED
        async with asyncio.timeout(5):  # the server saw her go: she leaves the channel
            while "alice" in [c.user for c in (await bob_sub.presence()).clients.values()]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await alice.disconnect()
        await bob.disconnect()
