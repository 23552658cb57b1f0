"""Token buckets and the connection gate, on a clock the tests move by hand."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livehub.core.limits import (
    Bucket,
    CommandLimits,
    ConnectionGate,
    LocalTokenStore,
    TokenBucket,
    UserCommandLimits,
)
from livehub.settings import Settings, config_problems


def test_a_bucket_allows_a_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=5, interval=1.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.1) is False  # 0.5 tokens back
    assert bucket.take(0.2) is True  # 1 token back
    assert bucket.take(10.0) and bucket.take(10.0)  # refilled, never above the burst
    assert sum(bucket.take(10.0) for _ in range(10)) == 3


@given(st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=300))
def test_a_bucket_never_allows_more_than_burst_plus_rate_times_elapsed(gaps: list[float]) -> None:
    bucket = TokenBucket(rate=10, interval=2.0, now=0.0)
    now, taken = 0.0, 0
    for gap in gaps:
        now += gap
        taken += bucket.take(now)
    assert taken <= 10 + now * 5 + 1e-9


def test_total_default_method_and_rpc_method_buckets() -> None:
    limits = CommandLimits(
        total=(Bucket(10, 1.0),),
        default=(Bucket(4, 1.0),),
        methods={"publish": (Bucket(2, 1.0),), "rpc": (Bucket(3, 1.0),)},
        rpc_methods={"slow": (Bucket(1, 20.0),)},
    )
    limiter = limits.limiter(0.0)
    assert limiter is not None
    assert [limiter.allow("publish", 0.0) for _ in range(3)] == [True, True, False]
    assert [limiter.allow("rpc", 0.0, "slow") for _ in range(2)] == [True, False]
    assert [limiter.allow("rpc", 0.0, "fast") for _ in range(4)] == [True, True, True, False]
    # history has no buckets of its own: the default ones (4), until the total (10) runs out
    assert [limiter.allow("history", 0.0) for _ in range(5)] == [True, True, True, True, False]
    assert limiter.allow("presence", 0.0) is False  # total: 2 + 1 + 3 + 4 = 10 taken
    assert limiter.allow("connect", 0.0) and limiter.allow("", 0.0)  # never limited
    assert limiter.allow("publish", 1.0) is True  # a second later


def test_a_refused_command_takes_no_token_from_the_total() -> None:
    limiter = CommandLimits(total=(Bucket(3, 1.0),), methods={"publish": (Bucket(1, 1.0),)}).limiter(0.0)
    assert limiter is not None
    assert limiter.allow("publish", 0.0) and not limiter.allow("publish", 0.0)
    assert limiter.allow("history", 0.0) and limiter.allow("history", 0.0)


def test_no_configured_limit_costs_nothing() -> None:
    assert CommandLimits().limiter(0.0) is None


def test_the_gate_counts_connections_per_node_and_per_address() -> None:
    gate = ConnectionGate(limit=3, per_ip=2)
    assert gate.admit("a", 0) is None and gate.admit("a", 0) is None
    assert gate.admit("a", 0) == "connection_limit_per_ip"
    assert gate.admit("b", 0) is None
    assert gate.admit("c", 0) == "connection_limit"
    assert (gate.open, gate.refused) == (3, 2)
    gate.release("a")
    assert gate.admit("c", 0) is None
    gate.release("a")
    gate.release("b")
    gate.release("c")
    assert gate.open == 0 and gate._by_ip == {}  # nothing kept for addresses that left


def test_the_gate_limits_the_rate_of_new_connections() -> None:
    gate = ConnectionGate(rate=2)
    results = [gate.admit("a", 0.0) for _ in range(3)]
    assert results[:2] == [None, None]
    assert results[2] == "connection_rate_limit"
    assert gate.admit("a", 0.5) is None


def test_limits_from_centrifugo_pro_config() -> None:
    config = Settings(
        client={
            "rate_limit": {
                "client_command": {
                    "enabled": True,
                    "total": {"enabled": True, "buckets": [{"interval": "1s", "rate": 20}]},
                    "publish": {"enabled": True, "buckets": [{"interval": "2s", "rate": 1}]},
                    "history": {"enabled": False, "buckets": [{"interval": "1s", "rate": 1}]},
                    "rpc": {
                        "enabled": True,
                        "buckets": [{"interval": "1s", "rate": 10}],
                        "method_overrides": [{"method": "slow", "buckets": [{"interval": "20s", "rate": 1}]}],
                    },
                }
            }
        }
    ).client.rate_limit.client_command
    limits = CommandLimits.from_settings(config)
    assert limits.total == (Bucket(20, 1.0),)
    assert limits.methods == {"publish": (Bucket(1, 2.0),), "rpc": (Bucket(10, 1.0),)}
    assert limits.rpc_methods == {"slow": (Bucket(1, 20.0),)}
    assert limits.flood_limit == 200  # 10 x the largest rate per second (20/s)
    assert not CommandLimits.from_settings(config.model_copy(update={"enabled": False})).enabled


def test_refusals_past_the_flood_limit_within_a_second_mean_flooding() -> None:
    limiter = CommandLimits(total=(Bucket(2, 1.0),)).limiter(0.0)
    assert limiter is not None
    assert not any(limiter.flooding(0.5) for _ in range(20))  # 10 x 2/s: still tolerated
    assert limiter.flooding(0.6)
    assert not limiter.flooding(1.7)  # a new second starts a new count


def test_rate_limit_keys_livehub_does_not_honour_are_refused() -> None:
    settings = Settings(
        client={
            "rate_limit": {
                "user_command": {"enabled": True, "publish": {"enabled": True}},
                "client_command": {"enabled": True, "publsh": {"enabled": True}},
            }
        }
    )
    problems = config_problems(settings)
    assert not any("user_command" in p for p in problems)  # honoured: UserCommandLimits
    assert any("client.rate_limit.client_command.publsh: unknown key; did you mean" in p for p in problems)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def user_limits(clock: Clock, **limits: Any) -> UserCommandLimits:
    return UserCommandLimits(CommandLimits(**limits), LocalTokenStore(clock))


async def test_a_users_connections_share_one_bucket_and_anonymous_ones_are_not_limited() -> None:
    clock = Clock()
    limits = user_limits(clock, methods={"publish": (Bucket(3, 1.0),)})
    # three publishes for alice, whichever of her connections sends them; then refused
    assert [await limits.allow("alice", "publish") for _ in range(4)] == [True, True, True, False]
    assert await limits.allow("bob", "publish")  # bob has his own bucket
    assert await limits.allow("alice", "history")  # history has no bucket: not limited
    assert await limits.allow("", "publish") and await limits.allow("", "publish")  # anonymous
    assert await limits.allow("alice", "connect") and await limits.allow("alice", "")  # connect, pong
    clock.now = 0.34  # a third of the interval: one token back
    assert await limits.allow("alice", "publish")
    assert not await limits.allow("alice", "publish")


async def test_user_total_and_command_buckets_are_taken_together_or_not_at_all() -> None:
    clock = Clock()
    limits = user_limits(clock, total=(Bucket(2, 1.0),), methods={"publish": (Bucket(1, 1.0),)})
    assert await limits.allow("u", "publish")
    assert not await limits.allow("u", "publish")  # publish bucket empty: total untouched
    assert await limits.allow("u", "history")  # so total still has one
    assert not await limits.allow("u", "history")
    rpc = user_limits(clock, rpc_methods={"slow": (Bucket(1, 10.0),)}, default=(Bucket(100, 1.0),))
    assert await rpc.allow("u", "rpc", "slow") and not await rpc.allow("u", "rpc", "slow")
    assert await rpc.allow("u", "rpc", "fast")  # other methods: the default buckets


async def test_the_local_store_stays_bounded_whatever_the_number_of_users() -> None:
    store = LocalTokenStore(Clock(), max_buckets=100)
    limits = UserCommandLimits(CommandLimits(methods={"publish": (Bucket(1, 60.0),)}), store)
    for i in range(1000):
        assert await limits.allow(f"user{i}", "publish")
    assert len(store) == 100


async def test_on_connect_channels_over_channel_limit_close_with_3505() -> None:
    from fastapi import FastAPI

    from livehub import Hub
    from livehub.models import Credentials
    from livehub.testing import ConnectionClosed, HubTestClient

    hub = Hub(Settings(client={"channel_limit": 2}))
    app = FastAPI()
    app.include_router(hub.router)
    wanted: list[tuple[str, ...]] = []

    async def by_list(scope: dict[str, object]) -> Credentials:
        return Credentials("u", channels=wanted.pop())

    hub.node.connect_hook = by_list
    async with HubTestClient(app) as client:
        wanted.append(("a", "b", "c"))
        with pytest.raises(ConnectionClosed) as closed:
            await client.connect()
        assert closed.value.code == 3505
        assert hub.node.sessions == {} and not hub.node.channels()
        wanted.append(("a", "b"))
        conn = await client.connect()
        assert sorted(conn.connect_result["subs"]) == ["a", "b"]
