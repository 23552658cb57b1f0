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

Per-user limits across a cluster (Centrifugo PRO's ``user_command``, kept in the engine) are
not implemented: every limit here is one node's, in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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

    __slots__ = ("_limits", "_total", "_own", "_flood_limit", "_window", "_refused")

    def __init__(self, limits: CommandLimits, now: float) -> None:
        self._limits = limits
        self._total = _make(limits.total, now)
        #: method (or "rpc:<name>") -> its buckets; bounded by the configured names + "default"
        self._own: dict[str, tuple[TokenBucket, ...]] = {}
        self._flood_limit = limits.flood_limit
        #: The second (from ``_window``) in which ``_refused`` commands were refused.
        self._window = now
        self._refused = 0

    def flooding(self, now: float) -> bool:
        """Count a refused command; True once this second's refusals pass the flood limit."""
        if now - self._window >= 1.0:
            self._window, self._refused = now, 0
        self._refused += 1
        return self._refused > self._flood_limit

    def allow(self, method: str, now: float, rpc_method: str = "") -> bool:
        """May this command run now? Takes its tokens if so. ``connect`` and pongs are never
        limited (a client must be able to connect and stay alive)."""
        if method in ("", "connect"):
            return True
        key, config = self._config(method, rpc_method)
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

    def _config(self, method: str, rpc_method: str) -> tuple[str, tuple[Bucket, ...]]:
        limits = self._limits
        if method == "rpc" and rpc_method in limits.rpc_methods:
            return "rpc:" + rpc_method, limits.rpc_methods[rpc_method]
        if method in limits.methods:
            return method, limits.methods[method]
        return "default", limits.default


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
