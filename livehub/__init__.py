"""livehub: real-time messaging for Python on FastAPI WebSockets, Centrifugo-compatible.

The public API is what this module exports; ``Hub`` callbacks are given a ``Client``.
The internals (``livehub.node.Node``, ``livehub.session.Session``) stay importable from
their modules, for tests and tools, but are not part of it.
"""

__version__ = "0.1.0"

from livehub.channels import ChannelConflict
from livehub.client import Client
from livehub.hub import ConnectResult, Hub, HubStats, NodeStats
from livehub.models import ClientInfo, Publication, StreamPosition
from livehub.protocol.codes import Disconnect, Error
from livehub.settings import Settings

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
    "Publication",
    "Settings",
    "StreamPosition",
    "__version__",
]
