"""The single-process engine: history streams and presence in this process's memory.

Nothing to install and nothing shared: every node has its own. A restart loses the
streams, and the new epoch tells reconnecting clients so.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence

from livehub.engines.base import (
    BrokerEventHandler,
    HistoryOptions,
    MapOptions,
    MapPublish,
    MapStatePage,
    MapUpdate,
    PresenceEntry,
    PublishOptions,
)
from livehub.engines.memory_map import SWEEP_INTERVAL, MemoryMaps
from livehub.models import ClientInfo, PresenceStats, Publication, StreamPosition


def new_epoch() -> str:
    return secrets.token_urlsafe(6)


class _Stream:
    __slots__ = ("epoch", "top", "items", "meta_expires")

    def __init__(self, now: float, meta_ttl: float) -> None:
        self.epoch = new_epoch()
        self.top = 0
        self.items: deque[tuple[float, Publication]] = deque()
        self.meta_expires = now + meta_ttl


class MemoryBroker:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._handler: BrokerEventHandler | None = None
        self._subscribed: set[str] = set()
        self._streams: dict[str, _Stream] = {}
        self._last: dict[str, Publication] = {}  # for deltas on channels without history
        self._idempotent: dict[tuple[str, str], tuple[float, StreamPosition]] = {}
        self._maps = MemoryMaps(self._deliver_map, clock)
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, handler: BrokerEventHandler) -> None:
        self._handler = handler
        self._sweeper = asyncio.create_task(self._sweep(), name="livehub-memory-map-expiry")

    async def close(self) -> None:
        self._handler = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self._maps.expire()

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)
        self._last.pop(channel, None)

    def _stream(self, channel: str, meta_ttl: float) -> _Stream:
        now = self._clock()
        stream = self._streams.get(channel)
        if stream is None or stream.meta_expires <= now:
            stream = self._streams[channel] = _Stream(now, meta_ttl)
        else:
            stream.meta_expires = now + meta_ttl
        items = stream.items
        while items and items[0][0] <= now:
            items.popleft()
        return stream

    async def publish(self, channel: str, data: bytes, opts: PublishOptions) -> tuple[StreamPosition, bool]:
        now = self._clock()
        if opts.idempotency_key:
            key = (channel, opts.idempotency_key)
            cached = self._idempotent.get(key)
            if cached is not None and cached[0] > now:
                return cached[1], True
        prev: Publication | None = None
        stamp = int(time.time() * 1000)
        if opts.history_size > 0 and opts.history_ttl > 0:
            stream = self._stream(channel, opts.history_meta_ttl)
            if opts.use_delta and stream.items:
                prev = stream.items[-1][1]
            stream.top += 1
            pub = Publication(data, stream.top, opts.info, opts.tags, stamp, opts.key)
            stream.items.append((now + opts.history_ttl, pub))
            while len(stream.items) > opts.history_size:
                stream.items.popleft()
            sp = StreamPosition(stream.top, stream.epoch)
        else:
            pub = Publication(data, 0, opts.info, opts.tags, stamp, opts.key)
            sp = StreamPosition(0, "")
            if opts.use_delta:
                prev = self._last.get(channel)
                if channel in self._subscribed:
                    self._last[channel] = pub
        if opts.idempotency_key:
            self._idempotent[(channel, opts.idempotency_key)] = (now + opts.idempotent_result_ttl, sp)
            if len(self._idempotent) > 10000:
                self._idempotent = {k: v for k, v in self._idempotent.items() if v[0] > now}
        if self._handler is not None and channel in self._subscribed:
            self._handler.handle_publication(channel, pub, sp, prev)
        return sp, False

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        if self._handler is not None and channel in self._subscribed:
            self._handler.handle_join(channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        if self._handler is not None and channel in self._subscribed:
            self._handler.handle_leave(channel, info)

    async def publish_control(self, data: bytes) -> None:
        """One process, one node: the control message goes back to this node."""
        if self._handler is not None:
            self._handler.handle_control(data)

    async def history(self, channel: str, opts: HistoryOptions) -> tuple[list[Publication], StreamPosition]:
        stream = self._stream(channel, opts.history_meta_ttl)
        sp = StreamPosition(stream.top, stream.epoch)
        if opts.limit == 0:
            return [], sp
        pubs = [pub for _, pub in stream.items]
        if opts.since is not None:
            since = opts.since.offset
            if opts.reverse:
                pubs = [p for p in reversed(pubs) if p.offset < since]
            else:
                pubs = [p for p in pubs if p.offset > since]
        elif opts.reverse:
            pubs.reverse()
        if opts.limit > 0:
            pubs = pubs[: opts.limit]
        return pubs, sp

    async def remove_history(self, channel: str) -> None:
        stream = self._streams.get(channel)
        if stream is not None:
            stream.items.clear()

    # -- maps (livehub.engines.memory_map)

    def _deliver_map(
        self, channel: str, pub: Publication, sp: StreamPosition, prev: Publication | None
    ) -> None:
        if self._handler is not None and channel in self._subscribed:
            self._handler.handle_publication(channel, pub, sp, prev)

    async def map_publish(self, channel: str, key: str, opts: MapOptions, pub: MapPublish) -> MapUpdate:
        return self._maps.publish(channel, key, opts, pub)

    async def map_remove(self, channel: str, key: str, opts: MapOptions) -> MapUpdate:
        return self._maps.remove(channel, key, opts)

    async def map_state(
        self, channel: str, opts: MapOptions, cursor: str = "", limit: int = 0, key: str = ""
    ) -> MapStatePage:
        return self._maps.state(channel, opts, cursor, limit, key)

    async def map_stream(
        self, channel: str, opts: MapOptions, since: StreamPosition | None = None, limit: int = 0
    ) -> tuple[list[Publication], StreamPosition]:
        return self._maps.stream(channel, opts, since, limit)

    async def map_stats(self, channel: str, opts: MapOptions) -> int:
        return self._maps.stats(channel, opts)

    async def map_clear(self, channel: str) -> None:
        self._maps.clear(channel)

    def map_expire(self) -> int:
        """Remove the keys past their TTL now (the sweeper does it every half second)."""
        return self._maps.expire()


class MemoryPresenceManager:
    def __init__(self) -> None:
        self._channels: dict[str, dict[str, ClientInfo]] = {}

    async def add_presence(self, channel: str, client_id: str, info: ClientInfo) -> None:
        self._channels.setdefault(channel, {})[client_id] = info

    async def refresh_presence(self, entries: Sequence[PresenceEntry]) -> None:
        """Entries here live until removed: nothing to refresh."""

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        clients = self._channels.get(channel)
        if clients is not None:
            clients.pop(client_id, None)
            if not clients:
                del self._channels[channel]

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        return dict(self._channels.get(channel, {}))

    async def presence_stats(self, channel: str) -> PresenceStats:
        clients = self._channels.get(channel, {})
        return PresenceStats(len(clients), len({info.user for info in clients.values()}))

    async def close(self) -> None:
        self._channels.clear()
