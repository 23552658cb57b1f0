"""The outgoing side of one connection: a queue bounded in bytes, flushed once per loop turn
(or after ``client.write_delay``, when set, so that more messages share a frame).

Fan-out only appends already-encoded messages here and never waits. Once per event-loop
turn, every connection that got messages is flushed: what piled up is packed into one
frame (newline-separated JSON, or concatenated length-delimited Protobuf messages, as
the protocol allows) and handed to the transport, which
takes it without waiting — no task, no coroutine, no context switch per message. A
transport that reports its socket pushing back gets one task, which waits until it
drains and then keeps writing until the queue is empty. A connection whose queue grows
past its byte limit is not waited for: it is closed with 3008 (slow).

Publications of a conflating channel (the ``conflate`` option) take :meth:`Outbox.put_latest`:
while the socket takes writes they are queued like any message; while it pushes back, each
waits in a slot of its ``(channel, key)`` instead, where a newer one replaces it. Slots are
written after the queue, oldest first (a replaced value moves to the end), so a client sees
each channel's offsets rise and ends with the latest value of every key; memory stays
bounded by one message per key and ``max_keys`` keys per channel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from livehub.protocol.codec import join_frame
from livehub.protocol.codes import Disconnect, disconnect_slow, disconnect_write_error

log = logging.getLogger("livehub.core.outbox")

#: Bytes a conflating connection's socket may hold unsent (kernel and transport, each):
#: beyond that it pushes back and conflation starts. Small, so that what a slow client
#: reads is recent; 32 KiB still carries about 300 KB/s over a link of 100 ms.
CONFLATING_SEND_BUFFER = 32 * 1024


class Transport(Protocol):
    """What a session needs from the network."""

    def write(self, frame: str | bytes) -> bool:
        """Take one frame without waiting (text for str, binary for bytes). False: the socket
        pushes back, so write
        nothing more until :meth:`drained` returns."""
        ...

    async def drained(self) -> None:
        """Return once the socket takes writes again (raises if it broke)."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


class Flusher:
    """The outboxes to flush at the end of this loop turn (or after ``delay``, Centrifugo's
    ``client.write_delay``): one callback for all of them, however many messages each got.
    One per node.

    A flush that took long (a publication to thousands of sockets is one write each) holds
    the next one back for as long as it took (from 1 ms, at most ``max_hold``): messages arriving
    meanwhile then share frames, so the cost per delivery falls as the load rises instead
    of every publication paying a full round of writes. Without such load, nothing waits.

    Batching only pays under load, and it costs latency: the first subscriber would wait for
    every other one's message to be queued. So a publication's fan-out (:meth:`fan_out`)
    writes straight to each socket (:attr:`direct`) when the node has been idle since its last
    burst of writes for at least as long as that burst took (under half of its time busy
    writing); otherwise it queues, and the flush batches. A connection with anything queued
    or a socket pushing back always queues, so its messages keep their order.
    """

    __slots__ = ("_delay", "_max_hold", "_due", "_not_before", "direct", "_idle_at")

    def __init__(self, delay: float = 0.0, max_hold: float = 0.02) -> None:
        self._delay = delay
        self._max_hold = max_hold
        self._due: list[Outbox] = []
        self._not_before = 0.0
        #: True while a fan-out writes straight to the sockets (see above).
        self.direct = False
        #: When (``time.perf_counter``) the node counts as idle again after its last burst.
        self._idle_at = 0.0

    def fan_out(self, deliver: Callable[[], None]) -> None:
        """Run ``deliver`` (one publication's puts to its subscribers), writing them straight
        to the sockets when the node is idle enough (class docstring), else queued."""
        if self._delay > 0:  # client.write_delay: always batch
            deliver()
            return
        start = time.perf_counter()
        if start < self._idle_at:
            deliver()
            return
        self.direct = True
        try:
            deliver()
        finally:
            self.direct = False
            end = time.perf_counter()
            self._idle_at = end + (end - start)

    def add(self, outbox: Outbox) -> None:
        if not self._due:
            loop = asyncio.get_running_loop()
            delay = max(self._delay, self._not_before - loop.time())
            if delay > 0:
                loop.call_later(delay, self._flush, loop)
            else:
                loop.call_soon(self._flush, loop)
        self._due.append(outbox)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        start = time.perf_counter()  # the loop's clock counts whole milliseconds (uvloop)
        due, self._due = self._due, []
        for outbox in due:
            outbox.flush()
        end = time.perf_counter()
        took = end - start
        self._idle_at = max(self._idle_at, end + took)
        # under a millisecond, the timer's resolution, a hold would only add latency
        self._not_before = loop.time() + min(took, self._max_hold) if took >= 0.001 else 0.0


class Outbox:
    __slots__ = (
        "_transport",
        "_queue",
        "_size",
        "_max_size",
        "_batch",
        "_join",
        "_flusher",
        "_due",
        "_task",
        "_done",
        "_waiter",
        "_closing",
        "_latest",
        "_keys",
        "close_with",
        "peak",
        "conflated",
    )

    def __init__(
        self,
        transport: Transport,
        max_size: int,
        batch: int,
        flusher: Flusher,
        join: Callable[[list[Any]], str | bytes] = join_frame,
    ) -> None:
        self._transport = transport
        #: Encoded messages of the connection's one encoding: all str (JSON) or all bytes.
        self._queue: list[Any] = []
        self._size = 0
        self._max_size = max_size
        self._batch = batch
        #: Packs queued messages into one frame (the encoding's ``join_frame``).
        self._join = join
        self._flusher = flusher
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
        #: Conflated messages waiting while the socket pushes back: ``(channel, key)`` ->
        #: the latest message, oldest first; and how many keys of each channel wait.
        self._latest: dict[tuple[str, str], Any] = {}
        self._keys: dict[str, int] = {}
        #: Messages replaced by a newer one of their key before they were written.
        self.conflated = 0

    def put(self, message: str | bytes) -> None:
        """Queue one message; never waits. Overflow closes the connection as slow."""
        if self.close_with is not None:
            return
        self._queue.append(message)
        self._size += len(message)
        if self._size > self._max_size:
            log.info("closing slow connection: %d bytes queued", self._size)
            self.close(disconnect_slow())
            return
        if self._size > self.peak:
            self.peak = self._size
        if not self._due and self._task is None:
            if self._flusher.direct and len(self._queue) == 1 and not self._latest:
                self._write_now()
                return
            self._schedule()

    def _write_now(self) -> None:
        """The one queued message, to the socket at once (a fan-out on an idle node), framed
        as the flush frames it (``join``)."""
        try:
            if not self._transport.write(self._take()):
                self._task = asyncio.get_running_loop().create_task(self._drain())
        except Exception as exc:
            self._failed(exc)

    def conflating(self) -> None:
        """The connection subscribed to a conflating channel: keep its socket's buffers
        small (a transport that can: ``limit_send_buffer``), so slowness shows here soon."""
        limit = getattr(self._transport, "limit_send_buffer", None)
        if limit is not None:
            limit(CONFLATING_SEND_BUFFER)

    def put_latest(self, channel: str, key: str, message: str | bytes, max_keys: int) -> None:
        """Queue a publication of a conflating channel: in order while the socket takes
        writes; while it pushes back, in the slot of its key, replacing what waits there.
        A channel with more than ``max_keys`` keys waiting closes the connection as slow."""
        if self.close_with is not None:
            return
        slot = (channel, key)
        latest = self._latest
        old = latest.pop(slot, None)
        if old is not None:
            self._size -= len(old)
            self.conflated += 1
        elif self._task is None and not latest:
            self.put(message)
            return
        else:
            waiting = self._keys.get(channel, 0) + 1
            if waiting > max_keys:
                log.info("closing slow connection: %d keys of %s waiting", waiting, channel)
                self.close(disconnect_slow())
                return
            self._keys[channel] = waiting
        latest[slot] = message  # at the end: slots stay in the order of their messages
        self._size += len(message)
        if self._size > self._max_size:
            log.info("closing slow connection: %d bytes queued", self._size)
            self.close(disconnect_slow())
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
        if disconnect.code == 3008:  # slow: what is queued is dropped
            self._drop()
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

    def _drop(self) -> None:
        self._queue.clear()
        self._latest.clear()
        self._keys.clear()
        self._size = 0

    def abort(self) -> None:
        """The peer is gone: stop writing."""
        self._drop()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._finish()

    def _schedule(self) -> None:
        self._due = True
        self._flusher.add(self)

    @property
    def _pending(self) -> bool:
        return bool(self._queue or self._latest)

    def _take(self) -> str | bytes:
        """The next frame: up to ``batch`` messages, the queue's first, then the slots'."""
        queue = self._queue
        if len(queue) < self._batch:
            batch, self._queue = queue, []
            if self._latest:
                self._take_latest(batch)
        else:
            batch = queue[: self._batch]
            del queue[: self._batch]
        for message in batch:
            self._size -= len(message)
        return self._join(batch)

    def _take_latest(self, batch: list[Any]) -> None:
        """Move the oldest slots into ``batch`` until it is full."""
        latest, keys = self._latest, self._keys
        while latest and len(batch) < self._batch:
            slot = next(iter(latest))
            batch.append(latest.pop(slot))
            channel = slot[0]
            if keys[channel] == 1:
                del keys[channel]
            else:
                keys[channel] -= 1

    def flush(self) -> None:
        """Write what is queued now, while the transport takes it without waiting."""
        self._due = False
        if self._task is not None or self._done:
            return
        try:
            while self._pending:
                if not self._transport.write(self._take()):
                    self._task = asyncio.get_running_loop().create_task(self._drain())
                    return
        except Exception as exc:
            self._failed(exc)
            return
        if self.close_with is not None and not self._closing:
            self._task = asyncio.get_running_loop().create_task(self._close())

    async def _drain(self) -> None:
        """Wait until the socket takes writes again and write until the queue is empty;
        then the close frame, if one is due."""
        transport = self._transport
        try:
            while True:
                await transport.drained()
                while self._pending:
                    if not transport.write(self._take()):
                        break
                else:
                    break
        except asyncio.CancelledError:
            raise  # whoever cancels (close as slow, abort) has let go of this task
        except Exception as exc:
            self._task = None
            self._failed(exc)
            return
        if self.close_with is not None and not self._closing:
            await self._close()
        else:
            self._task = None

    async def _close(self) -> None:
        """Send the close frame (a slow client's, at once: its socket is not waited for)."""
        assert self.close_with is not None
        self._closing = True
        try:
            await self._transport.close(self.close_with.code, self.close_with.reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("close failed: %r", exc)
        finally:
            if self._task is asyncio.current_task():
                self._task = None
            self._finish()

    def _failed(self, exc: Exception) -> None:
        """The socket broke under us: nothing more can be said to the peer."""
        log.debug("write failed: %r", exc)
        self._drop()
        if self.close_with is None:
            self.close_with = disconnect_write_error()
        self._finish()
