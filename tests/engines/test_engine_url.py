"""engine_from_url: which engine a URL names (nothing connects here)."""

from __future__ import annotations

import pytest

from livehub.engines import MemoryBroker, MemoryPresenceManager, engine_from_url
from livehub.engines.nats import NatsBroker, NatsPresenceManager
from livehub.engines.redis import RedisBroker, RedisPresenceManager


def test_memory() -> None:
    broker, presence = engine_from_url("memory://")
    assert isinstance(broker, MemoryBroker) and isinstance(presence, MemoryPresenceManager)


@pytest.mark.parametrize(
    ("url", "shards"),
    [
        ("redis://127.0.0.1:6379/0", 1),
        ("rediss://127.0.0.1:6380/0?ssl_cert_reqs=none", 1),
        ("redis://127.0.0.1:6379/1,redis://127.0.0.1:6379/2", 2),
        (["redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379/2", "rediss://h:1/0"], 3),
    ],
)
def test_redis(url: str | list[str], shards: int) -> None:
    broker, presence = engine_from_url(url)
    assert isinstance(broker, RedisBroker) and isinstance(presence, RedisPresenceManager)
    assert len(broker.pubsubs) == shards


def test_redis_options() -> None:
    broker, _ = engine_from_url("redis://127.0.0.1:6379/0?prefix=app&presence_ttl=2m&connect_timeout=250ms")
    assert isinstance(broker, RedisBroker)
    assert (broker.config.prefix, broker.config.presence_ttl, broker.config.connect_timeout) == (
        "app",
        120.0,
        0.25,
    )


def test_nats() -> None:
    broker, presence = engine_from_url("nats://127.0.0.1:4222?prefix=app")
    assert isinstance(broker, NatsBroker) and isinstance(presence, NatsPresenceManager)
    assert broker.config.prefix == "app"


def test_postgres() -> None:
    from livehub.engines.postgres import PostgresBroker, PostgresPresenceManager

    for scheme in ("postgresql", "postgres"):
        broker, presence = engine_from_url(
            f"{scheme}://u@127.0.0.1:5432/db?prefix=app&presence_ttl=5s&sslmode=disable"
        )
        assert isinstance(broker, PostgresBroker) and isinstance(presence, PostgresPresenceManager)
        assert broker.config.prefix == "app" and presence.config.presence_ttl == 5.0
        assert (
            broker.config.dsn == f"{scheme}://u@127.0.0.1:5432/db?sslmode=disable"
        )  # ours removed, asyncpg's kept


@pytest.mark.parametrize(
    "url",
    [
        "",
        "mysql://x",
        "postgresql://a,postgresql://b",
        "postgresql://h?prefix=Bad-Name",
        "redis://a,nats://b",
        "memory://,memory://",
        "redis://h?io_timeout=abc",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        engine_from_url(url)
