"""Test an app that embeds livehub: many protocol clients in one async test, no network.

    async with HubTestClient(app) as hub:
        alice = await hub.connect(headers={"authorization": "Bearer alice"})
        bob = await hub.connect()
        await alice.subscribe("chat:lobby")
        await bob.publish("chat:lobby", {"text": "hi"})
        assert (await alice.next_publication())["data"] == {"text": "hi"}

The client drives the app through ASGI directly (lifespan included), speaks the same
JSON protocol as the SDKs, answers server pings by itself, and every wait has a timeout
so a test fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.types import ASGIApp, Message


class ProtocolError(Exception):
    """An error reply: ``code`` and ``message`` as the server sent them."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionClosed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed: {code} {reason}")
        self.code = code
        self.reason = reason


async def _run(app: ASGIApp, scope: dict[str, Any], receive: Any, send: Any) -> None:
    await app(scope, receive, send)


class HubTestClient:
    def __init__(self, app: ASGIApp, timeout: float = 2.0) -> None:
        self.app = app
        self.timeout = timeout
        self._state: dict[str, Any] = {}
        self._lifespan_in: asyncio.Queue[Message] = asyncio.Queue()
        self._lifespan_out: asyncio.Queue[Message] = asyncio.Queue()
        self._lifespan: asyncio.Task[None] | None = None
        self._connections: list[TestConnection] = []

    async def __aenter__(self) -> HubTestClient:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self._state}
        self._lifespan = asyncio.create_task(
            _run(self.app, scope, self._lifespan_in.get, self._lifespan_out.put)
        )
        await self._lifespan_in.put({"type": "lifespan.startup"})
        message = await asyncio.wait_for(self._lifespan_out.get(), self.timeout * 5)
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"app failed to start: {message.get('message', message)}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for conn in self._connections:
            await conn.close()
        await self._lifespan_in.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._lifespan_out.get(), self.timeout * 5)
        if self._lifespan is not None:
            self._lifespan.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._lifespan

    async def connect(
        self,
        path: str = "/connection/websocket",
        *,
        token: str = "",
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        handshake: bool = True,
        connect_headers: Mapping[str, str] | None = None,
    ) -> TestConnection:
        """Open a WebSocket and (unless ``handshake=False``) send the protocol's connect command.

        ``headers`` are the handshake's; ``connect_headers`` go inside the connect command, as
        the SDKs' ``headers`` option sends them (headers emulation: ``client.emulated_headers``)."""
        conn = TestConnection(self, path, dict(headers or {}), dict(query or {}))
        self._connections.append(conn)
        await conn.open()
        if handshake:
            params: dict[str, Any] = {}
            if token:
                params["token"] = token
            if data is not None:
                params["data"] = data
            if connect_headers:
                params["headers"] = dict(connect_headers)
            conn.connect_result = await conn.command("connect", params)
        return conn


class TestConnection:
    __test__ = False  # not a pytest test class

    def __init__(
        self, client: HubTestClient, path: str, headers: dict[str, str], query: dict[str, str]
    ) -> None:
        self.client = client
        self.timeout = client.timeout
        self.path = path
        self.headers = {"host": "testserver", **{k.lower(): v for k, v in headers.items()}}
        self.query = query
        self.connect_result: dict[str, Any] = {}
        self.pushes: deque[dict[str, Any]] = deque()
        self.closed: ConnectionClosed | None = None
        self._ids = itertools.count(1)
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._replies: dict[int, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def client_id(self) -> str:
        return str(self.connect_result.get("client", ""))

    async def open(self) -> None:
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "http_version": "1.1",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": urlencode(self.query).encode(),
            "headers": [(k.encode(), v.encode()) for k, v in self.headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "subprotocols": [],
            "state": dict(self.client._state),
        }
        self._task = asyncio.create_task(_run(self.client.app, scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "websocket.connect"})
        message = await self._next_message()
        if message["type"] == "websocket.close":
            self.closed = ConnectionClosed(message.get("code", 1000), message.get("reason") or "")
            raise self.closed
        if message["type"] != "websocket.accept":
            raise RuntimeError(f"unexpected ASGI message {message['type']}")

    async def _next_message(self) -> Message:
        get = asyncio.ensure_future(self._from_app.get())
        waiting = {get, self._task} if self._task else {get}
        done, _ = await asyncio.wait(waiting, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            return get.result()
        get.cancel()
        if self._task in done and self._task is not None:
            self._task.result()  # raises what the app raised
            raise ConnectionClosed(1006, "the app returned without closing")
        raise TimeoutError(f"nothing received within {self.timeout} s")

    async def send_raw(self, text: str) -> None:
        await self._to_app.put({"type": "websocket.receive", "text": text})

    async def _pump(self) -> None:
        """Read one frame: pings are answered, replies filed by id, pushes queued."""
        if self.closed is not None:
            raise self.closed
        message = await self._next_message()
        if message["type"] == "websocket.close":
            self.closed = ConnectionClosed(message.get("code", 1000), message.get("reason") or "")
            raise self.closed
        for line in message.get("text", "").split("\n"):
            obj = orjson.loads(line)
            if obj.get("id"):
                self._replies[obj["id"]] = obj
            elif "push" in obj:
                self.pushes.append(obj["push"])
            else:
                await self.send_raw("{}")

    async def command(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one command and return its result; an error reply raises ProtocolError."""
        cid = next(self._ids)
        await self.send_raw(orjson.dumps({"id": cid, method: params}).decode())
        async with asyncio.timeout(self.timeout):
            while cid not in self._replies:
                await self._pump()
        reply = self._replies.pop(cid)
        if "error" in reply:
            raise ProtocolError(reply["error"]["code"], reply["error"]["message"])
        result: dict[str, Any] = reply[method]
        return result

    async def subscribe(self, channel: str, **params: Any) -> dict[str, Any]:
        return await self.command("subscribe", {"channel": channel, **params})

    async def unsubscribe(self, channel: str) -> dict[str, Any]:
        return await self.command("unsubscribe", {"channel": channel})

    async def publish(self, channel: str, data: Any) -> dict[str, Any]:
        return await self.command("publish", {"channel": channel, "data": data})

    async def rpc(self, method: str, data: Any = None) -> Any:
        return (await self.command("rpc", {"method": method, "data": data})).get("data")

    async def history(self, channel: str, **params: Any) -> dict[str, Any]:
        return await self.command("history", {"channel": channel, **params})

    async def presence(self, channel: str) -> dict[str, Any]:
        result: dict[str, Any] = (await self.command("presence", {"channel": channel}))["presence"]
        return result

    async def next_push(self, kind: str | None = None, channel: str | None = None) -> dict[str, Any]:
        """The next push (of ``kind``, e.g. "pub" or "join", in ``channel``), waiting up to the timeout."""
        async with asyncio.timeout(self.timeout):
            while True:
                while self.pushes:
                    push = self.pushes.popleft()
                    if (kind is None or kind in push) and (channel is None or push.get("channel") == channel):
                        return push
                await self._pump()

    async def next_publication(self, channel: str | None = None) -> dict[str, Any]:
        """The next publication (``{"data": ..., "offset": ..., "info": ...}``)."""
        pub: dict[str, Any] = (await self.next_push("pub", channel))["pub"]
        return pub

    async def wait_closed(self) -> ConnectionClosed:
        """Wait for the server to close the connection; returns the code and reason."""
        async with asyncio.timeout(self.timeout):
            while self.closed is None:
                with contextlib.suppress(ConnectionClosed):
                    await self._pump()
        return self.closed

    async def close(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._to_app.put({"type": "websocket.disconnect", "code": 1000})
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(self._task), self.timeout)
        if not self._task.done():
            self._task.cancel()
