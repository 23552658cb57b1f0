#!/usr/bin/env python3
"""bench/chaos_connections.py — chaos figure (b): many concurrent connections, pinged.

Starts one ``livehub serve --workers W`` on the local Redis (``--workers`` processes share the
port through SO_REUSEPORT; one process may hold 20,000 descriptors on this machine) with a
short ``client.ping_interval``, then ``--procs`` load generator processes
(``bench/loadgen.py idle``, each ``--conns / --procs`` connections spread over
``--src-ips`` loopback source addresses 127.0.0.1…K, past the ephemeral port range of one
address). Every connection connects, subscribes and answers the server's pings for
``--minutes``. Reported: connections made, connect errors, disconnects during the hold (each
is an error: nothing closes them on purpose), pongs sent, the servers' RSS (all workers)
before and after, KB per connection, CPU.

    flock /tmp/livehub-heavy.lock .venv/bin/python bench/chaos_connections.py --conns 50000 --minutes 10

Safety: loopback only; every process bounded (``--max-wall`` of each load generator, the
server killed at the end). Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_common import ROOT, Servers, config, cpu_s, raise_nofile, tree_rss_kb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conns", type=int, default=50000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--procs", type=int, default=4, help="load generator processes")
    p.add_argument("--src-ips", type=int, default=4, help="client source addresses 127.0.0.1..K")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--ping", default="5s", help="client.ping_interval")
    p.add_argument("--pong-timeout", default="4s")
    p.add_argument("--conc", type=int, default=100, help="handshakes in flight per generator")
    a = p.parse_args()
    raise_nofile()
    hold = a.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        servers = Servers(Path(tmp), config(ping_interval=a.ping, pong_timeout=a.pong_timeout))
        engine = f"redis://127.0.0.1:6379/6?prefix=chaosconn{secrets.token_hex(4)}"
        server = servers.spawn(engine, workers=a.workers)
        gens: list[subprocess.Popen[bytes]] = []
        try:
            servers.wait_ready(server)
            time.sleep(2.0)  # every worker up
            rss0 = tree_rss_kb(server.pid)
            cpu0 = cpu_s(server.pid)
            per = a.conns // a.procs
            t0 = time.monotonic()
            for _ in range(a.procs):
                cmd = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "idle", "--port", str(server.port)]
                cmd += ["--conns", str(per), "--conc", str(a.conc), "--src-ips", str(a.src_ips)]
                cmd += ["--hold-s", str(hold), "--connect-s", "600", "--max-wall", str(int(hold + 900))]
                out = subprocess.PIPE
                gens.append(subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.DEVNULL))
            samples = []
            while any(g.poll() is None for g in gens):
                time.sleep(15)
                now = round(time.monotonic() - t0)
                samples.append({"t_s": now, "server_rss_kb": tree_rss_kb(server.pid)})
                print(f"{samples[-1]}", file=sys.stderr)
            results = [json.loads(g.stdout.read() or b"{}") for g in gens if g.stdout is not None]
            rss_peak = max(s["server_rss_kb"] for s in samples)
            ok = sum(r.get("conns_ok", 0) for r in results)
            out = {
                "figure": "concurrent connections, pinged",
                "target": a.conns,
                "connected": ok,
                "alive_after_hold": sum(r.get("alive_after_hold", 0) for r in results),
                "connect_errors": sum(r.get("connect_errors", 0) for r in results),
                "disconnects_during_hold": sum(r.get("disconnects_during_hold", 0) for r in results),
                # closed while the others were still connecting (the hold counts from the last one)
                "closed_before_hold": ok
                - sum(r.get("alive_after_hold", 0) for r in results)
                - sum(r.get("disconnects_during_hold", 0) for r in results),
                "proto_errors": sum(r.get("proto_errors", 0) for r in results),
                "pongs_sent": sum(r.get("cf_pongs_sent", 0) for r in results),
                "hold_minutes": a.minutes,
                "ping_interval": a.ping,
                "workers": a.workers,
                "generators": a.procs,
                "src_ips": a.src_ips,
                "connect_s_max": max((r.get("connect_s", 0) for r in results), default=None),
                "server_rss_before_kb": rss0,
                "server_rss_peak_kb": rss_peak,
                "server_rss_end_kb": samples[-1]["server_rss_kb"],
                "kb_per_connection": round((rss_peak - rss0) / ok, 2) if ok else None,
                "server_cpu_s": round(cpu_s(server.pid) - cpu0, 1),
                "close_codes": {
                    code: sum(r.get("close_codes", {}).get(code, 0) for r in results)
                    for code in sorted({c for r in results for c in r.get("close_codes", {})})
                },
                "err_samples": [r["err_sample"] for r in results if r.get("err_sample")][:3],
                "rss_samples": samples,
                "load_avg": os.getloadavg(),
            }
            print(json.dumps(out, indent=1))
        finally:
            for g in gens:
                if g.poll() is None:
                    g.kill()
                    g.wait(10)
            servers.close()


if __name__ == "__main__":
    main()
