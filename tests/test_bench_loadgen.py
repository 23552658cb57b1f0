"""The benchmark's load generator (bench/loadgen.py) still measures: against a real ``livehub serve``
for about two seconds at a small rate it must report every delivery, nothing lost, latencies that
make sense, and the server's CPU. Without this, ``make bench`` could rot between full runs."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from tests.servers import ROOT, free_port, running, wait_port

LOADGEN = ROOT / "bench" / "loadgen.py"
CLIENTS = ["sansio"] + (["picows"] if importlib.util.find_spec("picows") is not None else [])


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, int]]:
    """``livehub serve`` with the benchmark's config on a free port: (port, pid)."""
    port = free_port()
    cmd = [sys.executable, "-m", "livehub", "serve", "--config", str(ROOT / "bench" / "fanout.toml")]
    with running([*cmd, "--port", str(port), "--log-level", "warning"], port) as proc:
        yield port, proc.pid


def loadgen(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(LOADGEN), *args, "--max-wall", "60"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("client", CLIENTS)
def test_fanout_counts_every_delivery_and_its_latency(server: tuple[int, int], client: str) -> None:
    port, pid = server
    subs = 20
    r = loadgen(
        "fanout",
        "--port", str(port), "--server-pid", str(pid), "--client", client,
        "--subs", str(subs), "--rates", "400,1000", "--step-s", "1", "--max-s", "0.5",
    )  # fmt: skip
    assert r["subs"] == subs and r["connect_errors"] == 0 and r["proto_errors"] == 0
    assert r["warmup_delivered"] == subs
    assert [s["target_deliv_per_s"] for s in r["steps"]] == [400, 1000]
    for step in [*r["steps"], r["max"]]:
        assert step["published"] > 0
        assert step["expected"] == step["published"] * subs
        assert step["received_final"] == step["expected"] and step["lost_final"] == 0
        assert step["lat_n"] == step["received"]
        assert 0 < step["lat_p50_ms"] <= step["lat_p99_ms"] <= step["lat_max_ms"] < 2000
        assert step["server_cpu_s"] is not None and step["server_cpu_s"] >= 0
    # 1 s at 1000 deliveries/s to 20 subscribers is 50 publications of 20 deliveries each
    assert r["steps"][1]["published"] == 50
    assert r["steps"][1]["deliv_per_s"] > 500
    assert r["max"]["deliv_per_s"] > 0
    assert r["lost_final_total"] == 0


def test_echo_counts_round_trips_and_refuses_wrong_replies(server: tuple[int, int]) -> None:
    """``livehub serve`` has no RPC method ``echo``: every reply is an error, and the generator says so."""
    port, pid = server
    r = loadgen("echo", "--port", str(port), "--server-pid", str(pid), "--clients", "4", "--duration", "1")
    assert r["scenario"] == "rpc" and r["clients"] == 4
    assert r["round_trips"] > 0
    assert r["checked_replies"] > 0 and r["bad_replies"] == r["checked_replies"]


def test_loadgen_refuses_a_non_loopback_target() -> None:
    done = subprocess.run(
        [sys.executable, str(LOADGEN), "idle", "--host", "192.0.2.1", "--client", "sansio"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0 and "refusing" in done.stderr


def test_raw_protocol_against_the_fastapi_naive_anchor() -> None:
    """The anchors' plain protocol, end to end: the FastAPI docs' broadcast delivers to everyone."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench.servers.fastapi_naive:app", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], cwd=ROOT)
    try:
        wait_port(port, proc)
        r = loadgen(
            "fanout", "--proto", "raw", "--port", str(port), "--server-pid", str(proc.pid),
            "--client", CLIENTS[-1], "--subs", "10", "--rates", "200", "--step-s", "1", "--max-s", "0",
        )  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    (step,) = r["steps"]
    assert step["published"] == 20 and step["lost_final"] == 0 and step["received_final"] == 200
    assert 0 < step["lat_p50_ms"] <= step["lat_p99_ms"] < 2000
    assert "max" not in r


def test_batched_frames_count_every_publication_and_answer_every_ping() -> None:
    """livehub puts several pushes in one frame, pings among them: each push is one delivery,
    each ``{}`` line gets its ``{}`` (a missed pong gets the connection dropped mid-benchmark)."""
    spec = importlib.util.spec_from_file_location("bench_loadgen", LOADGEN)
    assert spec is not None and spec.loader is not None
    lg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lg)
    a = lg.parser().parse_args(["fanout", "--client", "sansio", "--size", "300"])
    loop = asyncio.new_event_loop()
    try:
        gen = SimpleNamespace(loop=loop, proto=lg.Centrifugo(a), disconnects=0)
        fan = lg.FanOut(gen, a)
        conn = lg.Conn(gen, "sub")
        sent: list[bytes] = []
        conn.wire_send = sent.append
        fan.count = [0, 0, 0, 0]
        fan.first, fan.last = lg.array("q", [0] * 4), lg.array("q", [0] * 4)
        received = fan.subscriber(conn)

        def push(seq: int) -> bytes:
            data = fan.template % (seq, time.perf_counter_ns() - 1_000_000)
            return b'{"push":{"channel":"bench","pub":{"data":' + data + b',"offset":7}}}'

        received(push(0) + b"\n{}\n" + push(1) + b"\n" + push(2) + b"\n{}")
        assert fan.count == [1, 1, 1, 0] and sent == [b"{}", b"{}"]
        received(b"{}\n" + push(3))
        received(b"{}")
        assert fan.count == [1, 1, 1, 1] and sent == [b"{}"] * 4 and gen.proto.pongs == 4
        assert len(fan.lat) == 4 and all(900_000 < x < 1_000_000_000 for x in fan.lat)
        assert (
            conn.rx == 4 and all(fan.first) and all(f <= t for f, t in zip(fan.first, fan.last, strict=True))
        )
    finally:
        loop.close()
