"""Streaming ticker: 20 symbols, each updated 10 times a second, on one channel ``ticker:prices``.

Ticks are published without history (a missed price is worthless once the next one is
out); a new viewer asks for the ``ticker.snapshot`` RPC instead and so starts with every
price at once. The channel conflates, each tick keyed by its symbol: a viewer whose
connection cannot take 200 ticks a second gets the latest price of every symbol at the
rate it can, instead of a backlog (and instead of being disconnected as slow). The page
coalesces too: it keeps the latest tick per symbol and renders once per animation frame,
so a slow device shows the latest prices as well.
The page is ``static/ticker.js``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import BaseModel

from livehub import Client, Hub
from livehub.demos.common import every, server_only, watched

CHANNEL = "ticker:prices"
SYMBOLS = (
    "AAPL MSFT GOOG AMZN NVDA META TSLA NFLX ADBE ORCL INTC AMD IBM CSCO CRM UBER SHOP SQ PYPL SNOW"
).split()
TICKS_PER_SECOND = 10


class Tick(BaseModel):
    symbol: str
    price: float
    #: Change since the session opened, in percent.
    change: float
    seq: int
    time: float


class Snapshot(BaseModel):
    ticks: list[Tick]
    updates_per_second: int


class Market:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.seq = 0
        self.open = {s: round(random.uniform(20, 900), 2) for s in SYMBOLS}
        self.ticks = {
            s: Tick(symbol=s, price=p, change=0.0, seq=0, time=time.time()) for s, p in self.open.items()
        }

    async def step(self) -> None:
        if not await watched(self.hub, CHANNEL):
            return  # prices stand still while nobody watches
        now = time.time()
        for symbol, last in self.ticks.items():
            self.seq += 1
            price = round(max(1.0, last.price * (1 + random.gauss(0, 0.0015))), 2)
            change = round((price / self.open[symbol] - 1) * 100, 2)
            tick = self.ticks[symbol] = Tick(
                symbol=symbol, price=price, change=change, seq=self.seq, time=now
            )
            await self.hub.publish(CHANNEL, tick, skip_history=True, key=symbol)

    def snapshot(self) -> Snapshot:
        return Snapshot(ticks=list(self.ticks.values()), updates_per_second=len(SYMBOLS) * TICKS_PER_SECOND)


def setup(hub: Hub) -> list[Callable[[], Coroutine[Any, Any, None]]]:
    # its own namespace: conflation (the latest tick of each symbol for a slow connection)
    # is for ticks, not for the chat's messages at the top level
    hub.channel(CHANNEL, model=Tick, description="Price ticks, 200 a second", presence=True, conflate=True)
    market = Market(hub)

    @hub.on_publish(CHANNEL)
    async def read_only(client: Client, data: Tick) -> None:
        raise server_only()

    @hub.rpc("ticker.snapshot")
    async def snapshot(client: Client, request: object) -> Snapshot:
        """The latest tick of every symbol."""
        return market.snapshot()

    async def stream_ticks() -> None:
        await every(1 / TICKS_PER_SECOND, market.step)

    return [stream_ticks]
