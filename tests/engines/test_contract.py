"""Runs the engine contract (tests/engines/contract.py) against every engine in ENGINES."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .contract import ENGINES, BrokerContract, Engine, PresenceContract, make_engine


@pytest.fixture(params=ENGINES)
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    cluster_url = request.getfixturevalue("redis_cluster") if request.param == "redis-cluster" else ""
    engine = await make_engine(request.param, cluster_url)
    try:
        yield engine
    finally:
        await engine.close()


class TestBroker(BrokerContract):
    pass


class TestPresenceManager(PresenceContract):
    pass
