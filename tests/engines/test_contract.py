"""Runs the engine contract (tests/engines/contract.py) against every engine in ENGINES."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .contract import ENGINES, BrokerContract, Engine, PresenceContract, make_engine
from .map_contract import MAP_ENGINES, MapContract, check_unsupported


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


# the ``engine`` parameter names the service a test needs (tests/conftest.py, rule 4)
@pytest.mark.parametrize("engine", MAP_ENGINES, indirect=True)
class TestMapBroker(MapContract):
    pass


@pytest.mark.parametrize("engine", sorted(set(ENGINES) - set(MAP_ENGINES)))
async def test_engines_without_maps_refuse_them(engine: str) -> None:
    built = await make_engine(engine)
    try:
        await check_unsupported(built)
    finally:
        await built.close()
