#!/usr/bin/env python3
"""bench/run.py — ``make bench``: every figure of the performance table, livehub next to the anchors.

    .venv/bin/python bench/run.py                 # full: 3 repetitions, ~35 min
    .venv/bin/python bench/run.py --quick         # smoke: 1 repetition, fewer N, ~6 min
    .venv/bin/python bench/run.py --report RUN_ID # table + PNG again from stored results

Everything it runs is in this repository: the load generator (``bench/loadgen.py``), the anchor
servers (``bench/servers/``: ``fastapi_naive`` on uvicorn, ``node_ws`` on Node's ``ws``, installed
by ``make bench`` with ``npm ci`` from ``bench/servers/package-lock.json``), the livehub servers
(``livehub serve``, ``bench/rpc_app.py``, ``bench/embedded_app.py``).

What it does:

1. Freezes the livehub package for the run (``git archive HEAD livehub``, or the work tree).
2. Runs each scenario ``--reps`` times; in each repetition every server of the scenario runs once,
   the order rotated from one repetition to the next. One measurement: start the server pinned
   to CPU 0 (``taskset``), wait for its port, wait (bounded) for the machine to be quiet, run the
   load generator pinned to CPU 1, stop the server by PID.
3. Stores every result line, tagged with this run's id, in ``.cache/bench/results.jsonl`` (full
   runs also copy them to ``docs/bench/results.jsonl``).
4. Prints the table: median (min–max) per figure for livehub and each anchor, the ratio to the
   anchors measured in the same run, the target and whether it is met; full runs write it to
   ``docs/bench/RESULTS.md``.
5. Draws ``docs/bench/fanout_memory.png``: deliveries/s and KB per connection as N grows
   (needs matplotlib: ``pip install -e '.[bench]'``; skipped with a note otherwise).

Environment: BENCH_PORT (18765), BENCH_SERVER_CPU (0), BENCH_CLIENT_CPU (1),
BENCH_LIVEHUB_RUN_CMD (how to start the embedded app with ``livehub run``; ``{port}``,
``{log_level}``, ``{livehub}`` (.venv/bin/livehub), ``{py}`` are filled in; default below).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SERVERS = BENCH / "servers"
DOCS = ROOT / "docs" / "bench"
CACHE = ROOT / ".cache" / "bench"
LOGS = CACHE / "logs"
VENV_BIN = ROOT / ".venv" / "bin"
SCPU = os.environ.get("BENCH_SERVER_CPU", "0")
CCPU = os.environ.get("BENCH_CLIENT_CPU", "1")
LIVEHUB_RUN_CMD = os.environ.get(
    "BENCH_LIVEHUB_RUN_CMD",
    "{livehub} run bench.embedded_app:app --host 127.0.0.1 --port {port} --log-level {log_level}",
)

ANCHORS = ["fastapi_naive", "node_ws"]
# The two ways an app that embeds the Hub can be served (bench/embedded_app.py).
EMBEDDED = ["livehub_run", "embedded_uvicorn"]
# Target deliveries/s of the open-loop steps (msg/s = target / N).
RATES = "5000,10000,20000,50000,75000,100000,150000,200000,250000,300000,400000,500000"
# Latency at equal rates (livehub vs node_ws, N = 1000): every step runs, longer than the grid's.
LATENCY_RATES = "10000,50000,100000,150000"
HOLD_GOAL = 50_000
SLOW_ARGS = ["--rates", "5000", "--size", "64000", "--timeseries", "--max-s", "0", "--drain-s", "3"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the servers


@dataclass(frozen=True)
class Server:
    """How to start one server of the benchmark, listening on 127.0.0.1:{port}, in the foreground
    (the PID it was started with is the one whose CPU and memory are read)."""

    name: str
    argv: str  # shlex words; {port}, {log_level}, {py}, {livehub}, {root} are filled in
    proto: str  # the load generator's --proto: centrifugo or raw
    livehub: bool = True  # imports the frozen livehub (PYTHONPATH)

    def command(self, port: int, log_level: str = "warning") -> list[str]:
        words = shlex.split(self.argv)
        fill = {
            "port": str(port),
            "log_level": log_level,
            "py": str(VENV_BIN / "python"),
            "livehub": str(VENV_BIN / "livehub"),
            "root": str(ROOT),
        }
        return [w.format(**fill) for w in words]


UVICORN = "{py} -m uvicorn --host 127.0.0.1 --port {port} --log-level {log_level}"
SERVER_SPECS = {
    s.name: s
    for s in [
        Server(
            "livehub",
            "{livehub} serve --config {root}/bench/fanout.toml --port {port} --log-level {log_level}",
            "centrifugo",
        ),
        Server(
            "livehub_rpc",
            "{py} {root}/bench/rpc_app.py --config {root}/bench/fanout.toml --port {port} "
            "--log-level {log_level}",
            "centrifugo",
        ),
        Server("livehub_run", LIVEHUB_RUN_CMD, "centrifugo"),
        Server("embedded_uvicorn", f"{UVICORN} bench.embedded_app:app", "centrifugo"),
        Server("fastapi_naive", f"{UVICORN} bench.servers.fastapi_naive:app", "raw", livehub=False),
        Server("node_ws", "node {root}/bench/servers/node_ws.js {port}", "raw", livehub=False),
    ]
}


def have_node() -> bool:
    return shutil.which("node") is not None and (SERVERS / "node_modules" / "ws").is_dir()


def have_livehub_run(env: dict[str, str]) -> bool:
    """Whether the measured livehub has a ``livehub run`` command (another branch adds it)."""
    argv = SERVER_SPECS["livehub_run"].command(0)
    if not argv or not Path(argv[0]).exists() and not shutil.which(argv[0]):
        return False
    probe = [argv[0], "run", "--help"] if Path(argv[0]).name == "livehub" else argv[:1] + ["--help"]
    done = subprocess.run(probe, env=env, cwd=ROOT, capture_output=True, timeout=60)
    return done.returncode == 0


def versions() -> dict:
    """The versions the numbers depend on, stored with every result line."""
    out = {"python": platform.python_version(), "kernel": platform.release()}
    code = (
        "import json, importlib.metadata as m\n"
        "v = {}\n"
        "for p in ('uvicorn', 'fastapi', 'starlette', 'websockets', 'uvloop', 'httptools', 'orjson',"
        " 'picows'):\n"
        "    try: v[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(v))"
    )
    with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
        out.update(
            json.loads(
                subprocess.run(
                    [str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, timeout=60
                ).stdout
            )
        )
    if shutil.which("node"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    with contextlib.suppress(OSError, ValueError, KeyError):
        lock = json.loads((SERVERS / "package-lock.json").read_text())
        out["ws"] = lock["packages"]["node_modules/ws"]["version"]
    return out


# ----------------------------------------------------------------------------- the code measured


def snapshot(source: str, run_id: str) -> tuple[Path, dict]:
    """Freeze the livehub package for the whole run: other work may change the tree meanwhile.

    ``head`` (default): the committed package (``git archive HEAD livehub``), so the table names
    exactly the commit it measured; ``worktree``: the files as they are now (uncommitted work).
    The servers import it first (PYTHONPATH), ahead of the editable install.
    """
    head = git_head()
    dest = CACHE / "src" / run_id
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if source == "worktree":
        shutil.copytree(ROOT / "livehub", dest / "livehub", ignore=shutil.ignore_patterns("__pycache__"))
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "livehub"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        info = {"source": "work tree", "commit": head, "dirty": bool(dirty)}
    else:
        tar = subprocess.run(
            ["git", "archive", "--format=tar", "HEAD", "livehub"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
        info = {"source": "HEAD", "commit": head, "dirty": False}
    vendor = ROOT / "livehub" / "demos" / "static" / "vendor"  # built, not committed
    if vendor.is_dir():
        shutil.copytree(vendor, dest / "livehub" / "demos" / "static" / "vendor", dirs_exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(dest))
    check = subprocess.run(
        [str(VENV_BIN / "python"), "-c", "import livehub.cli, livehub.app, livehub; print(livehub.__file__)"],
        env=env,
        cwd=dest,  # not ROOT: `python -c` puts the current directory first on sys.path
        capture_output=True,
        text=True,
    )
    if check.returncode != 0 or not check.stdout.strip().startswith(str(dest)):
        raise SystemExit(
            f"bench: the livehub snapshot ({info['source']}) does not import:\n{check.stderr[-800:]}"
        )
    return dest, info


# ----------------------------------------------------------------------------- running one measurement


def _cpu_ticks() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[3] + v[4], sum(v)


def busy_pct(t0: tuple[int, int], t1: tuple[int, int]) -> float:
    """Share of all CPUs busy between two _cpu_ticks() readings, %."""
    dt = max(1, t1[1] - t0[1])
    return round(100 * (1 - (t1[0] - t0[0]) / dt), 1)


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


class Runner:
    def __init__(self, args: argparse.Namespace, run_id: str) -> None:
        self.a = args
        self.run_id = run_id
        self.port = args.port
        self.results = Path(args.results)
        self.results.parent.mkdir(parents=True, exist_ok=True)
        LOGS.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.failures: list[str] = []
        self.deadline = self.t0 + args.max_minutes * 60
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.src, self.src_info = snapshot(args.source, run_id)
        # The frozen livehub first; the project root for `bench.embedded_app` and `bench.servers`.
        self.env = dict(os.environ, PYTHONPATH=f"{self.src}{os.pathsep}{ROOT}")
        self.plain_env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.versions = versions()

    def elapsed(self) -> str:
        return f"[{time.monotonic() - self.t0:5.0f}s]"

    def store(self, line: str, group: str, server: str, rep: int, extra: dict | None = None) -> dict:
        r = json.loads(line)
        extra = dict(extra or {})
        if "_ticks" in extra:  # whole-call CPU use of the machine (ours included: ≤ 100 % when alone)
            extra["machine_busy_pct"] = busy_pct(extra.pop("_ticks"), _cpu_ticks())
        r["bench"] = {
            "run_id": self.run_id,
            "group": group,
            "server": server,
            "rep": rep,
            "quick": self.a.quick,
            **self.src_info,
            **extra,
        }
        with self.results.open("a") as f:
            f.write(json.dumps(r) + "\n")
        return r

    def _budget_ok(self, what: str) -> bool:
        if time.monotonic() > self.deadline:
            self.failures.append(f"{what}: skipped, --max-minutes {self.a.max_minutes} spent")
            log(f"{self.elapsed()} budget spent, skipping {what}")
            return False
        return True

    def quiet(self) -> dict:
        """Wait (bounded) until other work leaves the machine mostly idle; record how busy it was."""
        start = time.monotonic()
        while True:
            t0 = _cpu_ticks()
            time.sleep(1.0)
            b = busy_pct(t0, _cpu_ticks())
            waited = time.monotonic() - start
            if b <= self.a.quiet_pct or waited >= self.a.quiet_wait:
                if b > self.a.quiet_pct:
                    log(f"    machine still {b:.0f} % busy after {waited:.0f} s: measuring anyway")
                return {"busy_before_pct": b, "quiet_wait_s": round(waited, 1), "_ticks": _cpu_ticks()}

    def _wait_port_free(self) -> None:
        for _ in range(50):
            if not port_open(self.port):
                return
            time.sleep(0.2)

    def measure(
        self,
        group: str,
        server: str,
        rep: int,
        largs: list[str],
        *,
        log_level: str = "warning",
        timeout: int | None = None,
        src_ips: int = 1,
        stored_as: str | None = None,
    ) -> dict | None:
        """One measurement: ``server`` pinned to CPU SCPU, bench/loadgen.py pinned to CPU CCPU."""
        what = f"{group} {server} rep{rep}"
        if not self._budget_ok(what):
            return None
        timeout = timeout or self.a.run_timeout
        spec = SERVER_SPECS[server]
        cmd = spec.command(self.port, log_level)
        self._wait_port_free()
        if port_open(self.port):
            self.failures.append(f"{what}: port {self.port} busy")
            return None
        slog = LOGS / f"{datetime.now():%Y%m%d-%H%M%S}-{server}-{group}.log"
        with slog.open("w") as out:
            srv = subprocess.Popen(
                ["taskset", "-c", SCPU, *cmd],  # taskset execs the server: one PID
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # ``python -m`` and uvicorn's app dir put the working directory first on sys.path:
                # run livehub's servers from the snapshot so that they import it, not the work tree
                cwd=self.src if spec.livehub else ROOT,
                env=self.env if spec.livehub else self.plain_env,
            )
        try:
            for _ in range(300):
                if port_open(self.port):
                    break
                if srv.poll() is not None:
                    tail = " / ".join(slog.read_text(errors="replace").strip().splitlines()[-2:])
                    self.failures.append(f"{what}: the server exited at start ({tail})")
                    log(f"    FAILED: the server exited at start: {tail}")
                    return None
                time.sleep(0.1)
            else:
                self.failures.append(f"{what}: the server did not open port {self.port} in 30 s")
                return None
            time.sleep(0.3)  # let the listener settle, and the probe connection be forgotten
            q = self.quiet()
            log(f"{self.elapsed()} {what}: loadgen {' '.join(largs)}")
            meta = {
                "run_id": self.run_id,
                "server_cmd": shlex.join(cmd).replace(f"{ROOT}/", ""),
                "server_cpu": SCPU,
                "client_cpu": CCPU,
                "port": self.port,
                "args": " ".join(largs),
                "versions": self.versions,
            }
            gen = [
                "taskset", "-c", CCPU, "timeout", "-k", "5", str(timeout),
                str(VENV_BIN / "python"), str(BENCH / "loadgen.py"), *largs,
                "--proto", spec.proto, "--port", str(self.port), "--server-pid", str(srv.pid),
                "--server", stored_as or server, "--label", f"{group}-rep{rep}", "--src-ips", str(src_ips),
                "--max-wall", str(timeout - 5), "--meta", json.dumps(meta),
            ]  # fmt: skip
            try:
                p = subprocess.run(gen, text=True, capture_output=True, timeout=timeout + 30)
            except subprocess.TimeoutExpired:
                self.failures.append(f"{what}: the load generator timed out after {timeout} s")
                return None
            if p.returncode != 0 or not p.stdout.strip():
                tail = " / ".join((p.stderr or "").strip().splitlines()[-3:])
                self.failures.append(f"{what}: loadgen exit {p.returncode}: {tail}")
                log(f"    FAILED (exit {p.returncode}): {tail}")
                return None
        finally:
            if srv.poll() is None:
                srv.terminate()
                try:
                    srv.wait(10)
                except subprocess.TimeoutExpired:
                    srv.kill()
                    srv.wait()
        text = slog.read_text(errors="replace")
        extra = {
            "server_log": str(slog.relative_to(ROOT)),
            "slow_closes_logged": text.count("closing slow connection"),
            **q,
        }
        r = self.store(p.stdout.strip().splitlines()[-1], group, stored_as or server, rep, extra)
        log(f"    {summary(r)}")
        if r.get("error"):
            self.failures.append(f"{what}: {r['error']} ({r.get('err_sample')})")
        return r


def summary(r: dict) -> str:
    """One line of progress per measurement."""
    if r.get("error"):
        return f"error: {r['error']} ({r.get('err_sample')})"
    if r["scenario"] == "fanout":
        top = best_sustained(r)
        steps = " ".join(
            f"{s['target_deliv_per_s'] / 1000:.0f}k:p99={s.get('lat_p99_ms')}" for s in r.get("steps", [])
        )
        cl = r.get("max", {}).get("deliv_per_s")
        return (
            f"max sustained {fan_rate(r):,.0f}/s"
            f" ({top['server_cpu_pct'] if top else '–'} % server CPU), closed loop {fmt(cl)}/s; {steps}"
        )
    if r["scenario"] in ("echo", "rpc"):
        rt, p99, bad = r["rt_per_s"], r.get("lat_p99_ms"), r["bad_replies"]
        return f"{rt:,.0f} round trips/s, p99 {p99} ms, {bad} bad replies"
    return (
        f"{r['conns_ok']:,} connected at {r['connect_per_s']:,.0f}/s, {r['kb_per_conn']} KB each, "
        f"{r['alive_after_hold']:,} alive after {r['hold_s']} s"
    )


# ----------------------------------------------------------------------------- the plan


def plan(a: argparse.Namespace, r: Runner) -> None:
    anchors = [s for s in ANCHORS if s in a.anchors]
    if "node_ws" in anchors and not have_node():
        anchors.remove("node_ws")
        log("node_ws: skipped (no node or bench/servers/node_modules/ws)")
        r.failures.append(
            "node_ws: skipped, node or bench/servers/node_modules/ws is missing (`make bench` runs "
            "`npm ci` there when Node.js is installed)"
        )
    embedded = [s for s in EMBEDDED if s in a.embedded]
    if "livehub_run" in embedded and not have_livehub_run(r.env):
        embedded.remove("livehub_run")
        log("livehub_run: skipped, the measured livehub has no `livehub run` command")
        r.failures.append(
            "livehub_run (the embedded app under `livehub run bench.embedded_app:app`): skipped, the "
            "measured livehub has no `livehub run` command yet; BENCH_LIVEHUB_RUN_CMD sets the command"
        )
    hard = r.nofile[1]
    # One process may hold (descriptors - a margin) connections; the generator needs as many.
    hold_n = min(2000 if a.quick else HOLD_GOAL, hard - 200)
    hold_s = 5 if a.quick else 60
    src_ips = max(1, -(-hold_n // 25_000))
    only = set(a.only.split(",")) if a.only else None

    def want(group: str) -> bool:
        return only is None or group in only

    def rotated(servers: list[str], rep: int) -> list[str]:
        k = (rep - 1) % len(servers)
        return servers[k:] + servers[:k]  # no server always first after a pause

    fan = ["fanout", "--rates", RATES, "--step-s", "2", "--max-s", "3"]
    echo_s = "5" if a.quick else "10"
    lat_step = "2" if a.quick else "4"
    for rep in range(1, a.reps + 1):
        if want("echo"):
            for s in rotated(["livehub_rpc", *anchors], rep):
                args = ["echo", "--clients", "64", "--duration", echo_s, "--size", "100"]
                # livehub's RPC server is stored as "livehub": the table's column
                r.measure("echo", s, rep, args, stored_as="livehub" if s == "livehub_rpc" else None)
        for n in [1000] if a.quick else [1000, 5000]:
            g = f"fanout{n // 1000}k"
            if want(g):
                servers = ["livehub", *anchors, *(embedded if n == 1000 else [])]
                for s in rotated(servers, rep):
                    r.measure(g, s, rep, [*fan, "--subs", str(n)])
        if want("latency1k"):
            for s in rotated(["livehub", *[x for x in anchors if x == "node_ws"]], rep):
                r.measure(
                    "latency1k",
                    s,
                    rep,
                    ["fanout", "--subs", "1000", "--rates", LATENCY_RATES, "--step-s", lat_step,
                     "--no-stop", "--max-s", "0"],
                )  # fmt: skip
        if want("idle10k"):
            for s in rotated(["livehub", *anchors], rep):
                r.measure("idle10k", s, rep, ["idle", "--conns", "10000"])
        if want("hold"):
            r.measure(
                "hold",
                "livehub",
                rep,
                ["idle", "--conns", str(hold_n), "--hold-s", str(hold_s)],
                timeout=int(60 + hold_n / 300 + hold_s),
                src_ips=src_ips,
            )
        if want("slow"):
            step = "25" if a.quick else "30"
            for slow in (False, True):
                r.measure(
                    "slow" if slow else "slowbase",
                    "livehub",
                    rep,
                    [
                        "fanout",
                        "--subs",
                        "1000",
                        *SLOW_ARGS,
                        "--step-s",
                        step,
                        *(["--slow", "1"] if slow else []),
                    ],
                    log_level="info",  # the evidence of the close is the server's log line
                )
    # N sweep for the figure (one repetition; N = 1000, 5000 and the 10k idle come from above)
    if want("sweep"):
        sweep_anchors = [s for s in ("fastapi_naive",) if s in anchors]
        for s in ["livehub", *sweep_anchors]:
            for n in [100] if a.quick else [100, 10000]:
                r.measure(f"sweep-fanout{n}", s, 1, [*fan, "--subs", str(n)])
            for n in [100, 1000] if a.quick else [100, 1000, 5000]:
                r.measure(f"sweep-idle{n}", s, 1, ["idle", "--conns", str(n)])
        if not a.quick:
            for s in sweep_anchors:  # the anchor at the connection count livehub held
                r.measure(
                    "hold",
                    s,
                    1,
                    ["idle", "--conns", str(hold_n), "--hold-s", "5"],
                    timeout=int(60 + hold_n / 300 + 5),
                    src_ips=src_ips,
                )


# ----------------------------------------------------------------------------- figures


def load(path: Path, run_id: str | None) -> tuple[str, list[dict]]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    rows = [x for x in rows if "bench" in x]
    if run_id is None:
        run_id = rows[-1]["bench"]["run_id"] if rows else ""
    return run_id, [x for x in rows if x["bench"]["run_id"] == run_id]


def sel(rows: list[dict], group: str, server: str) -> list[dict]:
    return [x for x in rows if x["bench"]["group"] == group and x["bench"]["server"] == server]


def best_sustained(r: dict) -> dict | None:
    """Highest step delivered in full, nothing lost, ≥ 90 % of its target, p99 ≤ 100 ms."""
    ok = [
        s
        for s in r.get("steps", [])
        if s["drained"]
        and s.get("lost_final", s["lost"]) == 0
        and s["deliv_per_s"] >= 0.9 * s["target_deliv_per_s"]
        and (s.get("lat_p99_ms") or 1e9) <= 100
    ]
    return max(ok, key=lambda s: s["target_deliv_per_s"]) if ok else None


def vals(rows: list[dict], fn) -> list[float]:
    out = []
    for r in rows:
        try:
            v = fn(r)
        except (KeyError, IndexError, TypeError, ValueError):
            v = None
        if v is not None:
            out.append(float(v))
    return out


def med(v: list[float]) -> float | None:
    return statistics.median(v) if v else None


def fmt(v: float | None, nd: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:,.{nd}f}"


def cell(v: list[float], nd: int = 0) -> str:
    if not v:
        return "–"
    s = fmt(med(v), nd)
    if len(v) >= 2 and min(v) != max(v):
        s += f" ({fmt(min(v), nd)}–{fmt(max(v), nd)})"
    return s


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fan_rate(r: dict) -> float:
    b = best_sustained(r)
    return b["deliv_per_s"] if b else 0.0


def worst_1s_p99(step: dict) -> float | None:
    ts = [x["p99_ms"] for x in step.get("timeseries", []) if x.get("deliveries", 0) >= 100 and "p99_ms" in x]
    return max(ts) if ts else None


def sustains(step: dict) -> bool:
    """A step delivered in full: everything arrived (final drain) at ≥ 90 % of its target rate."""
    return (
        bool(step.get("drained"))
        and step.get("lost_final", step.get("lost")) == 0
        and step["deliv_per_s"] >= 0.9 * step["target_deliv_per_s"]
    )


def latency_rows(rows: list[dict]) -> list[dict]:
    """Per target rate of the latency1k group: livehub's and node_ws's medians of p50 / p99."""
    out = []
    per: dict[str, dict[float, list[dict]]] = {}
    for s in ("livehub", "node_ws"):
        for r in sel(rows, "latency1k", s):
            for step in r.get("steps", []):
                per.setdefault(s, {}).setdefault(step["target_deliv_per_s"], []).append(step)
    for target in sorted(per.get("livehub", {})):
        lh = per["livehub"][target]
        nw = per.get("node_ws", {}).get(target, [])
        x: dict = {"target": target}
        for key, steps in (("lh", lh), ("nw", nw)):
            x[f"{key}_ok"] = bool(steps) and all(sustains(st) for st in steps)
            x[f"{key}_rate"] = vals(steps, lambda st: st["deliv_per_s"])
            x[f"{key}_p50"] = vals(steps, lambda st: st["lat_p50_ms"])
            x[f"{key}_p99"] = vals(steps, lambda st: st["lat_p99_ms"])
            x[f"{key}_first"] = vals(steps, lambda st: st.get("first_p50_ms"))
            x[f"{key}_spread"] = vals(steps, lambda st: st.get("spread_p50_ms"))
        x["both"] = x["lh_ok"] and x["nw_ok"]
        x["r50"] = ratio(med(x["lh_p50"]), med(x["nw_p50"]))
        x["r99"] = ratio(med(x["lh_p99"]), med(x["nw_p99"]))
        out.append(x)
    return out


def latency_table(rows: list[dict]) -> str:
    lat = latency_rows(rows)
    if not lat:
        return ""
    lines = [
        "| target deliveries/s | livehub delivered/s | livehub p50 / p99 ms | node_ws delivered/s "
        "| node_ws p50 / p99 ms | livehub / node_ws p50, p99 | no worse? "
        "| publish → first delivery, p50 ms: livehub / node_ws "
        "| first → last delivery, p50 ms: livehub / node_ws |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in lat:
        if x["both"]:
            verdict = "**yes**" if (x["r50"] or 9) <= 1 and (x["r99"] or 9) <= 1 else "**no**"
        else:
            missed = [name for name, ok in (("livehub", x["lh_ok"]), ("node_ws", x["nw_ok"])) if not ok]
            verdict = (
                "– (neither sustained it)" if len(missed) == 2 else f"– ({missed[0]} did not sustain it)"
            )
        lines.append(
            f"| {x['target']:,.0f} | {cell(x['lh_rate'])} | {cell(x['lh_p50'], 1)} / {cell(x['lh_p99'], 1)} "
            f"| {cell(x['nw_rate'])} | {cell(x['nw_p50'], 1)} / {cell(x['nw_p99'], 1)} "
            f"| {fmt(x['r50'], 2)}×, {fmt(x['r99'], 2)}× | {verdict} "
            f"| {cell(x['lh_first'], 1)} / {cell(x['nw_first'], 1)} "
            f"| {cell(x['lh_spread'], 1)} / {cell(x['nw_spread'], 1)} |"
        )
    return "\n".join(lines)


def figures(rows: list[dict]) -> tuple[list[list[str]], list[str]]:
    """The table's rows and the notes under it."""
    out: list[list[str]] = []
    notes: list[str] = []

    def row(
        figure: str,
        lh: list[float],
        anchors: dict[str, list[float]],
        nd: int,
        target: str,
        met: str,
        ratios: dict[str, float | None],
    ) -> None:
        out.append(
            [
                figure,
                cell(lh, nd),
                cell(anchors.get("fastapi_naive", []), nd),
                cell(anchors.get("node_ws", []), nd),
                fmt(ratios.get("fastapi_naive"), 2) + ("×" if ratios.get("fastapi_naive") else ""),
                fmt(ratios.get("node_ws"), 2) + ("×" if ratios.get("node_ws") else ""),
                target,
                met,
            ]
        )

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("**met**" if ok else "**not met**")

    for n in (1000, 5000):
        g = f"fanout{n // 1000}k"
        lh = sel(rows, g, "livehub")
        if not lh:
            continue
        an = {s: vals(sel(rows, g, s), fan_rate) for s in ANCHORS}
        v = vals(lh, fan_rate)
        rf = ratio(med(v), med(an["fastapi_naive"]))
        rn = ratio(med(v), med(an["node_ws"]))
        ok = None if rf is None and rn is None else ((rf or 0) >= 3 and (rn is None or rn >= 1.5))
        row(
            f"fan-out N = {n:,}: max sustained deliveries/s (p99 ≤ 100 ms, 0 lost)",
            v,
            an,
            0,
            "≥ 3× fastapi_naive, ≥ 1.5× node_ws",
            verdict(ok),
            {"fastapi_naive": rf, "node_ws": rn},
        )
        cl = vals(lh, lambda r: r["max"]["deliv_per_s"])
        an_cl = {s: vals(sel(rows, g, s), lambda r: r["max"]["deliv_per_s"]) for s in ANCHORS}
        row(
            f"  ↳ N = {n:,}: closed-loop max deliveries/s (8 in flight; no target)",
            cl,
            an_cl,
            0,
            "–",
            "–",
            {s: ratio(med(cl), med(an_cl[s])) for s in ANCHORS},
        )
        us = vals(lh, lambda r: best_sustained(r)["server_us_per_delivery"])
        an_us = {
            s: vals(sel(rows, g, s), lambda r: best_sustained(r)["server_us_per_delivery"]) for s in ANCHORS
        }
        row(
            f"server CPU µs per delivery at that load (N = {n:,})",
            us,
            an_us,
            2,
            "≤ 3 µs",
            verdict(None if not us else med(us) <= 3),
            {},
        )
        lgc = vals(lh, lambda r: best_sustained(r)["client_cpu_pct"])
        srvc = vals(lh, lambda r: best_sustained(r)["server_cpu_pct"])
        top = vals(lh, lambda r: best_sustained(r)["target_deliv_per_s"])
        grid_top = max(float(x) for x in RATES.split(","))
        if top and max(top) >= grid_top:
            notes.append(
                f"N = {n:,}: livehub met the highest step of the grid ({grid_top:,.0f}/s) in at least "
                "one run: its max sustained rate is a lower bound."
            )
        if lgc:
            notes.append(
                f"N = {n:,}: at livehub's max sustained step the server used {cell(srvc)} % of its core "
                f"and the load generator {cell(lgc)} % of its own."
            )

    # The embedded app (a FastAPI app with a Hub router), N = 1000, served two ways.
    for server, how, target in (
        ("livehub_run", "`livehub run bench.embedded_app:app`", "as `livehub serve`: ≥ 3× / ≥ 1.5×"),
        ("embedded_uvicorn", "plain `uvicorn bench.embedded_app:app`", "– (what the ASGI route costs)"),
    ):
        em = sel(rows, "fanout1k", server)
        if not em:
            continue
        v = vals(em, fan_rate)
        an = {s: vals(sel(rows, "fanout1k", s), fan_rate) for s in ANCHORS}
        rf, rn = ratio(med(v), med(an["fastapi_naive"])), ratio(med(v), med(an["node_ws"]))
        ok = None
        if server == "livehub_run" and (rf is not None or rn is not None):
            ok = (rf or 0) >= 3 and (rn is None or rn >= 1.5)
        row(
            f"embedded app, {how}: fan-out N = 1,000, max sustained deliveries/s (in the livehub column)",
            v,
            an,
            0,
            target,
            verdict(ok),
            {"fastapi_naive": rf, "node_ws": rn},
        )
        us = vals(em, lambda r: best_sustained(r)["server_us_per_delivery"])
        cl = vals(em, lambda r: r["max"]["deliv_per_s"])
        lhv = vals(sel(rows, "fanout1k", "livehub"), fan_rate)
        notes.append(
            f"embedded app under {how}: closed-loop max {cell(cl)} deliveries/s, server CPU "
            f"{cell(us, 2)} µs per delivery at its max sustained step; "
            f"{fmt(ratio(med(v), med(lhv)), 2)}× `livehub serve`."
        )

    lat = latency_rows(rows)
    if lat:
        both = [x for x in lat if x["both"]]
        worst50 = max((x["r50"] for x in both), default=None)
        worst99 = max((x["r99"] for x in both), default=None)
        ok = None if not both else all(x["r50"] <= 1 and x["r99"] <= 1 for x in both)
        out.append(
            [
                "latency at equal rates, N = 1,000 (every rate both sustain): worst livehub/node_ws "
                "ratio of p50 / p99 (table below)",
                f"{len(both)} of {len(lat)} rates sustained by both",
                "–",
                "–",
                "–",
                f"p50 {fmt(worst50, 2)}× / p99 {fmt(worst99, 2)}×" if both else "–",
                "p50 and p99 ≤ node_ws's at every rate",
                verdict(ok),
            ]
        )

    lh = sel(rows, "echo", "livehub")
    fa = sel(rows, "echo", "fastapi_naive")
    if lh or fa:
        v = vals(lh, lambda r: r["rt_per_s"] if r.get("bad_replies", 1) == 0 else None)
        f = vals(fa, lambda r: r["rt_per_s"] if r.get("bad_replies", 1) == 0 else None)
        nw = vals(
            sel(rows, "echo", "node_ws"), lambda r: r["rt_per_s"] if r.get("bad_replies", 1) == 0 else None
        )
        rf = ratio(med(v), med(f))
        row(
            "RPC round trips/s, 64 clients, full protocol (livehub `rpc` echo vs the anchors' `/ws` echo)",
            v,
            {"fastapi_naive": f, "node_ws": nw},
            0,
            "≥ 1× fastapi_naive echo",
            verdict(None if rf is None else rf >= 1),
            {"fastapi_naive": rf, "node_ws": ratio(med(v), med(nw))},
        )
        bad = vals(lh, lambda r: r.get("bad_replies"))
        if bad and max(bad) > 0:
            notes.append(f"RPC: {max(bad):.0f} bad replies in a run (excluded).")
        cpu = vals(lh, lambda r: r["client_cpu_pct"])
        scpu = vals(lh, lambda r: r["server_cpu_pct"])
        if cpu:
            notes.append(f"RPC: livehub server at {cell(scpu)} % CPU, load generator at {cell(cpu)} %.")

    lh = sel(rows, "idle10k", "livehub")
    if lh:
        an = {s: vals(sel(rows, "idle10k", s), lambda r: r["kb_per_conn"]) for s in ANCHORS}
        v = vals(lh, lambda r: r["kb_per_conn"])
        row(
            "idle memory per connection at 10k connections, KB (RSS growth / connections)",
            v,
            an,
            1,
            "≤ 15 KB",
            verdict(None if not v else med(v) <= 15),
            {s: ratio(med(v), med(an[s])) for s in ANCHORS},
        )
        ok_conns = vals(lh, lambda r: r["conns_ok"])
        if ok_conns and min(ok_conns) < 10000:
            notes.append(f"idle: livehub connected only {min(ok_conns):,.0f} of 10,000 in a run.")

    hold = sel(rows, "hold", "livehub")
    if hold:
        held = vals(hold, lambda r: r["alive_after_hold"])
        target_n = vals(hold, lambda r: r["conns_target"])
        errs = vals(
            hold, lambda r: r["connect_errors"] + r["disconnects_during_hold"] + r.get("proto_errors", 0)
        )
        pongs = vals(hold, lambda r: r.get("cf_pongs_sent"))
        hold_s = vals(hold, lambda r: r["hold_s"])
        fa_hold = vals(sel(rows, "hold", "fastapi_naive"), lambda r: r["alive_after_hold"])
        clean = bool(errs) and max(errs) == 0 and bool(pongs) and min(pongs) > 0
        reached = bool(held) and min(held) >= HOLD_GOAL
        met = (
            "**met**"
            if clean and reached
            else (
                f"**not measured at 50k** ({min(held):,.0f} held{', clean' if clean else ''})"
                if held
                else "–"
            )
        )
        row(
            f"connections held by one process, pinged ({cell(hold_s)} s hold)",
            held,
            {"fastapi_naive": fa_hold},
            0,
            "50,000, with pings, no errors",
            met,
            {},
        )
        notes.append(
            f"held connections: target {cell(target_n)}; errors + drops + protocol errors {cell(errs)}; "
            f"pongs the clients sent {cell(pongs)} (the server's pings, answered)."
        )
        # ("lgx": where results stored before bench/loadgen.py existed keep the limit)
        nofile = vals(hold, lambda r: r.get("nofile") or r["lgx"]["nofile"])
        if target_n and max(target_n) < HOLD_GOAL and nofile and max(target_n) >= min(nofile) - 200:
            notes.append(
                f"50,000 could not be tried: this machine allows {min(nofile):,.0f} open files per process "
                "(the hard `ulimit -n`; raising it is refused here), for the server and for the load "
                f"generator alike; the run held {min(held) if held else 0:,.0f}. Where the limit allows, "
                "the same run tries 50,000 (with source addresses spread over 127.0.0.x)."
            )
        elif target_n and max(target_n) < HOLD_GOAL:
            notes.append(f"held connections: a quick run holds {max(target_n):,.0f} only.")

    lh = sel(rows, "idle10k", "livehub")
    if lh:
        an = {s: vals(sel(rows, "idle10k", s), lambda r: r["connect_per_s"]) for s in ANCHORS}
        v = vals(lh, lambda r: r["connect_per_s"])
        rf = ratio(med(v), med(an["fastapi_naive"]))
        row(
            "connect rate, connections/s (10k; livehub: connect + subscribe replied)",
            v,
            an,
            0,
            "≥ 2× fastapi_naive",
            verdict(None if rf is None else rf >= 2),
            {s: ratio(med(v), med(an[s])) for s in ANCHORS},
        )

    slow = sel(rows, "slow", "livehub")
    base = sel(rows, "slowbase", "livehub")
    if slow:
        p_slow = vals(slow, lambda r: r["steps"][0]["lat_p99_ms"])
        p_base = vals(base, lambda r: r["steps"][0]["lat_p99_ms"])
        w_slow = vals(slow, lambda r: worst_1s_p99(r["steps"][0]))
        w_base = vals(base, lambda r: worst_1s_p99(r["steps"][0]))
        closes = vals(slow, lambda r: r["bench"].get("slow_closes_logged"))
        missing = vals(slow, lambda r: r["steps"][0]["lost_final"])
        hclosed = vals(slow, lambda r: r["steps"][0]["healthy_closed"])
        within = bool(p_slow and p_base) and med(p_slow) <= 1.2 * max(p_base)
        dropped = bool(closes) and min(closes) >= 1
        clean = bool(missing) and max(missing) == 0 and bool(hclosed) and max(hclosed) == 0
        met = verdict(within and dropped and clean) if p_slow else "–"
        out.append(
            [
                "slow consumer: p99 ms of the 999 others, 1 of 1000 stops reading (64 kB × 5 msg/s); "
                "in brackets: without the slow one",
                f"{cell(p_slow, 1)} [{cell(p_base, 1)}]",
                "–",
                "–",
                fmt(ratio(med(p_slow), med(p_base)), 2) + "× of without",
                "–",
                "unchanged (≤ 1.2× the highest run without); slow one closed with 3008",
                met,
            ]
        )
        notes.append(
            f"slow consumer: worst 1-s p99 of the others {cell(w_slow, 1)} ms with the slow one, "
            f"{cell(w_base, 1)} ms without; deliveries to the others missing: {cell(missing)}; "
            f'others disconnected: {cell(hclosed)}; "closing slow connection" (3008) in the server log: '
            f"{cell(closes)} per run ({sum(1 for c in closes if c >= 1)} of {len(slow)} runs)."
        )
    busy = [(r["bench"]["group"], r["bench"]["server"], r["bench"].get("busy_before_pct")) for r in rows]
    loud = [b for b in busy if b[2] is not None and b[2] > 25]
    if loud:
        notes.append(
            f"{len(loud)} of {len(rows)} measurements started while other work kept the machine more "
            "than 25 % busy (after waiting up to --quiet-wait): "
            + ", ".join(f"{g} {s} {b:.0f} %" for g, s, b in loud[:8])
            + ("…" if len(loud) > 8 else "")
        )
    return out, notes


def table(rows: list[dict]) -> tuple[str, list[str]]:
    body, notes = figures(rows)
    head = [
        "figure",
        "livehub",
        "fastapi_naive",
        "node_ws",
        "livehub / fastapi_naive",
        "livehub / node_ws",
        "target",
        "met?",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines), notes


def sweep_table(rows: list[dict]) -> tuple[str, dict]:
    """Deliveries/s and KB per connection by N, for the figure (medians where repeated)."""
    data: dict = {}
    for s in ["livehub", *ANCHORS]:
        fan: dict[int, dict] = {}
        mem: dict[int, float] = {}
        for r in rows:
            b = r["bench"]
            if b["server"] != s:
                continue
            if r["scenario"] == "fanout" and "max" in r and b["group"].startswith(("fanout", "sweep-fanout")):
                fan.setdefault(r["subs"], {"cl": [], "sus": []})
                fan[r["subs"]]["cl"].append(r["max"]["deliv_per_s"])
                fan[r["subs"]]["sus"].append(fan_rate(r))
            if (
                r["scenario"] == "idle"
                and r.get("kb_per_conn")
                and (b["group"] in ("idle10k", "hold") or b["group"].startswith("sweep-idle"))
            ):
                mem.setdefault(r["conns_ok"], [])
                mem[r["conns_ok"]].append(r["kb_per_conn"])
        if fan or mem:
            data[s] = {
                "fan": {n: {"cl": med(v["cl"]), "sus": med(v["sus"])} for n, v in sorted(fan.items())},
                "mem": {n: med(v) for n, v in sorted(mem.items())},
            }
    lines = [
        "| server | N | closed-loop max deliveries/s | max sustained deliveries/s | KB per idle connection |",
        "|---|---|---|---|---|",
    ]
    for s, d in data.items():
        for n in sorted(set(d["fan"]) | set(d["mem"])):
            f = d["fan"].get(n, {})
            lines.append(
                f"| `{s}` | {n:,} | {fmt(f.get('cl'))} | {fmt(f.get('sus'))} | {fmt(d['mem'].get(n), 1)} |"
            )
    return "\n".join(lines), data


def draw(data: dict, path: Path, note: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no PNG drawn"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"livehub": "tab:blue", "fastapi_naive": "tab:orange", "node_ws": "tab:green"}
    for s, d in data.items():
        ns = sorted(d["fan"])
        if ns:
            ax1.plot(
                ns, [d["fan"][n]["cl"] for n in ns], "o-", color=colors.get(s), label=f"{s} closed-loop max"
            )
            ax1.plot(
                ns,
                [d["fan"][n]["sus"] for n in ns],
                "s--",
                color=colors.get(s),
                alpha=0.6,
                label=f"{s} max sustained (p99 ≤ 100 ms)",
            )
        ms = sorted(d["mem"])
        if ms:
            ax2.plot(ms, [d["mem"][n] for n in ms], "o-", color=colors.get(s), label=s)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("N (subscribers / connections)")
        ax.grid(True, which="both", alpha=0.3)
        ax.axvline(HOLD_GOAL, color="grey", ls=":", lw=1)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    ax1.set_ylabel("deliveries/s")
    ax1.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
    ax1.set_ylim(bottom=0)
    ax1.set_title("fan-out, 1 publisher → N subscribers")
    ax2.set_ylabel("KB per idle connection (server RSS)")
    ax2.set_title("idle memory")
    ax2.set_ylim(bottom=0)
    fig.suptitle(note, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return f"figure: {path.relative_to(ROOT)}"


# ----------------------------------------------------------------------------- report


def git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}, Python {platform.python_version()}, "
        f"open files per process {resource.getrlimit(resource.RLIMIT_NOFILE)[1]:,}"
    )


def versions_line(rows: list[dict]) -> str:
    v = next((r["meta"]["versions"] for r in rows if r.get("meta", {}).get("versions")), {})
    return ", ".join(f"{k} {x}" for k, x in v.items()) or "not recorded"


def lat_step_s(rows: list[dict]) -> str:
    for r in rows:
        if r["bench"]["group"] == "latency1k" and r.get("steps"):
            return f"{r['steps'][0]['pub_s']:.0f}"
    return "?"


def report(
    run_id: str, rows: list[dict], command: str, write: Path | None, png: Path | None, failures: list[str]
) -> str:
    tab, notes = table(rows)
    sweep, data = sweep_table(rows)
    reps = max((r["bench"]["rep"] for r in rows), default=0)
    quick = any(r["bench"].get("quick") for r in rows)
    when = datetime.fromtimestamp(min((r["ts"] for r in rows), default=time.time()), UTC)
    nofile = min(
        (r.get("nofile") or r["lgx"]["nofile"] for r in rows if r.get("nofile") or r.get("lgx")), default=0
    )
    title = f"livehub bench run {run_id}: server on CPU {SCPU}, load generator on CPU {CCPU}"
    if nofile and nofile < HOLD_GOAL + 200:
        title += f"; N = 50,000 (dotted) is beyond this machine's {nofile:,} open files per process"
    drawn = draw(data, png, title) if png and data else ""
    b0 = rows[0]["bench"]
    if b0.get("source") == "HEAD":
        src = f"commit `{b0['commit']}` (`git archive HEAD livehub`, frozen for the run)"
    elif b0.get("source"):
        dirty = " with uncommitted changes" if b0.get("dirty") else ""
        src = f"the work tree at commit `{b0['commit']}`{dirty}"
    else:
        src = f"the work tree as it changed during the run (HEAD now `{git_head()}`)"
    md = [
        f"# livehub benchmark — run `{run_id}`{' (quick)' if quick else ''}",
        "",
        f"- date: {when:%Y-%m-%d %H:%M} UTC; livehub measured: {src}",
        f"- command: `{command}`",
        f"- machine: {machine()}; server pinned to CPU {SCPU}, load generator to CPU {CCPU} (`taskset`); "
        "loopback; a shared, noisy VM (other work may have run during the measurement)",
        f"- repetitions: {reps} (median, (min–max) where they differ); anchors interleaved with livehub, "
        "server order rotated each repetition",
        "- load generator: `bench/loadgen.py` (one process, picows + uvloop client); anchors: "
        "`bench/servers/` (`fastapi_naive` on uvicorn, `node_ws` on Node `ws`); livehub: `livehub serve`, "
        "`bench/rpc_app.py` (RPC), `bench/embedded_app.py` (embedded)",
        f"- versions: {versions_line(rows)}",
        f"- raw lines: `.cache/bench/results.jsonl`, run_id `{run_id}`",
        "",
        "## What must be shown",
        "",
        tab,
        "",
    ]
    if notes:
        md += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    if failures:
        md += ["Not measured in this run:", ""] + [f"- {f}" for f in failures] + [""]
    lat = latency_table(rows)
    if lat:
        md += [
            "## Latency at equal rates, N = 1,000: livehub vs node_ws",
            "",
            f"Open-loop steps of {lat_step_s(rows)} s each, all of them run (no stop at saturation); "
            "medians over the repetitions. A rate counts when the server delivered everything at ≥ 90 % "
            "of it; livehub's p50 and p99 must be no worse than node_ws's at every rate both sustain.",
            "",
            lat,
            "",
        ]
    md += ["## Deliveries/s and memory as N grows", "", sweep, ""]
    if drawn.startswith("figure") and png:
        md += [f"![fan-out and memory by N]({png.name})", ""]
    elif drawn:
        md += [f"({drawn})", ""]
    text = "\n".join(md)
    if write:
        write.parent.mkdir(parents=True, exist_ok=True)
        write.write_text(text)
    return text


# ----------------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3, help="repetitions of each scenario (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, N = 1000 only, short holds")
    p.add_argument(
        "--only",
        default="",
        help="comma list of groups: echo,fanout1k,fanout5k,latency1k,idle10k,hold,slow,sweep",
    )
    p.add_argument("--anchors", default=",".join(ANCHORS), help="anchors to run next to livehub")
    p.add_argument(
        "--embedded",
        default=",".join(EMBEDDED),
        help="ways to serve bench/embedded_app.py in the N = 1000 fan-out (none: empty)",
    )
    p.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "18765")))
    p.add_argument("--results", default=str(CACHE / "results.jsonl"))
    p.add_argument("--run-id", default="")
    p.add_argument(
        "--report",
        metavar="RUN_ID",
        nargs="?",
        const="latest",
        help="only print the table (and redraw the PNG) from stored results",
    )
    p.add_argument("--run-timeout", type=int, default=420, help="bound on one load generator run, seconds")
    p.add_argument("--max-minutes", type=float, default=75, help="no new measurement starts after this")
    p.add_argument(
        "--quiet-pct",
        type=float,
        default=25.0,
        help="before each measurement wait until the machine is at most this busy (%% of all CPUs)",
    )
    p.add_argument("--quiet-wait", type=float, default=30.0, help="... but no longer than this, seconds")
    p.add_argument(
        "--source",
        choices=["head", "worktree"],
        default="head",
        help="livehub code to measure: the committed HEAD (default) or the work tree as it is",
    )
    p.add_argument("--write", default="", help="markdown file to write (full runs: docs/bench/RESULTS.md)")
    a = p.parse_args()
    if a.quick:
        a.reps = 1 if a.reps == 3 else a.reps
    a.anchors = [x for x in a.anchors.split(",") if x]
    a.embedded = [x for x in a.embedded.split(",") if x]
    if os.environ.get("MAKELEVEL"):
        env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in ("BENCH_PORT",) if os.environ.get(k))
        extra = shlex.join(sys.argv[1:])
        command = (
            f"{env + ' ' if env else ''}make bench{f' BENCH_ARGS={shlex.quote(extra)}' if extra else ''}"
        )
    else:
        command = "bench/run.py " + shlex.join(sys.argv[1:])
    full = not a.quick and not a.only
    write = Path(a.write) if a.write else (DOCS / "RESULTS.md" if full else CACHE / "RESULTS-last.md")
    png = DOCS / "fanout_memory.png" if full or a.report else CACHE / "fanout_memory-last.png"

    if a.report:
        run_id, rows = load(Path(a.results), None if a.report == "latest" else a.report)
        if not rows:
            raise SystemExit(f"no stored results for run {a.report!r} in {a.results}")
        if any(r["bench"].get("quick") for r in rows):
            png = CACHE / "fanout_memory-last.png"
        print(report(run_id, rows, command, Path(a.write) if a.write else None, png, []))
        return 0

    if not (VENV_BIN / "livehub").exists():
        raise SystemExit(f"{VENV_BIN / 'livehub'} missing: run `make install` first")
    for tool in ("taskset", "timeout"):
        if not shutil.which(tool):
            raise SystemExit(f"bench needs {tool} (util-linux / coreutils)")
    # As many descriptors as allowed, for the servers started here and the load generator.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    run_id = a.run_id or ("quick-" if a.quick else "") + datetime.now().strftime("%Y%m%d-%H%M%S")
    runner = Runner(a, run_id)
    log(f"bench run {run_id}: {a.reps} repetition(s), port {a.port}, results -> {a.results}")

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        plan(a, runner)
    except KeyboardInterrupt:
        runner.failures.append("interrupted")
    run_id, rows = load(runner.results, run_id)
    if not rows:
        log("no result")
        for f in runner.failures:
            log(f"  {f}")
        return 1
    if full:
        DOCS.mkdir(parents=True, exist_ok=True)
        with (DOCS / "results.jsonl").open("w") as f:
            for r in rows:
                # Committed results name files relative to the project, not this machine's paths.
                f.write(json.dumps(r).replace(f"{ROOT}/", "") + "\n")
    print(report(run_id, rows, command, write, png, runner.failures))
    log(f"{runner.elapsed()} done; table written to {write.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
