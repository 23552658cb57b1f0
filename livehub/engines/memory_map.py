"""Map channels in this process's memory: the memory engine's map part.

One :class:`_Map` per channel: its state (key -> the publication that set it, and when
it expires), its stream of changes, and its epoch. Every change runs without an await
between reading and writing, so it is atomic per channel. Keys with a TTL are found by a
heap of deadlines; :meth:`MemoryMaps.expire` (run every ``SWEEP_INTERVAL`` by the broker)
removes the expired ones as removal changes. A map that holds no key and keeps no stream
(or whose metadata expired) is forgotten, so memory follows what the maps hold.

Reading a map that was never written stores nothing (clients can name any number of
channels): the read gets offset 0 and the epoch the map will have when first written,
derived from the channel name, a random salt of this process and a generation that every
clear or expiry of a map moves on (so a map that comes back never reuses an old epoch).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import secrets
import time
from collections import deque
from collections.abc import Callable

from livehub.engines.base import MapKeyLimit, MapOptions, MapPublish, MapStatePage, MapUpdate
from livehub.models import Publication, StreamPosition

#: How often expired keys are looked for (seconds).
SWEEP_INTERVAL = 0.5

#: ``deliver(channel, change, position, previous value of the key)``.
Deliver = Callable[[str, Publication, StreamPosition, "Publication | None"], None]


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Map:
    __slots__ = ("epoch", "top", "state", "expires", "stream", "meta_expires", "_sorted")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.top = 0
        self.state: dict[str, Publication] = {}
        self.expires: dict[str, float] = {}
        self.stream: deque[tuple[float, Publication]] = deque()
        self.meta_expires = 0.0  # 0: never
        self._sorted: list[str] | None = None

    def keys(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.state)
        return self._sorted

    def set(self, key: str, pub: Publication) -> None:
        if key not in self.state:
            self._sorted = None
        self.state[key] = pub

    def drop(self, key: str) -> None:
        if self.state.pop(key, None) is not None:
            self._sorted = None
        self.expires.pop(key, None)


class MemoryMaps:
    def __init__(self, deliver: Deliver, clock: Callable[[], float] = time.monotonic) -> None:
        self._deliver = deliver
        self._clock = clock
        self._maps: dict[str, _Map] = {}
        self._deadlines: list[tuple[float, str, str]] = []  # (expires, channel, key)
        self._options: dict[str, MapOptions] = {}  # of maps with expiring keys, for removals
        self._salt = secrets.token_bytes(16)
        self._generation = 0

    def _epoch(self, channel: str) -> str:
        """The epoch ``channel``'s map gets when it is (next) written."""
        seed = self._salt + self._generation.to_bytes(8, "big") + channel.encode()
        return hashlib.blake2b(seed, digest_size=6).hexdigest()

    def _existing(self, channel: str) -> _Map | None:
        m = self._maps.get(channel)
        if m is not None and m.meta_expires and m.meta_expires <= self._clock():
            self.clear(channel)
            return None
        return m

    def _map(self, channel: str, opts: MapOptions) -> _Map:
        now = self._clock()
        m = self._existing(channel)
        if m is None:
            m = self._maps[channel] = _Map(self._epoch(channel))
        if opts.meta_ttl > 0:
            m.meta_expires = now + opts.meta_ttl
        stream = m.stream
        while stream and stream[0][0] <= now:
            stream.popleft()
        return m

    def _change(
        self, channel: str, m: _Map, opts: MapOptions, pub: Publication, prev: Publication | None
    ) -> MapUpdate:
        """Append ``pub`` to the stream (if the map keeps one) and deliver it."""
        if opts.stream_size > 0:
            m.top += 1
            pub = _at(pub, m.top)
            m.stream.append((self._clock() + opts.stream_ttl, pub))
            while len(m.stream) > opts.stream_size:
                m.stream.popleft()
        sp = StreamPosition(m.top, m.epoch)
        self._deliver(channel, pub, sp, prev)
        return MapUpdate(sp)

    def _forget_if_empty(self, channel: str, m: _Map, opts: MapOptions) -> None:
        if not m.state and opts.stream_size == 0:  # no stream: no position to keep apart
            self._maps.pop(channel, None)
            self._options.pop(channel, None)

    def publish(self, channel: str, key: str, opts: MapOptions, p: MapPublish) -> MapUpdate:
        m = self._map(channel, opts)
        now = self._clock()
        old = m.state.get(key)
        if old is not None and key in m.expires and m.expires[key] <= now:
            old = None  # expired, not swept yet
        if p.key_mode == "if_new" and old is not None:
            if p.refresh_ttl_on_suppress and opts.key_ttl > 0:
                self._expire_at(channel, m, key, opts)
            return MapUpdate(StreamPosition(m.top, m.epoch), "key_exists")
        if p.key_mode == "if_exists" and old is None:
            return MapUpdate(StreamPosition(m.top, m.epoch), "key_not_found")
        if old is None and key not in m.state and len(m.state) >= opts.max_keys:
            raise MapKeyLimit(f"map {channel!r} holds {opts.max_keys} keys")
        pub = Publication(p.data, 0, p.info, p.tags, _now_ms(), key)
        update = self._change(channel, m, opts, pub, old if p.use_delta else None)
        m.set(key, _at(pub, update.position.offset))
        if opts.key_ttl > 0:
            self._expire_at(channel, m, key, opts)
        else:
            m.expires.pop(key, None)
        return update

    def _expire_at(self, channel: str, m: _Map, key: str, opts: MapOptions) -> None:
        deadline = self._clock() + opts.key_ttl
        m.expires[key] = deadline
        self._options[channel] = opts
        heapq.heappush(self._deadlines, (deadline, channel, key))

    def remove(self, channel: str, key: str, opts: MapOptions) -> MapUpdate:
        m = self._existing(channel)
        old = m.state.get(key) if m is not None else None
        if m is None or old is None:
            position = (
                StreamPosition(m.top, m.epoch) if m is not None else StreamPosition(0, self._epoch(channel))
            )
            return MapUpdate(position, "key_not_found")
        m = self._map(channel, opts)
        m.drop(key)
        update = self._change(
            channel, m, opts, Publication(b"", 0, None, old.tags, _now_ms(), key, True), None
        )
        self._forget_if_empty(channel, m, opts)
        return update

    def state(self, channel: str, opts: MapOptions, cursor: str, limit: int, key: str) -> MapStatePage:
        m = self._existing(channel)
        if m is None:
            return MapStatePage([], StreamPosition(0, self._epoch(channel)))
        m = self._map(channel, opts)
        sp = StreamPosition(m.top, m.epoch)
        now = self._clock()

        def live(k: str) -> bool:
            deadline = m.expires.get(k)
            return deadline is None or deadline > now

        if key:
            pub = m.state.get(key)
            return MapStatePage([pub] if pub is not None and live(key) else [], sp)
        keys = m.keys()
        start = bisect.bisect_right(keys, cursor) if cursor else 0
        entries: list[Publication] = []
        next_cursor = ""
        for i in range(start, len(keys)):
            if limit > 0 and len(entries) == limit:
                next_cursor = entries[-1].key
                break
            if live(keys[i]):
                entries.append(m.state[keys[i]])
        return MapStatePage(entries, sp, next_cursor)

    def stream(
        self, channel: str, opts: MapOptions, since: StreamPosition | None, limit: int
    ) -> tuple[list[Publication], StreamPosition]:
        m = self._existing(channel)
        if m is None:
            return [], StreamPosition(0, self._epoch(channel))
        m = self._map(channel, opts)
        sp = StreamPosition(m.top, m.epoch)
        if limit == 0:
            return [], sp
        after = since.offset if since is not None else 0
        pubs = [pub for _, pub in m.stream if pub.offset > after]
        return (pubs[:limit] if limit > 0 else pubs), sp

    def stats(self, channel: str, opts: MapOptions) -> int:
        m = self._maps.get(channel)
        if m is None:
            return 0
        now = self._clock()
        return sum(1 for k in m.state if m.expires.get(k, now + 1) > now)

    def clear(self, channel: str) -> None:
        self._maps.pop(channel, None)
        self._options.pop(channel, None)
        self._generation += 1

    def expire(self) -> int:
        """Remove every key past its TTL (each a removal change); returns how many."""
        now = self._clock()
        removed = 0
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, channel, key = heapq.heappop(deadlines)
            m = self._maps.get(channel)
            opts = self._options.get(channel)
            if m is None or opts is None or m.expires.get(key) != deadline:
                continue  # refreshed, removed, or the map is gone: a stale deadline
            self.remove(channel, key, opts)
            removed += 1
        if len(deadlines) > 2 * sum(len(m.expires) for m in self._maps.values()) + 1024:
            self._deadlines = [(d, c, k) for c, m in self._maps.items() for k, d in m.expires.items()]
            heapq.heapify(self._deadlines)
        return removed


def _at(pub: Publication, offset: int) -> Publication:
    return Publication(pub.data, offset, pub.info, pub.tags, pub.time, pub.key, pub.removed)
