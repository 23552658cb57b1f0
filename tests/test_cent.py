"""PyPI ``cent`` 5.2.0, Centrifugo's Python API client, against a real ``livehub serve``.

Re-derived from the behaviour pycent's own suite checks against Centrifugo (its tests live
only on GitHub: research/centrifugo-protocol.md §13.2), with the same server settings:
key ``api_key``, history and presence on in the default namespace.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import websockets
from cent import (
    AsyncClient,
    BatchRequest,
    BoolValue,
    BroadcastRequest,
    ChannelOptionsOverride,
    ChannelsRequest,
    Client,
    Disconnect,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    StreamPosition,
    SubscribeRequest,
    UnsubscribeRequest,
)
from cent.exceptions import CentApiResponseError, CentTransportError, CentUnauthorizedError

from tests.servers import serve

API_KEY = "api_key"
SECRET = "a-test-secret-that-is-at-least-32-bytes-long"
CONFIG = {
    "http_api": {"key": API_KEY},
    "client": {"token": {"hmac_secret_key": SECRET}},
    "channel": {
        "without_namespace": {"history_size": 100, "history_ttl": "300s", "presence": True},
        "namespaces": [{"name": "plain"}],
    },
}


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    config: Path = tmp_path_factory.mktemp("cent") / "config.json"
    config.write_text(json.dumps(CONFIG))
    with serve(config) as p:
        yield p


@pytest.fixture(scope="module")
def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


@pytest.fixture(scope="module")
def client(api_url: str) -> Client:
    return Client(api_url, API_KEY)


def channel() -> str:
    return f"ch-{uuid.uuid4().hex[:8]}"


def test_publish_returns_an_offset(client: Client) -> None:
    result = client.publish(PublishRequest(channel=channel(), data={"data": "data"}))
    assert result.offset
    assert result.epoch


def test_publish_with_every_option(client: Client) -> None:
    ch = channel()
    result = client.publish(
        PublishRequest(
            channel=ch,
            data={"input": "x"},
            skip_history=False,
            tags={"tag": "tag"},
            idempotency_key="idempotency_key",
        )
    )
    assert result.offset == 1
    history = client.history(HistoryRequest(channel=ch, limit=1))
    assert history.publications[0].tags == {"tag": "tag"}
    assert client.publish(PublishRequest(channel=ch, data=1, skip_history=True)).offset == 0


def test_idempotent_publish_returns_the_same_offset(client: Client) -> None:
    request = PublishRequest(channel=channel(), data={"n": 1}, idempotency_key=uuid.uuid4().hex)
    first = client.publish(request)
    second = client.publish(request)
    assert first.offset and (second.offset, second.epoch) == (first.offset, first.epoch)


def test_b64data(client: Client) -> None:
    ch = channel()
    client.publish(PublishRequest(channel=ch, data=None, b64data="eyJiNjQiOnRydWV9"))  # {"b64":true}
    history = client.history(HistoryRequest(channel=ch, limit=1))
    assert history.publications[0].data == {"b64": True}


def test_broadcast_returns_offsets_per_channel(client: Client) -> None:
    channels = [channel(), channel()]
    result = client.broadcast(BroadcastRequest(channels=channels, data={"data": "data"}))
    assert len(result.responses) == 2
    for response in result.responses:
        assert response.error is None
        assert response.result is not None and response.result.offset


def test_history_in_order_with_data_intact(client: Client) -> None:
    ch = channel()
    for n in range(10):
        client.publish(PublishRequest(channel=ch, data={"text": f"message {n}", "n": n, "ok": [True, None]}))
    result = client.history(HistoryRequest(channel=ch, limit=10, reverse=False))
    assert [p.data for p in result.publications] == [
        {"text": f"message {n}", "n": n, "ok": [True, None]} for n in range(10)
    ]
    assert [p.offset for p in result.publications] == list(range(1, 11))
    assert result.offset == 10 and result.epoch
    since = client.history(
        HistoryRequest(channel=ch, limit=3, since=StreamPosition(offset=7, epoch=result.epoch))
    )
    assert [p.offset for p in since.publications] == [8, 9, 10]


def test_history_remove(client: Client) -> None:
    ch = channel()
    client.publish(PublishRequest(channel=ch, data=1))
    client.history_remove(HistoryRemoveRequest(channel=ch))
    after = client.history(HistoryRequest(channel=ch, limit=10))
    assert after.publications == [] and after.offset == 1


def test_presence_and_stats_of_an_empty_channel(client: Client) -> None:
    assert client.presence(PresenceRequest(channel=channel())).presence == {}
    stats = client.presence_stats(PresenceStatsRequest(channel=channel()))
    assert (stats.num_clients, stats.num_users) == (0, 0)


def test_batch_of_four(client: Client) -> None:
    a, b = channel(), channel()
    result = client.batch(
        BatchRequest(
            requests=[
                PublishRequest(channel=a, data={"data": "Second data"}),
                PublishRequest(channel=b, data={"data": "First data"}),
                BroadcastRequest(channels=[a, b], data={"data": "Third data"}),
                PresenceRequest(channel=a),
            ]
        )
    )
    assert len(result.replies) == 4
    assert result.replies[0].offset == 1  # type: ignore[attr-defined]
    assert result.replies[1].offset == 1  # type: ignore[attr-defined]
    broadcast = result.replies[2].responses  # type: ignore[attr-defined]
    assert [r.result.offset for r in broadcast] == [2, 2]
    assert result.replies[3].presence == {}  # type: ignore[attr-defined]


def test_parallel_batch(client: Client) -> None:
    requests = [PublishRequest(channel=channel(), data=n) for n in range(5)]
    result = client.batch(BatchRequest(requests=requests, parallel=True))
    assert [r.offset for r in result.replies] == [1] * 5  # type: ignore[attr-defined]


def test_unknown_namespace_is_102(client: Client) -> None:
    with pytest.raises(CentApiResponseError, match="unknown channel") as error:
        client.publish(PublishRequest(channel="undefined:channel", data={"data": "data"}))
    assert error.value.code == 102


def test_history_or_presence_off_is_108_and_no_channel_107(client: Client) -> None:
    with pytest.raises(CentApiResponseError, match="not available") as off:
        client.history(HistoryRequest(channel="plain:x", limit=1))
    assert off.value.code == 108
    with pytest.raises(CentApiResponseError) as presence_off:
        client.presence(PresenceRequest(channel="plain:x"))
    assert presence_off.value.code == 108
    with pytest.raises(CentApiResponseError, match="bad request") as missing:
        client.publish(PublishRequest(channel="", data=1))
    assert missing.value.code == 107


def test_wrong_key_is_unauthorized(api_url: str) -> None:
    with pytest.raises(CentUnauthorizedError):
        Client(api_url, "wrong").info(InfoRequest())


def test_wrong_url_is_a_transport_error(port: int) -> None:
    with pytest.raises(CentTransportError) as error:
        Client(f"http://127.0.0.1:{port}/nothing", API_KEY).info(InfoRequest())
    assert error.value.status_code == 404


def test_operations_on_users_that_do_not_exist(client: Client) -> None:
    ch = channel()
    client.subscribe(
        SubscribeRequest(
            user="nobody",
            channel=ch,
            info={"info": "info"},
            client="client",
            data={"data": "data"},
            recover_since=StreamPosition(offset=1, epoch="1"),
            override=ChannelOptionsOverride(
                presence=BoolValue(value=True),
                join_leave=BoolValue(value=True),
                force_recovery=BoolValue(value=True),
            ),
        )
    )
    client.unsubscribe(UnsubscribeRequest(user="nobody", channel=ch, session="session", client="client"))
    client.disconnect(
        DisconnectRequest(
            user="nobody",
            client="client",
            session="session",
            whitelist=["x"],
            disconnect=Disconnect(code=4000, reason="reason"),
        )
    )
    client.refresh(
        RefreshRequest(user="nobody", client="client", session="session", expire_at=1, expired=True)
    )
    client.history_remove(HistoryRemoveRequest(channel=ch))


def test_info_and_channels(client: Client) -> None:
    (node,) = client.info(InfoRequest()).nodes
    assert node.uid and node.name and node.version
    channels = client.channels(ChannelsRequest(pattern="*"))
    assert isinstance(channels.channels, dict)


async def test_async_client(api_url: str) -> None:
    async_client = AsyncClient(api_url, API_KEY)
    try:
        result = await async_client.publish(PublishRequest(channel=channel(), data={"async": True}))
        assert result.offset
        assert (await async_client.info(InfoRequest())).nodes
        with pytest.raises(CentApiResponseError):
            await async_client.presence(PresenceRequest(channel="undefined:channel"))
    finally:
        await async_client._session.close()


async def test_server_side_control_of_a_live_connection(port: int, api_url: str) -> None:
    """cent's subscribe/publish/unsubscribe/disconnect as a connected user sees them."""
    api = AsyncClient(api_url, API_KEY)
    token = jwt.encode({"sub": "42"}, SECRET, algorithm="HS256")
    ch = channel()

    async def next_message(ws: websockets.ClientConnection, key: str) -> dict[str, object]:
        while True:
            for line in str(await asyncio.wait_for(ws.recv(), 5)).split("\n"):
                message: dict[str, object] = json.loads(line)
                push = message.get("push")
                if key in message or (isinstance(push, dict) and key in push):
                    return message

    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket") as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
            await next_message(ws, "connect")
            await api.subscribe(SubscribeRequest(user="42", channel=ch, data={"hello": 1}))
            assert (await next_message(ws, "subscribe"))["push"] == {
                "channel": ch,
                "subscribe": {"data": {"hello": 1}},
            }
            await api.publish(PublishRequest(channel=ch, data={"n": 1}))
            pub = (await next_message(ws, "pub"))["push"]
            assert pub["pub"]["data"] == {"n": 1} and pub["pub"]["offset"] == 1  # type: ignore[index]
            presence = await api.presence(PresenceRequest(channel=ch))
            assert [info.user for info in presence.presence.values()] == ["42"]
            await api.unsubscribe(UnsubscribeRequest(user="42", channel=ch))
            unsubscribe = (await next_message(ws, "unsubscribe"))["push"]
            assert unsubscribe == {
                "channel": ch,
                "unsubscribe": {"code": 2000, "reason": "server unsubscribe"},
            }
            await api.disconnect(DisconnectRequest(user="42"))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await next_message(ws, "never")
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (3503, "force disconnect")
    finally:
        await api._session.close()
