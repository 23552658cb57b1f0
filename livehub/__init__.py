"""livehub: real-time messaging for Python on FastAPI WebSockets, Centrifugo-compatible.

The public API is what this module exports; ``Hub`` callbacks are given a ``Client``.
The internals (``livehub.core.node.Node``, ``livehub.core.session.Session``) stay importable from
their modules, for tests and tools, but are not part of it.

The names are loaded on first use, so importing a part of livehub (``livehub.protocol``,
say, which is pure and needs no FastAPI) does not load the rest through this module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "ChannelConflict": "livehub.core.channels",
    "Client": "livehub.client",
    "ClientInfo": "livehub.models",
    "ConnectResult": "livehub.hub",
    "Disconnect": "livehub.protocol.codes",
    "Error": "livehub.protocol.codes",
    "Hub": "livehub.hub",
    "HubStats": "livehub.hub",
    "NodeStats": "livehub.hub",
    "PolledItem": "livehub.core.shared_poll",
    "Publication": "livehub.models",
    "Settings": "livehub.settings",
    "StreamPosition": "livehub.models",
    "sign_keys": "livehub.core.shared_poll",
}

if TYPE_CHECKING:
    from livehub.client import Client
    from livehub.core.channels import ChannelConflict
    from livehub.core.shared_poll import PolledItem, sign_keys
    from livehub.hub import ConnectResult, Hub, HubStats, NodeStats
    from livehub.models import ClientInfo, Publication, StreamPosition
    from livehub.protocol.codes import Disconnect, Error
    from livehub.settings import Settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'livehub' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # next time, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*_EXPORTS, "__version__"])


__all__ = [
    "ChannelConflict",
    "Client",
    "ClientInfo",
    "ConnectResult",
    "Disconnect",
    "Error",
    "Hub",
    "HubStats",
    "NodeStats",
    "PolledItem",
    "Publication",
    "Settings",
    "StreamPosition",
    "sign_keys",
    "__version__",
]
