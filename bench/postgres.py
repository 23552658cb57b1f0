"""PostgreSQL figures: the engine's publish and its delivery to another node, and the
transactional outbox from commit to delivery, on the local server (trust auth). Not part of
``make bench``; tables of a throwaway prefix, dropped at the end.

    .venv/bin/python bench/postgres.py [postgresql://postgres@127.0.0.1:5432/test]

Prints, for each: p50 / p99 latency of N sequential operations, and the rate of concurrent ones.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import time

import asyncpg

from livehub import Hub, Settings
from livehub.engines.base import PublishOptions
from livehub.engines.postgres import drop_tables, from_url
from livehub.models import ClientInfo, Publication, StreamPosition

DSN = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/test"
HISTORY = PublishOptions(history_size=100, history_ttl=300.0)
N = 500


class Arrivals:
    """A node's broker handler noting when each publication arrived."""

    def __init__(self) -> None:
        self.at: dict[bytes, float] = {}
        self.event = asyncio.Event()

    def handle_publication(self, channel: str, pub: Publication, sp: StreamPosition, prev: object) -> None:
        self.at[pub.data] = time.perf_counter()
        self.event.set()

    def handle_join(self, channel: str, info: ClientInfo) -> None: ...
    def handle_leave(self, channel: str, info: ClientInfo) -> None: ...
    def handle_control(self, data: bytes) -> None: ...

    async def wait(self, data: bytes) -> float:
        while data not in self.at:
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), 10)
        return self.at[data]


def ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"p50 {statistics.median(values) * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms"


async def engine(url: str) -> None:
    a, a_presence = from_url(url)
    b, b_presence = from_url(url)
    seen = Arrivals()
    await a.start(Arrivals())
    await b.start(seen)
    ch = "bench:" + secrets.token_hex(3)
    await b.subscribe(ch)
    publish, deliver = [], []
    for i in range(N):
        data = f'{{"i":{i}}}'.encode()
        start = time.perf_counter()
        await a.publish(ch, data, HISTORY)
        publish.append(time.perf_counter() - start)
        deliver.append(await seen.wait(data) - start)
    print(f"engine publish (history, sequential, {N}): {ms(publish)}")
    print(f"engine publish -> arrival on another node: {ms(deliver)}")
    tasks, per = 16, 200
    start = time.perf_counter()

    async def writer(k: int) -> None:
        for _ in range(per):
            await a.publish(f"{ch}:{k}", b"1", HISTORY)

    await asyncio.gather(*(writer(k) for k in range(tasks)))
    rate = tasks * per / (time.perf_counter() - start)
    print(f"engine publish, {tasks} concurrent channels: {rate:.0f} publications/s")
    for closing in (a, b):
        await closing.close()
    await a_presence.close()
    await b_presence.close()


async def outbox(url: str, ordered: bool) -> None:
    hub = Hub(
        Settings(channel={"namespaces": [{"name": "bench", "history_size": 100, "history_ttl": "300s"}]}),
        engine=url,
    )
    await hub.node.start()
    table = f"lhbench_outbox_{secrets.token_hex(3)}"
    box = hub.transactional_outbox(DSN, table=table, ordered=ordered, poll_interval=1.0)
    await box.start()
    while not box.relaying:  # noqa: ASYNC110 -- a flag, no event to wait on
        await asyncio.sleep(0.01)
    observer, observer_presence = from_url(url)
    seen = Arrivals()
    await observer.start(seen)
    ch = "bench:" + secrets.token_hex(3)
    await observer.subscribe(ch)
    conn = await asyncpg.connect(DSN)
    latencies = []
    for i in range(N):
        async with conn.transaction():
            await box.publish(conn, ch, {"i": i})
        committed = time.perf_counter()
        latencies.append(await seen.wait(f'{{"i":{i}}}'.encode()) - committed)
    label = "ordered" if ordered else "unordered"
    print(f"outbox ({label}) commit -> arrival on another node (sequential, {N}): {ms(latencies)}")
    writers, per = 8, 100
    conns = [await asyncpg.connect(DSN) for _ in range(writers)]
    start = time.perf_counter()

    async def writer(c: asyncpg.Connection, k: int) -> None:
        for i in range(per):
            async with c.transaction():
                await box.publish(c, ch, {"k": k, "i": i})

    await asyncio.gather(*(writer(c, k) for k, c in enumerate(conns)))
    while await conn.fetchval(f"SELECT count(*) FROM {table}"):  # noqa: ASYNC110 -- polls the table
        await asyncio.sleep(0.01)
    rate = writers * per / (time.perf_counter() - start)
    print(f"outbox ({label}), {writers} writers: {rate:.0f} committed and delivered/s")
    for c in (*conns, conn):
        await c.close()
    await box.stop()
    await observer.close()
    await observer_presence.close()
    await hub.node.stop()
    admin = await asyncpg.connect(DSN)
    await admin.execute(f"DROP TABLE {table}")
    await admin.close()


async def main() -> None:
    url = f"{DSN}?prefix=lhbench_{secrets.token_hex(3)}"
    try:
        await engine(url)
        await outbox(url, ordered=True)
        await outbox(url, ordered=False)
    finally:
        await drop_tables(url)


if __name__ == "__main__":
    asyncio.run(main())
