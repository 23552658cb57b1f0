"""Configuration: Centrifugo key names, durations, environment overrides, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from livehub.settings import ConfigError, config_problems, load_settings, parse_duration
from tests.servers import ROOT


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_centrifugo_json_config_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.json",
        '{"client": {"token": {"hmac_secret_key": "s"}, "insecure": true,'
        ' "subscribe_to_user_personal_channel": {"enabled": true}},'
        ' "channel": {"without_namespace": {"presence": true, "history_size": 10, "history_ttl": "5m"},'
        ' "namespaces": [{"name": "chat", "join_leave": true}]},'
        ' "http_api": {"key": "k"}, "log": {"level": "debug"}}',
    )
    s = load_settings(path)
    assert s.client.token.hmac_secret_key == "s"
    assert s.client.insecure is True
    assert s.client.subscribe_to_user_personal_channel.enabled is True
    assert s.channel.without_namespace.history_ttl == 300.0
    assert s.channel.without_namespace.history_enabled
    assert s.namespace("chat") is not None and s.namespace("chat").join_leave  # type: ignore[union-attr]
    assert s.namespace("nope") is None
    assert s.http_api.key == "k"
    assert config_problems(s) == []
    assert s.log.level == "debug"


def test_toml_and_yaml(tmp_path: Path) -> None:
    toml = write(tmp_path, "c.toml", '[client]\ninsecure = true\nping_interval = "10s"\n')
    yaml = write(tmp_path, "c.yaml", "client:\n  insecure: true\n  ping_interval: 1m30s\n")
    assert load_settings(toml).client.ping_interval == 10.0
    assert load_settings(yaml).client.ping_interval == 90.0


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "c.json", '{"client": {"insecure": false, "channel_limit": 5}}')
    monkeypatch.setenv("LIVEHUB_CLIENT__INSECURE", "true")
    s = load_settings(path)
    assert s.client.insecure is True
    assert s.client.channel_limit == 5


@pytest.mark.parametrize(
    ("text", "duration"),
    [("25s", 25.0), ("1h30m", 5400.0), ("500ms", 0.5), ("7", 7.0), (3, 3), (".5s", 0.5), ("+1.m", 60.0)],
)
def test_durations(text: object, duration: float) -> None:
    assert parse_duration(text) == duration


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path, "c.json", '{"channel": {"namespaces": [{"name": "chat", "history_size": "lots"}]}}'
    )
    with pytest.raises(ConfigError, match=r"channel\.namespaces\.0\.history_size"):
        load_settings(path)


def test_bad_duration_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"client": {"ping_interval": "soon"}}')
    with pytest.raises(ConfigError, match=r"client\.ping_interval"):
        load_settings(path)


def test_unparsable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", "{not json")
    with pytest.raises(ConfigError, match="not valid json"):
        load_settings(path)


def test_serve_with_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"client": {"channel_limit": -1}}')
    proc = subprocess.run(
        [sys.executable, "-m", "livehub", "serve", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "client.channel_limit" in proc.stderr


def test_serve_with_unknown_engine_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "livehub", "serve", "--engine", "carrier-pigeon://x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "engine" in proc.stderr


def test_pong_timeout_must_be_shorter_than_ping_interval(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"client": {"ping_interval": "5s", "pong_timeout": "5s"}}')
    with pytest.raises(ConfigError, match=r"client: .*pong_timeout must be shorter"):
        load_settings(path)


def test_a_bad_channel_regex_and_two_engines_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"channel": {"namespaces": [{"name": "ns", "channel_regex": "(["}]}}')
    with pytest.raises(ConfigError, match=r"channel\.namespaces\.0.*channel_regex"):
        load_settings(path)
    path = write(tmp_path, "e.json", '{"engine": {"url": "memory://", "type": "redis"}}')
    with pytest.raises(ConfigError, match="both name an engine"):
        load_settings(path)


def test_lists_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "c.json", '{"channel": {"namespaces": [{"name": "chat-room"}]}}')
    monkeypatch.setenv("LIVEHUB_CLIENT__ALLOWED_ORIGINS", "https://a https://b")
    monkeypatch.setenv("CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_ROOM_PRESENCE", "true")
    s = load_settings(path)
    assert s.client.allowed_origins == ["https://a", "https://b"]
    assert s.namespace("chat-room").presence  # type: ignore[union-attr]
    monkeypatch.setenv(
        "CENTRIFUGO_CHANNEL_NAMESPACES", '[{"name": "feed", "history_size": 5, "history_ttl": "1m"}]'
    )
    s = load_settings(path)
    assert [ns.name for ns in s.channel.namespaces] == ["feed"]
    assert s.namespace("feed").history_enabled  # type: ignore[union-attr]
    monkeypatch.setenv("LIVEHUB_CLIENT__INSECUR", "true")
    with pytest.raises(
        ConfigError, match="LIVEHUB_CLIENT__INSECUR: no such setting; did you mean LIVEHUB_CLIENT__INSECURE"
    ):
        load_settings(path)


def test_the_environment_is_read_as_centrifugo_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Centrifugo v6: an empty variable is unset; names in CENTRIFUGO_CHANNEL_NAMESPACES are added
    to the file's namespaces; one name twice is refused; Go's durations (".5s")."""
    path = write(
        tmp_path,
        "c.json",
        '{"client": {"allowed_origins": ["https://a"]}, "channel": {"without_namespace": {"history_size": 5},'
        ' "namespaces": [{"name": "chat", "presence": true}]}}',
    )
    for name in ("CLIENT_ALLOWED_ORIGINS", "CLIENT_PING_INTERVAL", "CHANNEL_WITHOUT_NAMESPACE_HISTORY_SIZE"):
        monkeypatch.setenv(f"CENTRIFUGO_{name}", "")
    monkeypatch.setenv("CENTRIFUGO_CHANNEL_NAMESPACES", "")
    monkeypatch.setenv("CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_PRESENCE", "")
    s = load_settings(path)
    assert s.client.allowed_origins == ["https://a"] and s.client.ping_interval == 25.0
    assert s.channel.without_namespace.history_size == 5
    assert [(ns.name, ns.presence) for ns in s.channel.namespaces] == [("chat", True)]

    monkeypatch.setenv("CENTRIFUGO_CHANNEL_NAMESPACES", "feed")
    monkeypatch.setenv("CENTRIFUGO_CHANNEL_NAMESPACES_FEED_HISTORY_SIZE", "3")
    monkeypatch.setenv("CENTRIFUGO_CHANNEL_NAMESPACES_FEED_HISTORY_TTL", ".5s")
    s = load_settings(path)
    assert [ns.name for ns in s.channel.namespaces] == ["chat", "feed"]
    assert s.namespace("chat").presence  # type: ignore[union-attr]
    assert s.namespace("feed").history_size == 3 and s.namespace("feed").history_ttl == 0.5  # type: ignore[union-attr]

    monkeypatch.setenv("CENTRIFUGO_CHANNEL_NAMESPACES", "chat")
    with pytest.raises(ConfigError, match="namespace name must be unique: chat"):
        load_settings(path)
    monkeypatch.setenv("LIVEHUB_CHANNEL__NAMESPACES", "news")  # livehub's own wins over both
    assert [ns.name for ns in load_settings(path).channel.namespaces] == ["news"]


def test_map_options_of_a_namespace_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A nested option (``map.key_ttl``) of a namespace, in Centrifugo's spelling; the file's
    other map options stay."""
    path = write(
        tmp_path, "c.json", '{"channel": {"namespaces": [{"name": "board", "map": {"max_page_size": 50}}]}}'
    )
    monkeypatch.setenv("CENTRIFUGO_CHANNEL_NAMESPACES_BOARD_SUBSCRIPTION_TYPE", "map")
    monkeypatch.setenv("CENTRIFUGO_CHANNEL_NAMESPACES_BOARD_MAP_MODE", "ephemeral")
    monkeypatch.setenv("CENTRIFUGO_CHANNEL_NAMESPACES_BOARD_MAP_KEY_TTL", "10s")
    board = load_settings(path).namespace("board")
    assert board is not None and board.is_map
    assert (board.map.mode, board.map.key_ttl, board.map.max_page_size) == ("ephemeral", 10.0, 50)
    monkeypatch.setenv("CENTRIFUGO_CHANNEL_NAMESPACES_BOARD_MAP_KEY_TTL", "")
    with pytest.raises(ConfigError, match="map.key_ttl is required"):
        load_settings(path)
