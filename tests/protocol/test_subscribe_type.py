"""SubscribeRequest.type (field 15 of the protocol's client.proto): a channel serves the
type its namespace's ``subscription_type`` says (a plain stream, type 0, by default; a
Centrifugo 6.8 map, 1, 2 or 3, in a map namespace). Any other type -- shared poll (4),
unknown ones, a map in a stream namespace -- is refused as Centrifugo refuses it, never
answered with a subscription the client would misread."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from livehub.protocol.codes import Disconnect
from livehub.protocol.commands import SubscribeParams
from tests.servers import serve

CONFIG = {"client": {"insecure": True}, "channel": {"namespaces": [{"name": "chat"}]}}


def test_type_is_parsed_and_defaults_to_a_stream() -> None:
    assert SubscribeParams.parse({"channel": "c"}).type == 0
    assert SubscribeParams.parse({"channel": "c", "type": 1}).type == 1
    assert SubscribeParams.parse({"channel": "c"}).type_refusal("") is None
    assert SubscribeParams.parse({"channel": "c", "type": 1}).type_refusal("map") is None
    assert SubscribeParams.parse({"channel": "c", "type": 2}).type_refusal("map_clients") is None
    assert SubscribeParams.parse({"channel": "c", "type": 0}).type_refusal("map") is not None


@pytest.mark.parametrize("value", ["map", 1.5, True, [1]])
def test_a_type_that_is_not_an_integer_is_a_malformed_command(value: object) -> None:
    with pytest.raises(Disconnect) as closed:
        SubscribeParams.parse({"channel": "c", "type": value})
    assert closed.value.code == 3501


@pytest.mark.parametrize(
    ("type_", "code", "message"),
    [
        (1, 103, "permission denied"),  # map
        (2, 103, "permission denied"),  # map clients presence
        (3, 103, "permission denied"),  # map users presence
        (4, 108, "not available"),  # shared poll
        (5, 103, "permission denied"),  # none yet
        (-1, 103, "permission denied"),
    ],
)
def test_refusal_of_each_unsupported_type(type_: int, code: int, message: str) -> None:
    first = SubscribeParams.parse({"channel": "c", "type": type_}).type_refusal("stream")
    again = SubscribeParams.parse({"channel": "c", "type": type_}).type_refusal("stream")
    assert first is not None and (first.code, first.message) == (code, message)
    assert first is not again  # a fresh error each time, never a shared instance


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    config: Path = tmp_path_factory.mktemp("subscribe-type") / "config.json"
    config.write_text(json.dumps(CONFIG))
    with serve(config) as port:
        yield port


async def _replies(port: int, commands: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Connect, send ``commands`` (ids from 2), return every reply by id."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket") as ws:
        await ws.send(json.dumps({"id": 1, "connect": {}}))
        assert "connect" in json.loads(await ws.recv())
        replies: dict[int, dict[str, Any]] = {}
        for i, command in enumerate(commands, start=2):
            await ws.send(json.dumps({"id": i, **command}))
            while i not in replies:
                for line in str(await ws.recv()).split("\n"):
                    message = json.loads(line)
                    if "id" in message:
                        replies[message["id"]] = message
        return replies


async def test_the_server_refuses_unsupported_types_and_keeps_serving(port: int) -> None:
    replies = await _replies(
        port,
        [
            {"subscribe": {"channel": "chat:a", "type": 1}},
            {"subscribe": {"channel": "chat:a", "type": 4}},
            {"subscribe": {"channel": "chat:a", "type": 7}},
            {"subscribe": {"channel": "nope:a", "type": 1}},  # an unknown namespace says so first
            {"subscribe": {"channel": "chat:a", "type": 0}},  # the connection lives on; a stream is served
            {"publish": {"channel": "chat:a", "data": {"n": 1}}},
        ],
    )
    assert replies[2]["error"] == {"code": 103, "message": "permission denied"}
    assert replies[3]["error"] == {"code": 108, "message": "not available"}
    assert replies[4]["error"] == {"code": 103, "message": "permission denied"}
    assert replies[5]["error"]["code"] == 102
    assert replies[6] == {"id": 6, "subscribe": {}}
    assert replies[7] == {"id": 7, "publish": {}}
