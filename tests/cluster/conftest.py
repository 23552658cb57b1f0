"""Fixtures of the cluster tests: a Cluster of ``livehub serve`` processes on a key prefix
of their own (Redis DB 4 of the test Redis), removed with its keys after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.engines.contract import delete_redis_keys, require_service

from .harness import REDIS_DB, REDIS_URL, Cluster, RedisServer, unique_prefix


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    require_service(REDIS_URL, "Redis")
    prefix = unique_prefix()
    nodes = Cluster(tmp_path, prefix)
    try:
        yield nodes
    finally:
        await nodes.close()
        print(nodes.logs())  # shown by pytest when the test failed
        await delete_redis_keys([f"{REDIS_URL}/{REDIS_DB}"], prefix)


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        await server.start()
        yield server
    finally:
        server.close()
