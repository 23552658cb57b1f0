"""Every setting and its default, in one place, under Centrifugo v6 key names.

A Centrifugo config file (JSON, TOML or YAML) runs unchanged: keys for features
livehub shares take the same names and meanings; keys it does not know are reported
once at start and otherwise ignored. Environment variables override the file:
``LIVEHUB_CLIENT__INSECURE=true`` sets ``client.insecure`` (``__`` separates levels).
Durations accept seconds (``25``) or Go-style strings (``"25s"``, ``"5m"``, ``"1h30m"``).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: object) -> object:
    """``"1m30s"`` -> 90.0; numbers are seconds; anything else is left to fail validation."""
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"invalid duration {value!r}: use seconds or a string like '25s', '5m', '1h'")
        return sum(float(n) * _UNITS[u] for n, u in parts)
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class Section(BaseModel):
    """Unknown keys are kept (a Centrifugo config may carry them) and reported, not fatal."""

    model_config = ConfigDict(extra="allow")


class TokenSettings(Section):
    hmac_secret_key: str = ""
    rsa_public_key: str = ""
    ecdsa_public_key: str = ""
    audience: str = ""
    issuer: str = ""
    user_id_claim: str = "sub"


class SubscriptionTokenSettings(Section):
    enabled: bool = False
    hmac_secret_key: str = ""
    rsa_public_key: str = ""
    ecdsa_public_key: str = ""


class Enabled(Section):
    enabled: bool = False


class ClientSettings(Section):
    token: TokenSettings = TokenSettings()
    #: A separate key for subscription tokens; when disabled, ``token`` verifies both.
    subscription_token: SubscriptionTokenSettings = SubscriptionTokenSettings()
    #: Everyone may connect without a token and use every channel: for development.
    insecure: bool = False
    allow_anonymous_connect_without_token: bool = False
    #: Origins allowed to open a connection (glob patterns; empty allows same-origin and non-browser).
    allowed_origins: list[str] = []
    subscribe_to_user_personal_channel: Enabled = Enabled()
    ping_interval: Duration = 25.0
    pong_timeout: Duration = 8.0
    #: Close a connection that has not sent ``connect`` within this time (3502).
    stale_close_delay: Duration = 10.0
    #: Grace period after a connection token expires before closing with 3005.
    expired_close_delay: Duration = 25.0
    #: Maximum channels per connection (error 106 beyond it).
    channel_limit: Annotated[int, Field(ge=0)] = 128
    #: Maximum connections of one user on this node (0 = unlimited; close 3504 beyond it).
    user_connection_limit: Annotated[int, Field(ge=0)] = 0
    #: Bytes queued for one connection before it is disconnected as slow (3008).
    queue_max_size: Annotated[int, Field(ge=1024)] = 1_048_576
    history_max_publication_limit: Annotated[int, Field(ge=1)] = 300
    recovery_max_publication_limit: Annotated[int, Field(ge=1)] = 300
    #: Messages packed into one WebSocket frame at most, when several are queued.
    write_batch_size: Annotated[int, Field(ge=1)] = 64
    #: Hold outgoing messages this long before writing, so that more of them share a frame
    #: (Centrifugo's ``client.write_delay``). 0 writes at the end of the event-loop turn; a
    #: few milliseconds trade that much latency for fewer writes under a stream of publications
    #: arriving one by one (e.g. from Redis).
    write_delay: Duration = 0.0
    #: How often a node re-adds the presence of its clients to an engine whose entries
    #: expire (Redis: the engine URL's ``presence_ttl``, 60 s), so a dead node's clients
    #: disappear and a live node's stay. Keep it well under that TTL. 0: never.
    presence_update_interval: Duration = 25.0
    #: How often positioned subscriptions are compared with their stream's top: a changed
    #: epoch or a missed offset (lost while the broker connection was down) unsubscribes
    #: the client with 2500 "insufficient state", so the SDK resubscribes and recovers. 0: never.
    channel_position_check_delay: Duration = 40.0

    @model_validator(mode="after")
    def _pong_before_next_ping(self) -> ClientSettings:
        if self.ping_interval and self.pong_timeout >= self.ping_interval:
            raise ValueError("pong_timeout must be shorter than ping_interval")
        return self


class NamespaceOptions(Section):
    presence: bool = False
    join_leave: bool = False
    force_push_join_leave: bool = False
    history_size: Annotated[int, Field(ge=0)] = 0
    history_ttl: Duration = 0.0
    history_meta_ttl: Duration = 30 * 24 * 3600.0
    force_positioning: bool = False
    allow_positioning: bool = False
    force_recovery: bool = False
    allow_recovery: bool = False
    allow_subscribe_for_client: bool = False
    allow_subscribe_for_anonymous: bool = False
    allow_publish_for_subscriber: bool = False
    allow_publish_for_client: bool = False
    allow_publish_for_anonymous: bool = False
    allow_presence_for_subscriber: bool = False
    allow_presence_for_client: bool = False
    allow_presence_for_anonymous: bool = False
    allow_history_for_subscriber: bool = False
    allow_history_for_client: bool = False
    allow_history_for_anonymous: bool = False
    allow_user_limited_channels: bool = False
    allowed_delta_types: list[str] = []
    delta_publish: bool = False

    @property
    def history_enabled(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0


class Namespace(NamespaceOptions):
    name: str = Field(pattern=r"^[-a-zA-Z0-9_.]{2,}$")


class ChannelSettings(Section):
    without_namespace: NamespaceOptions = NamespaceOptions()
    namespaces: list[Namespace] = []
    max_length: Annotated[int, Field(ge=1)] = 255
    private_prefix: str = "$"
    namespace_boundary: str = ":"
    user_boundary: str = "#"
    user_separator: str = ","


class HttpApiSettings(Section):
    key: str = ""
    insecure: bool = False
    handler_prefix: str = "/api"


class WebSocketSettings(Section):
    #: Largest incoming frame in bytes; bigger ones close the connection with 1009.
    message_size_limit: Annotated[int, Field(ge=128)] = 65536
    handler_prefix: str = "/connection/websocket"
    #: An upgrade request must be complete, and the app's connect hook done, this long after
    #: the connection opened; else it is dropped (408, or 503 while the hook still runs). 0: none.
    handshake_timeout: Duration = 10.0


class HttpServerSettings(Section):
    address: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000


class EngineSettings(Section):
    #: ``memory://`` keeps everything in this process.
    url: str = "memory://"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LIVEHUB_", env_nested_delimiter="__", extra="allow", case_sensitive=False
    )

    client: ClientSettings = ClientSettings()
    channel: ChannelSettings = ChannelSettings()
    http_api: HttpApiSettings = HttpApiSettings()
    websocket: WebSocketSettings = WebSocketSettings()
    http_server: HttpServerSettings = HttpServerSettings()
    engine: EngineSettings = EngineSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the config file, which arrives as init kwargs.
        return env_settings, init_settings

    def namespace(self, name: str) -> NamespaceOptions | None:
        if not name:
            return self.channel.without_namespace
        for ns in self.channel.namespaces:
            if ns.name == name:
                return ns
        return None

    def unknown_keys(self) -> list[str]:
        """Dotted names of keys this version does not use, to report at start."""
        found: list[str] = []

        def walk(model: BaseModel, prefix: str) -> None:
            for key in model.model_extra or {}:
                found.append(prefix + key)
            for name in type(model).model_fields:
                value = getattr(model, name)
                if isinstance(value, BaseModel):
                    walk(value, f"{prefix}{name}.")
                elif isinstance(value, list):
                    for i, item in enumerate(value):
                        if isinstance(item, BaseModel):
                            walk(item, f"{prefix}{name}[{i}].")

        walk(self, "")
        return found


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from None
    try:
        if p.suffix == ".toml":
            data: object = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text) if text.strip() else {}
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: not valid {p.suffix.lstrip('.') or 'json'}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be an object of settings")
    return data


def load_settings(path: str | Path | None = None) -> Settings:
    """Config file (optional) + environment; raises ConfigError naming the bad key."""
    data = read_config_file(path) if path else {}
    try:
        return Settings(**data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"])
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}invalid configuration:\n" + "\n".join(lines)) from None
