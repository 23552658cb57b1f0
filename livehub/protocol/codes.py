"""Error, unsubscribe and disconnect codes of the Centrifugo client protocol v2.

The numbers are the wire contract with the SDKs, which decide from them whether to
reconnect or resubscribe: a disconnect code in 3000-3499 (or 4000-4499) means "come
back", 3500-3999 (or 4500-4999) means "do not". Error replies with ``temporary`` set,
and code 109, make the SDKs retry the command.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Error(Exception):
    """An error reply to one command; the connection stays open."""

    code: int
    message: str
    temporary: bool = False

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.temporary:
            out["temporary"] = True
        return out


@dataclass(frozen=True, slots=True)
class Disconnect(Exception):
    """Closes the connection: sent as the WebSocket close code and reason."""

    code: int
    reason: str

    @property
    def reconnect(self) -> bool:
        return not (3500 <= self.code < 4000 or 4500 <= self.code < 5000)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Sent as an ``unsubscribe`` push; codes >= 2500 make the SDK resubscribe."""

    code: int
    reason: str


def error_internal() -> Error:
    return Error(100, "internal server error", temporary=True)


def error_unauthorized() -> Error:
    return Error(101, "unauthorized")


def error_unknown_channel() -> Error:
    return Error(102, "unknown channel")


def error_permission_denied() -> Error:
    return Error(103, "permission denied")


def error_method_not_found() -> Error:
    return Error(104, "method not found")


def error_already_subscribed() -> Error:
    return Error(105, "already subscribed")


def error_limit_exceeded() -> Error:
    return Error(106, "limit exceeded")


def error_bad_request() -> Error:
    return Error(107, "bad request")


def error_not_available() -> Error:
    return Error(108, "not available")


def error_token_expired() -> Error:
    return Error(109, "token expired")


def error_expired() -> Error:
    return Error(110, "expired")


def error_too_many_requests() -> Error:
    return Error(111, "too many requests", temporary=True)


def error_unrecoverable_position() -> Error:
    return Error(112, "unrecoverable position")


def unsubscribe_server() -> Unsubscribe:
    return Unsubscribe(2000, "server unsubscribe")


def unsubscribe_insufficient_state() -> Unsubscribe:
    return Unsubscribe(2500, "insufficient state")


def unsubscribe_expired() -> Unsubscribe:
    return Unsubscribe(2501, "subscription expired")


def disconnect_connection_closed() -> Disconnect:
    return Disconnect(3000, "connection closed")


def disconnect_shutdown() -> Disconnect:
    return Disconnect(3001, "shutdown")


def disconnect_server_error() -> Disconnect:
    return Disconnect(3004, "internal server error")


def disconnect_expired() -> Disconnect:
    return Disconnect(3005, "connection expired")


def disconnect_sub_expired() -> Disconnect:
    return Disconnect(3006, "subscription expired")


def disconnect_slow() -> Disconnect:
    return Disconnect(3008, "slow")


def disconnect_write_error() -> Disconnect:
    return Disconnect(3009, "write error")


def disconnect_insufficient_state() -> Disconnect:
    return Disconnect(3010, "insufficient state")


def disconnect_force_reconnect() -> Disconnect:
    return Disconnect(3011, "force reconnect")


def disconnect_no_pong() -> Disconnect:
    return Disconnect(3012, "no pong")


def disconnect_too_many_requests() -> Disconnect:
    return Disconnect(3013, "too many requests")


def disconnect_invalid_token() -> Disconnect:
    return Disconnect(3500, "invalid token")


def disconnect_bad_request() -> Disconnect:
    return Disconnect(3501, "bad request")


def disconnect_stale() -> Disconnect:
    return Disconnect(3502, "stale")


def disconnect_force_no_reconnect() -> Disconnect:
    return Disconnect(3503, "force disconnect")


def disconnect_connection_limit() -> Disconnect:
    return Disconnect(3504, "connection limit")


def disconnect_channel_limit() -> Disconnect:
    return Disconnect(3505, "channel limit")


def disconnect_inappropriate_protocol() -> Disconnect:
    return Disconnect(3506, "inappropriate protocol")


def disconnect_permission_denied() -> Disconnect:
    return Disconnect(3507, "permission denied")


def disconnect_not_available() -> Disconnect:
    return Disconnect(3508, "not available")


def disconnect_too_many_errors() -> Disconnect:
    return Disconnect(3509, "too many errors")


#: WebSocket close code for an incoming frame over the size limit (RFC 6455 §7.4.1).
CLOSE_MESSAGE_TOO_BIG = 1009


def unidirectional_disconnect(error: Error) -> Disconnect:
    """The disconnect closing a unidirectional connection whose ``connect`` got ``error``
    (such a client gets no error reply), as Centrifuge maps them: 3005 for an expired token,
    3013 for too many requests, 3507 for permission denied, 3004 for any other."""
    if error.code in (109, 110):
        return disconnect_expired()
    if error.code == 111:
        return disconnect_too_many_requests()
    if error.code == 103:
        return disconnect_permission_denied()
    return disconnect_server_error()
