"""Rate and count limits: token buckets for commands, a gate for new connections.

Pure bookkeeping: every method takes the current time (``now``, seconds on a monotonic
clock), so callers pass the loop's clock and tests pass numbers. Nothing here grows with
what a client sends: a connection's limiter is a fixed set of buckets, and the gate keeps
one counter per client address that has a connection open.

Command limits follow Centrifugo PRO's ``client.rate_limit.client_command``: a ``total``
set of buckets every command takes from, a set per command (``publish``, ``rpc``, …, with
``rpc`` narrowed per method), and ``default`` for commands that have none. A command
refused by a bucket is answered with error 111 (temporary: the SDKs retry later).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from livehub.protocol.codes import Disconnect, disconnect_connection_limit, disconnect_too_many_requests


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


def _make(config: Iterable[Bucket], now: float) -> tuple[TokenBucket, ...]:
    return tuple(TokenBucket(b.rate, b.interval, now) for b in config)


class CommandLimiter:
    """One connection's buckets. Buckets of a method are made the first time it is used."""

    __slots__ = ("_limits", "_total", "_own")

    def __init__(self, limits: CommandLimits, now: float) -> None:
        self._limits = limits
        self._total = _make(limits.total, now)
        #: method (or "rpc:<name>") -> its buckets; bounded by the configured names + "default"
        self._own: dict[str, tuple[TokenBucket, ...]] = {}

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

    A refusal is a :class:`Disconnect` to close the new connection with: 3504 for the
    count limits, 3013 for the rate (both tell the SDKs to come back later, 3504 less
    eagerly); callers count refusals for metrics via :attr:`refused`.
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

    def admit(self, ip: str, now: float) -> Disconnect | None:
        """Count a new connection in, or say why it may not come in (nothing is counted then)."""
        if self.limit and self._open >= self.limit:
            self.refused += 1
            return disconnect_connection_limit()
        if self.per_ip and self._by_ip.get(ip, 0) >= self.per_ip:
            self.refused += 1
            return disconnect_connection_limit()
        if self._rate is not None and not self._rate.take(now):
            self.refused += 1
            return disconnect_too_many_requests()
        self._open += 1
        if self.per_ip:
            self._by_ip[ip] = self._by_ip.get(ip, 0) + 1
        return None

    def release(self, ip: str) -> None:
        """An admitted connection ended."""
        self._open -= 1
        if self.per_ip:
            left = self._by_ip.get(ip, 0) - 1
            if left > 0:
                self._by_ip[ip] = left
            else:
                self._by_ip.pop(ip, None)
