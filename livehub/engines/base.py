"""The engine contract: a Broker and a PresenceManager, as in the Go centrifuge library.

Every engine (memory, Redis, NATS) implements these two protocols and passes the one
contract suite in ``tests/engines``. What an engine promises:

* ``publish`` appends to the channel's history stream and hands the publication to
  every node subscribed to the channel, atomically per channel: offsets grow by exactly
  one per publication with history, and subscribers see publications in offset order.
* a stream has an ``epoch``; when its history is lost (expiry of the stream's metadata,
  a restart of a store that keeps nothing) the epoch changes, so a client that asks to
  recover from an old epoch is told it cannot, rather than silently given a gap.
* delivery to nodes is at most once; recovery from history fills what pub/sub lost.
* the ``BrokerEventHandler`` callbacks never block: the node only enqueues bytes.
* ``publish_control`` reaches every node started on the same engine (same store and
  prefix), the sender included, whatever channels they are subscribed to: at most once,
  in the order one sender sent. Nodes use it for cluster-wide commands (disconnect a
  user wherever they are connected, ...) and to announce themselves; the payload is
  opaque bytes to the engine. A single-process engine delivers to its own node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from livehub.models import ClientInfo, PresenceStats, Publication, StreamPosition


class EngineUnavailable(Exception):
    """The engine's store or bus cannot be reached (or did not answer in time).

    Networked engines raise it instead of hanging or leaking their client library's
    exceptions, so the node can answer the client with an internal error and move on.
    """


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """How one publication is stored. History is kept when size and TTL are both > 0."""

    history_size: int = 0
    history_ttl: float = 0.0
    history_meta_ttl: float = 30 * 24 * 3600.0
    info: ClientInfo | None = None
    tags: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
    idempotent_result_ttl: float = 300.0
    #: Ask the broker for the previous publication, so the node can send fossil deltas.
    use_delta: bool = False
    #: The publication's key (``Publication.key``).
    key: str = ""


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    """``limit`` 0 asks only for the stream top, -1 for everything, N > 0 for at most N.

    With ``since``, forward reads return offsets greater than ``since.offset`` and
    reverse reads offsets smaller than it, newest first.
    """

    limit: int = 0
    since: StreamPosition | None = None
    reverse: bool = False
    history_meta_ttl: float = 30 * 24 * 3600.0


class BrokerEventHandler(Protocol):
    """The node's side of the broker: called for everything a subscribed channel carries."""

    def handle_publication(
        self, channel: str, pub: Publication, sp: StreamPosition, prev: Publication | None
    ) -> None: ...

    def handle_join(self, channel: str, info: ClientInfo) -> None: ...

    def handle_leave(self, channel: str, info: ClientInfo) -> None: ...

    def handle_control(self, data: bytes) -> None:
        """A control message some node (this one too) sent with ``publish_control``."""


class Broker(Protocol):
    async def start(self, handler: BrokerEventHandler) -> None:
        """Connect and begin delivering events of subscribed channels to ``handler``."""

    async def close(self) -> None: ...

    async def subscribe(self, channel: str) -> None:
        """Make this node receive the channel's events (idempotent)."""

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, data: bytes, opts: PublishOptions) -> tuple[StreamPosition, bool]:
        """Store and deliver; returns the new stream top and whether an earlier publish
        with the same idempotency key made this one a no-op."""

    async def publish_join(self, channel: str, info: ClientInfo) -> None: ...

    async def publish_leave(self, channel: str, info: ClientInfo) -> None: ...

    async def publish_control(self, data: bytes) -> None:
        """Send ``data`` to every node's ``handle_control`` (this node's too); raises
        EngineUnavailable when it cannot be sent."""

    async def history(self, channel: str, opts: HistoryOptions) -> tuple[list[Publication], StreamPosition]:
        """Read the stream; a channel without a stream gets one (offset 0, new epoch)."""

    async def remove_history(self, channel: str) -> None:
        """Drop the publications but keep the stream top and epoch."""


#: ``(channel, client id, info)``: one client's presence in one channel.
PresenceEntry = tuple[str, str, ClientInfo]


class PresenceManager(Protocol):
    """Who is in a channel. Engines whose store outlives a node (Redis) let entries expire
    unless they are refreshed, so the clients of a node that died disappear: a live node
    calls ``refresh_presence`` with all its present clients well within that TTL."""

    async def add_presence(self, channel: str, client_id: str, info: ClientInfo) -> None: ...

    async def refresh_presence(self, entries: Sequence[PresenceEntry]) -> None:
        """Keep these entries (added before) alive, in as few round trips as possible; a
        no-op where entries never expire. May re-add an entry removed meanwhile: it then
        lives one more TTL."""

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None: ...

    async def presence(self, channel: str) -> dict[str, ClientInfo]: ...

    async def presence_stats(self, channel: str) -> PresenceStats: ...

    async def close(self) -> None: ...
