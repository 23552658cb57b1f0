"""JWT claims as Centrifugo reads them: NumericDate claims are numbers, fractions allowed.

A JavaScript backend writes ``exp: Date.now() / 1000 + ttl`` (a float); such a token must
expire like any other. A claim of the wrong type makes the token invalid — never "no expiry".
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from livehub.app import create_app
from livehub.core.auth import InvalidToken, TokenExpired, TokenVerifier
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


# -- JWKS and HMAC key rotation


class JWKSServer:
    """A JWKS endpoint on 127.0.0.1 whose key set the test changes; counts requests."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def rsa_key(kid: str) -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return private, {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def signed(private: Any, kid: str, **claims: Any) -> str:
    return jwt.encode({"sub": "u", **claims}, private, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    server = JWKSServer()
    yield server
    server.close()


async def test_jwks_keys_are_fetched_by_kid_and_rotated(jwks_server: JWKSServer) -> None:
    old, old_jwk = rsa_key("k1")
    new, new_jwk = rsa_key("k2")
    jwks_server.keys = [old_jwk]
    verifier = TokenVerifier(
        Settings.model_validate({"client": {"token": {"jwks_public_endpoint": jwks_server.url}}}).client.token
    )
    assert verifier.jwks is not None
    verifier.jwks.min_refresh = 0.2

    token = signed(old, "k1")
    await verifier.prepare(token)
    assert verifier.connect_token(token).user == "u"

    # rotation: the provider publishes k2 and drops k1
    jwks_server.keys = [new_jwk]
    await asyncio.sleep(0.25)
    fresh = signed(new, "k2")
    await verifier.prepare(fresh)
    assert verifier.connect_token(fresh).user == "u"
    with pytest.raises(InvalidToken):
        verifier.connect_token(token)  # k1 is gone from the set
    with pytest.raises(InvalidToken):  # k2's kid with another key's signature
        verifier.connect_token(signed(old, "k2"))


async def test_made_up_kids_cannot_make_the_server_hammer_the_endpoint(jwks_server: JWKSServer) -> None:
    key, jwk = rsa_key("real")
    jwks_server.keys = [jwk]
    verifier = TokenVerifier(
        Settings.model_validate({"client": {"token": {"jwks_public_endpoint": jwks_server.url}}}).client.token
    )
    for i in range(200):
        forged = signed(key, f"made-up-{i}")
        await verifier.prepare(forged)
        with pytest.raises(InvalidToken):
            verifier.connect_token(forged)
    assert jwks_server.requests == 1  # one fetch per min_refresh (5 s), however many kids


async def test_an_unreachable_jwks_endpoint_refuses_tokens_without_hanging() -> None:
    verifier = TokenVerifier(
        Settings.model_validate(
            {"client": {"token": {"jwks_public_endpoint": "http://127.0.0.1:9/jwks"}}}
        ).client.token
    )
    key, _ = rsa_key("k")
    token = signed(key, "k")
    await asyncio.wait_for(verifier.prepare(token), 6)
    with pytest.raises(InvalidToken):
        verifier.connect_token(token)


async def test_a_client_connects_with_a_jwks_signed_token(jwks_server: JWKSServer) -> None:
    key, jwk = rsa_key("k1")
    jwks_server.keys = [jwk]
    app = create_app(
        Settings.model_validate({"client": {"token": {"jwks_public_endpoint": jwks_server.url}}})
    )
    async with HubTestClient(app) as hub:
        conn = await hub.connect(token=signed(key, "k1", sub="alice"))
        assert conn.client_id


def test_the_previous_hmac_key_passes_until_its_deadline() -> None:
    def verifier(until: int) -> TokenVerifier:
        return TokenVerifier(
            Settings.model_validate(
                {
                    "client": {
                        "token": {
                            "hmac_secret_key": SECRET,
                            "hmac_previous_secret_key": "the-old-secret-that-is-32-bytes-long!",
                            "hmac_previous_secret_key_valid_until": until,
                        }
                    }
                }
            ).client.token
        )

    old = jwt.encode({"sub": "u"}, "the-old-secret-that-is-32-bytes-long!", algorithm="HS256")
    assert verifier(int(time.time()) + 60).connect_token(old).user == "u"
    assert verifier(0).connect_token(old).user == "u"
    with pytest.raises(InvalidToken):
        verifier(int(time.time()) - 1).connect_token(old)
    assert verifier(int(time.time()) - 1).connect_token(token()).user == "u"  # the current key
    with pytest.raises(InvalidToken):
        verifier(0).connect_token(
            jwt.encode({"sub": "u"}, "another-secret-of-at-least-32-bytes", algorithm="HS256")
        )
