"""Proxies: the app backend asked over HTTP with JSON, as Centrifugo's proxies ask it.

A standalone node (``livehub serve``) whose app is not in Python lets its backend decide who
connects, who subscribes, what is published, what an RPC answers, whether an expiring
connection or subscription goes on, and what tracked keys of shared poll channels hold. Each
decision is one ``POST`` of a JSON request (Centrifugo's field names: ``client``,
``transport``, ``protocol``, ``encoding``, ``user``, ``channel``, ``data`` or ``b64data``,
``meta``...) answered by ``{"result": ...}``, ``{"error": {"code", "message"}}`` or
``{"disconnect": {"code", "reason"}}``. An error or disconnect the backend returns reaches the
client as is; a backend that cannot be reached, answers late, with a status other than 200,
with a body that is not JSON or larger than :data:`MAX_RESPONSE_BYTES`, is an internal error
(100) for the client, as in Centrifugo.

The proxies are the node's hooks (``livehub.core.hooks``): an embedded app's Python callbacks
(``livehub.Hub``) implement the same hooks, so both go through one path in the session.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from livehub.core.headers import EMULATED_KEY
from livehub.protocol import codes
from livehub.protocol.codes import Disconnect, Error
from livehub.settings import ProxySettings, Settings

if TYPE_CHECKING:
    from livehub.core.session import Session

log = logging.getLogger("livehub.core.proxy")

#: A backend's answer larger than this is refused (the client gets error 100).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: Connections kept open to the backends, over all proxies of a node.
MAX_CONNECTIONS = 100


class ProxyFailure(Exception):
    """The backend could not be asked, or did not answer usably."""


class ProxyClient:
    """One shared HTTP client for every proxy of a node: bounded connections and answers."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS) -> None:
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(limits=self._limits, follow_redirects=False, trust_env=False)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def post(
        self, proxy: ProxySettings, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        """POST ``body`` as JSON; the answer as an object. ProxyFailure for any failure."""
        sent = {**proxy.http.static_headers, **headers, "Content-Type": "application/json"}
        try:
            async with asyncio.timeout(proxy.timeout or None):
                async with self._http().stream(
                    "POST", proxy.endpoint, content=orjson.dumps(body), headers=sent
                ) as response:
                    if response.status_code != 200:
                        raise ProxyFailure(f"unexpected HTTP status {response.status_code}")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
                        raise ProxyFailure("answer too large")
                    buf = bytearray()
                    async for chunk in response.aiter_raw():
                        buf += chunk
                        if len(buf) > MAX_RESPONSE_BYTES:
                            raise ProxyFailure("answer too large")
        except TimeoutError:
            raise ProxyFailure(f"no answer within {proxy.timeout}s") from None
        except httpx.HTTPError as exc:
            raise ProxyFailure(f"HTTP request failed: {exc!r}") from None
        try:
            answer = orjson.loads(buf)
        except orjson.JSONDecodeError:
            raise ProxyFailure("answer is not JSON") from None
        if not isinstance(answer, dict):
            raise ProxyFailure("answer is not a JSON object")
        return answer


def forwarded_headers(proxy: ProxySettings, scope: dict[str, Any] | None) -> dict[str, str]:
    """The handshake's headers the proxy's ``http_headers`` allow-list names (never emulated
    ones: ``livehub.core.headers``)."""
    if scope is None or not proxy.http_headers:
        return {}
    allowed = set(proxy.http_headers)
    emulated = scope.get(EMULATED_KEY, ())  # the client's own, not the handshake's
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        if name in allowed and raw_name not in emulated:
            out[name] = raw_value.decode("latin-1")
    return out


def put_data(
    body: dict[str, Any], proxy: ProxySettings, data: bytes | None, binary: bool = False, name: str = "data"
) -> None:
    """Client data into a request: raw JSON, or base64 with ``binary_encoding`` (and for data
    of a Protobuf client that is not JSON)."""
    if data is None:
        return
    if not proxy.binary_encoding and binary:
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError:
            binary = True
        else:
            binary = False
    if proxy.binary_encoding or binary:
        body["b64" + name] = base64.b64encode(data).decode()
    else:
        body[name] = orjson.Fragment(data)


def take_data(result: dict[str, Any], name: str = "data") -> bytes | None:
    """``data`` (any JSON value) or ``b64data`` of a result, as bytes; None if absent."""
    b64 = result.get("b64" + name)
    if isinstance(b64, str) and b64:
        try:
            return base64.b64decode(b64, validate=True)
        except ValueError:
            raise ProxyFailure(f"b64{name} is not base64") from None
    if name in result and result[name] is not None:
        return orjson.dumps(result[name])
    return None


def take_int(result: dict[str, Any], name: str) -> int:
    value = result.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ProxyFailure(f"{name} is not a number")
    try:
        return int(value)
    except ValueError:
        raise ProxyFailure(f"{name} is not a number") from None


def check_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """Raise the backend's error or disconnect; else its result (an object)."""
    disconnect = answer.get("disconnect")
    if isinstance(disconnect, dict) and disconnect.get("code"):
        raise Disconnect(int(disconnect["code"]), str(disconnect.get("reason", "")))
    error = answer.get("error")
    if isinstance(error, dict) and error.get("code"):
        raise Error(int(error["code"]), str(error.get("message", "")), bool(error.get("temporary", False)))
    result = answer.get("result")
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise ProxyFailure("result is not an object")
    return result


class Proxies:
    """The proxies of a node's configuration, found by kind and name, and asked."""

    def __init__(self, settings: Settings, client: ProxyClient | None = None) -> None:
        self.settings = settings
        self.client = client or ProxyClient()
        self._named: dict[str, ProxySettings] = {p.name: p for p in settings.proxies}

    def named(self, name: str, default: ProxySettings) -> ProxySettings:
        """A namespace's proxy: ``"default"`` (or empty) is the section's own, others are named."""
        if name in ("", "default"):
            proxy = default
        else:
            found = self._named.get(name)
            if found is None:
                log.error("proxy %r is not among the configured proxies", name)
                raise codes.error_internal()
            proxy = found
        if not proxy.endpoint:
            log.error("proxy %r has no endpoint", name or "default")
            raise codes.error_internal()
        return proxy

    async def ask(
        self, kind: str, proxy: ProxySettings, body: dict[str, Any], scope: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Ask one proxy; the backend's result, or its Error/Disconnect raised; a failure is 100."""
        try:
            answer = await self.client.post(proxy, body, forwarded_headers(proxy, scope))
            return check_answer(answer)
        except ProxyFailure as exc:
            log.warning("%s proxy %s: %s", kind, proxy.endpoint, exc)
            raise codes.error_internal() from None

    def base(self, session: Session, proxy: ProxySettings) -> dict[str, Any]:
        """The fields every request about a connection has."""
        binary = session.encoding.binary
        body: dict[str, Any] = {
            "client": session.id,
            "transport": "websocket",
            "protocol": "protobuf" if binary else "json",
            "encoding": "binary" if binary else "json",
        }
        if session.user or session.connected:
            body["user"] = session.user
        if proxy.include_connection_meta and session.meta is not None:
            body["meta"] = orjson.Fragment(session.meta)
        return body

    async def close(self) -> None:
        await self.client.close()
