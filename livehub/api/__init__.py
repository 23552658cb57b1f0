"""Centrifugo's server HTTP API: ``POST {http_api.handler_prefix}/<method>`` (default ``/api``).

What the backend calls to publish, manage connections and read state; the ``cent`` client
(PyPI) and Centrifugo's other API libraries work against it unchanged
(research/centrifugo-protocol.md §10):

* Auth: ``X-API-Key: <key>``; if that header is absent, ``Authorization: apikey <key>``;
  then ``?api_key=<key>``. None valid, or no key configured: 401 with an empty body.
  ``http_api.insecure`` turns the check off.
* Replies are HTTP 200 with ``{"result": {...}}`` or ``{"error": {"code", "message"}}``;
  with the header ``X-Centrifugo-Error-Mode: transport`` an error is an HTTP status
  instead (102/104 → 404, 107/108 → 400, 112 → 416, 100 → 500) with the bare error as
  body. ``batch`` answers ``{"replies": [...]}`` and ``broadcast`` reports each channel
  in its ``responses``, in either mode.
* A body that is not a JSON object of the method's fields is 400 ``Bad Request``
  (whatever its Content-Type: ``curl -d`` sends a form type); a missing channel is 107,
  an unknown namespace 102, history or presence switched off 108.

The request models are Pydantic, so each method appears in the app's OpenAPI schema. The
handlers only translate: the work is done by :class:`~livehub.core.node.Node` methods, which
the app can call directly too.

In a cluster (several nodes on a Redis or NATS engine) any node answers for all:
``subscribe``, ``unsubscribe``, ``disconnect`` and ``refresh`` reach the user's
connections on every node, ``info`` lists every live node, and ``presence``,
``presence_stats`` and ``history`` read the shared engine (with NATS, presence is per
node). ``channels`` lists this node's channels only. When the engine cannot be reached,
methods that need it answer error 100 within the engine's timeouts.

``rpc`` calls the server-side methods registered with ``@node.api_rpc("name")`` (they get
the request's ``params`` as raw JSON, and no client); they are kept apart from client RPC
handlers, which are given the calling connection. No method registered at all is 108,
an unknown one 104.

Not supported: ``presence`` and ``join_leave`` in ``subscribe``'s ``override`` (accepted,
not applied); ``label_filter``; the publish options ``delta`` (the namespace's
``allowed_delta_types`` decide), ``version`` and ``version_epoch``; binary payloads: a
``b64data``/``b64info`` must decode to JSON, as every client of this server speaks JSON.
"""

from livehub.api.router import api_router, authorized

__all__ = ["api_router", "authorized"]
