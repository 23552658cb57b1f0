"""Session + Node in one process, with a fake transport instead of a WebSocket.

Frames go in through ``session.handle_frame``; what the session's writer sends and the
close code it ends with are recorded by the transport. Waits are on conditions with a
bounded timeout; the session's timers (ping, pong, stale, expiry) run on a ManualClock
the tests advance, so no test sleeps through them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jwt
import orjson
import pytest

from livehub.core.clock import ManualClock
from livehub.core.node import Node
from livehub.core.outbox import Flusher, Outbox
from livehub.core.session import Session, SessionState
from livehub.engines.base import HistoryOptions
from livehub.engines.memory import MemoryBroker, MemoryPresenceManager
from livehub.models import Publication, StreamPosition
from livehub.protocol.fossil import apply_delta
from livehub.settings import Settings

SECRET = "a-test-secret-that-is-at-least-32-bytes-long"
TIMEOUT = 2.0


def token(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


async def eventually(condition: Callable[[], object], what: str = "") -> None:
    """Wait until ``condition()`` is true, at most TIMEOUT seconds."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while not condition():  # noqa: ASYNC110 -- polls state that has no event to wait on
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or condition}") from None


class FakeTransport:
    """Records frames and the close; ``gate`` cleared is a socket pushing back: ``write``
    still takes the frame but says so, and ``drained`` waits until the gate is set."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.gate = asyncio.Event()
        self.gate.set()
        self.blocked = 0

    def write(self, frame: str) -> bool:
        assert self.close_code is None, "write after close"
        self.frames.append(frame)
        return self.gate.is_set()

    async def drained(self) -> None:
        if not self.gate.is_set():
            self.blocked += 1
            try:
                await self.gate.wait()
            finally:
                self.blocked -= 1

    async def close(self, code: int, reason: str) -> None:
        assert self.close_code is None, "closed twice"
        self.close_code, self.close_reason = code, reason

    @property
    def messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for frame in self.frames:
            assert not frame.endswith("\n")
            out.extend(json.loads(line) for line in frame.split("\n"))
        return out


class Client:
    def __init__(self, node: Node, transport: FakeTransport | None = None, clock: ManualClock | None = None):
        self.transport = transport or FakeTransport()
        #: Drives the session's timers: ``clock.advance(seconds)`` runs what falls due.
        self.clock = clock or ManualClock()
        self.session = Session(node, self.transport, clock=self.clock)
        self.session.start()
        self._id = 0

    async def send(self, message: dict[str, Any] | str) -> None:
        frame = message if isinstance(message, str) else json.dumps(message)
        await self.session.handle_frame(frame)

    def reply(self, cid: int) -> dict[str, Any] | None:
        return next((m for m in self.transport.messages if m.get("id") == cid), None)

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one command and return its whole reply (``{"id":.., method or "error": ..}``)."""
        self._id += 1
        cid = self._id
        await self.send({"id": cid, method: params or {}})
        await eventually(lambda: self.reply(cid) is not None or self.transport.close_code is not None)
        reply = self.reply(cid)
        assert reply is not None, f"closed with {self.transport.close_code} instead of a reply"
        return reply

    async def ok(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = await self.call(method, params)
        assert method in reply, reply
        return reply[method]  # type: ignore[no-any-return]

    async def error(self, method: str, params: dict[str, Any] | None = None) -> int:
        reply = await self.call(method, params)
        assert "error" in reply, reply
        assert reply["error"]["message"]
        return reply["error"]["code"]  # type: ignore[no-any-return]

    async def connect(self, **params: Any) -> dict[str, Any]:
        return await self.ok("connect", params)

    async def subscribe(self, channel: str, **params: Any) -> dict[str, Any]:
        return await self.ok("subscribe", {"channel": channel, **params})

    async def closed(self) -> int:
        await eventually(lambda: self.transport.close_code is not None, "close")
        assert self.transport.close_code is not None
        return self.transport.close_code

    async def barrier(self) -> None:
        """Everything queued before this reply has been written once it arrives."""
        await self.ok("unsubscribe", {"channel": "barrier-not-subscribed"})

    def pushes(self, kind: str | None = None, channel: str | None = None) -> list[dict[str, Any]]:
        out = []
        for m in self.transport.messages:
            push = m.get("push")
            if push is None:
                continue
            if channel is not None and push.get("channel") != channel:
                continue
            if kind is not None and kind not in push:
                continue
            out.append(push)
        return out

    async def wait_pings(self, n: int) -> None:
        await eventually(lambda: self.pings() >= n, f"{n} pings")

    async def wait_pubs(self, channel: str, n: int) -> None:
        await eventually(lambda: len(self.pubs(channel)) >= n, f"{n} publications in {channel}")

    def pings(self) -> int:
        return self.transport.messages.count({})

    def pubs(self, channel: str) -> list[dict[str, Any]]:
        """The channel's publications, without their (always set) ``time``."""
        return [without_time(p["pub"]) for p in self.pushes("pub", channel)]


def without_time(pub: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(pub.pop("time"), int)
    return pub


NodeFactory = Callable[..., Awaitable[Node]]
ClientFactory = Callable[..., Client]


@pytest.fixture
async def make_node() -> AsyncIterator[NodeFactory]:
    nodes: list[Node] = []

    async def factory(broker: MemoryBroker | None = None, **settings: Any) -> Node:
        node = Node(Settings(**settings), broker, MemoryPresenceManager() if broker else None)
        await node.start()
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        await node.broker.close()


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    clients: list[Client] = []

    def factory(
        node: Node, transport: FakeTransport | None = None, clock: ManualClock | None = None
    ) -> Client:
        client = Client(node, transport, clock)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.transport.gate.set()
        client.session.outbox.abort()
        await client.session.cleanup()


INSECURE = {"insecure": True}
TOKEN = {"token": {"hmac_secret_key": SECRET}}
HISTORY = {"history_size": 10, "history_ttl": 300, "force_recovery": True}


# -- connect


async def test_first_command_must_be_connect(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=INSECURE))
    await client.send({"id": 1, "subscribe": {"channel": "chat"}})
    assert await client.closed() == 3501
    assert client.transport.close_reason == "bad request"
    assert client.transport.messages == []


async def test_second_connect_is_bad_request(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=INSECURE))
    await client.connect()
    await client.send({"id": 2, "connect": {}})
    assert await client.closed() == 3501


async def test_malformed_frame_closes_with_3501(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=INSECURE))
    await client.connect()
    await client.send('{"id":2,"publish":')
    assert await client.closed() == 3501


async def test_connect_without_token_needs_insecure(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    client = make_client(await make_node(client=TOKEN))
    await client.send({"id": 1, "connect": {}})
    assert await client.closed() == 3501
    assert client.transport.messages == []


async def test_anonymous_connect_when_allowed(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client={**TOKEN, "allow_anonymous_connect_without_token": True})
    client = make_client(node)
    result = await client.connect()
    assert result["client"] == client.session.id
    assert client.session.user == ""


async def test_insecure_connect_reply(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client=INSECURE)
    client = make_client(node)
    result = await client.connect(name="js", version="1.0")
    assert result == {"client": client.session.id, "version": node.version, "ping": 25, "pong": True}
    assert node.version
    assert node.sessions == {client.session.id: client.session}


async def test_hs256_token_connect(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client=TOKEN)
    client = make_client(node)
    exp = int(time.time()) + 3600
    result = await client.connect(token=token({"sub": "42", "exp": exp, "info": {"name": "Alice"}}))
    assert result["client"] == client.session.id
    assert result["expires"] is True
    assert 3590 <= result["ttl"] <= 3600
    assert client.session.user == "42"
    assert orjson.loads(client.session.conn_info or b"") == {"name": "Alice"}
    assert client.session in node.users["42"]


async def test_token_without_exp_does_not_expire(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=TOKEN))
    result = await client.connect(token=token({"sub": "42"}))
    assert "expires" not in result and "ttl" not in result


async def test_expired_token_is_error_109_then_unusable(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    client = make_client(await make_node(client=TOKEN))
    reply = await client.call("connect", {"token": token({"sub": "42", "exp": int(time.time()) - 10})})
    assert reply == {"id": 1, "error": {"code": 109, "message": "token expired"}}
    assert client.transport.close_code is None
    assert not client.session.connected
    await client.send({"id": 2, "connect": {"token": token({"sub": "42"})}})
    assert await client.closed() == 3501


async def test_bad_signature_closes_3500(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=TOKEN))
    await client.send({"id": 1, "connect": {"token": token({"sub": "42"}, secret="x" * 40)}})
    assert await client.closed() == 3500
    assert client.transport.close_reason == "invalid token"
    assert client.transport.messages == []


async def test_garbage_token_closes_3500(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=TOKEN))
    await client.send({"id": 1, "connect": {"token": "not-a-jwt"}})
    assert await client.closed() == 3500


async def test_channel_claim_in_connect_token_closes_3500(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    client = make_client(await make_node(client=TOKEN))
    await client.send({"id": 1, "connect": {"token": token({"sub": "42", "channel": "chat"})}})
    assert await client.closed() == 3500


async def test_personal_channel_in_connect_subs(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client={**TOKEN, "subscribe_to_user_personal_channel": {"enabled": True}})
    client = make_client(node)
    result = await client.connect(token=token({"sub": "42"}))
    assert list(result["subs"]) == ["#42"]
    assert "#42" in client.session.subs
    await node.publish("#42", b'{"note":1}')
    await eventually(lambda: client.pubs("#42"))
    assert client.pubs("#42") == [{"data": {"note": 1}}]


async def test_no_personal_channel_for_anonymous(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client={**INSECURE, "subscribe_to_user_personal_channel": {"enabled": True}})
    client = make_client(node)
    assert "subs" not in await client.connect()


async def test_token_channels_are_server_side_subscriptions(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    node = await make_node(client=TOKEN, channel={"without_namespace": HISTORY})
    client = make_client(node)
    result = await client.connect(token=token({"sub": "42", "channels": ["news"]}))
    assert result["subs"]["news"]["recoverable"] is True
    assert result["subs"]["news"]["offset"] == 0
    await node.publish("news", b"1")
    await eventually(lambda: client.pubs("news"))
    assert client.pubs("news") == [{"data": 1, "offset": 1}]


# -- subscribe


async def test_subscribe_twice_is_105(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=INSECURE))
    await client.connect()
    assert await client.subscribe("chat") == {}
    assert await client.error("subscribe", {"channel": "chat"}) == 105


async def test_subscribe_unknown_namespace_is_102(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=INSECURE))
    await client.connect()
    assert await client.error("subscribe", {"channel": "nope:chat"}) == 102
    assert client.session.subs == {}


async def test_subscribe_not_allowed_is_103(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(
        client=TOKEN, channel={"namespaces": [{"name": "open", "allow_subscribe_for_client": True}]}
    )
    client = make_client(node)
    await client.connect(token=token({"sub": "42"}))
    assert await client.error("subscribe", {"channel": "chat"}) == 103
    assert await client.subscribe("open:chat") == {}


async def test_channel_limit_is_106(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client={**INSECURE, "channel_limit": 1}))
    await client.connect()
    await client.subscribe("a")
    assert await client.error("subscribe", {"channel": "b"}) == 106


async def test_private_channel_needs_sub_token(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client={**INSECURE, **TOKEN}))
    await client.connect(token=token({"sub": "42"}))
    assert await client.error("subscribe", {"channel": "$secret"}) == 103


async def test_private_channel_with_sub_token(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(
        client=TOKEN, channel={"without_namespace": {"allow_publish_for_subscriber": True}}
    )
    client = make_client(node)
    await client.connect(token=token({"sub": "42", "info": {"name": "A"}}))
    exp = int(time.time()) + 600
    sub_token = token(
        {"sub": "42", "channel": "$secret", "info": {"role": "admin"}, "data": {"hi": 1}, "exp": exp}
    )
    result = await client.subscribe("$secret", token=sub_token)
    assert result["data"] == {"hi": 1}
    assert result["expires"] is True and 590 <= result["ttl"] <= 600
    await client.ok("publish", {"channel": "$secret", "data": {"text": "x"}})
    await eventually(lambda: client.pubs("$secret"))
    assert client.pubs("$secret")[0]["info"] == {
        "user": "42",
        "client": client.session.id,
        "conn_info": {"name": "A"},
        "chan_info": {"role": "admin"},
    }


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "42", "channel": "$other"},
        {"sub": "43", "channel": "$secret"},
        {"sub": "42", "channel": "$secret", "client": "someone-else"},
    ],
    ids=["channel", "user", "client"],
)
async def test_sub_token_mismatch_closes_3500(
    make_node: NodeFactory, make_client: ClientFactory, claims: dict[str, Any]
) -> None:
    client = make_client(await make_node(client=TOKEN))
    await client.connect(token=token({"sub": "42"}))
    await client.send({"id": 2, "subscribe": {"channel": "$secret", "token": token(claims)}})
    assert await client.closed() == 3500
    assert client.session.subs == {}


async def test_sub_token_with_matching_client_claim(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    client = make_client(await make_node(client=TOKEN))
    await client.connect(token=token({"sub": "42"}))
    claims = {"sub": "42", "channel": "$secret", "client": client.session.id}
    assert await client.subscribe("$secret", token=token(claims)) == {}


async def test_invalid_sub_token_is_103(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=TOKEN))
    await client.connect(token=token({"sub": "42"}))
    bad = token({"sub": "42", "channel": "$secret"}, secret="y" * 40)
    assert await client.error("subscribe", {"channel": "$secret", "token": bad}) == 103
    assert client.transport.close_code is None


async def test_expired_sub_token_is_109(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=TOKEN))
    await client.connect(token=token({"sub": "42"}))
    expired = token({"sub": "42", "channel": "$secret", "exp": int(time.time()) - 5})
    assert await client.error("subscribe", {"channel": "$secret", "token": expired}) == 109


# -- publish, join/leave, presence


async def test_publish_is_delivered_to_the_publisher_with_info(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    node = await make_node(client={**INSECURE, **TOKEN})
    alice, bob = make_client(node), make_client(node)
    await alice.connect(token=token({"sub": "alice", "info": {"n": "A"}}))
    await bob.connect()
    await alice.subscribe("chat")
    await bob.subscribe("chat")
    assert await alice.ok("publish", {"channel": "chat", "data": {"text": "hi"}}) == {}
    expected = {
        "data": {"text": "hi"},
        "info": {"user": "alice", "client": alice.session.id, "conn_info": {"n": "A"}},
    }
    await eventually(lambda: alice.pubs("chat") and bob.pubs("chat"))
    assert alice.pubs("chat") == [expected]
    assert bob.pubs("chat") == [expected]


async def test_publish_not_allowed_is_103(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client=TOKEN, channel={"without_namespace": {"allow_subscribe_for_client": True}})
    client = make_client(node)
    await client.connect(token=token({"sub": "42"}))
    await client.subscribe("chat")
    assert await client.error("publish", {"channel": "chat", "data": 1}) == 103


async def test_no_pubs_after_unsubscribe(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client=INSECURE)
    client = make_client(node)
    await client.connect()
    await client.subscribe("chat")
    await node.publish("chat", b"1")
    assert await client.ok("unsubscribe", {"channel": "chat"}) == {}
    await node.publish("chat", b"2")
    await client.barrier()
    assert client.pubs("chat") == [{"data": 1}]
    assert node.channels() == {}


async def test_forced_join_and_leave_pushes(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(
        client={**INSECURE, **TOKEN},
        channel={"without_namespace": {"join_leave": True, "force_push_join_leave": True}},
    )
    alice, bob = make_client(node), make_client(node)
    await alice.connect(token=token({"sub": "alice"}))
    await bob.connect(token=token({"sub": "bob", "info": {"n": "B"}}))
    await alice.subscribe("room")
    await bob.subscribe("room")
    bob_info = {"user": "bob", "client": bob.session.id, "conn_info": {"n": "B"}}
    await eventually(lambda: len(alice.pushes(channel="room")) == 2)
    await bob.ok("unsubscribe", {"channel": "room"})
    await eventually(lambda: len(alice.pushes(channel="room")) == 3)
    assert alice.pushes(channel="room") == [
        {"channel": "room", "join": {"info": {"user": "alice", "client": alice.session.id}}},
        {"channel": "room", "join": {"info": bob_info}},
        {"channel": "room", "leave": {"info": bob_info}},
    ]
    assert bob.pushes("leave") == []


async def test_leave_on_disconnect(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client=INSECURE, channel={"without_namespace": {"join_leave": True}})
    alice, bob = make_client(node), make_client(node)
    await alice.connect()
    await bob.connect()
    await alice.subscribe("room", join_leave=True)
    await bob.subscribe("room")  # did not ask for join/leave and it is not forced
    await bob.session.cleanup()
    await eventually(lambda: alice.pushes("leave"))
    assert alice.pushes("leave") == [
        {"channel": "room", "leave": {"info": {"user": "", "client": bob.session.id}}}
    ]
    assert [p["join"]["info"]["client"] for p in alice.pushes("join")] == [alice.session.id, bob.session.id]
    await alice.barrier()
    assert bob.pushes() == []


async def test_presence(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client={**INSECURE, **TOKEN}, channel={"without_namespace": {"presence": True}})
    a1, a2, b = make_client(node), make_client(node), make_client(node)
    for client, user in ((a1, "alice"), (a2, "alice"), (b, "bob")):
        await client.connect(token=token({"sub": user}))
        await client.subscribe("room")
    presence = (await a1.ok("presence", {"channel": "room"}))["presence"]
    assert presence == {
        c.session.id: {"user": u, "client": c.session.id}
        for c, u in ((a1, "alice"), (a2, "alice"), (b, "bob"))
    }
    assert await a1.ok("presence_stats", {"channel": "room"}) == {"num_clients": 3, "num_users": 2}
    await b.ok("unsubscribe", {"channel": "room"})
    assert await a1.ok("presence_stats", {"channel": "room"}) == {"num_clients": 2, "num_users": 1}


@pytest.mark.parametrize("method", ["presence", "presence_stats"])
async def test_presence_off_is_108(make_node: NodeFactory, make_client: ClientFactory, method: str) -> None:
    client = make_client(await make_node(client=INSECURE))
    await client.connect()
    await client.subscribe("room")
    assert await client.error(method, {"channel": "room"}) == 108


# -- history


async def test_history_off_is_108(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=INSECURE))
    await client.connect()
    assert await client.error("history", {"channel": "chat"}) == 108


async def test_history(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client=INSECURE, channel={"without_namespace": HISTORY})
    client = make_client(node)
    await client.connect()
    top = await client.ok("history", {"channel": "chat"})
    assert top["publications"] == [] and top["offset"] == 0 and top["epoch"]
    for i in range(1, 4):
        await node.publish_json("chat", {"n": i})
    result = await client.ok("history", {"channel": "chat", "limit": -1})
    result["publications"] = [without_time(p) for p in result["publications"]]
    assert result == {
        "publications": [
            {"data": {"n": 1}, "offset": 1},
            {"data": {"n": 2}, "offset": 2},
            {"data": {"n": 3}, "offset": 3},
        ],
        "epoch": top["epoch"],
        "offset": 3,
    }
    since = {"offset": 3, "epoch": top["epoch"]}
    reverse = await client.ok("history", {"channel": "chat", "limit": 1, "since": since, "reverse": True})
    assert [p["offset"] for p in reverse["publications"]] == [2]


async def test_history_epoch_mismatch_is_112(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client=INSECURE, channel={"without_namespace": HISTORY})
    client = make_client(node)
    await client.connect()
    await node.publish("chat", b"1")
    params = {"channel": "chat", "limit": -1, "since": {"offset": 0, "epoch": "not-the-epoch"}}
    assert await client.error("history", params) == 112


async def test_history_reverse_since_zero_is_107(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=INSECURE, channel={"without_namespace": HISTORY}))
    await client.connect()
    params = {"channel": "chat", "limit": 10, "since": {"offset": 0, "epoch": ""}, "reverse": True}
    assert await client.error("history", params) == 107


# -- recovery


async def recovering_setup(
    make_node: NodeFactory, make_client: ClientFactory, history_size: int = 10
) -> tuple[Node, Client, dict[str, Any]]:
    node = await make_node(
        client=INSECURE, channel={"without_namespace": {**HISTORY, "history_size": history_size}}
    )
    client = make_client(node)
    await client.connect()
    first = await client.subscribe("chat")
    assert first == {"recoverable": True, "positioned": True, "epoch": first["epoch"], "offset": 0}
    await node.publish("chat", b'{"n":1}')
    await eventually(lambda: client.pubs("chat"))
    await client.ok("unsubscribe", {"channel": "chat"})
    return node, client, first


async def test_recovery_returns_missed_publications(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    node, client, first = await recovering_setup(make_node, make_client)
    for n in (2, 3):
        await node.publish_json("chat", {"n": n})
    result = await client.subscribe("chat", recover=True, offset=1, epoch=first["epoch"])
    assert result["recovered"] is True
    assert result["was_recovering"] is True
    assert result["offset"] == 1
    assert result["epoch"] == first["epoch"]
    assert [(p["data"], p["offset"]) for p in result["publications"]] == [({"n": 2}, 2), ({"n": 3}, 3)]
    await node.publish_json("chat", {"n": 4})
    await eventually(lambda: len(client.pubs("chat")) == 2)
    assert client.pubs("chat")[-1] == {"data": {"n": 4}, "offset": 4}
    assert client.pushes("unsubscribe") == []


async def test_recovery_with_nothing_missed(make_node: NodeFactory, make_client: ClientFactory) -> None:
    _, client, first = await recovering_setup(make_node, make_client)
    result = await client.subscribe("chat", recover=True, offset=1, epoch=first["epoch"])
    assert result["recovered"] is True and result["offset"] == 1
    assert "publications" not in result


async def test_not_recovered_when_too_many_missed(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node, client, first = await recovering_setup(make_node, make_client, history_size=2)
    for n in range(2, 6):
        await node.publish_json("chat", {"n": n})
    result = await client.subscribe("chat", recover=True, offset=1, epoch=first["epoch"])
    assert "recovered" not in result
    assert "publications" not in result
    assert result["was_recovering"] is True
    assert result["offset"] == 5 and result["epoch"] == first["epoch"]


async def test_not_recovered_from_another_epoch(make_node: NodeFactory, make_client: ClientFactory) -> None:
    _, client, first = await recovering_setup(make_node, make_client)
    result = await client.subscribe("chat", recover=True, offset=1, epoch="old-epoch")
    assert "recovered" not in result
    assert result["epoch"] == first["epoch"] and result["offset"] == 1


@pytest.mark.parametrize("flag", [2, 3])
async def test_reject_unrecovered_flag_is_112(
    make_node: NodeFactory, make_client: ClientFactory, flag: int
) -> None:
    node, client, first = await recovering_setup(make_node, make_client, history_size=2)
    for n in range(2, 6):
        await node.publish_json("chat", {"n": n})
    params = {"channel": "chat", "recover": True, "offset": 1, "epoch": first["epoch"], "flag": flag}
    assert await client.error("subscribe", params) == 112
    assert "chat" not in client.session.subs
    assert node.channels() == {}


async def test_was_recovering_without_recovery(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=INSECURE))
    await client.connect()
    assert await client.subscribe("chat", recover=True, offset=3, epoch="x") == {"was_recovering": True}


class GatedHistoryBroker(MemoryBroker):
    """Reads history at once but returns it only when ``gate`` is set: publications made
    meanwhile reach the node while the subscribe reply is still being built."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0

    async def history(self, channel: str, opts: HistoryOptions) -> tuple[list[Publication], StreamPosition]:
        result = await super().history(channel, opts)
        self.waiting += 1
        await self.gate.wait()
        self.waiting -= 1
        return result


async def test_publications_during_subscribe_are_delivered_once(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    broker = GatedHistoryBroker()
    node = await make_node(broker, client=INSECURE, channel={"without_namespace": HISTORY})
    client = make_client(node)
    await client.connect()
    await node.publish("chat", b"1")
    broker.gate.clear()
    subscribing = asyncio.ensure_future(client.subscribe("chat"))
    await eventually(lambda: broker.waiting == 1)
    await node.publish("chat", b"2")
    await node.publish("chat", b"3", skip_history=True)
    broker.gate.set()
    result = await subscribing
    assert result["offset"] == 1
    assert client.session.subs["chat"].offset == 2  # the publication without offset moved nothing
    await node.publish("chat", b"4")
    await eventually(lambda: len(client.pubs("chat")) == 3)
    assert client.pubs("chat") == [{"data": 2, "offset": 2}, {"data": 3}, {"data": 4, "offset": 3}]
    assert client.pushes("unsubscribe") == []
    assert client.session.subs["chat"].offset == 3


async def test_publication_without_history_reaches_positioned_subscribers(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    node = await make_node(client=INSECURE, channel={"without_namespace": HISTORY})
    client = make_client(node)
    await client.connect()
    assert (await client.subscribe("chat"))["positioned"] is True
    await node.publish("chat", b"1")
    await node.publish("chat", b"2", skip_history=True)  # not in the stream: no offset to check
    await node.publish("chat", b"3")
    await client.barrier()
    assert client.pubs("chat") == [{"data": 1, "offset": 1}, {"data": 2}, {"data": 3, "offset": 2}]
    assert client.pushes("unsubscribe") == []


def apply_pubs(pubs: list[dict[str, Any]], base: str = "") -> list[Any]:
    """What a delta-negotiated SDK does: every ``data`` is a JSON string, full or a fossil delta."""
    values = []
    for pub in pubs:
        assert isinstance(pub["data"], str), pub
        if pub.get("delta"):
            base = apply_delta(base.encode(), pub["data"].encode()).decode()
        else:
            base = pub["data"]
        values.append(json.loads(base))
    return values


DELTA = {**HISTORY, "allowed_delta_types": ["fossil"]}
DOC = {"title": "a fairly long document title", "body": "x" * 200}


async def test_fossil_delta_publications(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client=INSECURE, channel={"without_namespace": DELTA})
    client = make_client(node)
    await client.connect()
    assert (await client.subscribe("chat", delta="fossil"))["delta"] is True
    docs = [{**DOC, "n": n} for n in range(4)]
    for doc in docs:
        await node.publish_json("chat", doc)
    await eventually(lambda: len(client.pubs("chat")) == 4)
    pubs = client.pubs("chat")
    assert [bool(p.get("delta")) for p in pubs] == [False, True, True, True]
    assert apply_pubs(pubs) == docs


async def test_fossil_delta_around_a_publication_without_history(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    node = await make_node(client=INSECURE, channel={"without_namespace": DELTA})
    client = make_client(node)
    await client.connect()
    await client.subscribe("chat", delta="fossil")
    docs = [{**DOC, "n": n} for n in range(4)]
    docs[1] = {"other": "a different base, " * 5}
    await node.publish_json("chat", docs[0])
    await node.publish_json("chat", docs[1], skip_history=True)
    await node.publish_json("chat", docs[2])
    await node.publish_json("chat", docs[3])
    await eventually(lambda: len(client.pubs("chat")) == 4)
    assert apply_pubs(client.pubs("chat")) == docs
    assert client.pubs("chat")[3].get("delta") is True


async def test_fossil_delta_with_publications_during_subscribe(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    broker = GatedHistoryBroker()
    node = await make_node(broker, client=INSECURE, channel={"without_namespace": DELTA})
    client = make_client(node)
    await client.connect()
    broker.gate.clear()
    subscribing = asyncio.ensure_future(client.subscribe("chat", delta="fossil"))
    await eventually(lambda: broker.waiting == 1)
    docs = [{**DOC, "n": n} for n in range(3)]
    await node.publish_json("chat", docs[0])
    broker.gate.set()
    assert (await subscribing)["delta"] is True
    for doc in docs[1:]:
        await node.publish_json("chat", doc)
    await eventually(lambda: len(client.pubs("chat")) == 3)
    assert apply_pubs(client.pubs("chat")) == docs


# -- rpc


async def test_rpc_without_handlers_is_108(make_node: NodeFactory, make_client: ClientFactory) -> None:
    client = make_client(await make_node(client=INSECURE))
    await client.connect()
    assert await client.error("rpc", {"method": "x", "data": {}}) == 108


async def test_rpc(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client=INSECURE)
    calls: list[tuple[Session, bytes | None]] = []

    @node.rpc("x")
    async def handler(session: Session, data: bytes | None) -> Any:
        calls.append((session, data))
        return {"echo": orjson.loads(data or b"null")}

    @node.rpc("raw")
    async def raw_handler(session: Session, data: bytes | None) -> Any:
        return b'{"raw": true}'

    client = make_client(node)
    await client.connect()
    assert await client.error("rpc", {"method": "y", "data": {}}) == 104
    assert await client.ok("rpc", {"method": "x", "data": {"a": [1, 2]}}) == {"data": {"echo": {"a": [1, 2]}}}
    assert calls == [(client.session, b'{"a":[1,2]}')]
    assert await client.ok("rpc", {"method": "raw"}) == {"data": {"raw": True}}
    assert '{"raw": true}' in client.transport.frames[-1]


async def test_rpc_handler_failure_is_internal_error(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    node = await make_node(client=INSECURE)

    @node.rpc("boom")
    async def boom(session: Session, data: bytes | None) -> Any:
        raise RuntimeError("boom")

    client = make_client(node)
    await client.connect()
    reply = await client.call("rpc", {"method": "boom"})
    assert reply["error"] == {"code": 100, "message": "internal server error", "temporary": True}
    assert client.transport.close_code is None
    assert await client.error("rpc", {"method": "other"}) == 104  # the connection is still usable


# -- the outbox: slow clients and batching


async def test_slow_consumer_is_closed_3008(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client={**INSECURE, "queue_max_size": 1024})
    slow, fast = make_client(node), make_client(node)
    for client in (slow, fast):
        await client.connect()
        await client.subscribe("chat")
    slow.transport.gate.clear()  # from now on the slow peer takes nothing (never set again)
    payload = orjson.dumps({"text": "x" * 200})
    for i in range(1, 11):
        await node.publish("chat", payload)
        await fast.wait_pubs("chat", i)  # the fast peer keeps up
    assert fast.transport.close_code is None
    assert slow.session.closing
    assert await slow.closed() == 3008
    assert slow.transport.close_reason == "slow"
    await node.publish("chat", payload)
    await eventually(lambda: len(fast.pubs("chat")) == 11)
    assert fast.transport.close_code is None


async def test_queued_messages_go_out_in_one_frame(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    node = await make_node(client=INSECURE)
    client = make_client(node)
    await client.connect()
    await client.subscribe("chat")
    client.transport.gate.clear()
    sent = len(client.transport.frames)
    await node.publish("chat", b"0")
    await eventually(lambda: client.transport.blocked == 1)  # "0" written; the socket pushes back
    for i in range(1, 4):
        await node.publish("chat", str(i).encode())
    client.transport.gate.set()
    await eventually(lambda: len(client.pubs("chat")) == 4)
    frames = [frame.split("\n") for frame in client.transport.frames[sent:]]
    assert [[json.loads(m)["push"]["pub"]["data"] for m in frame] for frame in frames] == [[0], [1, 2, 3]]


async def test_batches_are_limited_by_write_batch_size(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    node = await make_node(client={**INSECURE, "write_batch_size": 2})
    client = make_client(node)
    await client.connect()
    await client.subscribe("chat")
    client.transport.gate.clear()
    sent = len(client.transport.frames)
    await node.publish("chat", b"0")
    await eventually(lambda: client.transport.blocked == 1)
    for i in range(1, 6):
        await node.publish("chat", str(i).encode())
    client.transport.gate.set()
    await eventually(lambda: len(client.pubs("chat")) == 6)
    assert [frame.count("\n") + 1 for frame in client.transport.frames[sent:]] == [1, 2, 2, 1]


# -- timers


async def test_ping_and_no_pong_closes_3012(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client={**INSECURE, "ping_interval": 10, "pong_timeout": 4})
    client = make_client(node)
    assert (await client.connect())["ping"] == 10
    due = 10.0  # seconds until the next ping
    for n in range(1, 4):  # answering keeps the connection open
        client.clock.advance(due - 0.1)
        await client.barrier()
        assert client.pings() == n - 1
        client.clock.advance(0.1)
        await client.wait_pings(n)
        client.clock.advance(3.9)
        await client.send("{}")  # the pong, just in time
        client.clock.advance(0.1)  # the pong timeout passes: answered, so nothing happens
        assert not client.session.closing
        due = 10 - 4
    client.clock.advance(due)
    await client.wait_pings(4)
    client.clock.advance(3.9)
    assert not client.session.closing
    client.clock.advance(0.1)
    assert await client.closed() == 3012
    assert client.transport.close_reason == "no pong"
    assert client.pings() == 4


async def test_no_ping_before_connect(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(
        client={**INSECURE, "ping_interval": 2, "pong_timeout": 1, "stale_close_delay": 10}
    )
    client = make_client(node)
    client.clock.advance(9.9)
    assert not client.session.closing
    client.clock.advance(0.1)
    assert await client.closed() == 3502
    assert client.transport.messages == []


async def test_stale_connection_closes_3502(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client={**INSECURE, "stale_close_delay": 10})
    client = make_client(node)
    client.clock.advance(9.9)
    assert not client.session.closing
    client.clock.advance(0.1)
    assert await client.closed() == 3502
    assert client.transport.close_reason == "stale"


async def test_connected_client_is_not_stale(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client={**INSECURE, "stale_close_delay": 10, "ping_interval": 0})
    client = make_client(node)
    await client.connect()
    assert client.clock.pending() == 0  # the stale timer is gone, and there is no other
    client.clock.advance(100)
    await client.barrier()
    assert client.transport.close_code is None


async def test_connection_expires_3005_unless_refreshed(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    node = await make_node(client={**TOKEN, "expired_close_delay": 5, "ping_interval": 0})
    client = make_client(node)
    now = int(client.clock.time())
    result = await client.connect(token=token({"sub": "42", "exp": now + 60}))
    assert result["ttl"] == 60
    client.clock.advance(50)
    refreshed = await client.ok("refresh", {"token": token({"sub": "42", "exp": now + 120})})
    assert refreshed == {"expires": True, "ttl": 70}
    client.clock.advance(15 + 5)  # the first expiry, and its grace, are past: refreshed
    await client.barrier()
    assert not client.session.closing
    client.clock.advance(54.9)  # 0.1 s before the new expiry's grace ends
    assert not client.session.closing
    client.clock.advance(0.1)
    assert await client.closed() == 3005
    assert client.transport.close_reason == "connection expired"


async def test_subscription_expires_2501_unless_refreshed(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    node = await make_node(client={**TOKEN, "expired_close_delay": 5, "ping_interval": 0})
    client = make_client(node)
    now = int(client.clock.time())
    await client.connect(token=token({"sub": "42"}))
    claims = {"sub": "42", "channel": "$secret"}
    assert (await client.subscribe("$secret", token=token({**claims, "exp": now + 60})))["ttl"] == 60
    client.clock.advance(30)
    reply = await client.ok(
        "sub_refresh", {"channel": "$secret", "token": token({**claims, "exp": now + 90})}
    )
    assert reply == {"expires": True, "ttl": 60}
    client.clock.advance(35 + 5)  # the first expiry and its grace are past: refreshed
    await client.barrier()
    assert "$secret" in client.session.subs
    client.clock.advance(24.9)  # 0.1 s before the new expiry's grace ends
    await client.barrier()
    assert "$secret" in client.session.subs
    client.clock.advance(0.1)
    await eventually(lambda: client.pushes("unsubscribe"), "unsubscribe push")
    assert client.pushes("unsubscribe") == [
        {"channel": "$secret", "unsubscribe": {"code": 2501, "reason": "subscription expired"}}
    ]
    assert client.session.subs == {} and node.channels() == {}
    assert client.transport.close_code is None


@pytest.mark.parametrize(
    ("write_delay", "frames"),
    [("50ms", [[0, 1, 2]]), (0, [[0], [1], [2]])],  # held together; or written at each loop turn
)
async def test_write_delay_packs_publications_of_separate_loop_turns(
    make_node: NodeFactory, make_client: ClientFactory, write_delay: object, frames: list[list[int]]
) -> None:
    node = await make_node(client={**INSECURE, "write_delay": write_delay})
    client = make_client(node)
    await client.connect()
    await client.subscribe("chat")
    sent = len(client.transport.frames)
    for i in range(3):
        await node.publish("chat", str(i).encode())
        await asyncio.sleep(0.005)  # a new loop turn for each publication
    await eventually(lambda: len(client.pubs("chat")) == 3)
    got = client.transport.frames[sent:]
    assert [[json.loads(m)["push"]["pub"]["data"] for m in f.split("\n")] for f in got] == frames


async def test_a_long_flush_holds_the_next_one_so_messages_share_frames() -> None:
    """A flush that took 30 ms (thousands of writes, say) holds the next one back for as
    long, so what arrives meanwhile goes out together; a quick flush holds nothing."""

    class SlowTransport(FakeTransport):
        def write(self, frame: str) -> bool:
            if not self.frames:
                time.sleep(0.03)  # the first flush is expensive
            return super().write(frame)

    transport = SlowTransport()
    outbox = Outbox(transport, 1 << 20, 64, Flusher(max_hold=0.05))
    outbox.put("a")
    await eventually(lambda: transport.frames == ["a"])
    outbox.put("b")
    await asyncio.sleep(0.01)
    outbox.put("c")
    assert transport.frames == ["a"]  # held: the last flush took 30 ms
    await eventually(lambda: len(transport.frames) == 2)
    assert transport.frames == ["a", "b\nc"]
    await asyncio.sleep(0.04)  # that flush was quick: the next one is not held
    outbox.put("d")
    await asyncio.sleep(0.005)
    assert transport.frames == ["a", "b\nc", "d"]


async def test_an_idle_node_writes_a_fan_out_at_once_a_busy_one_batches() -> None:
    """A publication's fan-out on an idle node goes to each socket as it is put (no waiting
    for the others' queueing); right after a burst as long as the gap since, it is queued and
    the flush batches; a connection with something queued always queues (order kept)."""

    class SlowTransport(FakeTransport):
        def write(self, frame: str) -> bool:
            time.sleep(0.02)  # a long burst of writes
            return super().write(frame)

    flusher = Flusher()
    fast, slow = FakeTransport(), SlowTransport()
    a, b = Outbox(fast, 1 << 20, 64, flusher), Outbox(slow, 1 << 20, 64, flusher)

    def deliver(message: str) -> None:
        a.put(message)
        assert fast.frames[-1:] == [message]  # written at once, before the next put
        b.put(message)

    flusher.fan_out(lambda: deliver("1"))  # idle: direct; the burst took 20 ms
    assert fast.frames == ["1"] and slow.frames == ["1"]
    flusher.fan_out(lambda: (a.put("2"), b.put("2")))  # within 20 ms of it: queued
    flusher.fan_out(lambda: (a.put("3"), b.put("3")))
    assert fast.frames == ["1"]
    await eventually(lambda: fast.frames == ["1", "2\n3"] and slow.frames == ["1", "2\n3"])
    a.put("4")  # not a fan-out: queued for the flush as ever
    assert fast.frames == ["1", "2\n3"]
    await eventually(lambda: fast.frames == ["1", "2\n3", "4"])


# -- the session's state and its tasks


def session_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__.startswith("Session.")]  # type: ignore[union-attr]


async def test_session_states(make_node: NodeFactory, make_client: ClientFactory) -> None:
    node = await make_node(client=TOKEN)
    refused, ok = make_client(node), make_client(node)
    assert refused.session.state is SessionState.CONNECTING
    assert "error" in await refused.call("connect", {"token": token({"sub": "42", "exp": 1})})
    assert refused.session.state is SessionState.REFUSED
    await ok.connect(token=token({"sub": "42"}))
    assert ok.session.state is SessionState.CONNECTED and ok.session.connected
    await ok.session.cleanup()
    assert ok.session.state is SessionState.CLOSED and ok.session.closed and ok.session.closing
    assert node.sessions == {}


async def test_cleanup_cancels_a_task_not_yet_begun(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    node = await make_node(client=INSECURE, channel={"without_namespace": HISTORY})
    client = make_client(node)
    await client.connect()
    await client.subscribe("chat")
    client.session.lost_position("chat")  # the 2500 unsubscribe goes in a task
    assert len(session_tasks()) == 1
    await client.session.cleanup()  # before that task could begin
    assert [t.cancelling() for t in session_tasks()] == [1]
    await asyncio.sleep(0)
    assert session_tasks() == []
    assert node.channels() == {}  # cleanup left the channel itself


class GatedUnsubscribeBroker(MemoryBroker):
    """``unsubscribe`` waits for ``gate``: a session stays in the middle of leaving a channel."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0

    async def unsubscribe(self, channel: str) -> None:
        self.waiting += 1
        await self.gate.wait()
        self.waiting -= 1
        await super().unsubscribe(channel)


async def test_cleanup_waits_for_a_task_leaving_a_channel(
    make_node: NodeFactory, make_client: ClientFactory
) -> None:
    """Cancelled in the middle, the task would leave the presence entry behind."""
    broker = GatedUnsubscribeBroker()
    node = await make_node(
        broker, client=INSECURE, channel={"without_namespace": {**HISTORY, "presence": True}}
    )
    client = make_client(node)
    await client.connect()
    await client.subscribe("chat")
    assert list(await node.presence("chat")) == [client.session.id]
    broker.gate.clear()
    client.session.lost_position("chat")
    await eventually(lambda: broker.waiting == 1, "the task to be leaving the channel")
    cleanup = asyncio.ensure_future(client.session.cleanup())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not cleanup.done()
    broker.gate.set()
    await asyncio.wait_for(cleanup, TIMEOUT)
    assert session_tasks() == []
    assert await node.presence("chat") == {}
    assert node.channels() == {}
