"""Where WebSocket is unavailable the demos fall back to HTTP-streaming, and without streaming
fetch to SSE (examples/demo.toml enables both): the chat works across the three transports."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import TIMEOUT_MS, Windows

#: Run before the page's scripts: the browser as a proxy that blocks WebSocket leaves it.
NO_WEBSOCKET = "delete window.WebSocket;"
NO_STREAMING_FETCH = "delete window.WebSocket; delete window.ReadableStream;"


def open_without(windows: Windows, script: str, path: str) -> Page:
    context = windows.browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(script)
    windows.contexts.append(context)
    return windows.open(path, context)


def transport(page: Page) -> str:
    return str(page.evaluate("window.livehub.client._transport.subName()"))


def test_chat_over_websocket_http_stream_and_sse(windows: Windows) -> None:
    ws = windows.open("/demos/chat?user=alice&room=fallback")
    stream = open_without(windows, NO_WEBSOCKET, "/demos/chat?user=bob&room=fallback")
    sse = open_without(windows, NO_STREAMING_FETCH, "/demos/chat?user=carol&room=fallback")
    for page in (ws, stream, sse):
        expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    assert [transport(p) for p in (ws, stream, sse)] == ["websocket", "http_stream", "sse"]
    for page in (ws, stream, sse):
        expect(page.locator("#online-count")).to_have_text("3")

    for sender, text in ((sse, "from SSE"), (stream, "from HTTP-streaming"), (ws, "from WebSocket")):
        sender.fill("#text", text)
        sender.press("#text", "Enter")
        for page in (ws, stream, sse):
            expect(page.locator("#messages .msg .text").last).to_have_text(text)

    # a reload over SSE starts with the last messages (history)
    sse.reload()
    expect(sse.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(sse.locator("#messages")).to_contain_text("from HTTP-streaming")
    assert windows.errors == []
