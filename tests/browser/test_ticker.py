"""Ticker: a new page shows prices at once; a slow page shows the latest, not a backlog."""

from __future__ import annotations

import time

from playwright.sync_api import expect

from tests.browser.conftest import Windows, screenshot


def test_first_prices_at_once_then_a_steady_stream(windows: Windows) -> None:
    started = time.monotonic()
    page = windows.open("/demos/ticker")
    first = page.locator("#rows tr .price").first
    # (bounds loose enough for a loaded 2-core machine; the snapshot RPC answers in milliseconds)
    expect(first).not_to_have_text("—", timeout=4000)
    assert time.monotonic() - started < 4.0, "the first price took too long"
    expect(page.locator("#rows tr")).to_have_count(20)

    # a second viewer also starts full, from the snapshot, while the stream runs
    started = time.monotonic()
    second = windows.open("/demos/ticker")
    expect(second.locator("#rows tr")).to_have_count(20, timeout=3000)
    assert time.monotonic() - started < 3.0

    page.wait_for_function("Number(document.querySelector('#rate').textContent) >= 100", timeout=5000)
    price = first.inner_text()
    expect(first).not_to_have_text(price)
    screenshot(page, "ticker")


def test_a_slow_page_coalesces(windows: Windows) -> None:
    page = windows.open("/demos/ticker")
    expect(page.locator("#rows tr")).to_have_count(20)
    page.check("#slow")
    page.wait_for_timeout(2500)
    fps = int(page.locator("#fps").inner_text())
    rate = int(page.locator("#rate").inner_text())
    coalesced = float(page.locator("#coalesced").inner_text())
    age = int(page.locator("#age").inner_text())
    assert fps <= 8, fps  # the page draws ~5 frames a second...
    assert rate >= 100, rate  # ...still receives everything...
    assert coalesced >= 10, coalesced  # ...and draws only the latest of each symbol...
    assert age < 1000, age  # ...so what it shows is fresh, not a growing backlog
