"""Async consumers (Centrifugo's ``consumers``): API commands read from queues and executed.

Each enabled entry of ``consumers`` becomes one consumer, started with the hub (after the
node) and stopped before it: ``redis_stream`` (:mod:`.redis_stream`) and ``nats_jetstream``
(:mod:`.nats_jetstream`). What a message does is :mod:`.dispatch`'s: the server API's
operations, acknowledged once done with, delivered again when they failed for a passing
reason (at least once: give publications an ``idempotency_key`` to make a repeat harmless).
"""

from __future__ import annotations

import logging
from typing import Protocol

from livehub.core.node import Node
from livehub.settings import ConsumerSettings

log = logging.getLogger("livehub.consuming")


class Consumer(Protocol):
    name: str
    #: Messages done with (acknowledged), and failures to be delivered again.
    done: int
    retried: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def make_consumer(node: Node, cfg: ConsumerSettings) -> Consumer:
    if cfg.type == "redis_stream":
        from livehub.consuming.redis_stream import RedisStreamConsumer

        return RedisStreamConsumer(node, cfg.name, cfg.redis_stream)
    from livehub.consuming.nats_jetstream import NatsJetStreamConsumer

    return NatsJetStreamConsumer(node, cfg.name, cfg.nats_jetstream)


class Consumers:
    """The node's running consumers."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.running: list[Consumer] = []

    async def start(self) -> None:
        """Start every enabled consumer; one that cannot start (its queue unreachable, its
        stream missing) fails the start, as a wrong config would."""
        for cfg in self.node.settings.consumers:
            if not cfg.enabled:
                continue
            consumer = make_consumer(self.node, cfg)
            try:
                await consumer.start()
            except Exception:
                self.running.append(consumer)  # stopped with the others: what it opened closes
                await self.stop()
                raise
            self.running.append(consumer)
            log.info("consumer %s (%s) running", cfg.name, cfg.type)

    async def stop(self) -> None:
        for consumer in reversed(self.running):
            try:
                await consumer.stop()
            except Exception as exc:
                log.warning("consumer %s: stopping failed: %r", consumer.name, exc)
        self.running = []
