"""Chat: messages reach every window, presence shows both users, history and recovery work."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import Windows, screenshot


def test_messages_presence_history_and_recovery(windows: Windows) -> None:
    alice = windows.open("/demos/chat?user=alice&room=lobby")
    expect(alice.locator("#conn")).to_have_attribute("data-state", "connected")
    bob = windows.open("/demos/chat?user=bob&room=lobby")

    for page in (alice, bob):
        expect(page.locator("#online")).to_contain_text("alice")
        expect(page.locator("#online")).to_contain_text("bob")
        expect(page.locator("#online-count")).to_have_text("2")
    expect(alice.locator("#messages")).to_contain_text("bob joined")

    # Typed in one window, shown in the other; the text is shown as text, never as HTML.
    alice.fill("#text", "Hi Bob! <b>not bold</b>")
    alice.press("#text", "Enter")
    last = bob.locator("#messages .msg .text").last
    expect(last).to_have_text("Hi Bob! <b>not bold</b>")
    assert bob.locator("#messages .msg .text b").count() == 0
    expect(bob.locator("#messages .msg .who").last).to_have_text("alice")  # stamped by the server

    bob.fill("#text", "Hello Alice, all good here")
    bob.click("#composer button")
    expect(alice.locator("#messages .msg .text").last).to_have_text("Hello Alice, all good here")

    # A reload starts with the last messages (history).
    bob.reload()
    expect(bob.locator("#messages")).to_contain_text("Hi Bob! <b>not bold</b>")
    expect(bob.locator("#messages")).to_contain_text("Hello Alice, all good here")

    # A dropped connection gets what it missed (recovery).
    bob.evaluate("window.livehub.client.disconnect()")
    expect(bob.locator("#conn")).to_have_attribute("data-state", "disconnected")
    alice.fill("#text", "Sent while Bob was away")
    alice.press("#text", "Enter")
    expect(alice.locator("#messages .msg .text").last).to_have_text("Sent while Bob was away")
    bob.evaluate("window.livehub.client.connect()")
    expect(bob.locator("#messages .msg .text").last).to_have_text("Sent while Bob was away")
    expect(bob.locator("#room-meta")).to_contain_text("recovered")
    assert bob.locator("#messages .msg .text", has_text="Hello Alice, all good here").count() == 1

    alice.fill("#text", "Welcome back! Try a second room on the left.")
    alice.press("#text", "Enter")
    expect(bob.locator("#messages .msg .text").last).to_contain_text("Welcome back")
    screenshot(bob, "chat")


def test_rooms_are_separate(windows: Windows) -> None:
    carol = windows.open("/demos/chat?user=carol&room=python")
    dave = windows.open("/demos/chat?user=dave&room=random")
    expect(carol.locator("#online-count")).to_have_text("1")
    carol.fill("#text", "only for #python")
    carol.press("#text", "Enter")
    expect(carol.locator("#messages .msg .text").last).to_have_text("only for #python")
    dave.click("#rooms a:has-text('python')")
    expect(dave.locator("#room-title")).to_have_text("#python")
    expect(dave.locator("#messages")).to_contain_text("only for #python")  # history of the new room
    expect(carol.locator("#online-count")).to_have_text("2")
