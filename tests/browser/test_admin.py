"""Admin: connections and channels live behind the API key; publish and disconnect work."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import Windows, screenshot


def test_admin_sees_connections_publishes_and_disconnects(windows: Windows) -> None:
    erin = windows.open("/demos/chat?user=erin&room=support")
    expect(erin.locator("#online-count")).to_have_text("1")
    windows.open("/demos/dashboard")

    admin = windows.open("/demos/admin")
    admin.fill("#key", "wrong")
    admin.click("#login-form button")
    expect(admin.locator("#login-error")).to_have_text("wrong API key")
    admin.fill("#key", "change-me")
    admin.click("#login-form button")
    expect(admin.locator("#panel")).to_be_visible()

    expect(admin.locator("#connections tr[data-user='erin']")).to_have_count(1)
    expect(admin.locator("#channels tr[data-channel='chat.support'] td.num")).to_have_text("1")
    admin.wait_for_function("Number(document.querySelector('#a-clients').textContent) >= 3", timeout=5000)
    expect(admin.locator("#a-deliveries")).not_to_have_text("—")  # rates, from dashboard.metrics

    # a new window shows up without a reload
    windows.open("/demos/chat?user=frank&room=support")
    expect(admin.locator("#connections tr[data-user='frank']")).to_have_count(1)
    expect(admin.locator("#channels tr[data-channel='chat.support'] td.num")).to_have_text("2")

    # publish through the server HTTP API: the chat window shows it
    admin.fill("#p-channel", "chat.support")
    admin.fill("#p-data", '{"text": "Maintenance at 22:00 UTC"}')
    admin.click("#publish-form button")
    expect(admin.locator("#publish-result")).to_contain_text("published")
    expect(erin.locator("#messages .msg .text").last).to_have_text("Maintenance at 22:00 UTC")
    expect(erin.locator("#messages .msg .who").last).to_have_text("server")
    screenshot(admin, "admin")

    # disconnect a user: the button in erin's row
    admin.click("#connections tr[data-user='erin'] button")
    expect(erin.locator("#conn")).to_have_attribute("data-state", "disconnected")
    expect(erin.locator("#conn")).to_contain_text("disconnected by server")
    expect(admin.locator("#connections tr[data-user='erin']")).to_have_count(0)
