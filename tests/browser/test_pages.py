"""The home page links to every demo; the seed page talks to /ws, /chat and /echo."""

from __future__ import annotations

import urllib.request

from playwright.sync_api import expect

from tests.browser.conftest import Windows, screenshot

DEMOS = [
    "/demos/chat",
    "/demos/notifications",
    "/demos/dashboard",
    "/demos/game",
    "/demos/ticker",
    "/demos/admin",
    "/demos/seed",
]


def test_home_links_every_demo(windows: Windows) -> None:
    page = windows.open("/")
    expect(page.locator("h1")).to_contain_text("Real-time messaging")
    links = page.locator(".demo-card").evaluate_all("(cards) => cards.map((a) => new URL(a.href).pathname)")
    assert links == DEMOS
    nav = page.locator(".nav a").evaluate_all("(links) => links.map((a) => new URL(a.href).pathname)")
    assert nav == DEMOS
    for path in DEMOS:
        with urllib.request.urlopen(windows.base_url + path, timeout=10) as reply:
            assert reply.status == 200
            assert '<nav class="nav"' in reply.read().decode()
    screenshot(page, "home")


def test_seed_page_talks_to_the_seed_endpoints(windows: Windows) -> None:
    page = windows.open("/demos/seed")
    panels = {path: page.locator(f".seed[data-path='{path}']") for path in ("/ws", "/chat", "/echo")}

    panels["/ws"].locator("input").fill("hello")
    panels["/ws"].locator("button").click()
    expect(panels["/ws"].locator(".log .in")).to_have_text(["← Message text was: hello"])

    panels["/chat"].locator("input").fill("hi there")
    panels["/chat"].locator("button").click()
    expect(panels["/chat"].locator(".log .in")).to_have_text(["← You said: hi there"])
    expect(panels["/chat"].locator(".log")).to_contain_text("closed (1000)")
    panels["/chat"].locator("button").click()  # /chat closes after one answer: a new socket each time
    expect(panels["/chat"].locator(".log .in")).to_have_count(2)

    for text in ("echo me", "and me ✓"):
        panels["/echo"].locator("input").fill(text)
        panels["/echo"].locator("button").click()
        expect(panels["/echo"].locator(".log .in").last).to_have_text(f"← {text}")
    panels["/ws"].locator("button").click()
    expect(panels["/ws"].locator(".log .in")).to_have_count(2)
    screenshot(page, "seed")
