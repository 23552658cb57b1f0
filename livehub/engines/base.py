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

The map part (Centrifugo's map subscriptions): a map channel is a key -> value *state*
plus a *stream* of its changes, kept apart from the channel streams above. What an
engine promises for it:

* ``map_publish`` / ``map_remove`` change one key and, atomically per channel, append the
  change to the channel's map stream (offsets grow by exactly one per change) and hand it
  to every node subscribed to the channel (``handle_publication`` with ``pub.key`` set,
  ``pub.removed`` for a removal), in offset order. A map without a stream
  (``stream_size`` 0) keeps offsets at 0: its changes are delivered, not stored.
* ``map_state`` pages through the state in key order; each entry's ``offset`` is that of
  its last change, so a reader that froze the position of its first page can drop entries
  changed since (it gets them from the stream). The epoch is the map's: it changes when
  the map is lost (``map_clear``, expiry of its metadata, a store that keeps nothing).
* a key not published again within ``key_ttl`` is removed by the engine itself, within
  about a second of its expiry, as a removal change like ``map_remove``'s (reads never
  return an expired key).
* a map holds at most ``max_keys`` keys: publishing a new key beyond that raises
  :class:`MapKeyLimit` and changes nothing.
* engines that have no map support raise :class:`MapUnsupported` from every map method.
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


class MapUnsupported(Exception):
    """This engine keeps no map state (map subscriptions need the memory or Redis engine)."""


class MapKeyLimit(Exception):
    """The map already holds ``max_keys`` keys: a new key is refused."""


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


@dataclass(frozen=True, slots=True)
class MapOptions:
    """How one map channel is kept (its namespace's ``map`` options).

    ``stream_size`` 0 is a map without a stream (Centrifugo's ``ephemeral`` mode): offsets
    stay 0 and a reconnecting client loads the state again. ``key_ttl`` 0: keys live until
    removed. ``meta_ttl`` 0: the epoch lives as long as the store.
    """

    key_ttl: float = 0.0
    stream_size: int = 0
    stream_ttl: float = 60.0
    meta_ttl: float = 0.0
    max_keys: int = 10_000


#: ``MapPublish.key_mode``: write always; only a key the map lacks; only a key it has.
KEY_MODES = ("", "if_new", "if_exists")


@dataclass(frozen=True, slots=True)
class MapPublish:
    """One value for one key."""

    data: bytes = b""
    info: ClientInfo | None = None
    tags: dict[str, str] = field(default_factory=dict)
    key_mode: str = ""
    #: With ``if_new`` on a key the map has: keep the key alive one more ``key_ttl`` (how
    #: presence entries are refreshed without a change).
    refresh_ttl_on_suppress: bool = False
    #: Hand the key's previous value to the nodes with the change (fossil deltas per key).
    use_delta: bool = False


@dataclass(frozen=True, slots=True)
class MapUpdate:
    """The map's stream position after a change; ``suppressed`` says why nothing changed
    (``key_exists``, ``key_not_found``), empty when the change was made."""

    position: StreamPosition
    suppressed: str = ""


@dataclass(frozen=True, slots=True)
class MapStatePage:
    """Entries in key order (each with ``key`` and the offset of its last change), the
    map's position when read, and the cursor of the next page ("" after the last)."""

    entries: list[Publication]
    position: StreamPosition
    cursor: str = ""


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

    # -- maps (see the module docstring)

    async def map_publish(self, channel: str, key: str, opts: MapOptions, pub: MapPublish) -> MapUpdate:
        """Set ``key`` (subject to ``pub.key_mode``), append the change, deliver it."""

    async def map_remove(self, channel: str, key: str, opts: MapOptions) -> MapUpdate:
        """Remove ``key`` (``key_not_found`` if the map lacks it), append the change, deliver it."""

    async def map_state(
        self, channel: str, opts: MapOptions, cursor: str = "", limit: int = 0, key: str = ""
    ) -> MapStatePage:
        """At most ``limit`` entries (0: all) after the key ``cursor``; only ``key`` if given.
        A map that was never written gets a position here (offset 0, a new epoch)."""

    async def map_stream(
        self, channel: str, opts: MapOptions, since: StreamPosition | None = None, limit: int = 0
    ) -> tuple[list[Publication], StreamPosition]:
        """Changes after ``since.offset`` (oldest first), at most ``limit`` (0: only the
        position, -1: all), and the stream's position."""

    async def map_stats(self, channel: str, opts: MapOptions) -> int:
        """How many keys the map holds."""

    async def map_clear(self, channel: str) -> None:
        """Forget the map (state, stream, epoch): the next write starts a new epoch."""


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


class NoMaps:
    """The map part of an engine that keeps no map state: every method raises MapUnsupported."""

    #: Names the engine in the error (set by the engine class).
    engine_name = "this engine"

    def _no_maps(self) -> MapUnsupported:
        return MapUnsupported(
            f"{self.engine_name} keeps no map state: map subscriptions need the memory or Redis engine"
        )

    async def map_publish(self, channel: str, key: str, opts: MapOptions, pub: MapPublish) -> MapUpdate:
        raise self._no_maps()

    async def map_remove(self, channel: str, key: str, opts: MapOptions) -> MapUpdate:
        raise self._no_maps()

    async def map_state(
        self, channel: str, opts: MapOptions, cursor: str = "", limit: int = 0, key: str = ""
    ) -> MapStatePage:
        raise self._no_maps()

    async def map_stream(
        self, channel: str, opts: MapOptions, since: StreamPosition | None = None, limit: int = 0
    ) -> tuple[list[Publication], StreamPosition]:
        raise self._no_maps()

    async def map_stats(self, channel: str, opts: MapOptions) -> int:
        raise self._no_maps()

    async def map_clear(self, channel: str) -> None:
        raise self._no_maps()
