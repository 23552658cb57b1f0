"""FastAPI dependencies for the hub's callbacks, resolved against a connection's handshake.

A callback's leading parameters are livehub's to give (the client, the published data, the
RPC request) and so are the channel pattern's parameters (``room`` of ``"chat:{room}"``);
every other parameter is FastAPI's: ``Depends``, ``Header``, ``Cookie``, ``Query``,
``Request``/``WebSocket``, security schemes, yield-dependencies. FastAPI's own machinery
(``get_dependant``/``solve_dependencies``) resolves them, with the app's
``dependency_overrides``, from the ASGI scope of the connection's opening handshake: the
headers, cookies and query string the client connected with.

Each call has its own dependency cache and its own exit stack: a yield-dependency (a
database session) is opened before the callback and closed right after it returns, or
sees its exception. What FastAPI reports instead of a value becomes a protocol error:
a missing or invalid parameter is 107 naming it; an ``HTTPException`` is 101 for 401,
103 for 403, 107 for other 4xx and 100 (temporary) otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from contextlib import AsyncExitStack
from typing import Any

from fastapi.dependencies.utils import get_dependant, solve_dependencies
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.websockets import WebSocket

from livehub.protocol.codes import Disconnect, Error, error_internal


def minimal_scope(path: str = "/") -> dict[str, Any]:
    """The scope of a connection that came without one: no headers, no query, no address."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": None,
        "server": None,
        "subprotocols": [],
    }


def complete_scope(scope: dict[str, Any] | None) -> dict[str, Any]:
    """A transport's scope with what it left out filled from :func:`minimal_scope`."""
    if scope is None:
        return minimal_scope()
    if "type" in scope and "headers" in scope and "query_string" in scope:
        return scope
    return {**minimal_scope(), **scope}


def http_error(exc: HTTPException) -> Error:
    """An app's HTTPException, as the protocol's nearest error."""
    detail = exc.detail if isinstance(exc.detail, str) else ""
    if exc.status_code == 401:
        return Error(101, detail or "unauthorized")
    if exc.status_code == 403:
        return Error(103, detail or "permission denied")
    if 400 <= exc.status_code < 500:
        return Error(107, f"bad request: {detail}" if detail else "bad request")
    return error_internal()


def _problems(errors: list[Any]) -> Error:
    """FastAPI's validation errors as one 107, naming the parameters as its 422s do."""
    text = "; ".join(
        f"{' '.join(str(part) for part in e.get('loc', ())) or 'parameter'}: {e.get('msg', 'invalid')}"
        for e in errors[:5]
    )
    return Error(107, f"bad request: {text}")


async def _refuse_io(*args: Any) -> Any:
    raise RuntimeError("the handshake's connection cannot be read or written by a dependency")


class Callback:
    """An app callback: ``own`` leading parameters and the ``given`` ones come from livehub,
    the rest from FastAPI."""

    def __init__(self, func: Callable[..., Any], own: int, given: Collection[str] = ()) -> None:
        self.func = func
        try:
            signature = inspect.signature(func, eval_str=True)
        except NameError:  # an annotation only importable for type checkers
            signature = inspect.signature(func)
        params = list(signature.parameters.values())
        if len(params) < own or any(p.kind not in _POSITIONAL for p in params[:own]):
            raise TypeError(f"{func.__qualname__} must take {own} positional parameter(s) first")
        rest = params[own:]
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest)
        #: The given values this callback takes (all of them with ``**kwargs``).
        self.given = set(given) if takes_all else {p.name for p in rest if p.name in given}
        resolved = [p for p in rest if p.name not in self.given and p.kind not in _VARIADIC]
        self.dependant = None
        if resolved:
            holder = _holder(func, resolved)
            self.dependant = get_dependant(path="", call=holder)
            if self.dependant.body_params:
                names = ", ".join(field.name for field in self.dependant.body_params)
                raise TypeError(
                    f"{func.__qualname__}: parameter(s) {names} would be a request body; "
                    "the data a client sends is the callback's positional parameter"
                )

    async def __call__(self, scope: dict[str, Any] | None, app: Any, *args: Any, **given: Any) -> Any:
        """Call with ``args``, the ``given`` values it takes, and its dependencies from ``scope``."""
        kwargs = {name: value for name, value in given.items() if name in self.given}
        try:
            if self.dependant is None:
                return await _result(self.func(*args, **kwargs))
            async with AsyncExitStack() as stack:
                call_scope = {
                    **complete_scope(scope),
                    "fastapi_inner_astack": stack,
                    "fastapi_function_astack": stack,
                }
                call_scope.pop("fastapi_async_cleanup_scopes", None)
                request: Request | WebSocket = (
                    WebSocket(call_scope, _refuse_io, _refuse_io)
                    if call_scope["type"] == "websocket"
                    else Request(call_scope)
                )
                solved = await solve_dependencies(
                    request=request,
                    dependant=self.dependant,
                    dependency_overrides_provider=app,
                    async_exit_stack=stack,
                    embed_body_fields=False,
                )
                try:
                    if solved.errors:
                        raise _problems(list(solved.errors))
                    return await _result(self.func(*args, **kwargs, **solved.values))
                except Error as exc:  # seen by yield-dependencies as what it is
                    raise _ThrownError(exc.code, exc.message, exc.temporary) from None
                except Disconnect as exc:
                    raise _ThrownDisconnect(exc.code, exc.reason) from None
        except HTTPException as exc:
            raise http_error(exc) from None


class _ThrownError(Error):
    """An Error that crosses a yield-dependency: contextlib sets ``__traceback__`` on what
    the dependency re-raises, which a frozen dataclass forbids."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)


class _ThrownDisconnect(Disconnect):
    """A Disconnect that crosses a yield-dependency (see _ThrownError)."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _holder(func: Callable[..., Any], params: list[inspect.Parameter]) -> Callable[..., Any]:
    """A callable whose signature is ``params`` (annotations already resolved), for FastAPI."""

    def holder(**kwargs: Any) -> None:
        raise AssertionError("never called: it only carries a signature")

    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
    holder.__signature__ = inspect.Signature(keyword)  # type: ignore[attr-defined]
    holder.__qualname__ = func.__qualname__
    return holder


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
