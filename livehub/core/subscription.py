"""A connection's subscription to one channel: where it is in the channel's stream, and what
it does with each publication that reaches the node.

Every decision about a publication and a subscriber's position is made here, by
:func:`decide`, for the three places that meet one: the node's fan-out (:func:`fan_out`),
the release of what arrived while the subscribe reply was being built (:func:`release`),
and the periodic position check of a clustered node (:meth:`Subscription.drift`).

A subscription is in one of three states (:class:`SubscriptionState`):

* SUBSCRIBING — the subscribe reply is being built (history read, recovery): publications
  are held in ``pending``, to be released in order once the reply is queued, so that
  nothing falls between the stream position in the reply and the live publications;
* LIVE — publications go out as they come;
* LOST — a gap in the offsets, or a new epoch, was seen: the client is being unsubscribed
  with 2500 (it resubscribes and recovers, or learns that it cannot) and gets nothing more.

Its fields are public to read, and written only by this module.

Fan-out is the hot path (one publication, thousands of subscribers), so :func:`fan_out`
does not call :func:`decide` for the common case: a subscription keeps two derived
fields, ``free`` (LIVE without a position: it takes everything) and ``next`` (LIVE with a
position: the offset the next publication of its epoch must have; -1 otherwise). A
publication they let through is one :func:`decide` delivers (tests/test_subscription.py
checks that it always is); any other is given to :func:`decide`.

On a conflating channel (the ``conflate`` option) what :func:`decide` delivers is handed to
the outbox as the latest value of its key (``Outbox.put_latest``): whether the client gets
every publication or only the latest of each key is the outbox's delivery policy, decided
by how fast the socket takes writes, not here. The position kept here is what fan-out has
handed over, so a skipped publication is never a gap.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from livehub.models import Publication, StreamPosition
from livehub.protocol import fossil, protobuf
from livehub.protocol.codec import encode_publication

if TYPE_CHECKING:
    from livehub.core.clock import Timer
    from livehub.protocol.tags_filter import FilterNode


class Queue(Protocol):
    def put(self, message: str | bytes) -> None: ...

    def put_latest(self, channel: str, key: str, message: str | bytes, max_keys: int) -> None: ...


class Subscriber(Protocol):
    """What fan-out needs of a connection (``livehub.core.session.Session``)."""

    @property
    def outbox(self) -> Queue: ...

    def lost_position(self, channel: str) -> None:
        """Make the client resubscribe (2500): :meth:`Subscription.lose`, then tell it."""
        ...


class SubscriptionState(enum.Enum):
    SUBSCRIBING = "subscribing"
    LIVE = "live"
    LOST = "lost"


class Verdict(enum.Enum):
    """What a subscription does with one publication."""

    #: Send it: as a fossil delta when the client holds its base, in full otherwise.
    DELIVER = "deliver"
    #: Send nothing: the client has it already (recovered in the subscribe reply), or the
    #: subscription is LOST.
    SKIP = "skip"
    #: A gap, or a new epoch: the client must resubscribe (2500).
    LOST = "lost"
    #: The subscribe reply is being built: keep it for :func:`release`.
    HOLD = "hold"


class Drift(enum.Enum):
    """A LIVE positioned subscription compared with its stream's top (the position check)."""

    #: In step with the top, or nothing to compare (not positioned, not LIVE).
    NONE = "none"
    #: Behind the top: publications may still be on their way to this node.
    BEHIND = "behind"
    #: The stream has a new epoch: what this subscriber had is gone.
    LOST = "lost"


def decide(
    state: SubscriptionState, positioned: bool, offset: int, epoch: str, pub_offset: int, pub_epoch: str
) -> Verdict:
    """What a subscription at ``offset``/``epoch`` does with a publication at ``pub_offset``
    of ``pub_epoch``. An offset of 0 is a publication outside the stream (made without
    history): it moves no position, so it is delivered to every LIVE subscriber. An empty
    epoch is one the subscription was never told: it matches any."""
    if state is not SubscriptionState.LIVE:
        return Verdict.HOLD if state is SubscriptionState.SUBSCRIBING else Verdict.SKIP
    if not pub_offset or not positioned:
        return Verdict.DELIVER
    if epoch and pub_epoch != epoch:
        return Verdict.LOST  # the stream was lost and began again
    if pub_offset == offset + 1:
        return Verdict.DELIVER
    return Verdict.SKIP if pub_offset <= offset else Verdict.LOST


class Subscription:
    """This connection's state in one channel, read by the node's fan-out loop."""

    __slots__ = (
        "channel",
        "info",
        "join_leave",
        "delta",
        "binary",
        "state",
        "positioned",
        "offset",
        "epoch",
        "free",
        "next",
        "delta_ready",
        "pending",
        "expiry",
        "conflate",
        "tags_filter",
    )

    def __init__(
        self,
        channel: str,
        info: bytes | None,
        join_leave: bool,
        delta: bool,
        binary: bool = False,
        conflate: int = 0,
    ) -> None:
        self.channel = channel
        self.info = info
        self.join_leave = join_leave
        #: Fossil deltas negotiated: ``data`` goes as a JSON string (raw bytes in Protobuf),
        #: a delta when it pays.
        self.delta = delta
        #: The connection speaks Protobuf: publications go to it in that encoding.
        self.binary = binary
        self.state = SubscriptionState.SUBSCRIBING
        #: The client knows its stream position (offsets are checked for gaps).
        self.positioned = False
        #: The offset of the last publication the client has; its stream's epoch.
        self.offset = 0
        self.epoch = ""
        #: Fan-out's shortcut (see the module docstring): LIVE and not positioned.
        self.free = False
        #: Fan-out's shortcut: ``offset + 1`` when LIVE and positioned, -1 when not LIVE
        #: (unused while ``free``).
        self.next = -1
        #: The client holds the last publication in full: the next may come as a delta.
        self.delta_ready = False
        #: ``(publication, epoch)`` arriving while SUBSCRIBING, in order.
        self.pending: list[tuple[Publication, str]] = []
        self.expiry: Timer | None = None
        #: The channel conflates (0: it does not): a subscriber its socket cannot keep up
        #: with gets the latest publication of each key, of at most this many keys at once.
        self.conflate = conflate
        #: Only publications whose tags it matches are sent (the client's ``tf``).
        self.tags_filter: FilterNode | None = None

    def __repr__(self) -> str:
        return f"<Subscription {self.channel!r} {self.state.value} at {self.offset} of {self.epoch!r}>"

    def decide(self, pub_offset: int, pub_epoch: str) -> Verdict:
        return decide(self.state, self.positioned, self.offset, self.epoch, pub_offset, pub_epoch)

    def position_at(self, sp: StreamPosition, delta_ready: bool = False) -> None:
        """The subscribe reply puts the client at ``sp`` (after any recovered publications,
        which leave a delta subscriber holding a base when there were some)."""
        self.positioned = True
        self.offset, self.epoch = sp.offset, sp.epoch
        self.delta_ready = delta_ready

    def go_live(self) -> list[tuple[Publication, str]]:
        """SUBSCRIBING -> LIVE; returns what was held meanwhile (nothing in any other state)."""
        if self.state is not SubscriptionState.SUBSCRIBING:
            return []
        pending, self.pending = self.pending, []
        self.state = SubscriptionState.LIVE
        self.free = not self.positioned
        self.next = self.offset + 1 if self.positioned else -1
        return pending

    def lose(self) -> bool:
        """-> LOST; True the first time only (then the client is to be unsubscribed)."""
        if self.state is SubscriptionState.LOST:
            return False
        self.state = SubscriptionState.LOST
        self.free, self.next = False, -1
        self.pending = []
        return True

    def drift(self, top: StreamPosition) -> Drift:
        if self.state is not SubscriptionState.LIVE or not self.positioned:
            return Drift.NONE
        if self.epoch and self.epoch != top.epoch:
            return Drift.LOST
        return Drift.BEHIND if self.offset < top.offset else Drift.NONE

    def set_expiry(self, timer: Timer | None) -> None:
        """The timer that ends the subscription (2501) unless refreshed; replaces any other."""
        if self.expiry is not None:
            self.expiry.cancel()
        self.expiry = timer


def delta_patch(prev: Publication, pub: Publication) -> bytes:
    """A fossil delta of ``pub`` against ``prev``, or b"" if it is not shorter than the data."""
    patch = fossil.create_delta(prev.data, pub.data)
    return patch if len(patch) < len(pub.data) else b""


def delta_frame(channel: str, prev: Publication, pub: Publication) -> str:
    """The publication as a fossil delta against the previous one, or "" if that does not pay.

    In JSON mode the SDKs read ``data`` as a string and UTF-8-encode it before applying
    the delta, so a delta whose literal parts split a multi-byte character cannot be sent.
    """
    patch = delta_patch(prev, pub)
    if not patch:
        return ""
    try:
        text = patch.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return encode_publication(channel, pub, text, delta=True)


def binary_delta_frame(channel: str, prev: Publication, pub: Publication) -> bytes:
    """The Protobuf push of a fossil delta (raw bytes: no UTF-8 constraint), b"" if it does
    not pay."""
    patch = delta_patch(prev, pub)
    return protobuf.encode_publication(channel, pub, patch, True) if patch else b""


def fan_out(
    channel: str,
    subs: Iterable[tuple[Subscriber, Subscription]],
    pub: Publication,
    epoch: str,
    prev: Publication | None,
) -> None:
    """Queue ``pub`` (of stream ``epoch``; ``prev`` is the publication before it, when
    known: the base of deltas) to every subscriber, each as :func:`decide` says.

    Each form it is sent in (plain; full with data as a string; delta; and the Protobuf
    plain and delta pushes) is encoded once. Never awaits, and removes no subscriber: an
    overflowing outbox only marks itself closing, and a lost position is acted upon in a task.
    A change of a map channel (``pub.key`` set) goes to :func:`fan_out_map`.
    """
    if pub.key:
        fan_out_map(channel, subs, pub, epoch, prev)
        return
    offset = pub.offset
    plain = full = delta = None
    binary = binary_delta = None
    for session, sub in subs:
        if not sub.free and (sub.next != offset or sub.epoch != epoch):
            verdict = decide(sub.state, sub.positioned, sub.offset, sub.epoch, offset, epoch)
            if verdict is not Verdict.DELIVER:
                if verdict is Verdict.HOLD:
                    sub.pending.append((pub, epoch))
                elif verdict is Verdict.LOST:
                    session.lost_position(channel)
                continue
        message: str | bytes
        if sub.binary:  # Protobuf: data as raw bytes, in full or as a delta
            message = b""
            if sub.delta:
                if sub.delta_ready and prev is not None and prev.offset == sub.offset:
                    if binary_delta is None:
                        binary_delta = binary_delta_frame(channel, prev, pub)
                    message = binary_delta
                sub.delta_ready = True
            if not message:
                if binary is None:
                    binary = protobuf.encode_publication(channel, pub)
                message = binary
        elif sub.delta:
            message = ""
            if sub.delta_ready and prev is not None and prev.offset == sub.offset:
                if delta is None:
                    delta = delta_frame(channel, prev, pub)
                message = delta
            if not message:
                if full is None:  # data a Protobuf client published may not be UTF-8
                    full = encode_publication(channel, pub, pub.data.decode("utf-8", "replace"))
                message = full
                sub.delta_ready = True
        else:
            if plain is None:
                plain = encode_publication(channel, pub)
            message = plain
        if sub.conflate:  # no deltas here: the client may not hold the previous publication
            session.outbox.put_latest(channel, pub.key, message, sub.conflate)
        else:
            session.outbox.put(message)
        if sub.free:
            sub.offset = offset
        elif offset:
            sub.offset = offset
            sub.next = offset + 1
        else:  # outside the stream: moves no position, and is not a delta base
            sub.delta_ready = False


def fan_out_map(
    channel: str,
    subs: Iterable[tuple[Subscriber, Subscription]],
    pub: Publication,
    epoch: str,
    prev: Publication | None,
) -> None:
    """:func:`fan_out` for a change of a map channel: positions are decided the same way;
    a subscriber whose tags filter the change does not match moves past it without it; a
    fossil delta is made against ``prev``, the key's previous value (every subscriber that
    negotiated deltas holds each key's value: it loaded the state)."""
    offset = pub.offset
    forms: dict[str, str | bytes] = {}
    for session, sub in subs:
        if not sub.free and (sub.next != offset or sub.epoch != epoch):
            verdict = decide(sub.state, sub.positioned, sub.offset, sub.epoch, offset, epoch)
            if verdict is not Verdict.DELIVER:
                if verdict is Verdict.HOLD:
                    sub.pending.append((pub, epoch))
                elif verdict is Verdict.LOST:
                    session.lost_position(channel)
                continue
        if offset:
            sub.offset = offset
            if not sub.free:
                sub.next = offset + 1
        if sub.tags_filter is not None and not sub.tags_filter.match(pub.tags):
            continue
        form = ("b" if sub.binary else "j") + ("d" if sub.delta else "")
        message = forms.get(form)
        if message is None:
            message = forms[form] = _map_frame(channel, pub, prev, sub.binary, sub.delta)
        if sub.conflate:  # a keyed publication of a conflating stream channel
            session.outbox.put_latest(channel, pub.key, message, sub.conflate)
        else:
            session.outbox.put(message)


def _map_frame(
    channel: str, pub: Publication, prev: Publication | None, binary: bool, delta: bool
) -> str | bytes:
    if binary:
        if delta and prev is not None and not pub.removed:
            frame = binary_delta_frame(channel, prev, pub)
            if frame:
                return frame
        return protobuf.encode_publication(channel, pub)
    if not delta or pub.removed:
        return encode_publication(channel, pub)
    if prev is not None:
        text = delta_frame(channel, prev, pub)
        if text:
            return text
    return encode_publication(channel, pub, pub.data.decode("utf-8", "replace"))


def release(session: Subscriber, sub: Subscription) -> None:
    """The subscribe reply is queued: go LIVE, and deliver what was held meanwhile (in
    full), skipping what the reply covered; a gap makes the subscription LOST."""
    for pub, epoch in sub.go_live():
        fan_out(sub.channel, ((session, sub),), pub, epoch, None)


__all__ = [
    "Drift",
    "Subscriber",
    "Subscription",
    "SubscriptionState",
    "Verdict",
    "decide",
    "binary_delta_frame",
    "delta_frame",
    "delta_patch",
    "fan_out",
    "fan_out_map",
    "release",
]
