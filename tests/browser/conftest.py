"""Browser tests of the demo pages: real Chromium, the official SDK bundle, a real ``livehub serve``.

* Chromium is Debian's (``/usr/bin/chromium``), installed by ``scripts/provision_browser.sh``
  (run by ``make test``, and here again, where it is a no-op when done); Playwright drives it
  through ``executable_path`` and never downloads a browser of its own.
* The SDK bundle the pages import is built by ``frontend/build.sh`` when missing.
* The server is ``livehub serve --config examples/demo.toml`` on a free port, one per test module.

Each test also saves screenshots of its page at 1280x800 and 390x844 into ``docs/screenshots``
(set ``LIVEHUB_SCREENSHOTS=0`` to skip writing them). Every wait is bounded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.servers import ROOT, provision, serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
BUNDLE = ROOT / "livehub" / "demos" / "static" / "vendor" / "centrifuge.js"
SCREENSHOTS = ROOT / "docs" / "screenshots"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
TIMEOUT_MS = 10_000

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        provision("scripts/provision_browser.sh", "the browser tests need Chromium")
    if not BUNDLE.exists():
        provision("frontend/build.sh", "the demo pages need the SDK bundle")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(ROOT / "examples" / "demo.toml") as port:
        yield f"http://127.0.0.1:{port}"


class Windows:
    """Opens browser windows, each in its own context (its own storage, like another person)."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    def open(self, path: str, context: BrowserContext | None = None) -> Page:
        if context is None:
            context = self.browser.new_context(viewport={"width": 1280, "height": 800})
            context.set_default_timeout(TIMEOUT_MS)
            self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{path}: {exc}"))
        page.goto(self.base_url + path)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def windows(browser: Browser, base_url: str) -> Iterator[Windows]:
    opened = Windows(browser, base_url)
    try:
        yield opened
        assert not opened.errors, f"errors in the pages: {opened.errors}"
    finally:
        opened.close()


def screenshot(page: Page, name: str, settle_ms: int = 400) -> None:
    """Save the page at desktop and phone sizes as docs/screenshots/<name>-<size>.png."""
    if os.environ.get("LIVEHUB_SCREENSHOTS", "1") == "0":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("document.activeElement?.blur()")
    try:
        for size, (width, height) in SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            page.evaluate("window.scrollTo(0, 0)")
            page.wait_for_timeout(settle_ms)
            page.screenshot(path=SCREENSHOTS / f"{name}-{size}.png")
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})
