#!/usr/bin/env python3
"""bench/loadgen.py — the load generator of ``make bench``: one asyncio process, many clients.

Every server of the benchmark is driven by this same code, so their numbers compare. A run is one
scenario against one server and prints exactly one JSON object on stdout (progress on stderr)::

    .venv/bin/python bench/loadgen.py fanout --proto centrifugo --port 18765 --subs 1000 \\
        --rates 10000,50000 --step-s 2 --max-s 3 --server-pid PID

Scenarios:

``fanout``  N subscribers and one publisher on channel ``bench``. Open-loop steps first: for each
            target of ``--rates`` (deliveries/s; messages/s = target / N) the publisher sends at
            that pace for ``--step-s`` whatever the server does, then the step waits (bounded) for
            its deliveries. Then a closed-loop phase (``--max-s``): ``--window`` messages in
            flight, the next one sent when one has reached every subscriber. Each publication
            carries its sequence number and the time it was sent, so each delivery gives a
            publish→receive latency, and at the end (after a last bounded drain) the deliveries
            counted per sequence number give the losses. ``--slow K``: the first K subscribers
            stop reading (their sockets stay open) — the slow-consumer case.
``echo``    K clients, each sends a request and waits for its reply before sending the next:
            round trips/s and their latency. ``--proto raw``: text to ``/ws``, which answers
            ``Message text was: <text>``. ``--proto centrifugo``: ``connect``, then an ``rpc``
            (method ``echo``) whose reply must carry the data back. The first 1000 replies are
            checked byte for byte.
``idle``    C connections that connect (with ``--conc`` handshakes in flight) and then do nothing
            but answer pings for ``--hold-s``: connections/s, and the server's RSS growth per
            connection (``/proc/PID/status`` before and after, after 50 warm-up connections).

Protocols (``--proto``): ``centrifugo`` — the Centrifugo JSON client protocol on
``--cf-path`` (``{"id":1,"connect":{}}`` + ``{"id":2,"subscribe":{"channel":"bench"}}`` in one
frame; publications are ``publish`` commands; pushes may share a frame, one per line; a ``{}``
ping is answered ``{}``). ``raw`` — the anchors' plain protocol: ``/sub`` subscribes implicitly,
a text message on ``/pub`` is broadcast to every subscriber unchanged, ``/ws`` echoes.

Clients (``--client``): ``picows`` (a Cython WebSocket client; the default when installed) or
``sansio`` (websockets' sans-I/O protocol on an asyncio Protocol; slower, always available).
uvloop runs the event loop when installed.

CPU: with ``--server-pid`` each phase reports the server's CPU (``/proc/PID/stat``) and this
process's own; a generator near 100 % of its core means the figure is the generator's ceiling.

Safety: loopback targets only; every phase is bounded in messages and time; ``--max-wall``
(SIGALRM) ends the process whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import itertools
import json
import os
import platform
import resource
import signal
import socket
import struct
import sys
import time
from array import array
from collections.abc import Callable
from time import perf_counter, perf_counter_ns
from typing import Any
from urllib.parse import urlsplit

try:
    import picows
except ImportError:  # the sans-I/O client still works
    picows = None

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Every fan-out publication carries `"bm":"<10-digit sequence><19-digit send time, ns>"`.
MARK = b'"bm":"'
SEQ_W, TS_W = 10, 19
ECHO_PREFIX = b"Message text was: "


def log(*parts: object) -> None:
    print("[loadgen]", *parts, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- measuring processes


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (``/proc/PID/stat`` fields 14 and 15)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Meter:
    """CPU used by the server and by this process over one phase, as % of one core and seconds."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.t0 = perf_counter()
        self.s0 = cpu_seconds(server_pid) if server_pid else None
        t = os.times()
        self.c0 = t.user + t.system

    def read(self) -> dict[str, Any]:
        wall = max(1e-9, perf_counter() - self.t0)
        t = os.times()
        client = t.user + t.system - self.c0
        out: dict[str, Any] = {
            "client_cpu_s": round(client, 3),
            "client_cpu_pct": round(100 * client / wall, 1),
            "server_cpu_s": None,
            "server_cpu_pct": None,
        }
        s1 = cpu_seconds(self.pid) if self.pid else None
        if self.s0 is not None and s1 is not None:
            out["server_cpu_s"] = round(s1 - self.s0, 3)
            out["server_cpu_pct"] = round(100 * (s1 - self.s0) / wall, 1)
        return out


def percentiles(ns: array, prefix: str = "lat_") -> dict[str, Any]:
    """p50, p99 and max (ms) of latencies in nanoseconds."""
    n = len(ns)
    if not n:
        return {f"{prefix}n": 0}
    s = sorted(ns)

    def at(p: float) -> float:
        return round(s[min(n - 1, int(p / 100 * n))] / 1e6, 3)

    return {f"{prefix}n": n, f"{prefix}p50_ms": at(50), f"{prefix}p99_ms": at(99), f"{prefix}max_ms": at(100)}


# ----------------------------------------------------------------------------- one connection


class Conn:
    """One client connection, whatever WebSocket client carries it.

    The client library calls ``received(bytes)`` per complete text message and ``lost()`` once;
    ``send`` writes a text message. ``handler`` is the scenario's per-message callback; until
    the protocol's handshake is done (``ready``) messages go to the protocol instead.
    """

    __slots__ = (
        "gen",
        "role",
        "wire_send",
        "pause",
        "backlog",
        "close",
        "ready",
        "closed",
        "closed_at",
        "rx",
        "handler",
        "sent_ns",
    )

    def __init__(self, gen: LoadGen, role: str) -> None:
        self.gen = gen
        self.role = role
        self.ready: asyncio.Future[bool] = gen.loop.create_future()
        self.closed = False
        self.closed_at = 0.0
        self.rx = 0
        self.sent_ns = 0
        self.handler: Callable[[bytes], None] = self.control
        self.wire_send: Callable[[bytes], None] = lambda data: None
        self.pause: Callable[[], None] = lambda: None
        self.backlog: Callable[[], int] = lambda: 0
        self.close: Callable[[], None] = lambda: None

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.wire_send(data)

    def opened(self) -> None:
        first = self.gen.proto.opening(self.role)
        if first is None:
            self.set_ready(True)
        else:
            self.send(first)

    def received(self, data: bytes) -> None:
        self.handler(data)

    def control(self, data: bytes) -> None:
        """A message that is no publication or reply the scenario waits for."""
        self.gen.proto.control(self, data)

    def set_ready(self, ok: bool) -> None:
        if not self.ready.done():
            self.ready.set_result(ok)

    def lost(self) -> None:
        if not self.closed:
            self.closed = True
            self.closed_at = perf_counter()
            self.gen.disconnects += 1
        self.set_ready(False)


# ----------------------------------------------------------------------------- protocols


class Raw:
    """The anchors' plain protocol: nothing to negotiate, publications travel unchanged."""

    name = "raw"

    def __init__(self, a: argparse.Namespace) -> None:
        self.paths = {"sub": "/sub", "pub": "/pub", "echo": "/ws", "idle": "/sub"}

    def path(self, role: str) -> str:
        return self.paths[role]

    def opening(self, role: str) -> bytes | None:
        return None

    def control(self, conn: Conn, data: bytes) -> None:
        pass

    def publish(self, payload: bytes) -> bytes:
        return payload

    def request(self, text: bytes) -> tuple[bytes, bytes]:
        return text, ECHO_PREFIX + text


class Centrifugo:
    """The Centrifugo JSON client protocol, as the official SDKs speak it (newline-delimited)."""

    name = "centrifugo"

    def __init__(self, a: argparse.Namespace) -> None:
        self.cf_path = a.cf_path
        self.channel = a.channel.encode()
        self.ids = itertools.count(10)
        self.pongs = 0
        self.errors = 0
        self.error_sample: str | None = None

    def path(self, role: str) -> str:
        return self.cf_path

    def opening(self, role: str) -> bytes | None:
        connect = b'{"id":1,"connect":{}}'
        if role in ("sub", "idle"):  # two commands in one frame, as the SDKs batch them
            return connect + b'\n{"id":2,"subscribe":{"channel":"' + self.channel + b'"}}'
        return connect

    def pong(self, conn: Conn) -> None:
        """A ``{}`` line is the server's ping: answer ``{}`` (else the server drops us)."""
        conn.send(b"{}")
        self.pongs += 1

    def control(self, conn: Conn, data: bytes) -> None:
        for line in data.split(b"\n"):
            if not line:
                continue
            if line == b"{}":
                conn.send(b"{}")
                self.pongs += 1
                continue
            try:
                reply = json.loads(line)
            except ValueError:
                self.note_error(line)
                continue
            if "error" in reply:
                self.note_error(line)
                conn.set_ready(False)
            elif reply.get("id") == 1 and "connect" in reply and conn.role not in ("sub", "idle"):
                conn.set_ready(True)
            elif reply.get("id") == 2 and "subscribe" in reply:
                conn.set_ready(True)
            # publish acknowledgements ({"id":N,"publish":{}}) and pushes of other kinds: nothing

    def note_error(self, line: bytes) -> None:
        self.errors += 1
        if self.error_sample is None:
            self.error_sample = line[:200].decode(errors="replace")

    def publish(self, payload: bytes) -> bytes:
        return b'{"id":%d,"publish":{"channel":"%s","data":%s}}' % (next(self.ids), self.channel, payload)

    def request(self, text: bytes) -> tuple[bytes, bytes]:
        # One request in flight per connection, so one id serves: the reply is a constant.
        return (
            b'{"id":3,"rpc":{"method":"echo","data":"' + text + b'"}}',
            b'{"id":3,"rpc":{"data":"' + text + b'"}}',
        )


# ----------------------------------------------------------------------------- WebSocket clients


def client_socket(host: str, source: str | None, rcvbuf: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # Reset on close: no TIME_WAIT pile-up on the ephemeral ports from one run to the next.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source:
        # Choose the port at connect time (per destination): more than ~28k sockets per source.
        s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
        s.bind((source, 0))
    s.setblocking(False)
    return s


if picows is not None:

    class PicowsListener(picows.WSListener):  # type: ignore[misc,name-defined]
        """picows callbacks → Conn. Fragmented messages are joined (rare: ours are small)."""

        def __init__(self, conn: Conn) -> None:
            super().__init__()
            self.conn = conn
            self.parts: list[bytes] | None = None

        def on_ws_connected(self, transport: Any) -> None:
            conn = self.conn
            text = picows.WSMsgType.TEXT
            send = transport.send
            conn.wire_send = lambda data: send(text, data)
            tcp = transport.underlying_transport
            conn.pause = tcp.pause_reading
            conn.backlog = tcp.get_write_buffer_size
            conn.close = lambda: transport.disconnect(graceful=False)
            conn.opened()

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind == picows.WSMsgType.TEXT or kind == picows.WSMsgType.BINARY:
                if frame.fin:
                    self.conn.received(frame.get_payload_as_bytes())
                else:
                    self.parts = [frame.get_payload_as_bytes()]
            elif kind == picows.WSMsgType.CONTINUATION and self.parts is not None:
                self.parts.append(frame.get_payload_as_bytes())
                if frame.fin:
                    data, self.parts = b"".join(self.parts), None
                    self.conn.received(data)
            elif kind == picows.WSMsgType.CLOSE:
                code = frame.get_close_code()
                codes = self.conn.gen.close_codes
                codes[code] = codes.get(code, 0) + 1
                transport.send_close(code)
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            self.conn.lost()


class SansIOClient(asyncio.Protocol):
    """websockets' sans-I/O ClientProtocol on an asyncio Protocol: no task per connection."""

    def __init__(self, conn: Conn, url: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.conn = conn
        self.ws = ClientProtocol(parse_uri(url), max_size=None)
        self.transport: asyncio.Transport | None = None
        self.parts: list[bytes] | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        self.ws.send_request(self.ws.connect())
        self.flush()

    def flush(self) -> None:
        assert self.transport is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif not self.transport.is_closing():
                self.transport.close()  # the protocol asks for the end of the stream

    def send_text(self, data: bytes) -> None:
        self.ws.send_text(data)
        self.flush()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Opcode
        from websockets.http11 import Response

        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.ws.handshake_exc is not None:
                    self.conn.gen.note_connect_error(self.ws.handshake_exc)
                    self.conn.set_ready(False)
                    continue
                self.open = True
                conn = self.conn
                assert self.transport is not None
                conn.wire_send = self.send_text
                conn.pause = self.transport.pause_reading
                conn.backlog = self.transport.get_write_buffer_size
                conn.close = self.transport.abort
                conn.opened()
            elif event.opcode in (Opcode.TEXT, Opcode.BINARY):
                if event.fin:
                    self.conn.received(event.data)
                else:
                    self.parts = [event.data]
            elif event.opcode == Opcode.CONT and self.parts is not None:
                self.parts.append(event.data)
                if event.fin:
                    whole, self.parts = b"".join(self.parts), None
                    self.conn.received(whole)
        self.flush()  # pongs and close frames the protocol queued

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.lost()


# ----------------------------------------------------------------------------- the generator


class LoadGen:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.loop = asyncio.get_running_loop()
        self.proto: Raw | Centrifugo = Centrifugo(a) if a.proto == "centrifugo" else Raw(a)
        self.disconnects = 0
        #: Close codes the server sent (picows client), by code.
        self.close_codes: dict[int, int] = {}
        self.connect_errors = 0
        self.error_sample: str | None = None
        self.sources = [f"127.0.0.{i}" for i in range(1, a.src_ips + 1)] if a.src_ips > 1 else [None]
        self.next_source = itertools.cycle(self.sources)

    def url(self, role: str) -> str:
        port = self.a.pub_port if role == "pub" and self.a.pub_port else self.a.port
        return f"ws://{self.a.host}:{port}{self.proto.path(role)}"

    def note_connect_error(self, exc: BaseException) -> None:
        self.connect_errors += 1
        if self.error_sample is None:
            self.error_sample = f"{type(exc).__name__}: {exc}"[:300]

    async def open(self, role: str, read_buf: int = 16 * 1024) -> Conn | None:
        """One connection, its protocol handshake done; None (counted) when that fails."""
        conn = Conn(self, role)
        url = self.url(role)
        host = urlsplit(url).hostname or self.a.host
        source = next(self.next_source)
        try:
            if self.a.client == "picows":
                await picows.ws_connect(
                    lambda: PicowsListener(conn),
                    url,
                    socket_factory=lambda _url: client_socket(host, source),
                    websocket_handshake_timeout=30,
                    enable_auto_pong=True,
                    read_buffer_init_size=read_buf,
                    max_frame_size=64 * 1024 * 1024,
                )
            else:
                sock = client_socket(host, source)
                await asyncio.wait_for(self.loop.sock_connect(sock, (host, urlsplit(url).port)), 30)
                await self.loop.create_connection(lambda: SansIOClient(conn, url), sock=sock)
            ok = await asyncio.wait_for(conn.ready, 30)
        except Exception as exc:  # counted and reported
            self.note_connect_error(exc)
            conn.close()
            return None
        if not ok:
            if self.error_sample is None and isinstance(self.proto, Centrifugo):
                self.error_sample = self.proto.error_sample
            self.connect_errors += 1
            conn.close()
            return None
        return conn

    async def open_many(
        self, role: str, n: int, conc: int, read_buf: int = 16 * 1024
    ) -> tuple[list[Conn], float]:
        """n connections with at most ``conc`` handshakes in flight; (the ones that worked, seconds)."""
        slots: list[Conn | None] = [None] * n
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                slots[i] = await self.open(role, read_buf)

        t0 = perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(min(conc, n)))), self.a.connect_s)
        except TimeoutError:
            log(f"connect deadline ({self.a.connect_s} s) reached")
        return [c for c in slots if c is not None], perf_counter() - t0

    def counters(self) -> dict[str, Any]:
        out: dict[str, Any] = {"disconnects": self.disconnects, "connect_errors": self.connect_errors}
        if self.close_codes:
            out["close_codes"] = {str(k): v for k, v in sorted(self.close_codes.items())}
        if isinstance(self.proto, Centrifugo):
            out["proto_errors"] = self.proto.errors
            out["cf_pongs_sent"] = self.proto.pongs
        if self.error_sample:
            out["err_sample"] = self.error_sample
        return out


# ----------------------------------------------------------------------------- fan-out


class FanOut:
    """Publications numbered 0, 1, 2, …: deliveries counted per number, latencies as they arrive."""

    def __init__(self, gen: LoadGen, a: argparse.Namespace) -> None:
        self.gen = gen
        self.a = a
        self.count: list[int] = []  # deliveries per sequence number
        self.lat = array("q")  # ns, every delivery of the run; phases remember where they start
        self.when = array("q")  # receive time (ns) of each delivery, with --timeseries only
        # Per publication: when it was sent, and when its first and its last delivery arrived
        # (ns): the server's delay to its first subscriber, and how long its fan-out took.
        self.sent = array("q")
        self.first = array("q")
        self.last = array("q")
        self.complete_at = 0  # closed loop: deliveries that complete a message (0: open loop)
        self.on_complete: Callable[[], None] = lambda: None
        pad = max(0, a.size - 48)
        self.template = b'{"bm":"%010d%019d","ch":"bench","pad":"' + b"x" * pad + b'"}'
        self.pub: Conn | None = None

    def subscriber(self, conn: Conn) -> Callable[[bytes], None]:
        """The per-message hot path: it bounds what the generator can receive, keep it short."""
        count, lat_append, when_append = self.count, self.lat.append, self.when.append
        track = self.a.timeseries
        mark, mlen, sw, end = MARK, len(MARK), SEQ_W, SEQ_W + TS_W
        proto = self.gen.proto
        pong = proto.pong if isinstance(proto, Centrifugo) else None
        control = conn.control
        first, last = self.first, self.last

        # A frame may carry several publications, one per line (JSON escapes newlines in strings),
        # and ping lines ("{}") between them. Only single-byte scans (memchr) run over the payload:
        # searching a multi-byte needle through 64 kB costs ~60 µs, per delivery.
        def received(data: bytes) -> None:
            now = perf_counter_ns()
            i = data.find(mark)
            if i < 0:
                control(data)
                return
            if pong is not None and data[:3] == b"{}\n":
                pong(conn)
            while True:
                j = i + mlen
                seq = int(data[j : j + sw])
                lat_append(now - int(data[j + sw : j + end]))
                if track:
                    when_append(now)
                k = count[seq] + 1
                count[seq] = k
                if k == 1:
                    first[seq] = now
                last[seq] = now
                conn.rx += 1
                if k == self.complete_at:
                    self.on_complete()
                nl = data.find(b"\n", j + end)
                if nl < 0:
                    return
                if (
                    pong is not None
                    and data[nl + 1 : nl + 3] == b"{}"
                    and data[nl + 3 : nl + 4] in (b"", b"\n")
                ):
                    pong(conn)
                i = data.find(mark, nl)
                if i < 0:
                    return

        return received

    def publish(self, k: int = 1) -> None:
        assert self.pub is not None
        send, encode, count, template = self.pub.send, self.gen.proto.publish, self.count, self.template
        for _ in range(k):
            seq = len(count)
            count.append(0)
            self.first.append(0)
            self.last.append(0)
            now = perf_counter_ns()
            self.sent.append(now)
            send(encode(template % (seq, now)))

    def spread(self, s0: int, s1: int) -> dict[str, Any]:
        """Per publication of [s0, s1) that arrived: publish → first delivery (the server's
        delay before its fan-out reaches anyone) and first → last delivery (the fan-out's
        length), as p50 / p99 in ms."""
        arrived = [i for i in range(s0, s1) if self.first[i]]
        return {
            **percentiles(array("q", (self.first[i] - self.sent[i] for i in arrived)), "first_"),
            **percentiles(array("q", (self.last[i] - self.first[i] for i in arrived)), "spread_"),
        }

    async def drain(self, s0: int, s1: int, expected: int, limit_s: float) -> tuple[int, bool, float]:
        """Wait until publications [s0, s1) have ``expected`` deliveries or progress stops.

        Returns (deliveries, all arrived, time of the last progress)."""
        t0 = perf_counter()
        got, last_t = -1, t0
        while True:
            now_got = sum(self.count[s0:s1])
            now = perf_counter()
            if now_got != got:
                got, last_t = now_got, now
            if got >= expected:
                return got, True, now
            if now - t0 > limit_s or now - last_t > self.a.stall_s:
                return got, False, last_t
            await asyncio.sleep(0.01)


def timeseries(fan: FanOut, l0: int, t_start: float) -> list[dict[str, Any]]:
    """Deliveries and latency percentiles per second of receive time, over one phase."""
    buckets: dict[int, array] = {}
    origin = int(t_start * 1e9)
    for when, lat in zip(fan.when[l0:], fan.lat[l0:], strict=True):
        buckets.setdefault((when - origin) // 1_000_000_000, array("q")).append(lat)
    rows = []
    for sec in sorted(buckets):
        p = percentiles(buckets[sec], "")
        rows.append({"t": sec, "deliveries": p.pop("n"), **p})
    return rows


async def scenario_fanout(gen: LoadGen, a: argparse.Namespace) -> dict[str, Any]:
    fan = FanOut(gen, a)
    fan.pub = await gen.open("pub")
    if fan.pub is None:
        return {"error": "the publisher could not connect", **gen.counters()}
    subs, connect_s = await gen.open_many("sub", a.subs, a.conc, a.read_buf)
    log(f"fanout: {len(subs)}/{a.subs} subscribers in {connect_s:.2f} s")
    if not subs:
        return {"error": "no subscriber connected", **gen.counters()}
    for c in subs:
        c.handler = fan.subscriber(c)
    res: dict[str, Any] = {
        "subs": len(subs),
        "connect_s": round(connect_s, 3),
        "connect_per_s": round(len(subs) / connect_s, 1),
        "msg_bytes": len(fan.template % (0, 0)),
    }
    slow, healthy = subs[: a.slow], subs[a.slow :]
    n = len(healthy)

    # Warm-up: one publication must reach every subscriber (the subscriptions are in effect).
    gc.collect()
    gc.disable()  # no collector pauses inside the measurement; the loops make little garbage
    fan.publish()
    got, ok, _ = await fan.drain(0, 1, len(subs), 15)
    res["warmup_delivered"] = got
    if not ok:
        log(f"warm-up: {got}/{len(subs)} got the first publication")
    for c in slow:
        c.pause()
    if slow:
        res["slow_consumers"] = len(slow)

    def phase(
        s0: int,
        s1: int,
        l0: int,
        t0: float,
        t_pub: float,
        got: int,
        drained: bool,
        t_done: float,
        cpu: dict[str, Any],
        nominal_s: float = 0.0,
    ) -> dict[str, Any]:
        expected = (s1 - s0) * n
        # Achieved rate: deliveries / (first publication → last delivery), never over less than
        # the nominal publishing time (a step of a few messages would look infinitely fast).
        dur = max(1e-9, t_done - t0, nominal_s)
        r: dict[str, Any] = {
            "published": s1 - s0,
            "expected": expected,
            "received": got,
            "lost": expected - got,
            "drained": drained,
            "pub_s": round(t_pub - t0, 3),
            "done_s": round(t_done - t0, 3),
            "deliv_per_s": round(got / dur, 1),
            "msg_per_s": round((s1 - s0) / dur, 2),
            **percentiles(fan.lat[l0:]),
            **fan.spread(s0, s1),
            **cpu,
            "server_rss_kb": rss_kb(a.server_pid) if a.server_pid else None,
            "pub_write_backlog": fan.pub.backlog() if fan.pub else None,
            "disconnects": gen.disconnects,
            "_range": (s0, s1),
        }
        for who in ("server", "client"):
            if cpu.get(f"{who}_cpu_s") is not None and got:
                r[f"{who}_us_per_delivery"] = round(1e6 * cpu[f"{who}_cpu_s"] / got, 3)
        if a.timeseries:
            r["timeseries"] = timeseries(fan, l0, t0)
        if slow:
            r["slow_rx"] = [c.rx for c in slow]
            r["slow_closed_at_s"] = [round(c.closed_at - t0, 2) if c.closed else None for c in slow]
            r["healthy_closed"] = sum(1 for c in healthy if c.closed)
            r["healthy_min_rx"] = min(c.rx for c in healthy) if healthy else 0
        return r

    # -- open loop: a fixed pace per step, whatever the server does
    steps: list[dict[str, Any]] = []
    for target in [float(x) for x in a.rates.split(",") if x]:
        msg_rate = target / n
        total = max(1, round(msg_rate * a.step_s))
        s0, l0 = len(fan.count), len(fan.lat)
        meter = Meter(a.server_pid)
        t0 = perf_counter()
        sent = 0
        while sent < total and perf_counter() - t0 < 3 * a.step_s + 5:
            due = min(total, int((perf_counter() - t0) * msg_rate) + 1)
            if due > sent:
                fan.publish(due - sent)
                sent = due
            await asyncio.sleep(max(0.0, min(0.01, t0 + sent / msg_rate - perf_counter())))
        t_pub = perf_counter()
        s1 = len(fan.count)
        got, drained, t_done = await fan.drain(s0, s1, (s1 - s0) * n, a.drain_s)
        r = phase(s0, s1, l0, t0, t_pub, got, drained, t_done, meter.read(), (s1 - s0) / msg_rate)
        r["target_deliv_per_s"] = target
        r["target_msg_per_s"] = round(msg_rate, 2)
        steps.append(r)
        log(
            f"step {target:>8.0f}/s: got {r['deliv_per_s']:>9.0f}/s p50 {r.get('lat_p50_ms')} "
            f"p99 {r.get('lat_p99_ms')} ms lost {r['lost']} server {r['server_cpu_pct']}% "
            f"generator {r['client_cpu_pct']}%"
        )
        if not drained or r["deliv_per_s"] < 0.8 * target or (r.get("lat_p99_ms") or 0) > a.stop_p99_ms:
            r["saturated"] = True
            if not a.no_stop:
                break
    res["steps"] = steps

    # -- closed loop: --window publications in flight, the next one when one is complete
    if a.max_s > 0 and not slow:
        await asyncio.sleep(0.3)
        s0, l0 = len(fan.count), len(fan.lat)
        stop_at = [0.0]

        def next_one() -> None:
            if perf_counter() < stop_at[0]:
                fan.publish()

        fan.on_complete = next_one
        meter = Meter(a.server_pid)
        t0 = perf_counter()
        stop_at[0] = t0 + a.max_s
        fan.complete_at = n
        fan.publish(a.window)
        await asyncio.sleep(a.max_s)
        t_pub = perf_counter()
        fan.complete_at = 0
        s1 = len(fan.count)
        got, drained, t_done = await fan.drain(s0, s1, (s1 - s0) * n, a.drain_s)
        r = phase(s0, s1, l0, t0, t_pub, got, drained, t_done, meter.read())
        r["window"] = a.window
        res["max"] = r
        log(f"closed loop ({a.window} in flight): {r['deliv_per_s']:.0f}/s p99 {r.get('lat_p99_ms')} ms")

    # -- losses: late deliveries still count; what has not arrived after a bounded wait is lost
    phases = steps + ([res["max"]] if "max" in res else [])
    if phases and not slow:
        lo, hi = phases[0]["_range"][0], phases[-1]["_range"][1]
        await fan.drain(lo, hi, sum(p["expected"] for p in phases), a.final_drain_s)
    for p in phases:
        s0, s1 = p.pop("_range")
        p["received_final"] = sum(fan.count[s0:s1])
        p["lost_final"] = p["expected"] - p["received_final"]
    res["lost_final_total"] = sum(p["lost_final"] for p in phases)
    best = [
        s
        for s in steps
        if s["drained"]
        and s["lost_final"] == 0
        and s["deliv_per_s"] >= 0.9 * s["target_deliv_per_s"]
        and (s.get("lat_p99_ms") or 1e9) <= a.sustain_p99_ms
    ]
    if best:
        top = max(best, key=lambda s: s["target_deliv_per_s"])
        res["max_sustained_target_deliv_per_s"] = top["target_deliv_per_s"]
        res["max_sustained_deliv_per_s"] = top["deliv_per_s"]
    gc.enable()
    res.update(gen.counters())
    return res


# ----------------------------------------------------------------------------- request/reply


async def scenario_echo(gen: LoadGen, a: argparse.Namespace) -> dict[str, Any]:
    text = (b"hello-livehub-" + b"x" * a.size)[: a.size]
    request, reply = gen.proto.request(text)
    conns, connect_s = await gen.open_many("echo", a.clients, a.conc)
    if not conns:
        return {"error": "no client connected", **gen.counters()}
    lat = array("q")
    state = {"record": False, "stop": False, "checked": 0, "bad": 0, "idle": 0}

    def client(conn: Conn) -> Callable[[bytes], None]:
        control = conn.control

        def received(data: bytes) -> None:
            if not data.startswith(reply[:8]):  # a ping or other control message
                control(data)
                return
            now = perf_counter_ns()
            if state["checked"] < 1000:
                state["checked"] += 1
                state["bad"] += data != reply
            if state["record"]:
                lat.append(now - conn.sent_ns)
            if state["stop"]:
                state["idle"] += 1
                return
            conn.sent_ns = now
            conn.send(request)

        return received

    for c in conns:
        c.handler = client(c)
        c.sent_ns = perf_counter_ns()
        c.send(request)
    await asyncio.sleep(a.warmup)
    meter = Meter(a.server_pid)
    state["record"] = True
    t0 = perf_counter()
    await asyncio.sleep(a.duration)
    state["record"] = False
    dt = perf_counter() - t0
    cpu = meter.read()
    state["stop"] = True
    for _ in range(40):  # the round trips in flight end (bounded)
        if state["idle"] >= sum(1 for c in conns if not c.closed):
            break
        await asyncio.sleep(0.05)
    return {
        "clients": len(conns),
        "connect_s": round(connect_s, 3),
        "duration_s": round(dt, 3),
        "round_trips": len(lat),
        "rt_per_s": round(len(lat) / dt, 1),
        "bad_replies": state["bad"],
        "checked_replies": state["checked"],
        **percentiles(lat),
        **cpu,
        **gen.counters(),
    }


# ----------------------------------------------------------------------------- idle connections


async def scenario_idle(gen: LoadGen, a: argparse.Namespace) -> dict[str, Any]:
    pid = a.server_pid
    rss_cold = rss_kb(pid) if pid else None
    # Warm-up: the handshake path runs once, so lazy imports are not charged per connection.
    warm, _ = await gen.open_many("idle", 50, 50, read_buf=1024)
    for c in warm:
        c.close()
    await asyncio.sleep(1.0)
    gen.disconnects = 0
    rss0 = rss_kb(pid) if pid else None
    meter = Meter(pid)
    conns, dt = await gen.open_many("idle", a.conns, a.conc, read_buf=1024)
    cpu = meter.read()
    log(f"idle: {len(conns)}/{a.conns} connected in {dt:.2f} s")
    dropped_before = gen.disconnects
    peak = 0
    t_hold = perf_counter()
    while perf_counter() - t_hold < a.hold_s:
        await asyncio.sleep(0.5)
        peak = max(peak, (rss_kb(pid) if pid else 0) or 0)
    rss1 = rss_kb(pid) if pid else None
    ok = len(conns)
    return {
        "conns_target": a.conns,
        "conns_ok": ok,
        "alive_after_hold": sum(1 for c in conns if not c.closed),
        "hold_s": a.hold_s,
        "connect_s": round(dt, 3),
        "connect_per_s": round(ok / dt, 1) if dt > 0 else None,
        "server_rss_cold_kb": rss_cold,
        "server_rss_before_kb": rss0,
        "server_rss_after_kb": rss1,
        "server_rss_peak_hold_kb": peak or None,
        "kb_per_conn": round((rss1 - rss0) / ok, 2) if ok and rss0 and rss1 else None,
        "disconnects_during_hold": gen.disconnects - dropped_before,
        "connect_server_cpu_pct": cpu["server_cpu_pct"],
        "connect_client_cpu_pct": cpu["client_cpu_pct"],
        **gen.counters(),
    }


# ----------------------------------------------------------------------------- command line


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("picows", "websockets", "uvloop"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def loopback_only(host: str) -> None:
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise SystemExit(f"loadgen: refusing {host!r}: this generator only loads 127.0.0.0/8 or ::1")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["fanout", "echo", "idle"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18765)
    p.add_argument("--pub-port", type=int, default=0, help="fanout: the publisher connects here instead")
    p.add_argument("--proto", choices=["raw", "centrifugo"], default="centrifugo")
    p.add_argument("--cf-path", default="/connection/websocket")
    p.add_argument("--channel", default="bench")
    p.add_argument("--client", choices=["picows", "sansio"], default="picows" if picows else "sansio")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--server-pid", type=int, default=0, help="the process whose CPU and RSS are read")
    p.add_argument("--server", default="", help="label stored in the result")
    p.add_argument("--label", default="")
    p.add_argument("--meta", default="", help="a JSON object stored in the result as `meta`")
    p.add_argument("--conc", type=int, default=100, help="handshakes in flight")
    p.add_argument("--connect-s", type=float, default=180, help="bound on connecting everyone")
    p.add_argument("--src-ips", type=int, default=1, help="spread client sockets over 127.0.0.1..K")
    p.add_argument("--max-wall", type=int, default=300, help="the process ends after this many seconds")
    p.add_argument("--size", type=int, default=100, help="publication / echo payload bytes")
    g = p.add_argument_group("fanout")
    g.add_argument("--subs", type=int, default=1000)
    g.add_argument("--rates", default="10000,50000,100000,200000", help="deliveries/s per open-loop step")
    g.add_argument("--step-s", type=float, default=2.0)
    g.add_argument("--drain-s", type=float, default=5.0, help="a step waits this long at most")
    g.add_argument("--stall-s", type=float, default=1.0, help="... or this long without progress")
    g.add_argument("--final-drain-s", type=float, default=10.0)
    g.add_argument("--stop-p99-ms", type=float, default=1000.0, help="no higher step past this p99")
    g.add_argument("--sustain-p99-ms", type=float, default=100.0)
    g.add_argument("--no-stop", action="store_true", help="run every step, even past saturation")
    g.add_argument("--max-s", type=float, default=3.0, help="closed-loop phase (0: none)")
    g.add_argument("--window", type=int, default=8, help="closed loop: publications in flight")
    g.add_argument("--slow", type=int, default=0, help="subscribers that stop reading")
    g.add_argument("--timeseries", action="store_true", help="per-second latency of each step")
    g.add_argument("--read-buf", type=int, default=16 * 1024)
    g = p.add_argument_group("echo")
    g.add_argument("--clients", type=int, default=64)
    g.add_argument("--duration", type=float, default=10.0)
    g.add_argument("--warmup", type=float, default=1.0)
    g = p.add_argument_group("idle")
    g.add_argument("--conns", type=int, default=10000)
    g.add_argument("--hold-s", type=float, default=3.0)
    return p


async def run(a: argparse.Namespace) -> dict[str, Any]:
    gen = LoadGen(a)
    started = time.time()
    scenario = {"fanout": scenario_fanout, "echo": scenario_echo, "idle": scenario_idle}[a.scenario]
    res = await scenario(gen, a)
    out = {
        "scenario": "rpc" if a.scenario == "echo" and a.proto == "centrifugo" else a.scenario,
        "server": a.server,
        "label": a.label,
        "proto": a.proto,
        "client_lib": a.client,
        "uvloop": not a.no_uvloop,
        "ts": round(started, 1),
        "src_ips": a.src_ips,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "loadgen": versions(),
        **res,
    }
    if a.meta:
        out["meta"] = json.loads(a.meta)
    return out


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    loopback_only(a.host)
    if a.client == "picows" and picows is None:
        raise SystemExit("loadgen: picows is not installed (pip install -e '.[bench]'), use --client sansio")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # one descriptor per connection
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.alarm(a.max_wall)  # SIGALRM's default action ends the process: bounded whatever happens
    runner: Callable[[Any], dict[str, Any]] = asyncio.run
    if not a.no_uvloop:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            a.no_uvloop = True
    out = runner(run(a))
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)  # no graceful close of thousands of sockets: SO_LINGER 0 resets them


if __name__ == "__main__":
    main()
