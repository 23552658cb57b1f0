"""API commands read from a NATS JetStream stream through a durable pull consumer.

The durable consumer (created or updated at start, unless ``use_existing_consumer``) keeps
the position: every node reading it shares the messages, and a restarted node goes on
where the consumer is. A message is acknowledged — and the server's receipt of the ack
awaited — once executed, or once refused for good (logged); one that failed for a reason
that may pass is negatively acknowledged with a growing delay and delivered again; one
whose node died before acknowledging it is delivered again after the consumer's ack wait
(30 s): at least once. At most ``max_ack_pending`` messages are in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from livehub.consumers.dispatch import Retry, execute, publish_data
from livehub.core.node import Node
from livehub.settings import NatsJetStreamConsumerSettings

log = logging.getLogger("livehub.consumers")

#: How long a fetch waits for messages before it asks again.
FETCH_SECONDS = 5.0
#: Messages fetched at once, at most (and never more than ``max_ack_pending``).
FETCH_BATCH = 100
#: A message delivered again after no ack is redelivered after this.
ACK_WAIT = 30.0
BACKOFF = 0.1
MAX_BACKOFF = 5.0


class NatsJetStreamConsumer:
    def __init__(self, node: Node, name: str, cfg: NatsJetStreamConsumerSettings) -> None:
        self.node = node
        self.name = name
        self.cfg = cfg
        self.nc: Any = None
        self._task: asyncio.Task[None] | None = None
        self.done = 0
        self.retried = 0

    async def start(self) -> None:
        import nats
        from nats.js import api

        cfg = self.cfg
        options: dict[str, Any] = {"servers": [cfg.url], "max_reconnect_attempts": -1}
        if cfg.credentials_file:
            options["user_credentials"] = cfg.credentials_file
        elif cfg.username:
            options.update(user=cfg.username, password=cfg.password)
        elif cfg.token:
            options["token"] = cfg.token
        if cfg.tls.enabled:
            import ssl

            options["tls"] = ssl.create_default_context()
        self.nc = await nats.connect(**options)
        js = self.nc.jetstream()
        if not cfg.use_existing_consumer:
            subjects = cfg.subjects
            config = api.ConsumerConfig(
                durable_name=cfg.durable_consumer_name,
                deliver_policy=api.DeliverPolicy.ALL
                if cfg.deliver_policy == "all"
                else api.DeliverPolicy.NEW,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT,
                max_ack_pending=cfg.max_ack_pending,
                filter_subject=subjects[0] if len(subjects) == 1 else None,
                filter_subjects=subjects if len(subjects) > 1 else None,
            )
            await js.add_consumer(cfg.stream_name, config)
        sub = await js.pull_subscribe_bind(durable=cfg.durable_consumer_name, stream=cfg.stream_name)
        self._task = asyncio.create_task(self._run(sub))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.nc is not None:
            await self.nc.close()

    async def _run(self, sub: Any) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        batch = min(FETCH_BATCH, self.cfg.max_ack_pending)
        backoff = BACKOFF
        while True:
            try:
                try:
                    messages = await sub.fetch(batch, timeout=FETCH_SECONDS)
                except NatsTimeout:
                    continue
                for msg in messages:  # in stream order, one at a time
                    await self._one(msg)
                backoff = BACKOFF
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer %s: fetching failed (%r); again in %.1fs", self.name, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _one(self, msg: Any) -> None:
        headers = msg.headers or {}
        try:
            mode = self.cfg.publication_data_mode
            if mode.enabled:
                prefix = mode.tags_header_prefix
                tags = {k[len(prefix) :]: v for k, v in headers.items() if prefix and k.startswith(prefix)}
                channels = headers.get(mode.channels_header, "").split(",")
                key = headers.get(mode.idempotency_key_header, "")
                await publish_data(self.node, self.name, channels, msg.data, key, tags)
            else:
                await execute(self.node, self.name, headers.get(self.cfg.method_header, ""), msg.data)
        except Retry as exc:
            self.retried += 1
            delivered = msg.metadata.num_delivered or 1
            delay = min(BACKOFF * 2 ** min(delivered, 10), MAX_BACKOFF * 4)
            log.warning(
                "consumer %s: %s; the message will be delivered again in %.1fs", self.name, exc, delay
            )
            await msg.nak(delay=delay)
            return
        await msg.ack_sync()
        self.done += 1
