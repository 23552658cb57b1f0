"""The ways a client's WebSocket reaches its Session; each is a Transport of ``livehub.core.outbox``.

``websocket``: straight from the socket, an asyncio Protocol given to uvicorn as its HTTP
protocol (``livehub serve``, ``livehub run``, ``uvicorn --http``, the gunicorn worker): no
ASGI task or queue per connection. ``asgi``: the Hub's FastAPI WebSocket route, the
fallback under any other ASGI server (hypercorn, granian, daphne).
"""
