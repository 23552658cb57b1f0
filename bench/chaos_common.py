"""Pieces of the chaos scripts (``bench/chaos_*.py``): ``livehub serve`` processes, a
subscriber that recovers as the SDKs do, a numbered publisher and the offsets audit.

Everything listens on and connects to 127.0.0.1; every process is started in its own
session and killed with its group by :meth:`Servers.close`; every wait is bounded.

The subscriber (:class:`Subscriber`, on picows) keeps its channel's stream position across
connections: when its connection drops it reconnects after a jittered backoff to the next
node of its list and sends ``connect`` + ``subscribe`` with ``recover: true``, the last
offset and epoch it saw, as centrifuge-js does; an ``unsubscribe`` push with a code of 2500
or more (the server asks it to resubscribe) is answered the same way on the same connection.

The offsets audit: a subscriber follows its channel's offsets. A publication whose offset
is not the next one is a gap, unless the server said ``recovered: false`` (then the client
was told: the gap is *reported*, and the position starts again where the reply says).
After the publisher stops, the position of every subscriber must reach the last offset.
``lost`` counts offsets that were skipped without the client being told: the figure that
must be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import free_port  # noqa: E402

try:
    import picows
except ImportError:  # pragma: no cover - the scripts say so
    picows = None

API_KEY = "chaos-key"
#: The namespace the chaos scripts use: history kept long enough for any outage they cause.
NAMESPACE = {
    "name": "stream",
    "history_size": 10000,
    "history_ttl": "600s",
    "force_recovery": True,
    "allow_subscribe_for_client": True,
}


def config(ping_interval: str = "25s", pong_timeout: str = "8s", **client: Any) -> dict[str, Any]:
    """A server config for the chaos runs: anonymous clients (``insecure``), the HTTP API."""
    return {
        "client": {
            "insecure": True,
            "ping_interval": ping_interval,
            "pong_timeout": pong_timeout,
            "channel_position_check_delay": "1s",
            **client,
        },
        "http_api": {"key": API_KEY},
        "channel": {"namespaces": [NAMESPACE]},
    }


def rss_kb(pid: int) -> int:
    """Resident memory of a process, KB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """The direct children of a process (``--workers`` parents)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def tree_rss_kb(pid: int) -> int:
    return rss_kb(pid) + sum(tree_rss_kb(c) for c in children(pid))


def cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process and its children so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_s(c) for c in children(pid))


# -- livehub serve processes


class Server:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.port, self.proc, self.log = port, proc, log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


class Servers:
    """``livehub serve`` processes sharing one config; ``close()`` kills what is left."""

    def __init__(self, tmp: Path, cfg: dict[str, Any]) -> None:
        self.tmp = tmp
        self.config = tmp / "chaos.json"
        self.config.write_text(json.dumps(cfg))
        self.all: list[Server] = []

    def spawn(self, engine: str, workers: int = 1, port: int = 0, log_level: str = "warning") -> Server:
        port = port or free_port()
        log = self.tmp / f"serve-{port}-{len(self.all)}.log"
        cmd = [sys.executable, "-m", "livehub", "serve", "--config", str(self.config)]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", log_level]
        cmd += ["--engine", engine, "--workers", str(workers)]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = Server(port, proc, log)
        self.all.append(server)
        return server

    def wait_ready(self, server: Server, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not server.alive():
                raise RuntimeError(f"livehub serve exited:\n{server.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError, ValueError):
                if "result" in api(server.port, "info"):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"livehub serve on {server.port} not answering within {within}s")

    def kill(self, server: Server) -> None:
        """kill -9 the process group, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.proc.wait(10)

    def close(self) -> None:
        for s in self.all:
            if s.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(s.pid, signal.SIGTERM)
        for s in self.all:
            try:
                s.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(s.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.proc.wait(5)


def api(port: int, method: str, timeout: float = 5.0, **params: Any) -> dict[str, Any]:
    """One HTTP API call (blocking; http.client keeps it dependency-free)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = json.dumps(params)
        conn.request(
            "POST", f"/api/{method}", body, {"X-API-Key": API_KEY, "Content-Type": "application/json"}
        )
        reply: dict[str, Any] = json.loads(conn.getresponse().read())
        return reply
    finally:
        conn.close()


# -- the numbered publisher


class Publisher:
    """Publishes ``{"n": seq}`` to ``channels`` round robin at ``rate``/s through the HTTP API
    of ``ports`` (the next port when one fails), in a thread so the clients' loop does not
    pace it. ``published[channel]`` is the last offset the API answered."""

    def __init__(self, ports: list[int], channels: list[str], rate: float) -> None:
        self.ports, self.channels, self.rate = ports, channels, rate
        self.published: dict[str, int] = {}
        self.epochs: dict[str, str] = {}
        self.sent = self.failed = 0
        self.fail_sample = ""
        self._stop = False
        import threading

        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._thread.join(30)

    def _run(self) -> None:
        import http.client

        period = 1.0 / self.rate
        next_at = time.monotonic()
        port_i = 0
        conn: http.client.HTTPConnection | None = None
        seq = 0
        while not self._stop:
            channel = self.channels[seq % len(self.channels)]
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.ports[port_i], timeout=2)
                body = json.dumps({"channel": channel, "data": {"n": seq}})
                conn.request("POST", "/api/publish", body, {"X-API-Key": API_KEY})
                reply = json.loads(conn.getresponse().read())
                result = reply.get("result")
                if result is None:
                    raise RuntimeError(str(reply))
                self.published[channel] = result["offset"]  # the last one: a new epoch starts again
                self.epochs[channel] = result["epoch"]
                self.sent += 1
                seq += 1
            except Exception as exc:  # counted; the next port is tried
                self.failed += 1
                self.fail_sample = self.fail_sample or repr(exc)[:200]
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                port_i = (port_i + 1) % len(self.ports)
                time.sleep(0.05)
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()


# -- the recovering subscriber


def client_socket(source: str | None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # no TIME_WAIT pile-up
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if source:
        s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
        s.bind((source, 0))
    s.setblocking(False)
    return s


class Subscriber:
    """One client subscribed to one channel, following its offsets across reconnects."""

    __slots__ = (
        "ports",
        "port_i",
        "channel",
        "source",
        "offset",
        "epoch",
        "subscribed",
        "connected_port",
        "connections",
        "lost",
        "duplicates",
        "unrecovered",
        "recovered",
        "resubscribes",
        "down_at",
        "back_after",
        "transport",
        "received",
        "attempts",
        "failures",
        "failure_sample",
        "closes",
        "last_down_at",
        "attempt_at",
        "opened_at",
        "phases",
        "errors",
        "sub_retries",
        "back_at",
        "on_back",
        "stopping",
    )

    def __init__(self, ports: list[int], channel: str, source: str | None = None) -> None:
        self.ports = ports
        self.port_i = 0
        self.channel = channel
        self.source = source
        self.offset = -1  # not positioned yet
        self.epoch = ""
        self.subscribed = False
        self.connected_port = 0
        self.connections = 0
        self.lost = 0  # offsets skipped without being told
        self.duplicates = 0
        self.unrecovered = 0  # times told recovered: false
        self.recovered = 0  # times recovered: true
        self.resubscribes = 0  # unsubscribe pushes >= 2500 answered
        self.down_at = 0.0  # when the connection (or subscription) was lost
        self.back_after: list[float] = []  # seconds from each loss to subscribed again
        self.transport: Any = None
        self.received = 0
        self.attempts = 0
        self.failures = 0
        self.failure_sample = ""
        self.closes: dict[int, int] = {}  # close codes the server sent
        self.last_down_at = 0.0  # when the last loss was noticed
        self.attempt_at = self.opened_at = 0.0
        #: per reconnect: (seconds to the WebSocket upgrade, seconds from it to the subscribe reply)
        self.phases: list[tuple[float, float]] = []
        self.errors = 0  # error replies
        self.sub_retries = 0  # subscribes retried after an error
        self.back_at = 0.0  # when the last loss ended
        self.on_back: Callable[[Subscriber], None] | None = None
        self.stopping = False

    # the wire

    def subscribe_cmd(self, cmd_id: int) -> bytes:
        sub: dict[str, Any] = {"channel": self.channel}
        if self.offset >= 0:
            sub.update(recover=True, offset=self.offset, epoch=self.epoch)
        return orjson.dumps({"id": cmd_id, "subscribe": sub})

    def opening(self) -> bytes:
        return b'{"id":1,"connect":{"name":"chaos"}}\n' + self.subscribe_cmd(2)

    def on_frame(self, data: bytes) -> None:
        for line in data.split(b"\n"):
            if not line:
                continue
            if line == b"{}":
                self.send(b"{}")
                continue
            msg = orjson.loads(line)
            push = msg.get("push")
            if push is not None:
                if "pub" in push:
                    self.publication(push["pub"])
                elif "unsubscribe" in push:
                    self.unsubscribed(push["unsubscribe"].get("code", 0))
                continue
            if "error" in msg:
                self.errors += 1
                if msg.get("id") == 1:  # a refused connect: start again elsewhere
                    if self.transport is not None:
                        self.transport.disconnect(graceful=False)
                else:  # a refused subscribe: again after a jittered backoff, as the SDKs do
                    self.sub_retries += 1
                    delay = min(5.0, 0.5 * 2 ** min(self.sub_retries, 4)) * random.uniform(0.5, 1.0)
                    transport = self.transport
                    asyncio.get_running_loop().call_later(delay, self.retry_subscribe, transport)
                continue
            sub = msg.get("subscribe")
            if sub is not None:
                self.subscribe_reply(sub)

    def subscribe_reply(self, result: dict[str, Any]) -> None:
        was_positioned = self.offset >= 0
        epoch = result.get("epoch", "")
        if was_positioned and result.get("recovered"):
            self.recovered += 1
            for pub in result.get("publications", ()):
                self.publication(pub)
        elif was_positioned:
            # told: no recovery; the position starts again at the top the reply gives
            self.unrecovered += 1
            self.offset = int(result.get("offset", 0))
        else:
            self.offset = int(result.get("offset", 0))
        self.epoch = epoch
        self.subscribed = True
        self.sub_retries = 0
        if self.down_at:
            now = self.back_at = time.monotonic()
            self.back_after.append(now - self.down_at)
            self.phases.append((self.opened_at - self.attempt_at, now - self.opened_at))
            self.down_at = 0.0
            if self.on_back is not None:
                self.on_back(self)

    def publication(self, pub: dict[str, Any]) -> None:
        offset = int(pub.get("offset", 0))
        self.received += 1
        if offset <= self.offset:
            self.duplicates += 1
            return
        if self.offset >= 0 and offset > self.offset + 1:
            self.lost += offset - self.offset - 1
        self.offset = offset

    def unsubscribed(self, code: int) -> None:
        self.subscribed = False
        if code >= 2500:  # the server asks for a resubscribe: with recovery, as the SDKs do
            self.resubscribes += 1
            self.down_at = self.down_at or time.monotonic()
            self.send(self.subscribe_cmd(3))

    def retry_subscribe(self, transport: Any) -> None:
        if transport is self.transport and not self.subscribed and not self.stopping:
            self.send(self.subscribe_cmd(3))

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.send(picows.WSMsgType.TEXT, data)

    # the connection

    async def run(self) -> None:
        """Connect, and reconnect whenever the connection ends, until ``stopping``."""
        delay = 0.0
        while not self.stopping:
            if delay:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            port = self.ports[self.port_i % len(self.ports)]
            self.attempts += 1
            self.attempt_at = time.monotonic()
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            try:
                await picows.ws_connect(
                    lambda done=done: _Listener(self, done),  # type: ignore[misc]
                    f"ws://127.0.0.1:{port}/connection/websocket",
                    socket_factory=lambda _url: client_socket(self.source),
                    websocket_handshake_timeout=10,
                    enable_auto_pong=True,
                    read_buffer_init_size=4096,
                )
            except Exception as exc:
                self.failures += 1
                self.failure_sample = repr(exc)[:200]
                self.next_node()  # that node does not answer: another one
                delay = min(5.0, max(0.5, delay * 2))
                continue
            self.connections += 1
            self.connected_port = port
            delay = 0.0
            await done  # the connection ended
            self.transport = None
            self.subscribed = False
            self.connected_port = 0
            if not self.stopping:
                self.down_at = self.down_at or time.monotonic()
                self.last_down_at = time.monotonic()
                self.next_node()
                delay = 1.0  # the SDKs' first reconnect: between 0.5 and 1 s (min delay + jitter)

    def next_node(self) -> None:
        """Another node, at random (a load balancer's choice): the herd spreads over the rest."""
        if len(self.ports) > 1:
            self.port_i += random.randrange(1, len(self.ports))

    def close(self) -> None:
        self.stopping = True
        if self.transport is not None:
            self.transport.disconnect(graceful=False)


if picows is not None:

    class _Listener(picows.WSListener):  # type: ignore[misc,name-defined]
        def __init__(self, sub: Subscriber, done: asyncio.Future[None]) -> None:
            super().__init__()
            self.sub, self.done = sub, done

        def on_ws_connected(self, transport: Any) -> None:
            self.sub.transport = transport
            self.sub.opened_at = time.monotonic()
            transport.send(picows.WSMsgType.TEXT, self.sub.opening())

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == picows.WSMsgType.TEXT:
                self.sub.on_frame(frame.get_payload_as_bytes())
            elif frame.msg_type == picows.WSMsgType.CLOSE:
                code = frame.get_close_code()
                self.sub.closes[code] = self.sub.closes.get(code, 0) + 1
                transport.send_close(code)
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            if not self.done.done():
                self.done.set_result(None)


def audit(subs: list[Subscriber], published: dict[str, int], epochs: dict[str, str]) -> dict[str, Any]:
    """The offsets audit once the publisher stopped and deliveries drained: every subscriber
    at the last offset of its channel (else the missing tail counts as lost)."""
    lost = sum(s.lost for s in subs)
    tail = 0
    behind = 0
    for s in subs:
        top = published.get(s.channel, 0)
        if s.epoch == epochs.get(s.channel) and s.offset < top:
            tail += top - s.offset
            behind += 1
        elif s.epoch != epochs.get(s.channel):
            behind += 1
    return {
        "lost_silently": lost + tail,
        "lost_gaps": lost,
        "lost_tail": tail,
        "subscribers_behind_or_other_epoch": behind,
        "duplicates": sum(s.duplicates for s in subs),
        "told_recovered_false": sum(s.unrecovered for s in subs),
        "recovered_true": sum(s.recovered for s in subs),
        "resubscribes_2500": sum(s.resubscribes for s in subs),
        "received": sum(s.received for s in subs),
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def loop_runner() -> Callable[[Any], Any]:
    try:
        import uvloop

        return uvloop.run  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.run


def raise_nofile() -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
