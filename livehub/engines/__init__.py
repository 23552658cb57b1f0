"""Engines chosen by URL: ``memory://`` (the default, one process)."""

from __future__ import annotations

from urllib.parse import urlsplit

from livehub.engines.base import Broker, PresenceManager
from livehub.engines.memory import MemoryBroker, MemoryPresenceManager

__all__ = ["Broker", "MemoryBroker", "MemoryPresenceManager", "PresenceManager", "engine_from_url"]

SUPPORTED = ("memory://",)


def engine_from_url(url: str) -> tuple[Broker, PresenceManager]:
    """Build the broker and presence manager an engine URL names; ValueError if unknown."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBroker(), MemoryPresenceManager()
    raise ValueError(f"unsupported engine URL {url!r}: expected one of {', '.join(SUPPORTED)}")
