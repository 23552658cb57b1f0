#!/usr/bin/env python3
"""bench/chaos_storm.py — chaos figure (a): a reconnect storm after kill -9.

Each run starts ``--nodes`` ``livehub serve`` processes sharing the local Redis (a fresh
prefix per run), connects ``--clients`` subscribers (spread over ``--channels`` channels of
the ``stream`` namespace: history 10,000, 600 s) to node 1, and starts a publisher that
publishes numbered messages through the HTTP API of the *other* nodes at ``--rate``/s.
After ``--before`` seconds node 1 is killed with SIGKILL: its clients reconnect to the
others (jittered backoff, a random other node, ``recover: true`` with their last offset
and epoch; see ``bench/chaos_common.py``). Measured: seconds from the kill until every
client is subscribed again (p50, p99, max), the offsets audit once the publisher stopped
(``lost_silently`` must be 0), the surviving nodes' RSS, and CPU.

    .venv/bin/python bench/chaos_storm.py --clients 2000 --runs 3
    flock /tmp/livehub-heavy.lock .venv/bin/python bench/chaos_storm.py --clients 10000 --runs 3

Safety: loopback only; every wait bounded (``--max-wall`` ends the process in any case);
the servers are killed at the end of each run. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_common import (
    Publisher,
    Servers,
    Subscriber,
    audit,
    config,
    cpu_s,
    loop_runner,
    percentile,
    picows,
    raise_nofile,
    tree_rss_kb,
)

REDIS = "redis://127.0.0.1:6379/5"


async def until(check: Any, within: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(every)
    return bool(check())


async def one_run(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    servers = Servers(tmp, config())
    engine = f"{REDIS}?prefix=chaos{secrets.token_hex(4)}"
    tasks: list[asyncio.Task[None]] = []
    subs: list[Subscriber] = []
    publisher: Publisher | None = None
    try:
        nodes = [servers.spawn(engine) for _ in range(a.nodes)]
        for node in nodes:
            servers.wait_ready(node)
        ports = [n.port for n in nodes]
        channels = [f"stream:c{i}" for i in range(a.channels)]
        t_connect = time.monotonic()
        for i in range(a.clients):
            sub = Subscriber(ports, channels[i % len(channels)])
            subs.append(sub)
            tasks.append(asyncio.create_task(sub.run()))
            if (i + 1) % a.conc == 0:  # at most --conc handshakes in flight
                await until(lambda: all(s.subscribed for s in subs[-a.conc :]), 30, 0.02)
        if not await until(lambda: all(s.subscribed for s in subs), 60):
            raise RuntimeError(f"only {sum(s.subscribed for s in subs)}/{a.clients} subscribed")
        connect_s = time.monotonic() - t_connect
        on_first = sum(1 for s in subs if s.connected_port == ports[0])
        closes_before: dict[int, int] = {}
        for s in subs:
            for code, n in s.closes.items():
                closes_before[code] = closes_before.get(code, 0) + n
        publisher = Publisher(ports[1:], channels, a.rate)
        publisher.start()
        await asyncio.sleep(a.before)
        rss_before = {n.port: tree_rss_kb(n.pid) for n in nodes}
        cpu0 = {n.port: cpu_s(n.pid) for n in nodes[1:]}
        client_cpu0 = time.process_time()
        for s in subs:
            s.back_after.clear()
            s.phases.clear()
        victims = [s for s in subs if s.connected_port == ports[0]]
        killed_at = time.monotonic()
        servers.kill(nodes[0])
        back = await until(lambda: all(s.back_after and s.subscribed for s in victims), a.within, 0.05)
        all_back_s = time.monotonic() - killed_at
        rss_peak = {n.port: tree_rss_kb(n.pid) for n in nodes[1:]}
        await asyncio.sleep(a.after)
        publisher.stop()
        published = dict(publisher.published)

        def drained() -> bool:
            return all(s.offset >= published.get(s.channel, 0) for s in subs)

        await until(drained, 20)
        storm = [t for s in subs for t in s.back_after]
        result = {
            "clients": a.clients,
            "on_killed_node": on_first,
            "connect_s": round(connect_s, 2),
            "all_back": back,
            "all_back_s": round(all_back_s, 2),
            "back_p50_s": round(percentile(storm, 0.5) or 0, 2),
            "back_p99_s": round(percentile(storm, 0.99) or 0, 2),
            "back_max_s": round(max(storm, default=0), 2),
            "reconnected": len(storm),
            "upgrade_p50_s": round(percentile([p[0] for s in victims for p in s.phases], 0.5) or 0, 3),
            "upgrade_max_s": round(max((p[0] for s in victims for p in s.phases), default=0), 3),
            "subscribe_p50_s": round(percentile([p[1] for s in victims for p in s.phases], 0.5) or 0, 3),
            "subscribe_max_s": round(max((p[1] for s in victims for p in s.phases), default=0), 3),
            "noticed_p50_s": round(percentile([s.last_down_at - killed_at for s in victims], 0.5) or 0, 2),
            "noticed_max_s": round(max((s.last_down_at - killed_at for s in victims), default=0), 2),
            "closes_while_connecting": closes_before,
            "connect_failures": sum(s.failures for s in subs),
            "failure_sample": next((s.failure_sample for s in subs if s.failure_sample), ""),
            "per_node_after": {str(p): sum(1 for s in subs if s.connected_port == p) for p in ports[1:]},
            "published": publisher.sent,
            "publish_failures": publisher.failed,
            **audit(subs, published, publisher.epochs),
            "rss_before_kb": rss_before,
            "rss_after_storm_kb": rss_peak,
            "survivors_cpu_s_during_storm_and_after": {
                str(p): round(cpu_s(n.pid) - cpu0[p], 1) for p, n in zip(ports[1:], nodes[1:], strict=True)
            },
            "client_cpu_s_during_storm_and_after": round(time.process_time() - client_cpu0, 1),
        }
        return result
    finally:
        if publisher is not None:
            publisher.stop()
        for s in subs:
            s.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        servers.close()


async def main_async(a: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for i in range(a.runs):
        with tempfile.TemporaryDirectory() as tmp:
            r = await one_run(a, Path(tmp))
        print(
            f"run {i + 1}: all back in {r['all_back_s']} s, lost {r['lost_silently']}, "
            f"told unrecovered {r['told_recovered_false']}",
            file=sys.stderr,
        )
        runs.append(r)
    med = {
        k: statistics.median(r[k] for r in runs)
        for k in ("all_back_s", "back_p50_s", "back_p99_s", "lost_silently", "told_recovered_false")
    }
    return {
        "figure": "reconnect storm",
        "clients": a.clients,
        "nodes": a.nodes,
        "rate_per_s": a.rate,
        "channels": a.channels,
        "median": med,
        "runs": runs,
        "load_avg": os.getloadavg(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=2000)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--channels", type=int, default=100)
    p.add_argument("--rate", type=float, default=50.0, help="publications/s (round robin over channels)")
    p.add_argument("--conc", type=int, default=200, help="handshakes in flight while connecting")
    p.add_argument("--before", type=float, default=5.0, help="seconds of publishing before the kill")
    p.add_argument("--after", type=float, default=5.0, help="seconds of publishing after all are back")
    p.add_argument("--within", type=float, default=120.0, help="bound on the storm")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--max-wall", type=int, default=1800)
    a = p.parse_args()
    if picows is None:
        raise SystemExit("chaos_storm: needs picows (pip install -e '.[bench]')")
    raise_nofile()
    signal.alarm(a.max_wall)
    out = loop_runner()(main_async(a))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
