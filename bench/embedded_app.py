"""The embedded case of the benchmark: a FastAPI app of its own with a ``livehub.Hub`` router.

This is how the README tells users to add realtime to an existing FastAPI app
(``app.include_router(hub.router)``), with the benchmark's settings (``bench/fanout.toml``: no
token needed, no presence) and one ordinary HTTP route next to the hub's. The benchmark serves it
two ways, to show what each costs:

    .venv/bin/livehub run bench.embedded_app:app --port 18765      # livehub's own runner
    .venv/bin/python -m uvicorn bench.embedded_app:app --port 18765 # plain uvicorn (ASGI route)
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from livehub import Hub
from livehub.settings import load_settings

hub = Hub(load_settings(Path(__file__).with_name("fanout.toml")))
app = FastAPI(title="livehub bench: embedded hub")
app.include_router(hub.router)


@app.get("/health")
async def health() -> dict[str, str]:
    """An ordinary route of the app, to make it an app and not a bare hub."""
    return {"status": "ok"}
