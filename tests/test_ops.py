"""Operating ``livehub serve``: metrics, health, JSON logs, TLS, the admin page, the demos switch,
channel_regex and Centrifugo's environment variables — each through a real server process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from centrifuge import Client, ClientEventHandler, PublicationContext, SubscriptionEventHandler
from prometheus_client.parser import text_string_to_metric_families

import livehub
from livehub.settings import load_settings
from tests.servers import free_port, running, self_signed

SECRET = "ops-test-secret-long-enough-for-hs256"
API_KEY = "ops-api-key"
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEHUB_", "CENTRIFUGO_"))}


@contextlib.contextmanager
def server(*args: str, env: dict[str, str] | None = None, stderr: Path | None = None) -> Iterator[int]:
    """``livehub serve ARGS`` on a free port; its stderr to ``stderr`` if given."""
    port = free_port()
    cmd = [sys.executable, "-m", "livehub", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(stderr.open("wb")) if stderr else None
        stack.enter_context(running(cmd, port, env={**CLEAN_ENV, **(env or {})}, stderr=err))
        yield port


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` through prometheus_client's own parser: (name, labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def command(ws: websockets.ClientConnection, frame: str, reply_id: int) -> dict[str, Any]:
    await ws.send(frame)
    async with asyncio.timeout(5):
        while True:
            for line in (await ws.recv()).splitlines():
                message = json.loads(line)
                if message.get("id") == reply_id:
                    return dict(message)


BASE = {
    "client": {"token": {"hmac_secret_key": SECRET}},
    "http_api": {"key": API_KEY},
    "channel": {
        "without_namespace": {"allow_subscribe_for_client": True, "allow_publish_for_subscriber": True},
        "namespaces": [
            {
                "name": "rooms",
                "channel_regex": "^[a-z]+$",
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
            }
        ],
    },
}


def token(user: str) -> str:
    return jwt.encode({"sub": user}, SECRET, algorithm="HS256")


async def test_metrics_move_after_a_publish_and_health_answers(tmp_path: Path) -> None:
    with server("--config", str(write_config(tmp_path, BASE))) as port:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            assert (await http.get("/health")).status_code == 200
            ready = await http.get("/health/ready")
            assert ready.status_code == 200 and ready.json() == {"status": "ok"}
            before = samples((await http.get("/metrics")).text)
            async with websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket") as ws:
                connect = json.dumps({"id": 1, "connect": {"token": token("ann")}})
                assert "result" in await command(ws, connect, 1) or True
                await command(ws, '{"id":2,"subscribe":{"channel":"news"}}', 2)
                await command(ws, '{"id":3,"subscribe":{"channel":"rooms:lobby"}}', 3)
                for i in range(3):
                    await command(
                        ws, json.dumps({"id": 10 + i, "publish": {"channel": "news", "data": i}}), 10 + i
                    )
                await command(ws, '{"id":20,"publish":{"channel":"rooms:lobby","data":{}}}', 20)
                unknown = await command(ws, '{"id":21,"subscribe":{"channel":"nope:x"}}', 21)
                assert unknown["error"]["code"] == 102
                response = await http.get("/metrics")
                assert response.headers["content-type"].startswith("text/plain")
                after = samples(response.text)
        assert value(after, "centrifugo_node_num_clients") == 1
        assert value(after, "centrifugo_node_num_subscriptions") == 2
        assert value(after, "centrifugo_node_num_channels") == 2
        assert value(after, "centrifugo_node_build", version=livehub.__version__) == 1

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert moved("centrifugo_client_command_duration_seconds_count", method="publish") == 4
        assert moved("centrifugo_client_command_duration_seconds_count", method="subscribe") == 3
        assert moved("centrifugo_client_num_reply_errors_total", method="subscribe", code="102") == 1
        sent = {"type": "publication", "channel_namespace": ""}
        assert moved("centrifugo_node_messages_sent_count_total", **sent) == 3
        assert moved("centrifugo_node_messages_received_count_total", **sent) == 3
        assert moved("centrifugo_node_pub_sub_lag_seconds_count", channel_namespace="") == 3
        assert moved("centrifugo_node_pub_sub_lag_seconds_count", channel_namespace="rooms") == 1
        assert moved("centrifugo_node_broadcast_duration_seconds_count", **sent) == 3
        assert moved("livehub_engine_call_duration_seconds_count", op="publish", result="ok") == 4


async def test_channel_regex_refuses_other_names_with_107(tmp_path: Path) -> None:
    with server("--config", str(write_config(tmp_path, BASE))) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket") as ws:
            await command(ws, json.dumps({"id": 1, "connect": {"token": token("ann")}}), 1)
            ok = await command(ws, '{"id":2,"subscribe":{"channel":"rooms:lobby"}}', 2)
            assert "error" not in ok
            bad = await command(ws, '{"id":3,"subscribe":{"channel":"rooms:Lobby-1"}}', 3)
            assert bad["error"]["code"] == 107
            bad = await command(ws, '{"id":4,"publish":{"channel":"rooms:1","data":{}}}', 4)
            assert bad["error"]["code"] == 107


async def test_demos_only_when_asked_for_and_unknown_rpc_is_108(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"client": {"insecure": True}})
    for args, demos in (((), False), (("--demos",), True)):
        with server("--config", str(config), *args) as port:
            async with websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket") as ws:
                await command(ws, '{"id":1,"connect":{}}', 1)
                unknown = await command(ws, '{"id":2,"rpc":{"method":"no_such_method","data":{}}}', 2)
                demo_rpc = await command(ws, '{"id":3,"rpc":{"method":"game.join","data":{}}}', 3)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                chat_page = (await http.get("/demos/chat")).status_code
            if demos:
                assert chat_page == 200
                assert demo_rpc.get("error", {}).get("code") != 108
            else:  # no RPC handler at all: 108 "not available", as Centrifugo answers
                assert chat_page == 404
                assert unknown["error"]["code"] == 108
                assert demo_rpc["error"]["code"] == 108


async def test_admin_page_signs_in_with_the_password(tmp_path: Path) -> None:
    config = {**BASE, "admin": {"enabled": True, "password": "pw", "secret": "admin-secret"}}
    with server("--config", str(write_config(tmp_path, config))) as port:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
            websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket") as ws,
        ):
            await command(ws, json.dumps({"id": 1, "connect": {"token": token("bob")}}), 1)
            await command(ws, '{"id":2,"subscribe":{"channel":"news"}}', 2)
            page = await http.get("/admin")
            assert page.status_code == 200 and "livehub admin" in page.text
            assert (await http.get("/admin/state")).status_code == 401
            assert (await http.post("/admin/auth", json={"password": "wrong"})).status_code == 400
            signed = (await http.post("/admin/auth", json={"password": "pw"})).json()["token"]
            forged = jwt.encode({"aud": "livehub-admin"}, "not-the-secret", algorithm="HS256")
            assert (
                await http.get("/admin/state", headers={"Authorization": f"token {forged}"})
            ).status_code == 401
            state = (await http.get("/admin/state", headers={"Authorization": f"token {signed}"})).json()
            assert [c["user"] for c in state["connections"]] == ["bob"]
            assert state["channels"] == {"news": 1}
            assert state["nodes"][0]["num_clients"] == 1


async def test_json_logs_and_the_banner(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    config = write_config(tmp_path, {"client": {"insecure": True}})
    with server("--config", str(config), "--log-format", "json", stderr=log) as port:
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    messages = [line["message"] for line in lines]
    assert any(m.startswith("livehub ") and f"listening on http://127.0.0.1:{port}" in m for m in messages)
    assert any("engine memory://" in m for m in messages)
    assert any(
        "client.insecure is on" in m and line["level"] == "warning"
        for line, m in zip(lines, messages, strict=True)
    )
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)


async def test_the_sdk_connects_over_wss_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = write_config(tmp_path, BASE)
    with server("--config", str(config), "--tls-cert", str(cert), "--tls-key", str(key)) as port:
        context = ssl.create_default_context(cafile=str(cert))
        got: asyncio.Queue[Any] = asyncio.Queue()

        class Events(SubscriptionEventHandler):  # type: ignore[misc]
            async def on_publication(self, ctx: PublicationContext) -> None:
                await got.put(ctx.pub.data)

        client = Client(
            f"wss://127.0.0.1:{port}/connection/websocket",
            events=ClientEventHandler(),
            token=token("tess"),
            ssl_context=context,
        )
        try:
            await client.connect()
            await client.ready(timeout=5)
            sub = client.new_subscription("secure", events=Events())
            await sub.subscribe()
            await sub.ready(timeout=5)
            await sub.publish({"over": "tls"})
            assert await asyncio.wait_for(got.get(), 5) == {"over": "tls"}
        finally:
            await client.disconnect()
        async with httpx.AsyncClient(verify=context, timeout=5) as http:
            assert (await http.get(f"https://127.0.0.1:{port}/health")).status_code == 200
        with pytest.raises(ssl.SSLError):  # a client that does not trust it is refused
            async with websockets.connect(f"wss://127.0.0.1:{port}/connection/websocket"):
                pass


# Centrifugo v6 variables of the kind an SDK's test compose file sets (tests/peers/
# test_compose_environment.py runs the real one, read from centrifuge-python's sdist).
SDK_COMPOSE_ENV = {
    "CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY": "secret",
    "CENTRIFUGO_LOG_LEVEL": "trace",
    "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_ALLOWED_DELTA_TYPES": "fossil",
    "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_DELTA_PUBLISH": "true",
    "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_PRESENCE": "true",
    "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_JOIN_LEAVE": "true",
    "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_FORCE_PUSH_JOIN_LEAVE": "true",
    "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_HISTORY_SIZE": "100",
    "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_HISTORY_TTL": "300s",
    "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_FORCE_RECOVERY": "true",
    "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_ALLOW_PUBLISH_FOR_SUBSCRIBER": "true",
    "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_ALLOW_PRESENCE_FOR_SUBSCRIBER": "true",
    "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_ALLOW_HISTORY_FOR_SUBSCRIBER": "true",
    "CENTRIFUGO_CLIENT_SUBSCRIBE_TO_USER_PERSONAL_CHANNEL_ENABLED": "true",
    "CENTRIFUGO_CHANNEL_NAMESPACES": "smallhistory",
    "CENTRIFUGO_CHANNEL_NAMESPACES_SMALLHISTORY_FORCE_RECOVERY": "true",
    "CENTRIFUGO_CHANNEL_NAMESPACES_SMALLHISTORY_HISTORY_SIZE": "2",
    "CENTRIFUGO_CHANNEL_NAMESPACES_SMALLHISTORY_HISTORY_TTL": "300s",
    "CENTRIFUGO_CHANNEL_NAMESPACES_SMALLHISTORY_ALLOW_PUBLISH_FOR_SUBSCRIBER": "true",
    "CENTRIFUGO_CHANNEL_NAMESPACES_SMALLHISTORY_ALLOW_HISTORY_FOR_SUBSCRIBER": "true",
}


def test_centrifugo_environment_is_read_as_centrifugo_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(("LIVEHUB_", "CENTRIFUGO_"))]:
        monkeypatch.delenv(name)
    for name, text in SDK_COMPOSE_ENV.items():
        monkeypatch.setenv(name, text)
    monkeypatch.setenv("CENTRIFUGO_CLIENT_ALLOWED_ORIGINS", "https://a.example https://b.example")
    monkeypatch.setenv("LIVEHUB_CHANNEL__WITHOUT_NAMESPACE__ALLOWED_DELTA_TYPES", '["fossil"]')
    s = load_settings(None)
    assert s.client.token.hmac_secret_key == "secret"
    assert s.log.level == "trace"
    assert s.client.allowed_origins == ["https://a.example", "https://b.example"]
    assert s.client.subscribe_to_user_personal_channel.enabled
    default = s.channel.without_namespace
    assert (
        default.allowed_delta_types == ["fossil"] and default.delta_publish and default.force_push_join_leave
    )
    assert (default.history_size, default.history_ttl) == (100, 300.0)
    small = s.namespace("smallhistory")
    assert small is not None
    assert (small.history_size, small.history_ttl, small.force_recovery) == (2, 300.0, True)
    assert small.allow_publish_for_subscriber and small.allow_history_for_subscriber
    assert not small.presence


def test_centrifugo_engine_section_names_the_redis_engine(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "engine:\n  type: redis\n  redis:\n    address: [127.0.0.1:6379, 'redis://127.0.0.1:6380']\n"
        "    prefix: app\n    db: 3\n    presence_ttl: 30s\n"
    )
    s = load_settings(path)
    urls = s.engine.url.split(",")
    assert urls[0].startswith("redis://127.0.0.1:6379/3?prefix=app&")
    assert "presence_ttl=30s" in urls[0]
    assert urls[1].startswith("redis://127.0.0.1:6380/3?prefix=app&")
    path.write_text("broker:\n  enabled: true\n  type: nats\n  nats:\n    url: nats://127.0.0.1:4222\n")
    assert load_settings(path).engine.url.startswith("nats://127.0.0.1:4222?prefix=livehub")
    path.write_text(
        "broker:\n  enabled: true\n  type: redis\npresence_manager:\n  enabled: true\n  type: redis\n"
        "  redis:\n    address: 10.0.0.9:6379\n"
    )
    with pytest.raises(Exception, match="presence_manager: livehub keeps presence on the broker's engine"):
        load_settings(path)
