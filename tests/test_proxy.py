"""Proxies end to end: a real HTTP backend, real ``livehub serve``, a real WebSocket client
speaking the JSON protocol. The backend answers as Centrifugo's proxy backends do."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from livehub.core.shared_poll import sign_keys
from tests.backend import Backend, backend
from tests.servers import serve


class Client:
    """One connection speaking the JSON protocol: commands, their replies, the pushes between."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.ws: ClientConnection = connect(
            f"ws://127.0.0.1:{port}/connection/websocket", additional_headers=headers or {}
        ).__enter__()
        self.next_id = 0
        self.pushes: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any]) -> int:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, method: params}))
        return self.next_id

    def _read(self, timeout: float) -> list[dict[str, Any]]:
        frame = self.ws.recv(timeout=timeout)
        return [json.loads(line) for line in str(frame).splitlines() if line.strip()]

    def call(self, method: str, params: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """The reply to one command (``result`` or ``error``)."""
        wanted = self.send(method, params)
        deadline = time.monotonic() + timeout
        reply: dict[str, Any] | None = None
        while reply is None:
            for message in self._read(max(0.01, deadline - time.monotonic())):
                if message.get("id") == wanted:  # {"id": 1, "<method>": result} or {"error": ...}
                    reply = (
                        {"error": message["error"]}
                        if "error" in message
                        else {"result": message.get(method, {})}
                    )
                elif "push" in message:  # pushes before and after the reply, in the same frame too
                    self.pushes.append(message["push"])
        return reply

    def push(self, timeout: float = 10.0) -> dict[str, Any]:
        if self.pushes:
            return self.pushes.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            for message in self._read(max(0.01, deadline - time.monotonic())):
                if "push" in message:
                    self.pushes.append(message["push"])
            if self.pushes:
                return self.pushes.pop(0)

    def close_code(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._read(max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else 1006
        raise AssertionError("the connection stayed open")

    def close(self) -> None:
        self.ws.close()


def _config(tmp_path: Path, back: Backend, **extra: Any) -> Path:
    config: dict[str, Any] = {
        "client": {
            "proxy": {
                "connect": {
                    "enabled": True,
                    "endpoint": back.url("/connect"),
                    "timeout": "1s",
                    "http_headers": ["Authorization", "X-Forwarded"],
                    "http": {"static_headers": {"X-Static": "yes"}},
                }
            }
        },
        "channel": {
            "proxy": {
                "subscribe": {"endpoint": back.url("/subscribe"), "include_connection_meta": True},
                "publish": {"endpoint": back.url("/publish")},
            },
            "namespaces": [
                {
                    "name": "room",
                    "subscribe_proxy_enabled": True,
                    "publish_proxy_enabled": True,
                },
                {"name": "news", "allow_subscribe_for_client": True},
            ],
        },
        "rpc": {"proxy": {"endpoint": back.url("/rpc")}, "without_namespace": {"proxy_enabled": True}},
    }
    for key, value in extra.items():
        config[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def back() -> Iterator[Backend]:
    with backend() as b:
        b.answers["/connect"] = lambda body: {
            "result": {
                "user": "alice",
                "info": {"name": "Alice"},
                "channels": ["news:all"],
                "subs": {"news:vip": {"data": {"row": 1}}},
                "data": {"welcome": True},
                "meta": {"plan": "gold"},
            }
        }
        yield b


def test_connect_proxy_sets_user_info_channels_and_forwards_allowed_headers(
    tmp_path: Path, back: Backend
) -> None:
    with serve(_config(tmp_path, back)) as port:
        client = Client(port, {"Authorization": "Bearer x", "X-Secret": "no"})
        reply = client.call("connect", {"data": {"hello": 1}, "name": "js", "version": "1.0"})
        result = reply["result"]
        assert result["data"] == {"welcome": True}
        assert "news:all" in result["subs"]
        assert result["subs"]["news:vip"]["data"] == {"row": 1}
        (request,) = back.seen("/connect")
        body = request.body
        assert body["client"] == result["client"]
        assert body["transport"] == "websocket"
        assert body["protocol"] == "json"
        assert body["encoding"] == "json"
        assert body["data"] == {"hello": 1}
        assert body["name"] == "js" and body["version"] == "1.0"
        assert request.headers["authorization"] == "Bearer x"
        assert request.headers["x-static"] == "yes"
        assert "x-secret" not in request.headers
        # the connection's user and info are the backend's: presence-free check through subscribe
        back.answers["/subscribe"] = lambda b: {"result": {"info": {"seat": 3}}}
        assert "result" in client.call("subscribe", {"channel": "room:1"})
        (sub,) = back.seen("/subscribe")
        assert sub.body["user"] == "alice"
        assert sub.body["channel"] == "room:1"
        assert sub.body["meta"] == {"plan": "gold"}
        client.close()


def test_connect_proxy_refuses_with_its_error_and_disconnect(tmp_path: Path, back: Backend) -> None:
    back.answers["/connect"] = lambda body: {"error": {"code": 4001, "message": "who are you"}}
    with serve(_config(tmp_path, back)) as port:
        client = Client(port)
        reply = client.call("connect", {})
        assert reply["error"] == {"code": 4001, "message": "who are you"}
        client.close()
        back.answers["/connect"] = lambda body: {"disconnect": {"code": 4501, "reason": "banned"}}
        client = Client(port)
        client.send("connect", {})
        assert client.close_code() == 4501


def test_subscribe_proxy_refuses_with_custom_code(tmp_path: Path, back: Backend) -> None:
    back.answers["/subscribe"] = lambda body: {"error": {"code": 4403, "message": "not your room"}}
    with serve(_config(tmp_path, back)) as port:
        client = Client(port)
        client.call("connect", {})
        reply = client.call("subscribe", {"channel": "room:secret", "data": {"key": "k"}})
        assert reply["error"] == {"code": 4403, "message": "not your room"}
        assert back.seen("/subscribe")[0].body["data"] == {"key": "k"}
        client.close()


def test_publish_proxy_changes_the_data_subscribers_get(tmp_path: Path, back: Backend) -> None:
    back.answers["/subscribe"] = lambda body: {"result": {}}
    back.answers["/publish"] = lambda body: {
        "result": {"data": {"text": body["data"]["text"].upper()}, "tags": {"lang": "en"}}
    }
    with serve(_config(tmp_path, back)) as port:
        client = Client(port)
        client.call("connect", {})
        client.call("subscribe", {"channel": "room:1"})
        assert "result" in client.call("publish", {"channel": "room:1", "data": {"text": "hi"}})
        push = client.push()
        assert push["channel"] == "room:1"
        assert push["pub"]["data"] == {"text": "HI"}
        assert push["pub"]["tags"] == {"lang": "en"}
        back.answers["/publish"] = lambda body: {"error": {"code": 4000, "message": "spam"}}
        assert client.call("publish", {"channel": "room:1", "data": {"text": "buy"}})["error"]["code"] == 4000
        client.close()


def test_rpc_proxy_answers(tmp_path: Path, back: Backend) -> None:
    back.answers["/rpc"] = lambda body: {
        "result": {"data": {"sum": sum(body["data"]["n"]), "m": body["method"]}}
    }
    with serve(_config(tmp_path, back)) as port:
        client = Client(port)
        client.call("connect", {})
        reply = client.call("rpc", {"method": "add", "data": {"n": [1, 2, 3]}})
        assert reply["result"]["data"] == {"sum": 6, "m": "add"}
        client.close()


def test_unreachable_or_late_backend_is_internal_error(tmp_path: Path, back: Backend) -> None:
    back.delays["/connect"] = 3.0
    with serve(_config(tmp_path, back)) as port:
        client = Client(port)
        started = time.monotonic()
        reply = client.call("connect", {})
        assert reply["error"]["code"] == 100
        assert time.monotonic() - started < 2.5  # the 1 s timeout, not the backend's 3 s
        client.close()
        back.delays.clear()
        back.answers["/connect"] = lambda body: 500
        client = Client(port)
        assert client.call("connect", {})["error"]["code"] == 100
        client.close()


def test_refresh_proxy_extends_or_ends_an_expiring_connection(tmp_path: Path, back: Backend) -> None:
    back.answers["/connect"] = lambda body: {"result": {"user": "bob", "expire_at": int(time.time()) + 1}}
    refreshes = {"n": 0}

    def refresh(body: dict[str, Any]) -> Any:
        refreshes["n"] += 1
        if refreshes["n"] == 1:
            return {"result": {"expire_at": int(time.time()) + 1}}
        return {"result": {"expired": True}}

    back.answers["/refresh"] = refresh
    config = _config(tmp_path, back)
    data = json.loads(config.read_text())
    data["client"]["proxy"]["refresh"] = {"enabled": True, "endpoint": back.url("/refresh")}
    config.write_text(json.dumps(data))
    with serve(config) as port:
        client = Client(port)
        result = client.call("connect", {})["result"]
        assert "expires" not in result  # the server refreshes, not the client
        assert client.close_code(timeout=8) == 3005
        requests = back.seen("/refresh")
        assert len(requests) == 2  # extended once, then ended
        assert requests[0].body["user"] == "bob"


def test_shared_poll_through_the_proxy(tmp_path: Path, back: Backend) -> None:
    items = {"a": {"data": {"votes": 1}, "version": 1}}
    back.answers["/poll"] = lambda body: {
        "result": {
            "items": [{"key": i["key"], **items[i["key"]]} for i in body["items"] if i["key"] in items]
        }
    }
    config = _config(
        tmp_path,
        back,
        shared_poll={"hmac_secret_key": "s3"},
        proxies=[{"name": "poller", "endpoint": back.url("/poll")}],
    )
    data = json.loads(config.read_text())
    data["channel"]["namespaces"].append(
        {
            "name": "votes",
            "subscription_type": "shared_poll",
            "allow_subscribe_for_client": True,
            "shared_poll": {"proxy_name": "poller", "mode": "versioned", "refresh_interval": "200ms"},
        }
    )
    config.write_text(json.dumps(data))
    with serve(config) as port:
        one, two = Client(port), Client(port)
        for c in (one, two):
            c.call("connect", {})
            reply = c.call("subscribe", {"channel": "votes:post", "type": 4})
            assert reply["result"].get("epoch", "") == ""
        bad = one.call(
            "sub_refresh",
            {"channel": "votes:post", "type": 1, "track": [{"signature": "1:2:x", "items": [{"key": "a"}]}]},
        )
        assert bad["error"]["code"] == 103
        signature = sign_keys("s3", "votes:post", ["a"], "alice")
        for c in (one, two):
            reply = c.call(
                "sub_refresh",
                {
                    "channel": "votes:post",
                    "type": 1,
                    "track": [{"signature": signature, "items": [{"key": "a"}]}],
                },
            )
            assert reply["result"]["expires"] is True
        for c in (one, two):
            push = c.push()
            assert push["pub"] == {"key": "a", "version": 1, "data": {"votes": 1}}
        items["a"] = {"data": {"votes": 2}, "version": 2}
        for c in (one, two):
            assert c.push()["pub"]["data"] == {"votes": 2}
        # one request per interval for the node (200 ms), whatever the number of clients
        before = len(back.seen("/poll"))
        time.sleep(1.0)
        polls = back.seen("/poll")
        assert 3 <= len(polls) - before <= 6
        assert all(
            p.body == {"channel": "votes:post", "items": [{"key": "a", "version": 2}]} for p in polls[-3:]
        )
        one.close()
        two.close()


def test_sub_refresh_proxy_prolongs_then_ends_a_subscription(tmp_path: Path, back: Backend) -> None:
    back.answers["/subscribe"] = lambda body: {"result": {"expire_at": int(time.time()) + 1}}
    calls = {"n": 0}

    def sub_refresh(body: dict[str, Any]) -> Any:
        calls["n"] += 1
        return (
            {"result": {"expire_at": int(time.time()) + 2}}
            if calls["n"] == 1
            else {"result": {"expired": True}}
        )

    back.answers["/sub_refresh"] = sub_refresh
    config = _config(tmp_path, back)
    data = json.loads(config.read_text())
    data["channel"]["proxy"]["sub_refresh"] = {"endpoint": back.url("/sub_refresh")}
    data["channel"]["namespaces"][0]["sub_refresh_proxy_enabled"] = True
    config.write_text(json.dumps(data))
    with serve(config) as port:
        client = Client(port)
        client.call("connect", {})
        result = client.call("subscribe", {"channel": "room:1"})["result"]
        assert "expires" not in result  # the server asks the backend, not the client
        push = client.push(timeout=8)
        assert push == {"channel": "room:1", "unsubscribe": {"code": 2501, "reason": "subscription expired"}}
        requests = back.seen("/sub_refresh")
        assert len(requests) == 2
        assert requests[0].body["channel"] == "room:1" and requests[0].body["user"] == "alice"
        client.close()
