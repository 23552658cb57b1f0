"""livehub: real-time messaging for Python on FastAPI WebSockets, Centrifugo-compatible."""

__version__ = "0.1.0"

from livehub.hub import ConnectResult, Hub
from livehub.models import ClientInfo, Publication, StreamPosition
from livehub.node import Node
from livehub.protocol.codes import Disconnect, Error
from livehub.session import Session
from livehub.settings import Settings

__all__ = [
    "ClientInfo",
    "ConnectResult",
    "Disconnect",
    "Error",
    "Hub",
    "Node",
    "Publication",
    "Session",
    "Settings",
    "StreamPosition",
    "__version__",
]
