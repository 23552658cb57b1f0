"""The sdist and the wheel built from a clean clone of the committed tree, installed in a fresh
venv, serve the chat demo with its SDK bundle (which setup.py builds: it is never committed).

Heavy (a clone, npm ci, a venv with livehub's dependencies from the package index): run it with
``flock /tmp/livehub-heavy.lock .venv/bin/python -m pytest tests/test_packaging.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, free_port, wait_port

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
    for extra in ("redis", "nats"):
        assert f"Provides-Extra: {extra}" in metadata
    core = [
        line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert not any(name in line for line in core for name in ("redis", "nats-py"))  # a slim core
    assert "Classifier: Framework :: FastAPI" in metadata


def test_the_wheel_in_a_fresh_venv_serves_the_chat_demo(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, wheel = built
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path)
    livehub = venv / "bin" / "livehub"
    assert (
        run(livehub, "--version", cwd=tmp_path).strip()
        == run(sys.executable, "-c", "import livehub; print(livehub.__version__)", cwd=ROOT).strip()
    )

    # the core has no Redis client: the engine says which extra it needs
    config = tmp_path / "redis.json"
    config.write_text('{"client": {"insecure": true}, "engine": {"type": "redis"}}')
    refused = subprocess.run(
        [livehub, "checkconfig", config], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    assert "pip install 'livehub[redis]'" in refused.stderr

    port = free_port()
    demo = tmp_path / "demo.json"
    demo.write_text('{"client": {"insecure": true}}')
    proc = subprocess.Popen(
        [livehub, "serve", "--demos", "--config", demo, "--port", str(port), "--log-level", "warn"],
        cwd=tmp_path,  # not the repository: the installed package serves
        env=ENV,
    )
    try:
        wait_port(port, proc, timeout=30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            page = http.get("/demos/chat")
            assert page.status_code == 200 and "chat" in page.text.lower()
            bundle = http.get("/demos/static/vendor/centrifuge.js")
            assert bundle.status_code == 200 and "Centrifuge" in bundle.text
            assert http.get("/metrics").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
