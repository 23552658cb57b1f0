"""A gunicorn worker serving an app's hub as ``livehub run`` does::

    gunicorn main:app -k livehub.workers.UvicornWorker -w 4

uvicorn's worker class with livehub's HTTP protocol (``livehub.transports.websocket``): the
hub's client endpoint is answered from the socket, every other request by uvicorn as usual,
and an app without a hub is served as plain uvicorn would. Needs gunicorn installed.
"""

from __future__ import annotations

import warnings
from typing import Any

try:  # uvicorn's worker now lives in its own package
    from uvicorn_worker import UvicornWorker as _UvicornWorker  # type: ignore[import-not-found]
except ImportError:
    with warnings.catch_warnings():  # the same class, deprecated in uvicorn in favour of the above
        warnings.simplefilter("ignore", DeprecationWarning)
        from uvicorn.workers import UvicornWorker as _UvicornWorker

from livehub.transports.websocket import HTTP_PROTOCOL


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]  # gunicorn has no type hints
    CONFIG_KWARGS: dict[str, Any] = {**_UvicornWorker.CONFIG_KWARGS, "http": HTTP_PROTOCOL}
