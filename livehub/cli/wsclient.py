"""The client side of the protocol, as much as ``livehub sub`` and the load generator need:
connect, subscribe to one channel, read the frames that follow."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI


class ClientRefused(Exception):
    """The server refused: an error reply, or the connection closed with a code."""


def close_reason(exc: ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is None:
        return "the connection was lost"
    return f"{rcvd.code} {rcvd.reason}".strip()


async def open_client(
    url: str,
    channel: str,
    *,
    token: str = "",
    sub_token: str = "",
    name: str = "livehub-cli",
    join_leave: bool = False,
    open_timeout: float = 10.0,
    loopback_only: bool = False,
) -> tuple[ClientConnection, dict[str, Any], list[dict[str, Any]]]:
    """Connect and subscribe to ``channel``; returns the socket, the connect result and any
    pushes that came with the replies. Raises ClientRefused (refused), OSError (unreachable)."""
    try:
        ws = await connect(
            url,
            open_timeout=open_timeout,
            ping_interval=None,  # the protocol has its own pings
            compression=None,
            max_size=None,
            max_queue=None if loopback_only else 64,
            proxy=None if loopback_only else True,
            user_agent_header="livehub-cli",
        )
    except (InvalidURI, InvalidHandshake) as exc:
        raise ClientRefused(str(exc)) from None
    connect_req: dict[str, Any] = {"name": name}
    if token:
        connect_req["token"] = token
    sub_req: dict[str, Any] = {"channel": channel}
    if sub_token:
        sub_req["token"] = sub_token
    if join_leave:
        sub_req["join_leave"] = True
    frame = orjson.dumps({"id": 1, "connect": connect_req}) + b"\n"
    frame += orjson.dumps({"id": 2, "subscribe": sub_req})
    pushes: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    try:
        await ws.send(frame.decode())
        pending = {1, 2}
        async with asyncio.timeout(open_timeout):
            while pending:
                for msg in decode_frame(await ws.recv()):
                    msg_id = msg.get("id")
                    if msg_id in pending:
                        pending.discard(msg_id)
                        error = msg.get("error")
                        if error:
                            what = "connect" if msg_id == 1 else f"subscribe to {channel!r}"
                            raise ClientRefused(f"{what}: error {error.get('code')}: {error.get('message')}")
                        if msg_id == 1:
                            result = msg.get("connect", {})
                    elif "push" in msg:
                        pushes.append(msg["push"])
                    elif not msg and result.get("pong"):
                        await ws.send("{}")
    except ConnectionClosed as exc:
        raise ClientRefused(f"the server closed the connection: {close_reason(exc)}") from None
    except TimeoutError:
        await ws.close()
        raise ClientRefused(f"no reply to connect/subscribe within {open_timeout:g}s") from None
    except BaseException:
        await ws.close()
        raise
    return ws, result, pushes


def decode_frame(frame: str | bytes) -> list[dict[str, Any]]:
    """The messages of one frame (newline-separated JSON); ``{}`` is a server ping."""
    if isinstance(frame, bytes):
        frame = frame.decode()
    return [orjson.loads(line) for line in frame.split("\n") if line.strip()]
