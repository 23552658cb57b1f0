"""Small helpers the demos share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from livehub import Error, Hub

log = logging.getLogger("livehub.demos")


#: What a client gets when it publishes into a channel only the server writes to.
def server_only() -> Error:
    return Error(103, "permission denied: only the server publishes here")


async def watched(hub: Hub, channel: str) -> bool:
    """Does anyone subscribe to ``channel``? Presence counts every node; else this node's count."""
    if hub.channel_options(channel).presence:
        return (await hub.presence_stats(channel)).num_clients > 0
    return hub.channels().get(channel, 0) > 0


async def every(seconds: float, step: Callable[[], Awaitable[None]]) -> None:
    """Run ``step`` every ``seconds`` until cancelled; a failing step is logged, not fatal."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        try:
            await step()
        except Exception:
            log.exception("demo task %s failed", getattr(step, "__qualname__", step))
        next_at = max(next_at + seconds, loop.time())
        await asyncio.sleep(next_at - loop.time())
