"""API commands read from Redis Streams through a consumer group.

Every node reading the streams joins the group (created at the stream's end if missing)
under its own consumer name, and reads new entries with ``XREADGROUP``: Redis gives each
entry to one consumer of the group. An entry is acknowledged (``XACK``) once executed, or
once refused for good (logged); one that failed for a reason that may pass stays pending
and, like the entries of a node that died before acknowledging them, is claimed again
(``XAUTOCLAIM``) by a node of the group once pending longer than ``visibility_timeout``:
at least once. At most ``num_workers`` entries per stream are in flight at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import quote

from livehub.consumers.dispatch import Retry, execute, publish_data
from livehub.core.node import Node
from livehub.settings import RedisStreamConsumerSettings

log = logging.getLogger("livehub.consumers")

#: How long a read waits for new entries before the loop looks at pending ones again.
BLOCK_SECONDS = 5.0
#: A failed read (Redis down) is tried again after this, doubling up to ``MAX_BACKOFF``.
BACKOFF = 0.1
MAX_BACKOFF = 5.0


def redis_url(cfg: RedisStreamConsumerSettings) -> str:
    address = cfg.address[0]
    if "://" in address:
        return address
    auth = f"{quote(cfg.user, safe='')}:{quote(cfg.password, safe='')}@" if cfg.user or cfg.password else ""
    return f"redis://{auth}{address}/{cfg.db}"


class RedisStreamConsumer:
    def __init__(self, node: Node, name: str, cfg: RedisStreamConsumerSettings) -> None:
        import redis.asyncio as aioredis

        self.node = node
        self.name = name
        self.cfg = cfg
        #: This node's name in the group: a restarted node is a new consumer, and what the
        #: old one left pending is claimed after ``visibility_timeout``.
        self.consumer = f"{node.name}-{node.id}"
        self.redis: Any = aioredis.from_url(redis_url(cfg), socket_timeout=BLOCK_SECONDS + 5)
        self._tasks: list[asyncio.Task[None]] = []
        #: Entries executed (acknowledged) and retried, for tests and logs.
        self.done = 0
        self.retried = 0

    async def start(self) -> None:
        for stream in self.cfg.streams:
            await self._ensure_group(stream)
        self._tasks = [asyncio.create_task(self._run(stream)) for stream in self.cfg.streams]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.redis.aclose()

    async def _ensure_group(self, stream: str) -> None:
        from redis.exceptions import ResponseError

        try:
            await self.redis.xgroup_create(stream, self.cfg.consumer_group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _run(self, stream: str) -> None:
        cfg = self.cfg
        idle_ms = int(cfg.visibility_timeout * 1000)
        reclaim_every = min(BLOCK_SECONDS, cfg.visibility_timeout)
        next_reclaim = 0.0
        backoff = BACKOFF
        while True:
            try:
                if time.monotonic() >= next_reclaim:
                    await self._reclaim(stream, idle_ms)
                    next_reclaim = time.monotonic() + reclaim_every
                reply = await self.redis.xreadgroup(
                    cfg.consumer_group,
                    self.consumer,
                    {stream: ">"},
                    count=cfg.num_workers,
                    block=int(reclaim_every * 1000),
                )
                for _, entries in reply or ():
                    await self._handle(stream, entries)
                backoff = BACKOFF
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "consumer %s: reading %s failed (%r); again in %.1fs", self.name, stream, exc, backoff
                )
                if "NOGROUP" in str(exc):  # the stream was deleted: make it and the group again
                    with contextlib.suppress(Exception):
                        await self._ensure_group(stream)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _reclaim(self, stream: str, idle_ms: int) -> None:
        """Take over the entries pending longer than the visibility timeout, and run them."""
        start = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                stream, self.cfg.consumer_group, self.consumer, idle_ms, start, count=self.cfg.num_workers
            )
            start, entries = reply[0], reply[1]
            if entries:
                await self._handle(stream, entries)
            if not entries or start in (b"0-0", "0-0"):
                return

    async def _handle(self, stream: str, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> None:
        """Run a batch (at most ``num_workers``) at once; acknowledge what is done with."""
        results = await asyncio.gather(*(self._one(fields) for _, fields in entries))
        done = [entry_id for (entry_id, _), ok in zip(entries, results, strict=True) if ok]
        if done:
            await self.redis.xack(stream, self.cfg.consumer_group, *done)
            self.done += len(done)

    async def _one(self, fields: dict[bytes, bytes] | None) -> bool:
        """True: done with (executed or skipped); False: to be delivered again."""
        if not fields:  # deleted from the stream while pending
            return True
        values = {k.decode(errors="replace"): v for k, v in fields.items()}
        payload = values.get(self.cfg.payload_value)
        if payload is None:
            log.error(
                "consumer %s: skipping an entry without the %r field", self.name, self.cfg.payload_value
            )
            return True
        try:
            mode = self.cfg.publication_data_mode
            if mode.enabled:
                channels = values.get(mode.channels_value, b"").decode(errors="replace").split(",")
                key = values.get(mode.idempotency_key_value, b"").decode(errors="replace")
                prefix = mode.tags_value_prefix
                tags = {
                    k[len(prefix) :]: v.decode(errors="replace")
                    for k, v in values.items()
                    if prefix and k.startswith(prefix)
                }
                await publish_data(self.node, self.name, channels, payload, key, tags)
            else:
                method = values.get(self.cfg.method_value, b"").decode(errors="replace")
                await execute(self.node, self.name, method, payload)
        except Retry as exc:
            log.warning("consumer %s: %s; the entry will be delivered again", self.name, exc)
            self.retried += 1
            return False
        return True
