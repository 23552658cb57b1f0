"""Connection and subscription JWTs, checked as Centrifugo checks them.

Two failures matter to clients and are kept apart: an expired token (the SDK fetches a
new one and retries) and an invalid one (the SDK gives up). HMAC, RSA and ECDSA keys
are supported; which algorithms are accepted follows from which keys are configured.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson

from livehub.settings import SubscriptionTokenSettings, TokenSettings


class TokenExpired(Exception):
    """``exp`` is past or ``nbf`` is in the future."""


class InvalidToken(Exception):
    """Bad signature, algorithm, audience, issuer, format or claims."""


@dataclass(frozen=True, slots=True)
class ConnectToken:
    user: str
    exp: int = 0
    info: bytes | None = None
    channels: list[str] = field(default_factory=list)
    meta: bytes | None = None


@dataclass(frozen=True, slots=True)
class SubscribeToken:
    user: str
    channel: str
    client: str = ""
    exp: int = 0
    info: bytes | None = None
    data: bytes | None = None


def _raw(claims: dict[str, Any], key: str) -> bytes | None:
    """``info``/``data`` as raw JSON, or their base64 twins ``b64info``/``b64data``."""
    if claims.get(key) is not None:
        return orjson.dumps(claims[key])
    b64 = claims.get("b64" + key)
    if b64:
        try:
            decoded = base64.b64decode(b64)
            orjson.loads(decoded)
        except (ValueError, TypeError) as exc:
            raise InvalidToken(f"b64{key} is not base64 of JSON") from exc
        return decoded
    return None


def numeric_date(claims: dict[str, Any], key: str) -> int:
    """A NumericDate claim (RFC 7519 §2: a JSON number of seconds, fractions allowed, as
    JavaScript's ``Date.now() / 1000`` writes them) as whole seconds; 0 when absent.
    Anything else — a string, a boolean — makes the token invalid, never "no expiry"."""
    value = claims.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken(f"{key} must be a number of seconds")
    return int(value)


def _expiry(claims: dict[str, Any]) -> int:
    """``expire_at`` (when present) rather than ``exp`` decides when the connection ends."""
    for key in ("nbf", "iat"):
        numeric_date(claims, key)  # checked for type; PyJWT checked their values
    if claims.get("expire_at") is not None:
        return numeric_date(claims, "expire_at")
    return numeric_date(claims, "exp")


class TokenVerifier:
    def __init__(self, cfg: TokenSettings | SubscriptionTokenSettings, audience: str = "", issuer: str = ""):
        self._keys: list[tuple[list[str], Any]] = []
        if cfg.hmac_secret_key:
            self._keys.append((["HS256", "HS384", "HS512"], cfg.hmac_secret_key))
        if cfg.rsa_public_key:
            self._keys.append((["RS256", "RS384", "RS512"], cfg.rsa_public_key))
        if cfg.ecdsa_public_key:
            self._keys.append((["ES256", "ES384", "ES512"], cfg.ecdsa_public_key))
        self._audience = audience or None
        self._issuer = issuer or None
        self.user_id_claim = getattr(cfg, "user_id_claim", "sub")

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        alg = header.get("alg")
        for algorithms, key in self._keys:
            if alg in algorithms:
                try:
                    claims: dict[str, Any] = jwt.decode(
                        token,
                        key,
                        algorithms=algorithms,
                        audience=self._audience,
                        issuer=self._issuer,
                        options={"verify_aud": self._audience is not None, "require": []},
                    )
                except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
                    raise TokenExpired from None
                except jwt.PyJWTError as exc:
                    raise InvalidToken(str(exc)) from None
                except (OverflowError, ValueError, TypeError) as exc:  # e.g. "exp": Infinity
                    raise InvalidToken(f"malformed claims: {exc}") from None
                return claims
        raise InvalidToken(f"algorithm {alg!r} is not enabled")

    def connect_token(self, token: str) -> ConnectToken:
        claims = self.decode(token)
        if "channel" in claims:
            raise InvalidToken("a connection token must not carry a channel claim")
        user = claims.get(self.user_id_claim, "")
        channels = claims.get("channels") or []
        if not isinstance(user, str) or not isinstance(channels, list):
            raise InvalidToken("malformed claims")
        if not all(isinstance(c, str) for c in channels):
            raise InvalidToken("channels must be strings")
        return ConnectToken(user, _expiry(claims), _raw(claims, "info"), channels, _raw(claims, "meta"))

    def subscribe_token(self, token: str) -> SubscribeToken:
        claims = self.decode(token)
        user = claims.get("sub", "")
        channel = claims.get("channel", "")
        client = claims.get("client", "")
        if not all(isinstance(v, str) for v in (user, channel, client)) or not channel:
            raise InvalidToken("a subscription token needs a channel claim")
        return SubscribeToken(
            user, channel, client, _expiry(claims), _raw(claims, "info"), _raw(claims, "data")
        )
