"""The subscription's position logic (livehub.core.subscription), without a node or a socket.

A fake session records what fan-out queues and when the position is lost; publications
carry their own offset, epoch and arrival index in ``data``, so what the client would
receive can be read back from the frames.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livehub.core.subscription import (
    Drift,
    Subscription,
    SubscriptionState,
    Verdict,
    decide,
    fan_out,
    release,
)
from livehub.models import Publication, StreamPosition

E0, E1 = "epoch-0", "epoch-1"
LIVE, SUBSCRIBING, LOST = SubscriptionState.LIVE, SubscriptionState.SUBSCRIBING, SubscriptionState.LOST


class FakeOutbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def put(self, message: str) -> None:
        self.messages.append(message)


class FakeSession:
    """What fan-out needs of a session: an outbox, and ``lost_position`` as Session does it."""

    def __init__(self, sub: Subscription) -> None:
        self.outbox = FakeOutbox()
        self.sub = sub
        self.lost_after: int | None = None  # messages queued when the position was lost
        self.lost_calls = 0

    def lost_position(self, channel: str) -> None:
        assert channel == self.sub.channel
        self.lost_calls += 1
        if self.sub.lose():
            self.lost_after = len(self.outbox.messages)

    def received(self) -> list[dict[str, Any]]:
        """The ``data`` of every publication queued (a delta subscriber's as a JSON string)."""
        out = []
        for message in self.outbox.messages:
            data = json.loads(message)["push"]["pub"]["data"]
            out.append(json.loads(data) if isinstance(data, str) else data)
        return out


def publication(offset: int, epoch: str, index: int) -> Publication:
    return Publication(json.dumps({"o": offset, "e": epoch, "i": index}).encode(), offset)


def deliver(session: FakeSession, pub: Publication, epoch: str, prev: Publication | None = None) -> None:
    fan_out(session.sub.channel, [(session, session.sub)], pub, epoch, prev)


def live(positioned_at: StreamPosition | None = None, delta: bool = False) -> FakeSession:
    sub = Subscription("chan", None, False, delta)
    if positioned_at is not None:
        sub.position_at(positioned_at)
    session = FakeSession(sub)
    release(session, sub)
    return session


# -- decide, case by case


@pytest.mark.parametrize(
    ("state", "positioned", "pub_offset", "pub_epoch", "verdict"),
    [
        (SUBSCRIBING, True, 6, E0, Verdict.HOLD),
        (SUBSCRIBING, False, 0, "", Verdict.HOLD),
        (LOST, True, 6, E0, Verdict.SKIP),
        (LOST, False, 0, "", Verdict.SKIP),
        (LIVE, False, 99, E1, Verdict.DELIVER),  # no position: everything goes
        (LIVE, True, 0, "", Verdict.DELIVER),  # outside the stream (no history)
        (LIVE, True, 6, E0, Verdict.DELIVER),  # the next one
        (LIVE, True, 5, E0, Verdict.SKIP),  # in the subscribe reply already
        (LIVE, True, 1, E0, Verdict.SKIP),
        (LIVE, True, 7, E0, Verdict.LOST),  # 6 never came
        (LIVE, True, 6, E1, Verdict.LOST),  # the stream began again
        (LIVE, True, 5, E1, Verdict.LOST),
    ],
)
def test_decide(
    state: SubscriptionState, positioned: bool, pub_offset: int, pub_epoch: str, verdict: Verdict
) -> None:
    assert decide(state, positioned, 5, E0, pub_offset, pub_epoch) is verdict


def test_an_unknown_epoch_matches_any() -> None:
    assert decide(LIVE, True, 5, "", 6, E1) is Verdict.DELIVER


# -- fan-out and release


def test_publications_during_subscribe_are_held_then_released_without_duplicates() -> None:
    sub = Subscription("chan", None, False, False)
    session = FakeSession(sub)
    for i, offset in enumerate((3, 4, 5)):
        deliver(session, publication(offset, E0, i), E0)
    assert session.outbox.messages == [] and len(sub.pending) == 3
    sub.position_at(StreamPosition(4, E0))  # the reply covered 3 and 4
    release(session, sub)
    assert sub.state is LIVE and sub.pending == []
    deliver(session, publication(6, E0, 3), E0)
    assert [m["o"] for m in session.received()] == [5, 6]
    assert sub.offset == 6 and session.lost_after is None


def test_a_gap_in_the_held_publications_loses_the_position() -> None:
    sub = Subscription("chan", None, False, False)
    session = FakeSession(sub)
    for i, offset in enumerate((5, 7, 8)):
        deliver(session, publication(offset, E0, i), E0)
    sub.position_at(StreamPosition(4, E0))
    release(session, sub)
    assert [m["o"] for m in session.received()] == [5]
    assert sub.state is LOST and session.lost_calls == 1
    deliver(session, publication(9, E0, 3), E0)
    assert len(session.received()) == 1 and session.lost_calls == 1  # nothing more, told once


def test_a_lost_subscription_while_subscribing_releases_nothing() -> None:
    sub = Subscription("chan", None, False, False)
    session = FakeSession(sub)
    deliver(session, publication(1, E0, 0), E0)
    assert sub.lose()
    assert not sub.lose()
    release(session, sub)
    assert sub.state is LOST and session.outbox.messages == []


def test_publication_outside_the_stream_moves_no_position() -> None:
    session = live(StreamPosition(2, E0))
    deliver(session, publication(0, "", 0), "")
    deliver(session, publication(3, E0, 1), E0)
    assert [m["i"] for m in session.received()] == [0, 1]
    assert session.sub.offset == 3


def test_an_unpositioned_subscriber_takes_everything() -> None:
    session = live()
    assert session.sub.free
    for i, (offset, epoch) in enumerate(((7, E0), (3, E1), (0, ""))):
        deliver(session, publication(offset, epoch, i), epoch)
    assert [m["i"] for m in session.received()] == [0, 1, 2] and session.lost_calls == 0


def test_delta_subscriber_gets_a_delta_after_a_full_publication() -> None:
    session = live(StreamPosition(0, E0), delta=True)
    body = "x" * 300
    first = Publication(json.dumps({"o": 1, "body": body}).encode(), 1)
    second = Publication(json.dumps({"o": 2, "body": body}).encode(), 2)
    deliver(session, first, E0, None)
    deliver(session, second, E0, first)
    pubs = [json.loads(m)["push"]["pub"] for m in session.outbox.messages]
    assert [p.get("delta", False) for p in pubs] == [False, True]
    assert session.sub.offset == 2


def test_drift() -> None:
    session = live(StreamPosition(5, E0))
    sub = session.sub
    assert sub.drift(StreamPosition(5, E0)) is Drift.NONE
    assert sub.drift(StreamPosition(7, E0)) is Drift.BEHIND
    assert sub.drift(StreamPosition(5, E1)) is Drift.LOST
    assert live().sub.drift(StreamPosition(9, E1)) is Drift.NONE  # no position to compare
    sub.lose()
    assert sub.drift(StreamPosition(9, E0)) is Drift.NONE  # already on its way out


# -- properties

arrivals = st.lists(
    st.tuples(st.integers(min_value=0, max_value=12), st.sampled_from([E0, E0, E0, E1])),
    max_size=25,
)


@settings(max_examples=500, deadline=None)
@given(
    arrivals=arrivals,
    start=st.integers(min_value=0, max_value=6),
    released_at=st.integers(min_value=0, max_value=25),
    delta=st.booleans(),
)
def test_each_offset_at_most_once_in_order_and_a_gap_ends_in_lost(
    arrivals: list[tuple[int, str]], start: int, released_at: int, delta: bool
) -> None:
    """Publications (offset 0: outside the stream) arrive in any order, with duplicates,
    gaps and another epoch, some while the subscribe reply (which puts the client at
    ``start`` of E0) is being built. The client gets each offset at most once, in order,
    without a hole; and whenever the arrivals hold a gap, the subscription ends LOST."""
    sub = Subscription("chan", None, False, delta)
    session = FakeSession(sub)
    released_at = min(released_at, len(arrivals))
    prev = None
    for i, (offset, epoch) in enumerate(arrivals):
        if i == released_at:
            sub.position_at(StreamPosition(start, E0))
            release(session, sub)
        pub = publication(offset, epoch if offset else "", i)
        deliver(session, pub, epoch if offset else "", prev)
        prev = pub
    if released_at == len(arrivals):
        sub.position_at(StreamPosition(start, E0))
        release(session, sub)

    # the specification: where the first gap (or other epoch) is, if any
    top, gap_at = start, None
    for i, (offset, epoch) in enumerate(arrivals):
        if not offset:
            continue
        if epoch != E0 or offset > top + 1:
            gap_at = i
            break
        top = max(top, offset)

    received = session.received()
    in_stream = [m["o"] for m in received if m["o"]]
    assert in_stream == list(range(start + 1, start + 1 + len(in_stream)))  # once, in order, no hole
    assert all(m["e"] == E0 for m in received if m["o"])
    assert [m["i"] for m in received] == sorted(m["i"] for m in received)  # arrival order kept
    if gap_at is None:
        assert sub.state is LIVE and session.lost_calls == 0
        assert in_stream == list(range(start + 1, top + 1))  # everything new arrived
        expected_outside = [i for i, (offset, _) in enumerate(arrivals) if not offset]
    else:
        assert sub.state is LOST and session.lost_calls == 1
        assert all(m["i"] < gap_at for m in received)  # nothing after the gap
        assert in_stream == list(range(start + 1, top + 1))
        expected_outside = [i for i, (offset, _) in enumerate(arrivals[:gap_at]) if not offset]
    assert [m["i"] for m in received if not m["o"]] == expected_outside


operations = st.lists(
    st.one_of(
        st.tuples(st.just("position"), st.integers(0, 6), st.sampled_from([E0, E1, ""])),
        st.tuples(st.just("live"), st.just(0), st.just("")),
        st.tuples(st.just("lose"), st.just(0), st.just("")),
        st.tuples(st.just("pub"), st.integers(0, 9), st.sampled_from([E0, E1, ""])),
    ),
    max_size=30,
)


@settings(max_examples=500, deadline=None)
@given(ops=operations, delta=st.booleans())
def test_fan_out_shortcut_always_agrees_with_decide(ops: list[tuple[str, int, str]], delta: bool) -> None:
    """Whatever happened to a subscription, the fields fan-out's shortcut reads (``free``,
    ``next``) let through only what :func:`decide` delivers, and fan-out does what
    :func:`decide` says."""
    sub = Subscription("chan", None, False, delta)
    session = FakeSession(sub)
    for op, offset, epoch in ops:
        if op == "position" and sub.state is SUBSCRIBING:
            sub.position_at(StreamPosition(offset, epoch))
        elif op == "live":
            release(session, sub)
        elif op == "lose":
            session.lost_position(sub.channel)
        elif op == "pub":
            before = (sub.state, sub.positioned, sub.offset, sub.epoch)
            verdict = decide(*before, offset, epoch)
            if sub.free or (sub.next == offset and sub.epoch == epoch):
                assert verdict is Verdict.DELIVER
            sent, held, lost = len(session.outbox.messages), len(sub.pending), session.lost_calls
            deliver(session, publication(offset, epoch, 0), epoch)
            assert len(session.outbox.messages) - sent == (verdict is Verdict.DELIVER)
            assert len(sub.pending) - held == (verdict is Verdict.HOLD)
            assert session.lost_calls - lost == (verdict is Verdict.LOST)
        if sub.state is LIVE:
            assert sub.free == (not sub.positioned)
            assert sub.free or sub.next == sub.offset + 1
        else:
            assert not sub.free and sub.next == -1
        if sub.state is not SUBSCRIBING:
            assert sub.pending == []
