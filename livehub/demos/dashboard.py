"""Live dashboard: two background tasks publish figures, the page draws them as they come.

* ``dashboard.metrics``: the hub's own figures (connections, deliveries/s, publications/s),
  sampled once a second. The channel's history (the demo config keeps 100) fills the
  charts of a new viewer at once.
* ``dashboard.sensors``: a simulated data source, twice a second, only while someone watches.

Only the server publishes to these channels. The page is ``static/dashboard.js``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import BaseModel

from livehub import Client, Hub
from livehub.demos.common import every, server_only, watched

METRICS = "dashboard.metrics"
SENSORS = "dashboard.sensors"


class Metrics(BaseModel):
    time: float
    connections: int
    users: int
    channels: int
    subscriptions: int
    deliveries_per_s: float
    publications_per_s: float


class Sensors(BaseModel):
    time: float
    orders_per_min: float
    latency_ms: float
    cpu_percent: float


class Sampler:
    """Turns the hub's counters (``hub.stats()``) into rates, once a second."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        stats = hub.stats()
        self.last = (time.monotonic(), stats.deliveries, stats.publications)

    async def sample(self) -> None:
        stats = self.hub.stats()
        now, deliveries, publications = time.monotonic(), stats.deliveries, stats.publications
        then, deliveries_then, publications_then = self.last
        self.last = (now, deliveries, publications)
        elapsed = max(now - then, 1e-3)
        await self.hub.publish(
            METRICS,
            Metrics(
                time=time.time(),
                connections=stats.connections,
                users=stats.users,
                channels=stats.channels,
                subscriptions=stats.subscriptions,
                deliveries_per_s=round((deliveries - deliveries_then) / elapsed, 1),
                publications_per_s=round((publications - publications_then) / elapsed, 1),
            ),
        )


class SensorSource:
    """A made-up shop: orders follow a slow wave, latency and CPU wander with them."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.orders = 120.0
        self.cpu = 35.0

    async def tick(self) -> None:
        if not await watched(self.hub, SENSORS):
            return  # nobody looks: skip the work
        now = time.time()
        wave = 120 + 60 * math.sin(now / 20)
        self.orders = max(0.0, self.orders + (wave - self.orders) * 0.3 + random.gauss(0, 6))
        self.cpu = min(100.0, max(1.0, self.cpu + (self.orders / 4 - self.cpu) * 0.2 + random.gauss(0, 2)))
        latency = 40 + self.cpu * 0.8 + abs(random.gauss(0, 8))
        reading = Sensors(
            time=now,
            orders_per_min=round(self.orders, 1),
            latency_ms=round(latency, 1),
            cpu_percent=round(self.cpu, 1),
        )
        await self.hub.publish(SENSORS, reading)


def setup(hub: Hub) -> list[Callable[[], Coroutine[Any, Any, None]]]:
    hub.channel(METRICS, model=Metrics, description="The hub's own figures, once a second")
    hub.channel(SENSORS, model=Sensors, description="A simulated data source")

    async def read_only(client: Client, data: object) -> None:
        raise server_only()

    for channel in (METRICS, SENSORS):
        hub.on_publish(channel)(read_only)

    sampler, sensors = Sampler(hub), SensorSource(hub)

    async def sample_metrics() -> None:
        await every(1.0, sampler.sample)

    async def simulate_sensors() -> None:
        await every(0.5, sensors.tick)

    return [sample_metrics, simulate_sensors]
