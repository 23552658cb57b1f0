#!/usr/bin/env python3
"""bench/chaos_flood.py — chaos figure (e): one client floods, 1000 others must not notice.

Each run starts ``livehub serve`` on a free loopback port with ``client.rate_limit.client_command``
configured (``publish`` 50/s, ``total`` 100/s per connection), then drives it with
``bench/loadgen.py fanout``: ``--subs`` subscribers on channel ``bench`` and one publisher
sending a steady ``--rate`` deliveries/s for ``--step-s``. In the ``flood`` runs, a separate
process floods meanwhile: one connection sends ``publish`` commands (to channel ``flood``, so
what gets through costs no fan-out) as fast as its socket takes them, 200 per frame, and
reconnects at once whenever it is closed. The flooder counts the 111 answers it gets and
the 3013 closes; the subscribers' p99 (publish→receive) is compared with the ``baseline`` runs
(no flooder). ``--no-limits`` runs the flood against a server without rate limits, for contrast;
``--drop`` adds a flooder that, once closed, drops its socket at once (no close handshake) and
reconnects: the worst case, since a flooder that waits for the close is held for
``CLOSE_TIMEOUT`` (2 s) by the server, unread.

    .venv/bin/python bench/chaos_flood.py --runs 3             # baseline x3, flood x3: medians
    .venv/bin/python bench/chaos_flood.py flooder --port P --seconds 10   # the flooder alone

Safety: loopback only; every process is bounded in time (``--max-wall`` for loadgen, ``--seconds``
for the flooder) and killed at the end of its run. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import free_port, wait_port  # noqa: E402

LIMITS = """
[client.rate_limit.client_command]
enabled = true
[client.rate_limit.client_command.total]
enabled = true
buckets = [{interval = "1s", rate = 100}]
[client.rate_limit.client_command.publish]
enabled = true
buckets = [{interval = "1s", rate = 50}]
"""
BASE = """
[client]
insecure = true
ping_interval = "25s"
[channel.without_namespace]
presence = false
"""


# -- the flooder


async def flood(port: int, seconds: float, batch: int, stats: dict[str, Any], drop: bool = False) -> None:
    """Publish as fast as the socket takes it until ``seconds`` pass; reconnect when closed.
    ``stats`` is filled as it goes (the flooder may be stopped at any moment)."""
    import websockets

    url = f"ws://127.0.0.1:{port}/connection/websocket"
    stats.update(sent=0, ok=0, too_many_requests=0, closes={}, connections=0, refused_upgrades=0)
    closes: dict[str, int] = stats["closes"]
    deadline = time.monotonic() + seconds
    frame = "\n".join(
        '{"id":' + str(i + 2) + ',"publish":{"channel":"flood","data":{"x":1}}}' for i in range(batch)
    )

    async def read(ws: Any) -> None:
        try:
            async for message in ws:
                for line in str(message).splitlines():
                    if '"code":111' in line:
                        stats["too_many_requests"] += 1
                    elif '"publish"' in line:
                        stats["ok"] += 1
        finally:
            if drop:  # the server's close frame came: drop the socket at once, come back
                ws.transport.abort()

    while time.monotonic() < deadline:
        try:
            ws = await websockets.connect(url, max_queue=None)
        except websockets.InvalidStatus:
            stats["refused_upgrades"] += 1
            await asyncio.sleep(0.01)
            continue
        stats["connections"] += 1
        reader = asyncio.create_task(read(ws))
        try:
            await ws.send('{"id":1,"connect":{}}')
            while time.monotonic() < deadline:
                await ws.send(frame)
                stats["sent"] += batch
        except websockets.ConnectionClosed:
            pass
        finally:
            if drop:  # an attacker does not wait for the close handshake: it drops and comes back
                ws.transport.abort()
            else:
                await ws.close()
            await asyncio.gather(reader, return_exceptions=True)
        code = ws.close_code
        closes[str(code)] = closes.get(str(code), 0) + 1
        stats["cpu_s"] = round(time.process_time(), 2)


# -- one run


def one_run(mode: str, a: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "chaos.toml"
        config.write_text(BASE + ("" if mode == "flood-no-limits" else LIMITS))
        server = subprocess.Popen(
            [sys.executable, "-m", "livehub", "serve", "--host", "127.0.0.1", "--port", str(port)]
            + ["--config", str(config), "--log-level", "warning"],
            cwd=ROOT,
        )
        flooder = None
        try:
            wait_port(port, server)
            load = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "fanout", "--port", str(port)]
            load += [
                "--subs",
                str(a.subs),
                "--rates",
                str(a.msg_rate * a.subs),
                "--step-s",
                str(a.step_s),
                "--max-s",
                "0",
            ]
            load += ["--no-stop", "--server-pid", str(server.pid), "--max-wall", str(int(a.step_s * 4 + 120))]
            loadgen = subprocess.Popen(load, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if mode != "baseline":
                time.sleep(a.connect_s)  # the subscribers connect first; then the flood starts
                flooder = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "flooder",
                        "--port",
                        str(port),
                        "--seconds",
                        str(a.step_s + 10),
                        *(["--drop"] if mode == "flood-drop" else []),
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                )
            out, err = loadgen.communicate(timeout=a.step_s * 4 + 150)
            result = json.loads(out)
            step = result["steps"][0]
            run: dict[str, Any] = {
                "mode": mode,
                "p50_ms": step.get("lat_p50_ms"),
                "p99_ms": step.get("lat_p99_ms"),
                "deliv_per_s": step.get("deliv_per_s"),
                "lost": step.get("lost_final"),
                "server_cpu_pct": step.get("server_cpu_pct"),
                "loadgen_cpu_pct": step.get("client_cpu_pct"),
            }
            if flooder is not None:
                flooder.terminate()
                fout, _ = flooder.communicate(timeout=30)
                run["flooder"] = json.loads(fout) if fout.strip() else {}
            return run
        finally:
            for proc in (flooder, server):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "flooder":
        p = argparse.ArgumentParser()
        p.add_argument("flooder")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--seconds", type=float, default=10.0)
        p.add_argument("--batch", type=int, default=200)
        p.add_argument("--drop", action="store_true", help="drop the socket when closed, reconnect at once")
        f = p.parse_args()
        stats: dict[str, Any] = {}

        async def bounded() -> None:
            await asyncio.wait_for(flood(f.port, f.seconds, f.batch, stats, f.drop), f.seconds + 20)

        import signal

        signal.signal(signal.SIGTERM, lambda *_: (print(json.dumps(stats)), os._exit(0)))
        asyncio.run(bounded())
        print(json.dumps(stats))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--subs", type=int, default=1000)
    p.add_argument("--msg-rate", type=int, default=20, help="publications/s of the steady stream")
    p.add_argument("--step-s", type=float, default=10.0)
    p.add_argument("--connect-s", type=float, default=4.0, help="wait before the flood starts")
    p.add_argument("--no-limits", action="store_true", help="also flood a server without rate limits")
    p.add_argument("--drop", action="store_true", help="also a flooder that drops and reconnects at once")
    p.add_argument("--only-drop", action="store_true", help="baseline and the dropping flooder only")
    a = p.parse_args()
    modes = ["baseline", "flood"] + (["flood-no-limits"] if a.no_limits else [])
    modes += ["flood-drop"] if a.drop else []
    if a.only_drop:
        modes = ["baseline", "flood-drop"]
    runs: list[dict[str, Any]] = []
    for i in range(a.runs):
        for mode in modes:
            r = one_run(mode, a)
            print(f"run {i + 1} {mode}: p99 {r['p99_ms']} ms, {r.get('flooder', '')}", file=sys.stderr)
            runs.append(r)
    summary = {}
    for mode in modes:
        p99s = [r["p99_ms"] for r in runs if r["mode"] == mode and r["p99_ms"] is not None]
        summary[mode] = {"median_p99_ms": statistics.median(p99s) if p99s else None, "p99s_ms": p99s}
    print(json.dumps({"summary": summary, "runs": runs, "load_avg": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
