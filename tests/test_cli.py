"""The ``livehub`` commands, run as processes against a real ``livehub serve``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import yaml

from tests.servers import ROOT, free_port, serve

SECRET = "cli-test-secret-long-enough-for-hs256"
API_KEY = "cli-test-api-key"
ENV = {**os.environ, "COLUMNS": "200"}
ENV = {k: v for k, v in ENV.items() if not k.startswith("LIVEHUB_")}


def livehub(
    *args: str, cwd: Path = ROOT, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livehub", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "livehub", *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_subscribed(proc: subprocess.Popen[str]) -> None:
    """``sub`` says it is subscribed on stderr before any publication can arrive."""
    assert proc.stderr is not None
    line = proc.stderr.readline()  # bounded by the sub's own --timeout
    assert "subscribed to" in line, line + proc.stderr.read()


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A server config that also tells the commands where the server is (http_server.port)."""
    path = tmp_path_factory.mktemp("cli") / "config.toml"
    path.write_text(
        f"""
[http_server]
address = "127.0.0.1"
port = {free_port()}
[client.token]
hmac_secret_key = "{SECRET}"
[http_api]
key = "{API_KEY}"
[channel.without_namespace]
history_size = 100
history_ttl = "300s"
join_leave = true
[[channel.namespaces]]
name = "nohistory"
allow_subscribe_for_client = true
"""
    )
    return path


@pytest.fixture(scope="module")
def port(config: Path) -> Iterator[int]:
    with serve(config, port=tomllib.loads(config.read_text())["http_server"]["port"]) as p:
        yield p


# -- help


@pytest.mark.parametrize(
    "command", ["serve", "version", "publish", "sub", "token", "genconfig", "checkconfig", "bench"]
)
def test_help_explains_with_an_example(command: str) -> None:
    done = livehub(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "Example" in done.stdout
    assert f"livehub {command}" in done.stdout


def test_top_level_help_lists_the_commands() -> None:
    done = livehub("--help")
    assert done.returncode == 0
    for command in ("serve", "publish", "sub", "token", "genconfig", "checkconfig", "bench"):
        assert command in done.stdout


# -- token


def test_connection_token_verifies_with_pyjwt(config: Path) -> None:
    done = livehub("token", "--user", "42", "--info", '{"name": "Alice"}', "--config", str(config))
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout == token + "\n"  # only the token: usable in $(...)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "42"
    assert claims["info"] == {"name": "Alice"}
    assert "channel" not in claims
    assert abs(claims["exp"] - time.time() - 3600) < 60


def test_subscription_token_has_the_channel_claim() -> None:
    other = "another-secret-for-subscription-tokens"
    done = livehub("token", "--user", "7", "--channel", "$secret", "--ttl", "0", "--secret", other)
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), other, algorithms=["HS256"])
    assert claims["sub"] == "7"
    assert claims["channel"] == "$secret"
    assert "exp" not in claims


def test_token_without_a_secret_or_with_bad_info_is_an_error(tmp_path: Path) -> None:
    done = livehub("token", "--user", "1", cwd=tmp_path)
    assert done.returncode == 2
    assert "hmac_secret_key" in done.stderr
    done = livehub("token", "--user", "1", "--secret", "s", "--info", "{not json")
    assert done.returncode == 2
    assert "--info is not valid JSON" in done.stderr
    assert done.stdout == ""


# -- publish


def test_publish_prints_offset_and_epoch(config: Path, port: int) -> None:
    done = livehub("publish", "news", '{"text": "héllo"}', "--config", str(config))
    assert done.returncode == 0, done.stderr
    found = re.fullmatch(r"published to news: offset (\d+), epoch (\S+)\n", done.stdout)
    assert found, done.stdout
    reply = httpx.post(
        f"http://127.0.0.1:{port}/api/history",
        json={"channel": "news", "limit": -1},
        headers={"X-API-Key": API_KEY},
    ).json()["result"]
    assert reply["epoch"] == found[2]
    assert reply["publications"][-1] == {"data": {"text": "héllo"}, "offset": int(found[1])}


def test_publish_with_key_and_url_and_from_stdin(port: int) -> None:
    url = f"http://127.0.0.1:{port}"
    done = livehub("publish", "nohistory:x", "-", "--api-key", API_KEY, "--url", url, stdin='"a string"')
    assert done.returncode == 0, done.stderr
    assert "no history" in done.stdout


def test_publish_errors_are_clear(config: Path, port: int) -> None:
    done = livehub("publish", "news", "hello", "--config", str(config))
    assert done.returncode == 2
    assert "DATA is not valid JSON" in done.stderr and "'\"hello\"'" in done.stderr

    done = livehub("publish", "news", "1", "--api-key", "wrong", "--url", f"http://127.0.0.1:{port}")
    assert done.returncode == 1
    assert "401" in done.stderr and "key" in done.stderr

    done = livehub("publish", "unknown:x", "1", "--config", str(config))
    assert done.returncode == 1
    assert "error 102: unknown channel" in done.stderr

    done = livehub("publish", "news", "1", "--api-key", API_KEY, "--url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "cannot reach" in done.stderr


# -- sub


def test_sub_prints_publications_made_by_publish(config: Path, port: int) -> None:
    proc = start("sub", "feed", "--config", str(config), "--user", "42", "--count", "2", "--timeout", "30")
    try:
        wait_subscribed(proc)
        for n in (1, 2):
            assert livehub("publish", "feed", json.dumps({"n": n}), "--config", str(config)).returncode == 0
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, out
    for n, line in enumerate(lines, 1):
        assert re.fullmatch(
            r"\d\d:\d\d:\d\d\.\d{3}  #\d+  " + re.escape(json.dumps({"n": n}, separators=(",", ":"))), line
        )


def test_sub_with_a_given_token_mints_the_subscription_token_for_its_user(config: Path, port: int) -> None:
    token = livehub("token", "--user", "42", "--config", str(config)).stdout.strip()
    proc = start("sub", "mine", "--token", token, "--config", str(config), "--count", "1", "--timeout", "30")
    try:
        wait_subscribed(proc)
        assert livehub("publish", "mine", "[]", "--config", str(config)).returncode == 0
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.endswith("  []\n")


def test_sub_shows_join_and_leave(config: Path, port: int) -> None:
    proc = start("sub", "room", "--config", str(config), "--count", "1", "--timeout", "30")
    try:
        wait_subscribed(proc)
        other = livehub("sub", "room", "--config", str(config), "--user", "bob", "--timeout", "0.5")
        assert other.returncode == 0  # no --count: the timeout is a normal end
        assert livehub("publish", "room", "{}", "--config", str(config)).returncode == 0
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert re.search(r"join  user=bob client=\S+\n.*leave  user=bob", out), out
    assert out.endswith("  {}\n")


def test_sub_raw_prints_only_data(config: Path, port: int) -> None:
    proc = start("sub", "raw", "--config", str(config), "--count", "1", "--timeout", "30", "--raw")
    try:
        wait_subscribed(proc)
        assert livehub("publish", "raw", '{"a": [1, 2]}', "--config", str(config)).returncode == 0
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert out == '{"a":[1,2]}\n'


def test_sub_timeout_and_ctrl_c(config: Path, port: int) -> None:
    done = livehub("sub", "quiet", "--config", str(config), "--count", "1", "--timeout", "1")
    assert done.returncode == 1
    assert "timed out after 1s" in done.stderr

    proc = start("sub", "quiet", "--config", str(config))
    try:
        wait_subscribed(proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in err


def test_sub_refused(config: Path, port: int) -> None:
    url = f"ws://127.0.0.1:{port}/connection/websocket"
    bad = jwt.encode({"sub": "1"}, "not-the-secret-not-the-secret-not-the-secret", algorithm="HS256")
    done = livehub("sub", "news", "--url", url, "--token", bad, "--timeout", "10")
    assert done.returncode == 1
    assert "3500 invalid token" in done.stderr

    good = livehub("token", "--user", "1", "--config", str(config)).stdout.strip()
    done = livehub("sub", "news", "--url", url, "--token", good, "--timeout", "10")
    assert done.returncode == 1  # no subscription token, and the namespace does not allow clients
    assert "error 103: permission denied" in done.stderr

    done = livehub("sub", "news", "--url", f"ws://127.0.0.1:{free_port()}/connection/websocket")
    assert done.returncode == 1
    assert "cannot connect" in done.stderr


# -- genconfig / checkconfig


@pytest.mark.parametrize("fmt", ["json", "toml", "yaml"])
def test_genconfig_writes_a_valid_config(tmp_path: Path, fmt: str) -> None:
    done = livehub("genconfig", "--format", fmt, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = tmp_path / f"config.{fmt}"
    text = path.read_text()
    data = (
        json.loads(text) if fmt == "json" else tomllib.loads(text) if fmt == "toml" else yaml.safe_load(text)
    )
    secret = data["client"]["token"]["hmac_secret_key"]
    assert len(secret) >= 32 and len(data["http_api"]["key"]) >= 24
    assert ("# " in text) == (fmt != "json")
    assert path.stat().st_mode & 0o077 == 0  # it holds secrets

    done = livehub("checkconfig", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "config is valid\n"
    assert "not used" not in done.stderr  # only keys livehub knows

    # never overwritten by accident; --force makes new keys
    done = livehub("genconfig", "--format", fmt, cwd=tmp_path)
    assert done.returncode == 1 and "--force" in done.stderr
    assert path.read_text() == text
    done = livehub("genconfig", "--output", str(path), "--force")
    assert done.returncode == 0, done.stderr
    assert secret not in path.read_text()


def test_genconfig_to_stdout_and_suffix_mismatch(tmp_path: Path) -> None:
    done = livehub("genconfig", "--output", "-", "--format", "yaml")
    assert done.returncode == 0
    assert yaml.safe_load(done.stdout)["http_api"]["key"]
    done = livehub("genconfig", "--output", str(tmp_path / "x.json"), "--format", "toml")
    assert done.returncode == 2
    assert not (tmp_path / "x.json").exists()


def test_generated_config_serves_sub_and_publish(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert livehub("genconfig", "--output", str(path)).returncode == 0
    p = free_port()
    path.write_text(path.read_text().replace("port = 8000", f"port = {p}"))
    with serve(path, port=p):
        proc = start("sub", "news", "--config", str(path), "--user", "7", "--count", "1", "--timeout", "30")
        try:
            wait_subscribed(proc)
            done = livehub("publish", "news", '{"ok": true}', "--config", str(path))
            assert done.returncode == 0, done.stderr
            assert "offset 1" in done.stdout
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.endswith('  #1  {"ok":true}\n')


def test_checkconfig_names_the_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"client": {"ping_interval": "soon"}}')
    done = livehub("checkconfig", str(path))
    assert done.returncode == 2
    assert "client.ping_interval" in done.stderr
    assert "config is valid" not in done.stdout

    path = tmp_path / "broken.yaml"
    path.write_text("client: [\n")
    done = livehub("checkconfig", str(path))
    assert done.returncode == 2 and "not valid yaml" in done.stderr

    done = livehub("checkconfig", str(tmp_path / "missing.json"))
    assert done.returncode == 2 and "cannot read" in done.stderr


def test_checkconfig_refuses_typos_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "typos.json"
    path.write_text(
        '{"client": {"token": {"hmac_secert_key": "s"}}, "http_api": {"key": "k"},'
        ' "channel": {"namespaces": [{"name": "chat", "histroy_size": 10}]}}'
    )
    done = livehub("checkconfig", str(path))
    assert done.returncode == 2, done.stderr
    assert "config is valid" not in done.stdout
    assert (
        "client.token.hmac_secert_key: unknown key; did you mean client.token.hmac_secret_key?" in done.stderr
    )
    assert "channel.namespaces[0].histroy_size: unknown key; did you mean" in done.stderr
    assert "channel.namespaces[0].history_size?" in done.stderr


def test_checkconfig_refuses_centrifugo_options_livehub_lacks_unless_off(tmp_path: Path) -> None:
    path = tmp_path / "centrifugo.json"
    path.write_text(
        '{"client": {"token": {"hmac_secret_key": "s"}, "concurrency": 8},'
        ' "http_api": {"key": "k"}, "sse": {"enabled": true}}'
    )
    done = livehub("checkconfig", str(path))
    assert done.returncode == 2
    assert "sse: Centrifugo's option, not supported by livehub" in done.stderr
    assert "client.concurrency: Centrifugo's option, not supported by livehub" in done.stderr

    path.write_text('{"client": {"proxy": {"connect": {"enabled": true}}}}')
    done = livehub("checkconfig", str(path))
    assert done.returncode == 2
    assert "an enabled proxy needs an endpoint" in done.stderr

    path.write_text(
        '{"client": {"token": {"hmac_secret_key": "s"}}, "http_api": {"key": "k"},'
        ' "log": {"level": "debug"}, "sse": {"enabled": false},'
        ' "grpc_api": {"enabled": false, "port": 10000},'
        ' "usage_stats": {"enabled": false}, "admin": {"enabled": true, "password": "p", "secret": "s"}}'
    )
    done = livehub("checkconfig", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "config is valid\n"


def test_serve_refuses_a_typo_before_listening(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        "client:\n  insecure: true\nengine:\n  type: redis\n  redis:\n    adress: 127.0.0.1:6379\n"
    )
    done = livehub("serve", "--config", str(path), "--port", str(free_port()), timeout=30)
    assert done.returncode == 2
    assert "engine.redis.adress: unknown key; did you mean engine.redis.address?" in done.stderr


def test_a_list_in_a_livehub_variable_is_json_or_words_and_an_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"client": {"insecure": true}}')
    env = {**ENV, "LIVEHUB_CLIENT__ALLOWED_ORIGINS": "[not json"}
    done = subprocess.run(
        [sys.executable, "-m", "livehub", "checkconfig", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "LIVEHUB_CLIENT__ALLOWED_ORIGINS: not a JSON list" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) <= 3


def test_version_flag() -> None:
    done = livehub("--version")
    assert done.returncode == 0
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*\n", done.stdout)


# -- bench


def test_bench_reports_no_loss(config: Path, port: int) -> None:
    done = livehub("bench", "--config", str(config), "--connections", "50", "--duration", "2", "--rate", "50")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"connections\W+50\b", out), out
    published = int(re.search(r"publications\W+(\d+)", out)[1])  # type: ignore[index]
    assert 10 <= published <= 101  # 50/s for 2 s, unless the machine is very busy
    assert re.search(rf"deliveries\W+{published * 50:,}\b", out), out
    assert re.search(r"lost\W+0\b", out), out
    for name in ("connect rate", "deliveries/s", "latency p50", "latency p90", "latency p99", "latency max"):
        assert name in out


def test_bench_refuses_other_hosts(config: Path) -> None:
    done = livehub("bench", "--url", "ws://192.0.2.1:8000/connection/websocket", "--connections", "1")
    assert done.returncode == 2
    assert "loopback" in done.stderr
    done = livehub("bench", "--api-url", "http://192.0.2.1/api", "--config", str(config))
    assert done.returncode == 2
