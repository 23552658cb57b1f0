"""The outgoing side of one connection: a queue bounded in bytes, drained by one writer.

Fan-out only appends already-encoded messages here and never waits. The writer packs
what piled up into one frame (newline-separated, as the protocol allows), so a busy
connection costs one send per batch rather than one per message. A connection whose
queue grows past its byte limit is not waited for: it is closed with 3008 (slow).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from livehub.protocol.codec import join_frame
from livehub.protocol.codes import DISCONNECT_SLOW, Disconnect

log = logging.getLogger("livehub.outbox")


class Transport(Protocol):
    """What a session needs from the network: send a text frame, close with a code."""

    async def send(self, frame: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Outbox:
    __slots__ = (
        "_transport",
        "_queue",
        "_size",
        "_max_size",
        "_batch",
        "_wake",
        "_task",
        "close_with",
        "peak",
    )

    def __init__(self, transport: Transport, max_size: int, batch: int) -> None:
        self._transport = transport
        self._queue: deque[str] = deque()
        self._size = 0
        self._max_size = max_size
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Set once the connection is to be closed; the writer sends it after flushing.
        self.close_with: Disconnect | None = None
        self.peak = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._write())

    def put(self, message: str) -> None:
        """Queue one message; never waits. Overflow closes the connection as slow."""
        if self.close_with is not None:
            return
        self._queue.append(message)
        self._size += len(message)
        if self._size > self._max_size:
            log.info("closing slow connection: %d bytes queued", self._size)
            self.close(DISCONNECT_SLOW)
            return
        if self._size > self.peak:
            self.peak = self._size
        self._wake.set()

    def close(self, disconnect: Disconnect) -> None:
        """Flush what is queued (unless the client is too slow for that), then close."""
        if self.close_with is not None:
            return
        self.close_with = disconnect
        if disconnect is DISCONNECT_SLOW:
            self._queue.clear()
            self._size = 0
            if self._task is not None and not self._task.done():
                # The writer may be stuck in a send the peer never takes: abandon it and close now.
                self._task.cancel()
                self._task = asyncio.get_running_loop().create_task(self._close_now(disconnect))
                return
        self._wake.set()

    @property
    def size(self) -> int:
        return self._size

    async def wait_closed(self) -> None:
        """Wait until the writer has finished (closed the socket, failed, or was aborted)."""
        if self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    def abort(self) -> None:
        """The peer is gone: stop writing."""
        if self._task is not None:
            self._task.cancel()

    async def _close_now(self, disconnect: Disconnect) -> None:
        try:
            await self._transport.close(disconnect.code, disconnect.reason)
        except Exception as exc:
            log.debug("close failed: %r", exc)

    async def _write(self) -> None:
        queue = self._queue
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while queue:
                    n = min(len(queue), self._batch)
                    batch = [queue.popleft() for _ in range(n)]
                    for message in batch:
                        self._size -= len(message)
                    await self._transport.send(join_frame(batch))
                if self.close_with is not None:
                    await self._transport.close(self.close_with.code, self.close_with.reason)
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket broke under us: nothing left to say to the peer
            log.debug("write failed: %r", exc)
            if self.close_with is None:
                self.close_with = Disconnect(3009, "write error")
