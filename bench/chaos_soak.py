#!/usr/bin/env python3
"""bench/chaos_soak.py — chaos figure (c): a soak at half the maximum fan-out.

Starts ``livehub serve`` (memory engine, one process) and drives it with
``bench/loadgen.py fanout``: ``--subs`` subscribers on one channel and a publisher sending a
steady ``--rate`` deliveries/s (default: half of the N = 1,000 maximum sustained fan-out
in docs/bench/RESULTS.md, 294k/s), as one-minute open-loop steps, ``--minutes`` of them.
Each minute gives the p50/p99 publish→receive latency, deliveries/s and losses of that
minute (from the load generator), and the server's RSS sampled at its end. Verdicts: RSS
flat within 5 % (last minute vs. the first), p99 stable (the last third's median p99
within 2× the first third's).

    flock /tmp/livehub-heavy.lock .venv/bin/python bench/chaos_soak.py --minutes 60

Safety: loopback only; the load generator is bounded by ``--max-wall``; the server is
killed at the end. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_common import API_KEY, ROOT, Servers, cpu_s, rss_kb

MAX_SUSTAINED_N1000 = 294_484  # docs/bench/RESULTS.md, livehub, fan-out N = 1,000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=int, default=60)
    p.add_argument("--subs", type=int, default=1000)
    p.add_argument("--rate", type=int, default=MAX_SUSTAINED_N1000 // 2, help="deliveries/s")
    a = p.parse_args()
    cfg: dict[str, Any] = {"client": {"insecure": True}}
    cfg["channel"] = {"without_namespace": {"presence": False}}
    cfg["http_api"] = {"key": API_KEY}
    with tempfile.TemporaryDirectory() as tmp:
        servers = Servers(Path(tmp), cfg)
        server = servers.spawn("memory://")
        load = None
        try:
            servers.wait_ready(server)
            rss_start = rss_kb(server.pid)
            cpu0 = cpu_s(server.pid)
            cmd = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "fanout", "--port", str(server.port)]
            cmd += ["--subs", str(a.subs), "--rates", ",".join([str(a.rate)] * a.minutes), "--step-s", "60"]
            cmd += ["--max-s", "0", "--no-stop", "--server-pid", str(server.pid)]
            cmd += ["--max-wall", str(a.minutes * 75 + 300)]
            samples: list[dict[str, Any]] = []
            t0 = time.monotonic()
            load = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            errors: list[bytes] = []
            reader = threading.Thread(target=lambda: errors.append(load.stderr.read()), daemon=True)  # type: ignore[union-attr]
            reader.start()
            while load.poll() is None:
                time.sleep(min(60.0, max(0.5, t0 + 60 * (len(samples) + 1) - time.monotonic())))
                if load.poll() is None:
                    samples.append({"minute": len(samples) + 1, "rss_kb": rss_kb(server.pid)})
                    print(samples[-1], file=sys.stderr)
            out_text = load.stdout.read() if load.stdout else b""  # type: ignore[union-attr]
            result = json.loads(out_text or b"{}")
            steps = result.get("steps", [])
            minutes = []
            for i, step in enumerate(steps):
                minutes.append(
                    {
                        "minute": i + 1,
                        "deliv_per_s": step.get("deliv_per_s"),
                        "p50_ms": step.get("lat_p50_ms"),
                        "p99_ms": step.get("lat_p99_ms"),
                        "lost": step.get("lost_final", step.get("lost")),
                        "server_cpu_pct": step.get("server_cpu_pct"),
                        "loadgen_cpu_pct": step.get("client_cpu_pct"),
                        "rss_kb": samples[i]["rss_kb"] if i < len(samples) else None,
                    }
                )
            rss = [m["rss_kb"] for m in minutes if m["rss_kb"]]
            p99 = [m["p99_ms"] for m in minutes if m["p99_ms"] is not None]
            third = max(1, len(p99) // 3)
            first = statistics.median(p99[:third]) if p99 else None
            last = statistics.median(p99[-third:]) if p99 else None
            tail = errors[0][-500:].decode(errors="replace") if errors and not steps else ""
            out = {
                "figure": "soak at half the maximum fan-out",
                "minutes": a.minutes,
                "subs": a.subs,
                "rate_deliveries_per_s": a.rate,
                "rss_start_kb": rss_start,
                "rss_first_minute_kb": rss[0] if rss else None,
                "rss_last_minute_kb": rss[-1] if rss else None,
                "rss_drift_pct": round(100 * (rss[-1] - rss[0]) / rss[0], 2) if rss else None,
                "rss_flat_within_5pct": bool(rss) and abs(rss[-1] - rss[0]) <= 0.05 * rss[0],
                "p99_ms_first_third_median": first,
                "p99_ms_last_third_median": last,
                "p99_stable": first is not None and last is not None and last <= 2 * first,
                "lost_total": sum(m["lost"] or 0 for m in minutes),
                "server_cpu_s": round(cpu_s(server.pid) - cpu0, 1),
                "per_minute": minutes,
                "loadgen_stderr_tail": tail,
                "load_avg": os.getloadavg(),
            }
            print(json.dumps(out, indent=1))
        finally:
            if load is not None and load.poll() is None:
                load.kill()
                load.wait(10)
            servers.close()


if __name__ == "__main__":
    main()
