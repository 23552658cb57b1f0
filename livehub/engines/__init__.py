"""Engines chosen by URL: ``memory://`` (the default, one process), ``redis://`` /
``rediss://`` (several URLs = shards), ``nats://`` (NATS with JetStream) and
``postgresql://`` / ``postgres://`` (PostgreSQL alone)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from urllib.parse import urlsplit

from livehub.engines.base import Broker, EngineUnavailable, PresenceManager
from livehub.engines.memory import MemoryBroker, MemoryPresenceManager
from livehub.engines.options import split_urls

__all__ = [
    "Broker",
    "EngineUnavailable",
    "MemoryBroker",
    "MemoryPresenceManager",
    "PresenceManager",
    "engine_from_url",
]

SUPPORTED = ("memory://", "redis://", "rediss://", "nats://", "postgresql://")


def _needs(module: str, extra: str, name: str) -> None:
    """The engine's client library is an extra: say which, instead of an ImportError deep inside."""
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"the {name} engine needs the {module!r} package: pip install 'livehub[{extra}]'")


def engine_from_url(url: str | Sequence[str]) -> tuple[Broker, PresenceManager]:
    """Build the broker and presence manager an engine URL names; ValueError if unknown.

    ``url`` is one URL, a comma-separated list or a sequence of URLs of one scheme
    (several Redis URLs are shards; several NATS URLs are servers of one cluster).
    Nothing connects here: the broker connects in ``start()``.
    """
    urls = split_urls(url)
    schemes = {urlsplit(u).scheme for u in urls}
    if schemes <= {"redis", "rediss"}:
        _needs("redis", "redis", "Redis")
        from livehub.engines.redis import from_url as redis_engine

        return redis_engine(urls)
    if schemes == {"nats"}:
        _needs("nats", "nats", "NATS")
        from livehub.engines.nats import from_url as nats_engine

        return nats_engine(urls)
    if schemes <= {"postgresql", "postgres"}:
        _needs("asyncpg", "postgres", "PostgreSQL")
        from livehub.engines.postgres import from_url as postgres_engine

        return postgres_engine(urls)
    if schemes == {"memory"} and len(urls) == 1:
        return MemoryBroker(), MemoryPresenceManager()
    raise ValueError(f"unsupported engine URL {url!r}: expected one of {', '.join(SUPPORTED)}")
