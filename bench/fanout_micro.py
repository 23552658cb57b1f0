"""Micro benchmark of the fan-out hot path: ``Node.handle_publication`` to N local subscribers.

Sessions are real (connected and subscribed through the protocol) on a fake transport that
takes every write; only the ``handle_publication`` calls are timed (in batches), the flush
runs between batches. Prints the cost per delivery (best and median of the batches) for a
plain channel, a positioned one (history: offsets checked) and a fossil-delta one, to JSON
subscribers, then the plain and the delta channel to Protobuf subscribers.

    .venv/bin/python bench/fanout_micro.py [subscribers] [publications] [batch]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from livehub.core.node import Node
from livehub.core.session import Session
from livehub.engines.base import HistoryOptions
from livehub.models import Publication, StreamPosition
from livehub.protocol.commands import parse_command
from livehub.protocol.encoding import JSON, PROTOBUF, Encoding
from livehub.settings import Settings

#: Publications fanned out back to back per timed batch (then the flush runs, untimed).
BATCH = int(sys.argv[3]) if len(sys.argv) > 3 else 1


class NullTransport:
    def write(self, frame: str | bytes) -> bool:
        return True

    async def drained(self) -> None:
        return None

    async def close(self, code: int, reason: str) -> None:
        return None


async def run(
    channel: str, subscribe: dict[str, object], n_subs: int, n_pubs: int, encoding: Encoding = JSON
) -> tuple[float, float]:
    settings = Settings(
        client={"insecure": True, "queue_max_size": 1 << 30},
        channel={
            "namespaces": [
                {"name": "hist", "history_size": 10, "history_ttl": 60, "force_positioning": True},
                {
                    "name": "delta",
                    "history_size": 10,
                    "history_ttl": 60,
                    "force_positioning": True,
                    "allowed_delta_types": ["fossil"],
                },
            ]
        },
    )
    node = Node(settings)
    await node.start()
    sessions = []
    for _ in range(n_subs):
        session = Session(node, NullTransport(), encoding=encoding)
        await session.handle_command(parse_command({"id": 1, "connect": {}}))
        await session.handle_command(parse_command({"id": 2, "subscribe": {"channel": channel, **subscribe}}))
        sessions.append(session)
    await asyncio.sleep(0.01)
    _, top = await node.broker.history(channel, HistoryOptions(0))
    epoch, offset = top.epoch, top.offset
    positioned = channel.startswith(("hist:", "delta:"))
    prev = None
    times = []
    for _ in range(n_pubs // BATCH):
        batch = []
        for i in range(BATCH):
            offset += 1 if positioned else 0
            data = json.dumps({"title": "a fairly long document title", "n": i, "body": "x" * 100}).encode()
            pub = Publication(data, offset, time=1)
            batch.append((pub, StreamPosition(offset, epoch if positioned else ""), prev))
            prev = pub
        start = time.thread_time()
        for pub, sp, before in batch:
            node.handle_publication(channel, pub, sp, before)
        times.append((time.thread_time() - start) / BATCH)
        await asyncio.sleep(0)  # the flush
        await asyncio.sleep(0)
    for session in sessions:
        assert not session.closing, "a subscriber was closed or lost its position"
        session.outbox.abort()
        await session.cleanup()
    await node.broker.close()
    times.sort()
    return times[0] / n_subs * 1e6, times[len(times) // 2] / n_subs * 1e6


async def main() -> None:
    n_subs = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    n_pubs = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    for name, channel, params, encoding in (
        ("plain", "chat", {}, JSON),
        ("positioned", "hist:chat", {}, JSON),
        ("delta", "delta:chat", {"delta": "fossil"}, JSON),
        ("plain pb", "chat", {}, PROTOBUF),
        ("delta pb", "delta:chat", {"delta": "fossil"}, PROTOBUF),
    ):
        best, median = await run(channel, params, n_subs, n_pubs, encoding)
        print(f"{name:>10}: {best:.3f} us per delivery best, {median:.3f} median ({n_pubs} x {n_subs})")


if __name__ == "__main__":
    asyncio.run(main())
