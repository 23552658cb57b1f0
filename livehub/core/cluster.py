"""Many nodes, one hub: control messages between nodes, and each node's periodic jobs.

Nodes sharing an engine (Redis, NATS) see each other's publications through the broker.
What else must reach every node travels as a *control message*
(``Broker.publish_control``): server API and ``Hub`` commands aimed at a user's
connections, which may be on any node (``livehub.core.control``), and each node's announcement
of itself. A control message is a JSON object ``{"n": <sender node uid>, "t": <type>, ...}``;
nodes ignore their own (they act locally before sending) and types they do not know::

    node         {"info": {uid, name, version, num_clients, num_users, num_subs,
                  num_channels, uptime}}               every NODE_INFO_INTERVAL seconds
    leave        {}                                    the node is stopping
    disconnect   {user, client, session, all_users, whitelist, code, reason}
    subscribe    {user, client, session, all_users, channel, info, data, expire_at,
                  since: [offset, epoch] | null, overrides: {force_recovery, ...}}
    unsubscribe  {user, client, session, all_users, channel}
    refresh      {user, client, session, all_users, expired, expire_at, info}
    emulation    {user, client, session, all_users, node, frame, binary}
                                                       commands of a streaming session on node
                                                       ``node`` (frame: JSON text, or base64)

(``info``/``data`` hold the raw JSON as text; ``code`` 0 is the default disconnect.) A
command is applied as it arrives when it takes effect at once (disconnect, refresh), and
in a task of its own otherwise. A node that was not heard from for
NODE_INFO_MAX_DELAY seconds is dropped from the list ``info`` reports.

Periodic jobs, one task each per node, none with the memory engine (one process: nothing
to share, nothing lost between broker and node):

* presence refresh, every ``client.presence_update_interval``: one batched
  ``refresh_presence`` call with every present client of this node, so its entries outlive
  the engine's presence TTL while it lives and expire when it dies;
* position check, every ``client.channel_position_check_delay``: the stream top of each
  channel with positioned subscribers (one ``history(limit=0)`` per channel) is compared
  with each subscriber's position. A changed epoch, or an offset still behind the top
  after a short grace (publications already stored but in flight to this node), means
  the node lost publications — pub/sub is at most once, e.g. while its broker connection
  was down — and the client is unsubscribed with 2500 "insufficient state": the SDK
  resubscribes and recovers from history, or is told it cannot (a new epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import orjson

from livehub.core.control import InstantControlCommand, command_from_wire
from livehub.core.subscription import Drift, Subscription, SubscriptionState
from livehub.engines.base import EngineUnavailable, PresenceEntry
from livehub.engines.memory import MemoryBroker, MemoryPresenceManager
from livehub.models import StreamPosition
from livehub.protocol.codes import Error

if TYPE_CHECKING:
    from livehub.core.node import Node
    from livehub.core.session import Session

log = logging.getLogger("livehub.core.cluster")

NODE_INFO_INTERVAL = 3.0
NODE_INFO_MAX_DELAY = 2 * NODE_INFO_INTERVAL + 1.0
#: How long a subscriber may stay behind the stream top it was compared with, for
#: publications already stored but still on their way to this node.
POSITION_LAG_GRACE = 2.0
#: Stream tops read at once by the position check.
POSITION_CHECK_CONCURRENCY = 32


class Cluster:
    """The node's side of the cluster: sends and handles control messages, runs the jobs."""

    def __init__(self, node: Node) -> None:
        self.node = node
        #: Other live nodes: uid -> (monotonic time last heard from, announced info).
        self.peers: dict[str, tuple[float, dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._failing: set[str] = set()  # jobs whose last run failed (warn once per streak)

    @property
    def shared(self) -> bool:
        """Is the broker shared with other nodes (anything but the memory engine)?"""
        return not isinstance(self.node.broker, MemoryBroker)

    # -- lifecycle

    def start(self) -> None:
        if not self.shared:
            return
        cfg = self.node.settings.client
        self._loop_task("announce", NODE_INFO_INTERVAL, self.announce)
        if not isinstance(self.node.presence_manager, MemoryPresenceManager):
            self._loop_task("presence refresh", cfg.presence_update_interval, self.refresh_presence)
        self._loop_task("position check", cfg.channel_position_check_delay, self.check_positions)

    async def stop(self) -> None:
        tasks = self._tasks + list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._background.clear()
        if self.shared:
            with contextlib.suppress(EngineUnavailable, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.send("leave")

    def _loop_task(self, name: str, interval: float, job: Any) -> None:
        if interval <= 0:
            return

        async def loop() -> None:
            while True:
                try:
                    await job()
                    if name in self._failing:
                        self._failing.discard(name)
                        log.info("%s works again", name)
                except EngineUnavailable as exc:
                    if name not in self._failing:
                        self._failing.add(name)
                        log.warning("%s failed, retrying every %gs: %s", name, interval, exc)
                except Exception:
                    log.exception("%s failed", name)
                await asyncio.sleep(interval)

        self._tasks.append(asyncio.create_task(loop(), name=f"livehub-{name.replace(' ', '-')}"))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- sending

    async def send(self, kind: str, **fields: Any) -> None:
        """Send a control message to every other node; EngineUnavailable if it cannot go."""
        if not self.shared:
            return
        fields.update(n=self.node.id, t=kind)
        await self.node.broker.publish_control(orjson.dumps(fields))

    def send_soon(self, kind: str, **fields: Any) -> None:
        """``send`` in the background, for callers that cannot wait; a failure is logged."""
        if not self.shared:
            return

        async def go() -> None:
            try:
                await self.send(kind, **fields)
            except EngineUnavailable as exc:
                log.warning("could not tell the other nodes to %s: %s", kind, exc)

        self.spawn(go())

    async def announce(self) -> None:
        await self.send("node", info=self.node.node_info())
        now = time.monotonic()
        for uid, (seen, _) in list(self.peers.items()):
            if now - seen > NODE_INFO_MAX_DELAY:
                del self.peers[uid]

    def nodes(self) -> list[dict[str, Any]]:
        """This node and every node heard from lately, as ``info`` lists them."""
        now = time.monotonic()
        found = [self.node.node_info()]
        found += [info for seen, info in self.peers.values() if now - seen <= NODE_INFO_MAX_DELAY]
        return sorted(found, key=lambda info: (info.get("name", ""), info.get("uid", "")))

    # -- receiving

    def handle(self, data: bytes) -> None:
        """A control message from the broker; never raises, never blocks."""
        try:
            message = orjson.loads(data)
            if not isinstance(message, dict) or message.get("n") == self.node.id:
                return
            command = command_from_wire(message)
            if isinstance(command, InstantControlCommand):
                command.apply_now(self.node)
            elif command is not None:
                self.spawn(self._guarded(command.kind, command.apply(self.node)))
            else:
                kind = message.get("t")
                handler = getattr(self, f"_on_{kind}", None) if isinstance(kind, str) else None
                if handler is not None:
                    handler(message)
        except Exception as exc:
            log.warning("dropped a control message %.100r: %r", data, exc)

    def _on_node(self, message: dict[str, Any]) -> None:
        info = message.get("info")
        if isinstance(info, dict):
            self.peers[str(message["n"])] = (time.monotonic(), info)

    def _on_leave(self, message: dict[str, Any]) -> None:
        self.peers.pop(str(message["n"]), None)

    async def _guarded(self, what: str, op: Coroutine[Any, Any, Any]) -> None:
        try:
            await op
        except (EngineUnavailable, Error) as exc:
            log.warning("%s asked by another node failed: %s", what, exc)
        except Exception:
            log.exception("%s asked by another node failed", what)

    # -- periodic jobs

    async def refresh_presence(self) -> None:
        node = self.node
        entries: list[PresenceEntry] = []
        for channel, subs in node.subscribers():
            if not node.options(channel).presence:
                continue
            for session, sub in subs:
                # one still SUBSCRIBING is being added now
                if sub.state is not SubscriptionState.SUBSCRIBING and not session.closed:
                    entries.append((channel, session.id, session.info(sub)))
        if entries:
            await node.presence_manager.refresh_presence(entries)

    async def check_positions(self) -> None:
        node = self.node
        targets = [channel for channel, subs in node.subscribers() if any(_checkable(sub) for _, sub in subs)]
        if not targets:
            return
        behind: list[tuple[Session, Subscription, StreamPosition]] = []
        failures: list[EngineUnavailable] = []
        limit = asyncio.Semaphore(POSITION_CHECK_CONCURRENCY)

        async def check(channel: str) -> None:
            async with limit:
                try:
                    top = await node.stream_top(channel, node.options(channel))
                except EngineUnavailable as exc:
                    failures.append(exc)
                    return
                except Error:
                    return
            for session, sub in node.channel_subscribers(channel):
                drift = sub.drift(top)
                if drift is Drift.LOST:
                    log.info("client %s: %s has a new epoch: resubscribe", session.id, channel)
                    session.lost_position(channel)
                elif drift is Drift.BEHIND:
                    behind.append((session, sub, top))

        await asyncio.gather(*(check(channel) for channel in targets))
        if behind:
            await asyncio.sleep(min(POSITION_LAG_GRACE, node.settings.client.channel_position_check_delay))
            for session, sub, top in behind:
                if session.subs.get(sub.channel) is sub and sub.drift(top) is not Drift.NONE:
                    log.info(
                        "client %s: %s is at offset %d, the stream at %d: resubscribe",
                        session.id,
                        sub.channel,
                        sub.offset,
                        top.offset,
                    )
                    session.lost_position(sub.channel)
        if failures and len(failures) == len(targets):
            raise failures[0]


def _checkable(sub: Subscription) -> bool:
    return sub.state is SubscriptionState.LIVE and sub.positioned


__all__ = ["NODE_INFO_INTERVAL", "NODE_INFO_MAX_DELAY", "Cluster"]
