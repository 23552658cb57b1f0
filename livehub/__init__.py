"""livehub: real-time messaging for Python on FastAPI WebSockets, Centrifugo-compatible."""

__version__ = "0.1.0"
