"""The dashboard's figures change over time without a reload."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import Windows, screenshot


def test_figures_update_live(windows: Windows) -> None:
    page = windows.open("/demos/dashboard")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    page.wait_for_function("Number(document.querySelector('#t-connections').textContent) >= 1", timeout=5000)
    expect(page.locator("#t-orders")).not_to_have_text("—")

    # the simulated source publishes twice a second, the metrics once a second
    orders = page.locator("#t-orders").inner_text()
    updated = page.locator("#updated").inner_text()
    expect(page.locator("#t-orders")).not_to_have_text(orders)
    expect(page.locator("#updated")).not_to_have_text(updated)

    # another viewer shows up in the connections figure
    other = windows.open("/demos/dashboard")
    expect(other.locator("#conn")).to_have_attribute("data-state", "connected")
    page.wait_for_function("Number(document.querySelector('#t-connections').textContent) >= 2", timeout=5000)

    page.wait_for_timeout(2500)  # a few more points on the charts
    screenshot(page, "dashboard")
