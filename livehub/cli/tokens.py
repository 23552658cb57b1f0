"""``livehub token``, and the tokens ``livehub sub`` and ``livehub bench`` mint for themselves."""

from __future__ import annotations

import time
import warnings
from typing import Annotated, Any

import jwt
import typer
from jwt.warnings import InsecureKeyLengthWarning

from livehub.cli.common import ConfigOption, fail, parse_json, read_settings
from livehub.settings import Settings

commands = typer.Typer()


def mint_token(
    secret: str, user: str, *, channel: str = "", ttl: int = 0, info: Any = None, channels: Any = None
) -> str:
    """An HS256 JWT: a connection token, or with ``channel`` a subscription token; ttl 0 never expires."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user, "iat": now}
    if ttl > 0:
        claims["exp"] = now + ttl
    if channel:
        claims["channel"] = channel
    if info is not None:
        claims["info"] = info
    if channels:
        claims["channels"] = channels
    with warnings.catch_warnings():  # a short secret is the server's choice (the SDK tests use "secret")
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm="HS256")


def subscription_secret(settings: Settings) -> str:
    """The key subscription tokens are checked with: its own when enabled, else the connection one."""
    sub = settings.client.subscription_token
    if sub.enabled and sub.hmac_secret_key:
        return sub.hmac_secret_key
    return settings.client.token.hmac_secret_key


def signing_keys(settings: Settings, secret: str | None) -> tuple[str, str]:
    """The keys to sign (connection, subscription) tokens with: ``--secret`` for both, else the
    config's."""
    return secret or settings.client.token.hmac_secret_key, secret or subscription_secret(settings)


def token_user(token: str) -> str:
    """The user a connection token names (not verified: the server does that)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return ""
    user = claims.get("sub", "")
    return user if isinstance(user, str) else ""


@commands.command(
    epilog="Examples:\n\n"
    "    livehub token --user 42 --config config.json\n\n"
    "    livehub token --user 42 --channel '$secret' --ttl 600 --secret \"$HMAC_SECRET\"\n\n"
    '    livehub token --user 42 --info \'{"name": "Alice"}\' --ttl 0 --config config.json'
)
def token(
    user: Annotated[
        str, typer.Option(help='User id: the token\'s sub claim ("" for anonymous).', show_default=False)
    ],
    channel: Annotated[
        str | None,
        typer.Option(help="Make a subscription token for this channel (channel claim).", show_default=False),
    ] = None,
    ttl: Annotated[
        int, typer.Option(min=0, help="Seconds until the token expires (exp claim); 0: never.")
    ] = 3600,
    info: Annotated[
        str | None,
        typer.Option(
            help="JSON shown to others in presence and join/leave (info claim).", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
    secret: Annotated[
        str | None,
        typer.Option(
            help="HMAC secret (default: client.token.hmac_secret_key of --config).", show_default=False
        ),
    ] = None,
) -> None:
    """Print an HS256 JWT that the server accepts: a connection token, or with --channel a
    subscription token.

    Clients pass a connection token in their connect command (the SDKs' token option) and a
    subscription token when subscribing to a channel that needs one. The token is signed
    with the server's client.token.hmac_secret_key (for subscription tokens,
    client.subscription_token.hmac_secret_key when that is enabled), read from --config, or
    given with --secret. Only the token is printed, so it can be used as $(livehub token ...).
    """
    info_value = parse_json(info, "--info") if info is not None else None
    if secret is None:
        settings = read_settings(config)
        secret = subscription_secret(settings) if channel else settings.client.token.hmac_secret_key
        if not secret:
            where = f"{config} has no" if config else "no --secret, no --config and no"
            fail(f"{where} client.token.hmac_secret_key: cannot sign a token", 2)
    print(mint_token(secret, user, channel=channel or "", ttl=ttl, info=info_value))
