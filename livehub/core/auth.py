"""Connection and subscription JWTs, checked as Centrifugo checks them.

Two failures matter to clients and are kept apart: an expired token (the SDK fetches a
new one and retries) and an invalid one (the SDK gives up). HMAC, RSA and ECDSA keys
are supported; which algorithms are accepted follows from which keys are configured.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import orjson

from livehub.settings import SubscriptionTokenSettings, TokenSettings

log = logging.getLogger("livehub.core.auth")


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


_HMAC = ["HS256", "HS384", "HS512"]
_ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
)


class JWKS:
    """Public keys from one JWKS endpoint (``client.token.jwks_public_endpoint``), by ``kid``.

    The URL comes from the config only — never from a token — so a client cannot make the
    server fetch an address of its choosing. Keys are fetched at start, again when their
    ``ttl`` has passed, and when a token names a ``kid`` not in the set (key rotation) — but
    at most once per ``min_refresh`` seconds, so tokens with made-up kids cannot make the
    server hammer the endpoint. A fetch that fails keeps the keys it had.
    """

    def __init__(
        self,
        url: str,
        ttl: float = 300.0,
        min_refresh: float = 5.0,
        timeout: float = 5.0,
        max_bytes: int = 1_048_576,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.min_refresh = min_refresh
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetches = 0
        self._fetched_at = -math.inf
        self._tried_at = -math.inf
        self._fetching: asyncio.Future[None] | None = None

    async def ensure(self, kid: str) -> None:
        """Make sure the set is fresh, and holds ``kid`` if the endpoint has it."""
        now = time.monotonic()
        if kid in self.keys and now - self._fetched_at < self.ttl:
            return
        if now - self._tried_at < self.min_refresh:
            return
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
        fetching = self._fetching
        try:
            await asyncio.shield(fetching)
        finally:
            if self._fetching is fetching and fetching.done():
                self._fetching = None

    async def _fetch(self) -> None:
        self._tried_at = time.monotonic()
        self.fetches += 1
        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as http,
                http.stream("GET", self.url) as response,
            ):
                response.raise_for_status()
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise ValueError(f"JWKS larger than {self.max_bytes} bytes")
            keys = jwt.PyJWKSet.from_dict(orjson.loads(body)).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("JWKS %s could not be read (keeping %d keys): %s", self.url, len(self.keys), exc)
            return
        self.keys = {k.key_id: k for k in keys if k.key_id}
        self._fetched_at = time.monotonic()


class TokenVerifier:
    def __init__(self, cfg: TokenSettings | SubscriptionTokenSettings, audience: str = "", issuer: str = ""):
        self._keys: list[tuple[list[str], Any]] = []
        if cfg.hmac_secret_key:
            self._keys.append((_HMAC, cfg.hmac_secret_key))
        previous = getattr(cfg, "hmac_previous_secret_key", "")
        #: An HMAC key being rotated out: accepted until ``hmac_previous_secret_key_valid_until``
        #: (unix time; 0: until removed from the config).
        self._previous_hmac: tuple[str, float] | None = (
            (previous, float(getattr(cfg, "hmac_previous_secret_key_valid_until", 0) or 0))
            if previous
            else None
        )
        endpoint = getattr(cfg, "jwks_public_endpoint", "")
        self.jwks: JWKS | None = JWKS(endpoint) if endpoint else None
        if cfg.rsa_public_key:
            self._keys.append((["RS256", "RS384", "RS512"], cfg.rsa_public_key))
        if cfg.ecdsa_public_key:
            self._keys.append((["ES256", "ES384", "ES512"], cfg.ecdsa_public_key))
        self._audience = audience or None
        self._issuer = issuer or None
        self.user_id_claim = getattr(cfg, "user_id_claim", "sub")

    @property
    def enabled(self) -> bool:
        return bool(self._keys or self.jwks)

    async def prepare(self, token: str) -> None:
        """Fetch what verifying ``token`` needs (JWKS keys); call before :meth:`decode`."""
        if self.jwks is None:
            return
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return  # decode says why
        kid = header.get("kid")
        if isinstance(kid, str) and header.get("alg") in _ASYMMETRIC:
            await self.jwks.ensure(kid)

    def _candidates(self, header: dict[str, Any]) -> list[tuple[list[str], Any]]:
        alg = header.get("alg")
        found = [(algorithms, key) for algorithms, key in self._keys if alg in algorithms]
        if alg in _HMAC and self._previous_hmac is not None:
            previous, until = self._previous_hmac
            if not until or time.time() < until:
                found.append((_HMAC, previous))
        if self.jwks is not None and alg in _ASYMMETRIC:
            jwk = self.jwks.keys.get(header.get("kid") or "")
            if jwk is not None and jwk.algorithm_name in (alg, None):
                found.append(([str(alg)], jwk.key))
        return found

    def decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        candidates = self._candidates(header)
        if not candidates:
            raise InvalidToken(f"algorithm {header.get('alg')!r} (kid {header.get('kid')!r}) is not enabled")
        failure: Exception | None = None
        for algorithms, key in candidates:
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
            except jwt.InvalidSignatureError as exc:
                failure = exc  # another key (the previous HMAC key) may have signed it
                continue
            except jwt.PyJWTError as exc:
                raise InvalidToken(str(exc)) from None
            except (OverflowError, ValueError, TypeError) as exc:  # e.g. "exp": Infinity
                raise InvalidToken(f"malformed claims: {exc}") from None
            return claims
        raise InvalidToken(str(failure))

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
