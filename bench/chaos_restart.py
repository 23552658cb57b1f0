#!/usr/bin/env python3
"""bench/chaos_restart.py — chaos figure (d): the broker restarts under load.

Each run starts a broker of its own on a free loopback port — ``redis-server`` (nothing
on disk: a restart loses every stream, so clients must be *told*, ``recovered: false``) or
``nats-server -js`` (file storage in a temporary directory: JetStream keeps the streams
across the restart, so clients should recover) — and two ``livehub serve`` nodes on it.
``--clients`` subscribers (spread over ``--channels`` channels of the ``stream``
namespace, half on each node) recover as the SDKs do (``bench/chaos_common.py``); a
publisher publishes numbered messages through both nodes' HTTP API at ``--rate``/s. After
``--before`` seconds the broker is stopped (Redis: ``SHUTDOWN NOSAVE``; NATS: SIGKILL),
stays down ``--down`` seconds and is started again on the same port. Measured: publishes
refused during the outage, seconds from the restart until the API publishes again and
until every subscriber is subscribed again, and the offsets audit once the publisher
stopped: ``lost_silently`` (offsets skipped without ``recovered: false``) must be 0.

    .venv/bin/python bench/chaos_restart.py --broker redis --runs 3
    .venv/bin/python bench/chaos_restart.py --broker nats --runs 3

Safety: loopback only; brokers and nodes are processes of this script, killed at the end of
each run; every wait is bounded (``--max-wall`` ends the process in any case).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
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
    free_port,
    loop_runner,
    picows,
    raise_nofile,
    tree_rss_kb,
)


class Broker:
    """A redis-server or nats-server of this run's own, restarted on the same port."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind, self.tmp, self.port = kind, tmp, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server" if kind == "redis" else "nats-server")
        if binary is None:
            raise SystemExit(f"chaos_restart: {kind} server binary not found")
        self.binary = binary

    def url(self, prefix: str) -> str:
        if self.kind == "redis":
            return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}&connect_timeout=500ms&io_timeout=1s"
        return f"nats://127.0.0.1:{self.port}?prefix={prefix}&connect_timeout=500ms&io_timeout=1s"

    def start(self) -> None:
        if self.kind == "redis":
            cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            cmd += ["--appendonly", "no", "--dir", str(self.tmp)]
        else:
            cmd = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.tmp / "js")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                time.sleep(0.3 if self.kind == "nats" else 0)  # JetStream up after the port
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} server not listening on {self.port}")

    def stop(self) -> None:
        """Redis: SHUTDOWN NOSAVE (its streams are gone); NATS: SIGKILL (a crash)."""
        assert self.proc is not None
        if self.kind == "redis":
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 2) as s:
                s.sendall(b"SHUTDOWN NOSAVE\r\n")
                with contextlib.suppress(OSError):
                    s.recv(100)
        else:
            self.proc.send_signal(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


async def until(check: Any, within: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(every)
    return bool(check())


async def one_run(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    broker = Broker(a.broker, tmp)
    broker.start()
    servers = Servers(tmp, config())
    subs: list[Subscriber] = []
    tasks: list[asyncio.Task[None]] = []
    publisher: Publisher | None = None
    try:
        engine = broker.url(f"chaos{secrets.token_hex(4)}")
        nodes = [servers.spawn(engine) for _ in range(2)]
        for node in nodes:
            servers.wait_ready(node)
        ports = [n.port for n in nodes]
        channels = [f"stream:r{i}" for i in range(a.channels)]
        for i in range(a.clients):
            sub = Subscriber(ports[i % 2 :] + ports[: i % 2], channels[i % len(channels)])
            subs.append(sub)
            tasks.append(asyncio.create_task(sub.run()))
            if (i + 1) % 200 == 0:
                await until(lambda: all(s.subscribed for s in subs[-200:]), 30)
        if not await until(lambda: all(s.subscribed for s in subs), 60):
            raise RuntimeError(f"only {sum(s.subscribed for s in subs)}/{a.clients} subscribed")
        publisher = Publisher(ports, channels, a.rate)
        publisher.start()
        await asyncio.sleep(a.before)
        for s in subs:
            s.back_after.clear()
        connections = {id(s): s.connections for s in subs}
        failed0, sent0 = publisher.failed, publisher.sent
        broker.stop()
        stopped_at = time.monotonic()
        await asyncio.sleep(a.down)
        refused_down = publisher.failed - failed0
        broker.start()
        restarted_at = time.monotonic()
        sent_at_restart = publisher.sent
        await until(lambda: publisher is not None and publisher.sent > sent_at_restart + 1, 60, 0.02)
        publishing_again_s = time.monotonic() - restarted_at
        await asyncio.sleep(a.after)
        publisher.stop()
        published = dict(publisher.published)

        def drained() -> bool:
            return all(
                s.epoch == publisher.epochs.get(s.channel) and s.offset >= published.get(s.channel, 0)  # type: ignore[union-attr]
                for s in subs
            )

        await until(drained, 20)
        # every subscription that was lost is back (a resubscribe or a reconnect): when the last came
        all_back = all(s.subscribed for s in subs)
        all_back_s = max((s.back_at for s in subs if s.back_after), default=restarted_at) - restarted_at
        return {
            "broker": a.broker,
            "clients": a.clients,
            "down_s": round(restarted_at - stopped_at, 2),
            "published": publisher.sent,
            "published_before_stop": sent0,
            "publish_refused_while_down": refused_down,
            "publish_failures_total": publisher.failed,
            "publish_fail_sample": publisher.fail_sample,
            "publishing_again_after_s": round(publishing_again_s, 2),
            "all_subscribed_after_s": round(all_back_s, 2),
            "all_back": all_back,
            "subscriptions_lost": sum(1 for s in subs if s.back_after),
            "reconnects": sum(s.connections - connections[id(s)] for s in subs),
            "close_codes": _merge(s.closes for s in subs),
            "error_replies": sum(s.errors for s in subs),
            **audit(subs, published, publisher.epochs),
            "nodes_rss_kb": [tree_rss_kb(n.pid) for n in nodes],
        }
    finally:
        if publisher is not None:
            publisher.stop()
        for s in subs:
            s.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        servers.close()
        broker.close()


def _merge(counts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for code, n in c.items():
            out[str(code)] = out.get(str(code), 0) + n
    return out


async def main_async(a: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for i in range(a.runs):
        with tempfile.TemporaryDirectory() as tmp:
            r = await one_run(a, Path(tmp))
        print(
            f"run {i + 1} ({a.broker}): lost {r['lost_silently']}, told unrecovered "
            f"{r['told_recovered_false']}, recovered {r['recovered_true']}, "
            f"publishing again after {r['publishing_again_after_s']} s",
            file=sys.stderr,
        )
        runs.append(r)
    keys = ("lost_silently", "told_recovered_false", "recovered_true", "publishing_again_after_s")
    keys += ("all_subscribed_after_s",)
    return {
        "figure": f"{a.broker} restart under load",
        "clients": a.clients,
        "rate_per_s": a.rate,
        "median": {k: statistics.median(r[k] for r in runs) for k in keys},
        "runs": runs,
        "load_avg": os.getloadavg(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", choices=["redis", "nats"], default="redis")
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--channels", type=int, default=20)
    p.add_argument("--rate", type=float, default=100.0, help="publications/s, round robin over channels")
    p.add_argument("--before", type=float, default=5.0)
    p.add_argument("--down", type=float, default=3.0, help="seconds the broker stays down")
    p.add_argument("--after", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--max-wall", type=int, default=900)
    a = p.parse_args()
    if picows is None:
        raise SystemExit("chaos_restart: needs picows (pip install -e '.[bench]')")
    raise_nofile()
    signal.alarm(a.max_wall)
    print(json.dumps(loop_runner()(main_async(a)), indent=1))


if __name__ == "__main__":
    main()
