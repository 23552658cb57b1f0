"""Notifications reach every window of their user, and nobody else's."""

from __future__ import annotations

import json
import urllib.request

from playwright.sync_api import expect

from tests.browser.conftest import Windows, screenshot


def notify(base_url: str, **body: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"{base_url}/demos/notify",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())  # type: ignore[no-any-return]


def test_a_notification_reaches_only_its_user(windows: Windows) -> None:
    alice = windows.open("/demos/notifications?user=alice")
    alice_again = windows.open("/demos/notifications?user=alice", context=alice.context)
    bob = windows.open("/demos/notifications?user=bob")
    for page in (alice, alice_again, bob):
        expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(bob.locator("#me")).to_have_text("bob")

    # bob's page sends to alice through the form (POST /demos/notify)
    bob.fill("#to", "alice")
    bob.fill("#title", "Your order has shipped")
    bob.fill("#text", "Parcel <i>42</i> arrives tomorrow")
    bob.click("#send button")
    expect(bob.locator("#sent")).to_contain_text("#alice")
    for page in (alice, alice_again):
        expect(page.locator("#inbox .note .title")).to_have_text(["Your order has shipped"])
        expect(page.locator("#inbox .note .text")).to_have_text(["Parcel <i>42</i> arrives tomorrow"])
        expect(page.locator("#badge")).to_have_text("1")

    # an HTTP call from any backend: to bob only
    sent = notify(windows.base_url, to="bob", title="Payment received", level="success")
    assert sent["channel"] == "#bob" and sent["delivered_to"] == 1
    expect(bob.locator("#inbox .note .title")).to_have_text(["Payment received"])
    expect(bob.locator("#badge")).to_have_text("1")
    bob.wait_for_timeout(300)
    expect(alice.locator("#inbox .note")).to_have_count(1)
    expect(alice.locator("#badge")).to_have_text("1")

    notify(windows.base_url, to="alice", title="New comment on your post", text="Bob: looks great!")
    notify(windows.base_url, to="alice", title="Disk almost full", text="92% used on /var", level="warning")
    expect(alice.locator("#badge")).to_have_text("3")
    expect(alice.locator("#inbox .note .title").first).to_have_text("Disk almost full")  # newest first
    expect(bob.locator("#inbox .note")).to_have_count(1)

    # a reload shows the last notifications again (history), still unread
    alice.reload()
    expect(alice.locator("#inbox .note")).to_have_count(3)
    expect(alice.locator("#badge")).to_have_text("3")
    screenshot(alice, "notifications")
    alice.click("#read")
    expect(alice.locator("#badge")).to_be_hidden()


def test_others_cannot_subscribe_to_a_personal_channel(windows: Windows) -> None:
    mallory = windows.open("/demos/notifications?user=mallory")
    expect(mallory.locator("#conn")).to_have_attribute("data-state", "connected")
    error = mallory.evaluate(
        """() => new Promise((resolve) => {
            const sub = window.livehub.client.newSubscription("#alice");
            sub.on("unsubscribed", (ctx) => resolve(ctx.code));
            sub.on("subscribed", () => resolve("subscribed"));
            sub.subscribe();
            setTimeout(() => resolve("no answer"), 5000);
        })"""
    )
    assert error == 103
