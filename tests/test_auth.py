"""JWT claims as Centrifugo reads them: NumericDate claims are numbers, fractions allowed.

A JavaScript backend writes ``exp: Date.now() / 1000 + ttl`` (a float); such a token must
expire like any other. A claim of the wrong type makes the token invalid — never "no expiry".
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from livehub.app import create_app
from livehub.auth import InvalidToken, TokenExpired, TokenVerifier
from livehub.settings import Settings
from livehub.testing import HubTestClient, ProtocolError

SECRET = "a-test-secret-that-is-at-least-32-bytes-long"


def settings() -> Settings:
    return Settings.model_validate({"client": {"token": {"hmac_secret_key": SECRET}}})


def verifier() -> TokenVerifier:
    return TokenVerifier(settings().client.token)


def token(**claims: Any) -> str:
    return jwt.encode({"sub": "u", **claims}, SECRET, algorithm="HS256")


def test_a_fractional_exp_expires_the_connection_at_its_whole_second() -> None:
    exp = time.time() + 100.75
    assert verifier().connect_token(token(exp=exp)).exp == int(exp)
    assert verifier().connect_token(token(expire_at=exp + 0.5)).exp == int(exp + 0.5)


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": str(int(time.time()) + 100)},  # a numeric string is not a NumericDate
        {"exp": True},
        {"expire_at": "soon"},
        {"nbf": "0"},
        {"iat": [1]},
    ],
)
def test_a_date_claim_that_is_not_a_number_makes_the_token_invalid(claims: dict[str, Any]) -> None:
    # (PyJWT reads ``exp: true`` as 1: expired; either way the token does not pass)
    with pytest.raises((InvalidToken, TokenExpired)):
        verifier().connect_token(token(**claims))


def test_an_infinite_exp_is_invalid_not_a_crash() -> None:
    raw = jwt.api_jws.encode(b'{"sub": "u", "exp": Infinity}', SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken):
        verifier().connect_token(raw)


async def test_a_client_with_a_fractional_exp_is_told_when_it_expires() -> None:
    async with HubTestClient(create_app(settings())) as hub:
        conn = await hub.connect(token=token(exp=time.time() + 30.9))
        assert conn.connect_result["expires"] is True
        assert 29 <= conn.connect_result["ttl"] <= 31
        with pytest.raises(ProtocolError) as refused:
            await hub.connect(token=token(exp=time.time() - 0.5))
        assert refused.value.code == 109
