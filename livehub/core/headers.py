"""Headers emulation: request headers an SDK sends inside its ``connect`` command.

A browser cannot set headers on a WebSocket (nor on an EventSource), so the SDKs' ``headers``
option puts them in the connect command (``ConnectRequest.headers``). They are the client's
own, never something a proxy in front of the server vouches for, so, as Centrifugo 6.9 does
with its ``emulated_headers`` lists, only the names the config allows
(``client.emulated_headers``) are kept, and a real request header of the same name wins
(the emulated one is a fallback for clients that cannot send the real one).

Kept headers join the connection's scope: ``on_connect`` and every later callback see them
as request headers (FastAPI's ``Header(...)``, ``client.headers``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

#: Emulated headers kept per connection at most (the connect frame's size bounds them too).
MAX_EMULATED = 64
#: The scope key listing the header names added by emulation: proxies forward only real
#: headers through their ``http_headers`` (Centrifugo 6.9: emulated ones are the client's word).
EMULATED_KEY = "livehub.emulated_headers"


def emulated_scope(
    scope: dict[str, Any] | None, headers: Mapping[str, str], allowed: Collection[str]
) -> dict[str, Any] | None:
    """``scope`` with the allowed ``headers`` added where it has no header of that name;
    ``scope`` itself when none is added."""
    if not headers or not allowed:
        return scope
    base = scope if scope is not None else {}
    real: list[tuple[bytes, bytes]] = list(base.get("headers", ()))
    present = {name.lower() for name, _ in real}
    added: list[tuple[bytes, bytes]] = []
    for name, value in headers.items():
        key = name.lower()
        if key not in allowed or key.encode("latin-1", "replace") in present:
            continue
        if any(c in value for c in "\r\n\0"):
            continue
        try:
            added.append((key.encode("latin-1"), value.encode("latin-1")))
        except UnicodeEncodeError:  # not a value an HTTP header could carry
            continue
        present.add(key.encode("latin-1"))
        if len(added) >= MAX_EMULATED:
            break
    if not added:
        return scope
    names = (*base.get(EMULATED_KEY, ()), *(name for name, _ in added))
    return {**base, "headers": [*real, *added], EMULATED_KEY: names}
