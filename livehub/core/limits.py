"""Rate and count limits: token buckets for commands, a gate for new connections.

Pure bookkeeping: every method takes the current time (``now``, seconds on a monotonic
clock), so callers pass the loop's clock and tests pass numbers. Nothing here grows with
what a client sends: a connection's limiter is a fixed set of buckets, and the gate keeps
one counter per client address that has a connection open.

Command limits follow Centrifugo PRO's ``client.rate_limit.client_command``: a ``total``
set of buckets every command takes from, a set per command (``publish``, ``rpc``, …, with
``rpc`` narrowed per method), and ``default`` for commands that have none. A command
refused by a bucket is answered with error 111 (temporary: the SDKs retry later); a
connection whose refusals within one second pass :attr:`CommandLimiter.flood_limit` is
flooding, and its caller closes it (3013).

Per-user limits (Centrifugo PRO's ``client.rate_limit.user_command``, same shape) are
:class:`UserCommandLimits`: the buckets of a user are kept by a :class:`TokenStore` — the
Redis engine's, shared by every node of the cluster (one atomic script per command), or
:class:`LocalTokenStore`, this node's memory, for the engines that have none.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from livehub.settings import ClientCommandRateLimit, CommandBuckets

#: A connection refused more than this many times the largest configured rate within one
#: second is flooding: it ignores the 111 answers, so it is closed.
FLOOD_FACTOR = 10


class TokenBucket:
    """``rate`` tokens per ``interval`` seconds, at most ``rate`` saved up (a burst)."""

    __slots__ = ("_capacity", "_per_second", "_tokens", "_stamp")

    def __init__(self, rate: int, interval: float, now: float) -> None:
        if rate <= 0 or interval <= 0:
            raise ValueError("a bucket needs a positive rate and interval")
        self._capacity = float(rate)
        self._per_second = rate / interval
        self._tokens = float(rate)
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._per_second)
        self._stamp = now

    def ready(self, now: float) -> bool:
        self._refill(now)
        return self._tokens >= 1.0

    def take(self, now: float) -> bool:
        if not self.ready(now):
            return False
        self._tokens -= 1.0
        return True


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket's configuration: ``rate`` operations per ``interval`` seconds."""

    rate: int
    interval: float


def _take_all(buckets: tuple[TokenBucket, ...], now: float) -> bool:
    """Take one token from each bucket, or from none if any is empty."""
    if all(b.ready(now) for b in buckets):
        for b in buckets:
            b.take(now)
        return True
    return False


@dataclass(frozen=True, slots=True)
class CommandLimits:
    """A node's command rate limits; :meth:`limiter` makes one connection's buckets."""

    total: tuple[Bucket, ...] = ()
    default: tuple[Bucket, ...] = ()
    #: Per command method (``publish``, ``subscribe``, ``history``, ``rpc``, …).
    methods: Mapping[str, tuple[Bucket, ...]] = field(default_factory=dict)
    #: Per RPC method name, instead of ``methods["rpc"]``.
    rpc_methods: Mapping[str, tuple[Bucket, ...]] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.total or self.default or self.methods or self.rpc_methods)

    def limiter(self, now: float) -> CommandLimiter | None:
        """A connection's limiter, or None when nothing is limited (the common case: no cost)."""
        return CommandLimiter(self, now) if self.enabled else None

    def config_for(self, method: str, rpc_method: str = "") -> tuple[str, tuple[Bucket, ...]]:
        """The key and buckets of a command besides ``total``: the RPC method's, the
        command's, or ``default``."""
        if method == "rpc" and rpc_method in self.rpc_methods:
            return "rpc:" + rpc_method, self.rpc_methods[rpc_method]
        if method in self.methods:
            return method, self.methods[method]
        return "default", self.default

    @property
    def flood_limit(self) -> int:
        """Refusals within one second past which a connection is closed: ``FLOOD_FACTOR``
        times the largest rate per second of any bucket (at least ``FLOOD_FACTOR``)."""
        buckets = [*self.total, *self.default]
        for group in (*self.methods.values(), *self.rpc_methods.values()):
            buckets.extend(group)
        per_second = max((math.ceil(b.rate / b.interval) for b in buckets), default=1)
        return FLOOD_FACTOR * max(1, per_second)

    @classmethod
    def from_settings(cls, config: ClientCommandRateLimit) -> CommandLimits:
        """``client.rate_limit.client_command`` as limits (none when it is not enabled)."""
        if not config.enabled:
            return cls()

        def buckets(section: CommandBuckets) -> tuple[Bucket, ...]:
            if not section.enabled:
                return ()
            return tuple(Bucket(b.rate, b.interval) for b in section.buckets)

        methods = {
            name: buckets(getattr(config, name))
            for name in (
                "subscribe",
                "publish",
                "history",
                "presence",
                "presence_stats",
                "refresh",
                "sub_refresh",
                "rpc",
            )  # fmt: skip
            if getattr(config, name).enabled
        }
        rpc_methods = {
            o.method: tuple(Bucket(b.rate, b.interval) for b in o.buckets)
            for o in config.rpc.method_overrides
            if o.enabled
        }
        return cls(buckets(config.total), buckets(config.default), methods, rpc_methods)


def _make(config: Iterable[Bucket], now: float) -> tuple[TokenBucket, ...]:
    return tuple(TokenBucket(b.rate, b.interval, now) for b in config)


class CommandLimiter:
    """One connection's buckets. Buckets of a method are made the first time it is used."""

    __slots__ = ("_limits", "_total", "_own", "_flood")

    def __init__(self, limits: CommandLimits, now: float) -> None:
        self._limits = limits
        self._total = _make(limits.total, now)
        #: method (or "rpc:<name>") -> its buckets; bounded by the configured names + "default"
        self._own: dict[str, tuple[TokenBucket, ...]] = {}
        self._flood = FloodGuard(limits.flood_limit, now)

    def flooding(self, now: float) -> bool:
        """Count a refused command; True once this second's refusals pass the flood limit."""
        return self._flood.flooding(now)

    def allow(self, method: str, now: float, rpc_method: str = "") -> bool:
        """May this command run now? Takes its tokens if so. ``connect`` and pongs are never
        limited (a client must be able to connect and stay alive)."""
        if method in ("", "connect"):
            return True
        key, config = self._limits.config_for(method, rpc_method)
        own = self._own.get(key)
        if own is None:
            own = self._own[key] = _make(config, now)
        if self._total and not all(b.ready(now) for b in self._total):
            return False
        if not _take_all(own, now):
            return False
        for b in self._total:
            b.take(now)
        return True


class FloodGuard:
    """Refusals of one connection within a second; past ``limit`` it is flooding (3013)."""

    __slots__ = ("limit", "_window", "_refused")

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self._window = now
        self._refused = 0

    def flooding(self, now: float) -> bool:
        """Count a refused command; True once this second's refusals pass the limit."""
        if now - self._window >= 1.0:
            self._window, self._refused = now, 0
        self._refused += 1
        return self._refused > self.limit


@runtime_checkable
class TokenStore(Protocol):
    """Keeps users' command buckets (an engine that can share them across nodes)."""

    async def take_tokens(self, user: str, keys: Sequence[str], buckets: Sequence[Bucket]) -> bool:
        """Take one token from each of ``user``'s buckets named ``keys`` (configured as
        ``buckets``), or none if any is empty. True when taken."""
        ...


#: Buckets :class:`LocalTokenStore` keeps at most; past it the oldest go (a bucket that goes
#: comes back full: a user gets at most one burst more, memory stays bounded).
LOCAL_BUCKETS_MAX = 100_000


class LocalTokenStore:
    """Users' buckets in this node's memory: what the memory engine (one node) uses, and the
    engines that cannot share them. ``clock`` gives seconds (tests pass their own)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_buckets: int = LOCAL_BUCKETS_MAX
    ) -> None:
        self._clock = clock
        self._max = max_buckets
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    async def take_tokens(self, user: str, keys: Sequence[str], buckets: Sequence[Bucket]) -> bool:
        now = self._clock()
        found = []
        for key, config in zip(keys, buckets, strict=True):
            bucket = self._buckets.get((user, key))
            if bucket is None:
                while len(self._buckets) >= self._max:
                    del self._buckets[next(iter(self._buckets))]
                bucket = self._buckets[(user, key)] = TokenBucket(config.rate, config.interval, now)
            found.append(bucket)
        return _take_all(tuple(found), now)


class UserCommandLimits:
    """``client.rate_limit.user_command``: every connection of a user takes from the same
    buckets, on every node that shares the ``store``. Anonymous connections (no user) are
    not limited here, as in Centrifugo PRO."""

    def __init__(self, limits: CommandLimits, store: TokenStore) -> None:
        self.limits = limits
        self.store = store

    @property
    def enabled(self) -> bool:
        return self.limits.enabled

    @classmethod
    def from_settings(cls, config: ClientCommandRateLimit, store: TokenStore) -> UserCommandLimits:
        return cls(CommandLimits.from_settings(config), store)

    async def allow(self, user: str, method: str, rpc_method: str = "") -> bool:
        """May ``user`` run this command now? Takes its tokens (``total`` and the command's)
        if so. Raises ``EngineUnavailable`` when the store cannot answer."""
        if not user or method in ("", "connect"):
            return True
        key, own = self.limits.config_for(method, rpc_method)
        keys = [_bucket_key("total", b) for b in self.limits.total]
        keys += [_bucket_key(key, b) for b in own]
        if not keys:
            return True
        return await self.store.take_tokens(user, keys, (*self.limits.total, *own))


def _bucket_key(name: str, bucket: Bucket) -> str:
    """A bucket's name in a store: its command and configuration (so a changed configuration
    starts new buckets instead of reading old ones)."""
    return f"{name}:{bucket.rate}/{round(bucket.interval * 1000)}"


class ConnectionGate:
    """Admits new connections to a node: at most ``limit`` open (0: no limit), at most
    ``per_ip`` from one client address, at most ``rate`` new ones per second (0: no limit).

    A refusal is the name of the limit that refused (the config key: ``connection_limit``,
    ``connection_limit_per_ip``, ``connection_rate_limit``); the transports answer it with
    HTTP 503 before the upgrade, as Centrifugo does, and count it in ``/metrics``.
    """

    __slots__ = ("limit", "per_ip", "_rate", "_open", "_by_ip", "refused")

    def __init__(self, limit: int = 0, per_ip: int = 0, rate: int = 0, now: float = 0.0) -> None:
        self.limit = limit
        self.per_ip = per_ip
        self._rate = TokenBucket(rate, 1.0, now) if rate > 0 else None
        self._open = 0
        self._by_ip: dict[str, int] = {}
        self.refused = 0

    @property
    def open(self) -> int:
        return self._open

    @property
    def enabled(self) -> bool:
        return bool(self.limit or self.per_ip or self._rate is not None)

    def admit(self, ip: str, now: float) -> str | None:
        """Count a new connection in, or say which limit keeps it out (nothing is counted then)."""
        if self.limit and self._open >= self.limit:
            self.refused += 1
            return "connection_limit"
        if self.per_ip and self._by_ip.get(ip, 0) >= self.per_ip:
            self.refused += 1
            return "connection_limit_per_ip"
        if self._rate is not None and not self._rate.take(now):
            self.refused += 1
            return "connection_rate_limit"
        self._open += 1
        if self.per_ip:
            self._by_ip[ip] = self._by_ip.get(ip, 0) + 1
        return None

    def release(self, ip: str) -> None:
        """An admitted connection ended (nothing to do when the gate has no limit)."""
        if not self.enabled:
            return
        self._open -= 1
        if self.per_ip:
            left = self._by_ip.get(ip, 0) - 1
            if left > 0:
                self._by_ip[ip] = left
            else:
                self._by_ip.pop(ip, None)
