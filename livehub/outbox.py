"""The outgoing side of one connection: a queue bounded in bytes, flushed once per loop turn
(or after ``client.write_delay``, when set, so that more messages share a frame).

Fan-out only appends already-encoded messages here and never waits. Once per event-loop
turn, every connection that got messages is flushed: what piled up is packed into one
frame (newline-separated, as the protocol allows) and handed to the transport. A send
that completes without waiting — the usual case, the socket being writable — costs no
task and no context switch; only a connection whose socket pushes back gets a task,
which keeps draining it until it catches up. A connection whose queue grows past its
byte limit is not waited for: it is closed with 3008 (slow).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Coroutine
from typing import Any, Protocol

from livehub.protocol.codec import join_frame
from livehub.protocol.codes import DISCONNECT_SLOW, Disconnect

log = logging.getLogger("livehub.outbox")


class Transport(Protocol):
    """What a session needs from the network: send a text frame, close with a code."""

    async def send(self, frame: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


#: Outboxes waiting for this loop turn's flush, per event loop.
_due: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Outbox]] = weakref.WeakKeyDictionary()


def _flush_due(loop: asyncio.AbstractEventLoop) -> None:
    due = _due.pop(loop, [])
    for outbox in due:
        outbox.flush()


class Outbox:
    __slots__ = (
        "_transport",
        "_queue",
        "_size",
        "_max_size",
        "_batch",
        "_delay",
        "_due",
        "_task",
        "_done",
        "_waiter",
        "_closing",
        "close_with",
        "peak",
    )

    def __init__(self, transport: Transport, max_size: int, batch: int, delay: float = 0.0) -> None:
        self._transport = transport
        self._queue: list[str] = []
        self._size = 0
        self._max_size = max_size
        self._batch = batch
        self._delay = delay
        self._due = False
        #: Only while the socket pushes back: the task draining this connection.
        self._task: asyncio.Task[None] | None = None
        #: True once nothing more will be written; ``wait_closed`` creates a waiter only if asked.
        self._done = False
        self._waiter: asyncio.Future[None] | None = None
        self._closing = False
        #: Set once the connection is to be closed; the close frame goes after the queue.
        self.close_with: Disconnect | None = None
        self.peak = 0

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
        if not self._due and self._task is None:
            self._schedule()

    def close(self, disconnect: Disconnect) -> None:
        """Flush what is queued (unless the client is too slow for that), then close."""
        if self.close_with is not None or self._done:
            return
        self.close_with = disconnect
        if disconnect is DISCONNECT_SLOW:
            self._queue.clear()
            self._size = 0
            if self._task is not None:
                # The writer may be stuck in a send the peer never takes: abandon it, close now.
                self._task.cancel()
                self._task = None
        if not self._due and self._task is None:
            self._schedule()

    @property
    def size(self) -> int:
        return self._size

    async def wait_closed(self) -> None:
        """Wait until the close frame went out, the socket failed, or the peer went away."""
        if self._done:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)

    def _finish(self) -> None:
        self._done = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def abort(self) -> None:
        """The peer is gone: stop writing."""
        self._queue.clear()
        self._size = 0
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._finish()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        due = _due.get(loop)
        if due is None:
            due = _due[loop] = []
            if self._delay > 0:
                loop.call_later(self._delay, _flush_due, loop)
            else:
                loop.call_soon(_flush_due, loop)
        due.append(self)
        self._due = True

    def _next_write(self) -> Coroutine[Any, Any, None] | None:
        """The next send (a batch of queued messages), the close, or None when done for now."""
        queue = self._queue
        if queue:
            if len(queue) <= self._batch:
                batch, self._queue = queue, []
            else:
                batch = queue[: self._batch]
                del queue[: self._batch]
            for message in batch:
                self._size -= len(message)
            return self._transport.send(join_frame(batch))
        if self.close_with is not None and not self._closing:
            self._closing = True
            return self._transport.close(self.close_with.code, self.close_with.reason)
        return None

    def flush(self) -> None:
        """Write what is queued now, synchronously while the transport does not push back."""
        self._due = False
        if self._task is not None or self._done:
            return
        while (write := self._next_write()) is not None:
            try:
                waiting = write.send(None)
            except StopIteration:
                continue
            except Exception as exc:
                self._failed(exc)
                return
            self._task = asyncio.get_running_loop().create_task(self._drain(write, waiting))
            return
        if self._closing:
            self._finish()

    async def _drain(self, write: Coroutine[Any, Any, None], waiting: Any) -> None:
        """Finish a send that had to wait, then keep writing until the queue is empty."""
        current: Coroutine[Any, Any, None] | None = write
        try:
            await _resume(write, waiting)
            while (current := self._next_write()) is not None:
                await current
            if self._closing:
                self._finish()
        except asyncio.CancelledError:
            if current is not None:
                current.close()
            raise
        except Exception as exc:
            self._failed(exc)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def _failed(self, exc: Exception) -> None:
        """The socket broke under us: nothing more can be said to the peer."""
        log.debug("write failed: %r", exc)
        self._queue.clear()
        self._size = 0
        if self.close_with is None:
            self.close_with = Disconnect(3009, "write error")
        self._finish()


async def _resume(write: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Drive a coroutine that was started by hand and is waiting on ``waiting``."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                # What a Task does with a yielded future before it waits on it.
                waiting._asyncio_future_blocking = False
                await waiting
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            try:
                waiting = write.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting = write.send(None)
        except StopIteration:
            return
