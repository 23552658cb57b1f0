"""The sdist and the wheel built from a clean clone of the committed tree, installed in a fresh
venv, serve the chat demo with its SDK bundle (which setup.py builds: it is never committed), and
that chat works in Debian's Chromium (two windows: one sends, the other shows the message).
One build, one venv and one server serve every test of the module (module-scoped fixtures).

Heavy (a clone, npm ci, a venv with livehub's dependencies from the package index): run it with
``flock /tmp/livehub-heavy.lock .venv/bin/python -m pytest tests/test_packaging.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS
from tests.servers import ROOT, free_port, provision, running

BUNDLE = "livehub/demos/static/vendor/centrifuge.js"
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEHUB_", "CENTRIFUGO_", "VIRTUAL_ENV"))}


def run(*cmd: str | Path, cwd: Path, timeout: float = 900) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) from ``python -m build`` in a clean clone of this branch's HEAD."""
    tmp = tmp_path_factory.mktemp("packaging")
    clone = tmp / "clone"
    run("git", "clone", "--quiet", "--no-hardlinks", ROOT, clone, cwd=tmp)
    head = run("git", "rev-parse", "HEAD", cwd=ROOT).strip()
    run("git", "checkout", "--quiet", head, cwd=clone)
    assert not (clone / BUNDLE).exists()  # never committed: the build must make it
    run(sys.executable, "-P", "-m", "build", "--outdir", tmp / "dist", clone, cwd=tmp)
    (sdist,) = (tmp / "dist").glob("livehub-*.tar.gz")
    (wheel,) = (tmp / "dist").glob("livehub-*.whl")
    return sdist, wheel


def test_sdist_and_wheel_carry_the_bundle_and_the_license(built: tuple[Path, Path]) -> None:
    sdist, wheel = built
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {BUNDLE, "LICENSE", "setup.py", "frontend/build.sh"} <= names
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        metadata = next(whl.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        bundle = whl.read(BUNDLE)
    assert len(bundle) > 10_000 and b"Centrifuge" in bundle
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: MIT" in metadata
    for extra in ("redis", "nats", "postgres"):
        assert f"Provides-Extra: {extra}" in metadata
    core = [
        line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert not any(name in line for line in core for name in ("redis", "nats-py", "asyncpg"))  # a slim core
    assert "Classifier: Framework :: FastAPI" in metadata


@pytest.fixture(scope="module")
def installed(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``livehub`` script of a fresh venv with only the wheel (and what it requires) in it."""
    _, wheel = built
    tmp = tmp_path_factory.mktemp("venv")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=tmp)
    return venv / "bin" / "livehub"


@pytest.fixture(scope="module")
def demo_url(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``livehub serve --demos`` of the installed wheel, with the committed examples/demo.toml,
    run from outside the repository (so the installed package serves, not the checkout)."""
    tmp = tmp_path_factory.mktemp("demo")
    config = tmp / "demo.toml"
    config.write_bytes((ROOT / "examples" / "demo.toml").read_bytes())
    port = free_port()
    cmd = [installed, "serve", "--demos", "--config", config, "--port", str(port), "--log-level", "warn"]
    with running(cmd, port, cwd=tmp, timeout=30, env=ENV):
        yield f"http://127.0.0.1:{port}"


def test_the_wheel_in_a_fresh_venv_serves_the_chat_demo(
    installed: Path, demo_url: str, tmp_path: Path
) -> None:
    assert (
        run(installed, "--version", cwd=tmp_path).strip()
        == run(sys.executable, "-c", "import livehub; print(livehub.__version__)", cwd=ROOT).strip()
    )

    # the core has no Redis client: the engine says which extra it needs
    config = tmp_path / "redis.json"
    config.write_text('{"client": {"insecure": true}, "engine": {"type": "redis"}}')
    refused = subprocess.run(
        [installed, "checkconfig", config], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    assert "pip install 'livehub[redis]'" in refused.stderr

    with httpx.Client(base_url=demo_url, timeout=10) as http:
        page = http.get("/demos/chat")
        assert page.status_code == 200 and "chat" in page.text.lower()
        bundle = http.get("/demos/static/vendor/centrifuge.js")
        assert bundle.status_code == 200 and "Centrifuge" in bundle.text
        assert http.get("/metrics").status_code == 200


def test_the_wheels_chat_demo_works_in_chromium(demo_url: str) -> None:
    """Two windows of Debian's Chromium on the installed wheel's chat: one types, the other shows it
    (through the bundle the wheel carries, the server's RPC and a real WebSocket)."""
    if not Path(CHROMIUM).exists():
        provision("scripts/provision_browser.sh", "the chat check needs Chromium")
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = []
            for user in ("alice", "bob"):
                context = browser.new_context()  # its own storage: another person
                context.set_default_timeout(TIMEOUT_MS)
                page = context.new_page()
                page.on("pageerror", lambda exc, user=user: errors.append(f"{user}: {exc}"))
                page.goto(f"{demo_url}/demos/chat?user={user}&room=lobby")
                expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=TIMEOUT_MS)
                pages.append(page)
            alice, bob = pages
            expect(alice.locator("#online-count")).to_have_text("2", timeout=TIMEOUT_MS)
            alice.fill("#text", "sent from the wheel's chat")
            alice.press("#text", "Enter")
            expect(bob.locator("#messages .msg .text").last).to_have_text(
                "sent from the wheel's chat", timeout=TIMEOUT_MS
            )
            expect(bob.locator("#messages .msg .who").last).to_have_text("alice", timeout=TIMEOUT_MS)
        finally:
            browser.close()
    assert not errors, f"errors in the pages: {errors}"
