"""Every setting and its default, in one place, under Centrifugo v6 key names.

A Centrifugo config file (JSON, TOML or YAML) runs unchanged when livehub can honour it, and
is refused otherwise: :func:`load_settings` never drops a key silently. A key livehub does not
know is an error naming it, with a suggestion for a typo (``histroy_size`` -> ``history_size``);
a Centrifugo option livehub does not implement is an error too, unless the config switches it
off (``"enabled": false``, ``0``, ``""``, ``[]``), which livehub honours by not having it.

Environment variables override the file, in two spellings:

* Centrifugo's: ``CENTRIFUGO_CLIENT_INSECURE=true``, lists space-separated
  (``CENTRIFUGO_CLIENT_ALLOWED_ORIGINS="https://a https://b"``), namespaces named in
  ``CENTRIFUGO_CHANNEL_NAMESPACES="chat feed"`` (added to the file's, as Centrifugo v6 adds
  them; a JSON list of objects replaces them) and configured by
  ``CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_PRESENCE=true``. An empty variable is unset (the file's
  value stays), as in Centrifugo. Unknown ``CENTRIFUGO_*`` names are reported (as Centrifugo
  does), never fatal: other programs may use the prefix.
* livehub's, which win over both: ``LIVEHUB_CLIENT__INSECURE=true`` (``__`` separates levels);
  lists as JSON (``["a","b"]``) or space-separated.

Durations accept seconds (``25``) or Go's duration strings (``"25s"``, ``".5s"``, ``"1h30m"``).
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from livehub.centrifugo_keys import CENTRIFUGO_KEYS

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: object) -> object:
    """``"1m30s"`` -> 90.0; numbers are seconds; anything else is left to fail validation."""
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[-+]?\d+(\.\d+)?", text):
            return float(text)
        sign, body = (-1.0 if text[:1] == "-" else 1.0), text.lstrip("+-")
        parts = _DURATION.findall(body)
        if not parts or len(text) - len(body) > 1 or "".join(n + u for n, u in parts) != body:
            raise ValueError(f"invalid duration {value!r}: use seconds or a string like '25s', '5m', '1h'")
        return sign * sum(float(n) * _UNITS[u] for n, u in parts)
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class Section(BaseModel):
    """Unknown keys are kept here, and :func:`config_problems` refuses them by name."""

    model_config = ConfigDict(extra="allow")


class TokenSettings(Section):
    hmac_secret_key: str = ""
    #: The HMAC key being rotated out: tokens it signed pass until ``..._valid_until``
    #: (unix time; 0: as long as it is configured).
    hmac_previous_secret_key: str = ""
    hmac_previous_secret_key_valid_until: Annotated[int, Field(ge=0)] = 0
    rsa_public_key: str = ""
    ecdsa_public_key: str = ""
    #: A JWKS URL (fixed: tokens cannot choose it); keys are picked by the token's ``kid``.
    jwks_public_endpoint: str = ""
    audience: str = ""
    issuer: str = ""
    user_id_claim: str = "sub"

    @property
    def has_key(self) -> bool:
        """Can tokens be verified at all (some key or a JWKS endpoint is configured)?"""
        return bool(
            self.hmac_secret_key or self.rsa_public_key or self.ecdsa_public_key or self.jwks_public_endpoint
        )


class SubscriptionTokenSettings(Section):
    enabled: bool = False
    hmac_secret_key: str = ""
    hmac_previous_secret_key: str = ""
    hmac_previous_secret_key_valid_until: Annotated[int, Field(ge=0)] = 0
    rsa_public_key: str = ""
    ecdsa_public_key: str = ""
    jwks_public_endpoint: str = ""


class Enabled(Section):
    enabled: bool = False


class RateBucket(Section):
    """``rate`` operations per ``interval`` (a token bucket holding at most ``rate``)."""

    #: The bucket's period: ``rate`` tokens come back over it.
    interval: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = 1.0
    #: Operations allowed per ``interval``, and the most that can be saved up for a burst.
    rate: Annotated[int, Field(ge=1)] = 1


class CommandBuckets(Section):
    """One command's limit (Centrifugo PRO's shape): its buckets, used when ``enabled``."""

    #: Apply these buckets (off: the section is ignored).
    enabled: bool = False
    #: Token buckets a command takes one token from each; all must have one.
    buckets: list[RateBucket] = []


class RPCMethodBuckets(Section):
    #: The RPC method these buckets are for, instead of the ``rpc`` section's.
    method: str
    #: Apply this override.
    enabled: bool = True
    #: Token buckets for this RPC method.
    buckets: list[RateBucket] = []


class RPCBuckets(CommandBuckets):
    #: Per RPC method, instead of the ``rpc`` buckets.
    method_overrides: list[RPCMethodBuckets] = []


class ClientCommandRateLimit(Section):
    """``client.rate_limit.client_command``: per-connection command rates. A command over its
    limit is answered with error 111 and does nothing; a connection that keeps sending far
    past it is closed with 3013. ``total`` counts every command; ``default`` is for the
    commands without a section of their own."""

    #: Limit each connection's commands (111 over a limit; 3013 for a connection whose
    #: refusals in one second pass 10 times the largest configured rate per second).
    enabled: bool = False
    #: Buckets every command takes from.
    total: CommandBuckets = CommandBuckets()
    #: Buckets for commands that have no enabled section of their own.
    default: CommandBuckets = CommandBuckets()
    #: ``subscribe`` commands.
    subscribe: CommandBuckets = CommandBuckets()
    #: ``publish`` commands.
    publish: CommandBuckets = CommandBuckets()
    #: ``history`` commands.
    history: CommandBuckets = CommandBuckets()
    #: ``presence`` commands.
    presence: CommandBuckets = CommandBuckets()
    #: ``presence_stats`` commands.
    presence_stats: CommandBuckets = CommandBuckets()
    #: ``refresh`` commands.
    refresh: CommandBuckets = CommandBuckets()
    #: ``sub_refresh`` commands.
    sub_refresh: CommandBuckets = CommandBuckets()
    #: ``rpc`` commands, narrowed per method by ``method_overrides``.
    rpc: RPCBuckets = RPCBuckets()


class DisconnectTo(Section):
    #: The disconnect code (3000-4999: 3000-3499 and 4000-4499 ask the client to reconnect).
    code: Annotated[int, Field(ge=3000, le=4999)]
    #: Its reason.
    reason: str = ""


class ConnectCodeTransform(Section):
    #: The error code a refused ``connect`` got (e.g. 101 unauthorized, 103 permission denied).
    code: Annotated[int, Field(ge=0)]
    #: The disconnect that closes the unidirectional connection instead.
    to: DisconnectTo


class ConnectCodeToUnidirectionalDisconnect(Section):
    """How a refused ``connect`` of a unidirectional client (which gets no error reply) ends
    its connection, for error codes not mapped by default (109/110 -> 3005, 111 -> 3013,
    103 -> 3507, others -> 3004)."""

    #: Apply ``transforms``.
    enabled: bool = False
    #: Error code -> disconnect, before the default mapping.
    transforms: list[ConnectCodeTransform] = []


class ClientRateLimit(Section):
    #: Per-connection command rates, in memory on each node.
    client_command: ClientCommandRateLimit = ClientCommandRateLimit()
    #: Per-user command rates (same sections): every connection of a user, on every node,
    #: takes from the same buckets, kept in Redis with the Redis engine (one atomic script
    #: per command; error 100 while Redis is unreachable) and in each node's memory with the
    #: memory and NATS engines. Anonymous connections are not limited by it.
    user_command: ClientCommandRateLimit = ClientCommandRateLimit()


# -- proxies: the app backend asked over HTTP (livehub.core.proxy)


class ProxyHttpSettings(Section):
    #: Headers added to every request to this proxy; forwarded client headers win over them.
    static_headers: dict[str, str] = {}


class ProxySettings(Section):
    """One backend endpoint livehub asks over HTTP with JSON, as Centrifugo's proxies."""

    #: ``http://...`` address that receives the POST; empty: no proxy.
    endpoint: str = ""
    #: The whole request, connection included; later is an internal error (100) for the client.
    timeout: Duration = 1.0
    #: Headers of the client's opening handshake forwarded to the backend (lower case names).
    http_headers: list[str] = []
    #: Centrifugo's gRPC metadata keys: livehub has no gRPC transport, so none arrive.
    grpc_metadata: list[str] = []
    #: Data goes as ``b64data`` (base64) instead of JSON ``data``.
    binary_encoding: bool = False
    #: Send the connection's ``meta`` (from the connect proxy) with every request.
    include_connection_meta: bool = False
    http: ProxyHttpSettings = ProxyHttpSettings()

    @model_validator(mode="after")
    def _http_endpoint(self) -> ProxySettings:
        if self.endpoint and urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise ValueError(f"proxy endpoint {self.endpoint!r}: only http(s):// proxies are supported")
        self.http_headers = [h.lower() for h in self.http_headers]
        return self


class NamedProxy(ProxySettings):
    #: How namespaces (``subscribe_proxy_name``...) and RPC namespaces refer to it.
    name: str = Field(pattern=r"^[-a-zA-Z0-9_.]+$")


class EnabledProxy(ProxySettings):
    #: Ask this proxy (its ``endpoint`` must be set).
    enabled: bool = False

    @model_validator(mode="after")
    def _endpoint_when_enabled(self) -> EnabledProxy:
        if self.enabled and not self.endpoint:
            raise ValueError("an enabled proxy needs an endpoint")
        return self


class ClientProxySettings(Section):
    #: Asked at ``connect`` when the client sends no token: who the connection is.
    connect: EnabledProxy = EnabledProxy()
    #: Asked when a connection expires, instead of the client refreshing its token.
    refresh: EnabledProxy = EnabledProxy()


class ChannelProxySettings(Section):
    """The proxies namespaces name ``"default"`` (or by leaving the name empty)."""

    subscribe: ProxySettings = ProxySettings()
    publish: ProxySettings = ProxySettings()
    sub_refresh: ProxySettings = ProxySettings()
    shared_poll_refresh: ProxySettings = ProxySettings()


class RpcOptions(Section):
    #: RPC calls of these methods go to the RPC proxy (unless the app serves the method).
    proxy_enabled: bool = False
    #: The proxy asked: ``"default"`` is ``rpc.proxy``, other names are items of ``proxies``.
    proxy_name: str = "default"


class RpcNamespace(RpcOptions):
    #: Methods named ``<name>:…`` belong to this namespace.
    name: str = Field(pattern=r"^[-a-zA-Z0-9_.]{2,}$")


class RpcSettings(Section):
    #: The RPC proxy named ``"default"``.
    proxy: ProxySettings = ProxySettings()
    without_namespace: RpcOptions = RpcOptions()
    namespaces: list[RpcNamespace] = []
    #: Separates an RPC namespace's name from the method's.
    namespace_boundary: str = ":"


class SharedPollSettings(Section):
    """Keys that clients of shared poll subscriptions track are signed by the app with this
    HMAC key (``livehub.core.shared_poll``)."""

    #: The key track signatures are verified with (HMAC-SHA256).
    hmac_secret_key: str = ""
    #: The key before a rotation, accepted as well.
    hmac_previous_secret_key: str = ""
    #: Unix time after which signatures issued are no longer checked with the previous key (0: always).
    hmac_previous_secret_key_valid_until: int = 0
    #: livehub's: distinct keys tracked on this node, over every channel (error 106 beyond).
    max_keys_per_node: Annotated[int, Field(ge=1)] = 100_000


class SharedPollOptions(Section):
    """A ``subscription_type: shared_poll`` namespace: how its keys are polled."""

    #: The proxy asked for the tracked keys (``"default"``: ``channel.proxy.shared_poll_refresh``);
    #: an app embedding livehub may give a Python function instead (``Hub.shared_poll``).
    proxy_name: str = "default"
    #: How often the node asks the backend for the tracked keys.
    refresh_interval: Duration = 5.0
    #: Keys asked in one request to the backend at most.
    refresh_batch_size: Annotated[int, Field(ge=1)] = 1000
    #: Keys one connection may track in one channel (error 106 beyond it).
    max_keys_per_connection: Annotated[int, Field(ge=1)] = 1000
    #: ``versioned``: the backend gives versions; ``""`` (versionless): livehub numbers the
    #: changes of each key itself, under an epoch of the node.
    mode: Literal["", "versioned", "versionless"] = ""


class ClientSettings(Section):
    token: TokenSettings = TokenSettings()
    #: A separate key for subscription tokens; when disabled, ``token`` verifies both.
    subscription_token: SubscriptionTokenSettings = SubscriptionTokenSettings()
    #: Everyone may connect without a token and use every channel: for development.
    insecure: bool = False
    allow_anonymous_connect_without_token: bool = False
    #: Origins allowed to open a connection (glob patterns such as ``"http://127.0.0.1:*"``).
    #: Empty: no browser may connect (any request with an Origin header is refused, as in
    #: Centrifugo); clients that send no Origin (SDKs outside browsers) always may.
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
    #: Maximum connections open on this node (0 = unlimited). Over it the upgrade is refused
    #: with HTTP 503 before any app code runs, as Centrifugo does.
    connection_limit: Annotated[int, Field(ge=0)] = 0
    #: Maximum new connections per second on this node (0 = unlimited; HTTP 503 beyond it).
    connection_rate_limit: Annotated[int, Field(ge=0)] = 0
    #: livehub's: maximum connections open from one client address on this node (0 =
    #: unlimited; HTTP 503 beyond it). Behind a proxy every client has the proxy's address.
    connection_limit_per_ip: Annotated[int, Field(ge=0)] = 0
    #: Per-connection command rate limits (Centrifugo PRO's ``client.rate_limit``).
    rate_limit: ClientRateLimit = ClientRateLimit()
    proxy: ClientProxySettings = ClientProxySettings()
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
    #: livehub's form of Centrifugo 6.9's ``emulated_headers`` (there, one list per proxy):
    #: the header names an SDK may send inside its ``connect`` command (the ``headers``
    #: option, for browsers that cannot set headers on a WebSocket) that the app's callbacks
    #: then see as request headers (``Header(...)``, ``client.headers``). Case-insensitive;
    #: others are dropped; a real request header of the same name wins. The values are the
    #: client's own: list only names the app checks itself (a token it verifies). With a
    #: list set, ``on_connect`` runs at the ``connect`` command instead of the upgrade.
    emulated_headers: list[str] = []
    #: Disconnect codes for the errors that refuse a unidirectional client's ``connect``.
    connect_code_to_unidirectional_disconnect: ConnectCodeToUnidirectionalDisconnect = (
        ConnectCodeToUnidirectionalDisconnect()
    )

    @model_validator(mode="after")
    def _emulated_headers_are_names(self) -> ClientSettings:
        names = [name.strip().lower() for name in self.emulated_headers]
        bad = [name for name in names if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9a-z-]+", name)]
        if bad:
            raise ValueError(f"emulated_headers: not header names: {', '.join(map(repr, bad))}")
        self.emulated_headers = names
        return self

    @model_validator(mode="after")
    def _pong_before_next_ping(self) -> ClientSettings:
        if self.ping_interval and self.pong_timeout >= self.ping_interval:
            raise ValueError("pong_timeout must be shorter than ping_interval")
        return self


class MapSettings(Section):
    """A map namespace's ``map`` options (Centrifugo's names), and livehub's ``max_keys``.

    ``mode``: ``ephemeral`` (keys expire after ``key_ttl``; no stream: a reconnecting
    client loads the state again), ``recoverable`` (keys expire; a stream of changes lets
    clients recover), ``persistent`` (keys live until removed; a stream).
    """

    #: ``ephemeral``, ``recoverable`` or ``persistent`` (required in a map namespace).
    mode: Literal["", "ephemeral", "recoverable", "persistent"] = ""
    #: A key not written again within this is removed (required by ``ephemeral`` and
    #: ``recoverable``, refused by ``persistent``).
    key_ttl: Duration = 0.0
    #: Changes kept for catch-up and recovery (0: 100; none in ``ephemeral`` mode).
    stream_size: Annotated[int, Field(ge=0)] = 0
    #: How long a change stays in the stream (0: 60s).
    stream_ttl: Duration = 0.0
    #: How long the map's epoch outlives its last change (0: ten stream TTLs when keys
    #: expire, forever otherwise); a new epoch makes clients load the state again.
    meta_ttl: Duration = 0.0
    #: Remove the key named after a client's id when it unsubscribes (cursors and the like).
    remove_client_on_unsubscribe: bool = False
    #: Clients write the key named after their ``client_id`` or ``user_id``, whatever key they send.
    client_key: Literal["", "client_id", "user_id"] = ""
    #: Connected clients may set keys (``MapSubscription.publish``).
    allow_publish_for_client: bool = False
    #: Subscribers of the channel may set keys.
    allow_publish_for_subscriber: bool = False
    #: The two above also let anonymous clients set keys.
    allow_publish_for_anonymous: bool = False
    #: Connected clients may remove keys (``MapSubscription.remove``).
    allow_remove_for_client: bool = False
    #: Subscribers of the channel may remove keys.
    allow_remove_for_subscriber: bool = False
    #: The two above also let anonymous clients remove keys.
    allow_remove_for_anonymous: bool = False
    #: Entries per state or stream page when the client asks for none (0: 100).
    default_page_size: Annotated[int, Field(ge=0)] = 0
    #: The smallest page a client may ask for (0: 1).
    min_page_size: Annotated[int, Field(ge=0)] = 0
    #: The largest page a client may ask for (0: 1000).
    max_page_size: Annotated[int, Field(ge=0)] = 0
    #: The most changes a subscriber may catch up on when it goes live; more is error 112
    #: and the SDK loads the state again (0: ``max_page_size``).
    live_transition_max_publication_limit: Annotated[int, Field(ge=0)] = 0
    #: A subscriber still loading state and stream pages after this is dropped (0: 5s).
    subscribe_catch_up_timeout: Duration = 0.0
    #: livehub's own: at most this many keys per channel (a new key beyond it: error 106).
    max_keys: Annotated[int, Field(ge=1)] = 10_000

    @model_validator(mode="after")
    def _consistent(self) -> MapSettings:
        """Centrifugo's rules for the mode and its TTLs."""
        if self.mode in ("ephemeral", "recoverable") and not self.key_ttl:
            raise ValueError(f"map.key_ttl is required when map.mode is {self.mode!r}")
        if self.mode == "persistent" and self.key_ttl:
            raise ValueError("map.key_ttl must not be set when map.mode is 'persistent' (keys never expire)")
        if self.mode == "ephemeral" and (self.stream_size or self.stream_ttl or self.meta_ttl):
            raise ValueError("map.stream_size, stream_ttl and meta_ttl must be 0 for map.mode 'ephemeral'")
        if self.min_page_size and self.max_page_size and self.min_page_size > self.max_page_size:
            raise ValueError("map.min_page_size must not exceed map.max_page_size")
        return self

    def page_size(self, asked: int) -> int:
        """The page a client gets for asking ``asked`` (0: the default), within the bounds."""
        size = asked if asked > 0 else (self.default_page_size or 100)
        return min(max(size, self.min_page_size or 1), self.max_page_size or 1000)


#: ``subscription_type`` values livehub serves (Centrifugo's ``shared_poll`` is not one).
MAP_TYPES = ("map", "map_clients", "map_users")


class NamespaceOptions(Section):
    #: Channel names of the namespace (the part after ``ns:``) must match this regular
    #: expression, else error 107 (bad request), as Centrifugo checks it. Empty: no check.
    channel_regex: str = ""
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
    #: livehub's: a subscriber the socket cannot keep up with gets only the latest
    #: publication of each key (a publication's ``key``; the channel when it has none) instead
    #: of being disconnected as slow (3008). Deltas are not sent on such channels.
    conflate: bool = False
    #: livehub's: keys of one channel a conflating subscriber may be behind on at once;
    #: one more disconnects it as slow (3008), so memory stays bounded.
    conflate_max_keys: Annotated[int, Field(ge=1)] = 1000
    #: ``stream`` (publications with history, the default), ``map`` (a key -> value state
    #: clients load and follow), the presence maps ``map_clients`` / ``map_users``, or
    #: ``shared_poll`` (keys polled from the backend, ``livehub.core.shared_poll``).
    subscription_type: Literal["", "stream", "map", "map_clients", "map_users", "shared_poll"] = ""
    #: The map options of a map namespace.
    map: MapSettings = MapSettings()
    #: When set, each subscriber of a channel ``ch`` here is an entry (key: client id) of the
    #: map channel prefix + ``ch`` (a ``map_clients`` namespace), removed when it leaves.
    map_clients_presence_channel_prefix: str = ""
    #: The same for users (key: user id); entries expire after the map's ``key_ttl``.
    map_users_presence_channel_prefix: str = ""
    #: Subscribers may give a tags filter (``tf``): they get only publications it matches.
    allow_tags_filter: bool = False
    #: Told to map subscribers (``publish_debounce``, ms): the SDK debounces its publishes.
    client_publish_debounce_interval: Duration = 0.0
    #: Proxies (``livehub.core.proxy``): the backend decides subscribe, publish and sub_refresh.
    subscribe_proxy_enabled: bool = False
    #: ``"default"``: ``channel.proxy.subscribe``; other names are items of ``proxies``.
    subscribe_proxy_name: str = "default"
    #: The backend allows, refuses or changes what clients publish (not tokens or options).
    publish_proxy_enabled: bool = False
    #: ``"default"``: ``channel.proxy.publish``; other names are items of ``proxies``.
    publish_proxy_name: str = "default"
    #: The backend prolongs expiring subscriptions (instead of the client's new token).
    sub_refresh_proxy_enabled: bool = False
    #: ``"default"``: ``channel.proxy.sub_refresh``; other names are items of ``proxies``.
    sub_refresh_proxy_name: str = "default"
    shared_poll: SharedPollOptions = SharedPollOptions()

    @property
    def history_enabled(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0

    @property
    def is_map(self) -> bool:
        return self.subscription_type in MAP_TYPES

    @model_validator(mode="after")
    def _map_mode(self) -> NamespaceOptions:
        if self.is_map and not self.map.mode:
            raise ValueError("map.mode is required when subscription_type is a map type")
        if self.map.mode == "persistent" and self.subscription_type in ("map_clients", "map_users"):
            raise ValueError(
                f"map.mode 'persistent' is not allowed with subscription_type {self.subscription_type!r} "
                "(presence entries expire)"
            )
        return self

    @model_validator(mode="after")
    def _regex_compiles(self) -> NamespaceOptions:
        if self.channel_regex:
            try:
                re.compile(self.channel_regex)
            except re.error as exc:
                raise ValueError(
                    f"channel_regex {self.channel_regex!r} is not a regular expression: {exc}"
                ) from None
        return self


class Namespace(NamespaceOptions):
    name: str = Field(pattern=r"^[-a-zA-Z0-9_.]{2,}$")


class ChannelSettings(Section):
    without_namespace: NamespaceOptions = NamespaceOptions()
    namespaces: list[Namespace] = []
    max_length: Annotated[int, Field(ge=1)] = 255
    private_prefix: str = "$"
    proxy: ChannelProxySettings = ChannelProxySettings()
    namespace_boundary: str = ":"
    user_boundary: str = "#"
    user_separator: str = ","

    @model_validator(mode="after")
    def _unique_namespace_names(self) -> ChannelSettings:
        """Two namespaces of one name would leave which options apply to chance (Centrifugo
        refuses them too, e.g. a name in ``CENTRIFUGO_CHANNEL_NAMESPACES`` that the file has)."""
        names = [ns.name for ns in self.namespaces]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"namespace name must be unique: {', '.join(twice)}")
        return self


class HttpApiSettings(Section):
    key: str = ""
    insecure: bool = False
    handler_prefix: str = "/api"
    #: Largest request body in bytes; a bigger one is answered 413 without being read whole.
    max_body_size: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024


class WebSocketSettings(Section):
    #: Largest incoming frame in bytes; bigger ones close the connection with 1009.
    message_size_limit: Annotated[int, Field(ge=128)] = 65536
    handler_prefix: str = "/connection/websocket"
    #: An upgrade request must be complete, and the app's connect hook done, this long after
    #: the connection opened; else it is dropped (408, or 503 while the hook still runs). 0: none.
    handshake_timeout: Duration = 10.0


class HttpStreamSettings(Section):
    """The HTTP-streaming transport (``POST`` the connect command, replies stream back), with
    bidirectional emulation: the client's further commands come through ``emulation``."""

    #: Serve the transport (off by default, as in Centrifugo).
    enabled: bool = False
    #: Its path.
    handler_prefix: str = "/connection/http_stream"
    #: Largest connect request body in bytes; a bigger one is answered 413.
    max_request_body_size: Annotated[int, Field(ge=128)] = 65536


class SseSettings(Section):
    """The SSE (EventSource) transport, with bidirectional emulation like ``http_stream``."""

    #: Serve the transport (off by default, as in Centrifugo).
    enabled: bool = False
    #: Its path (``GET`` with ``cf_connect``, or ``POST``).
    handler_prefix: str = "/connection/sse"
    #: Largest connect command in bytes (``cf_connect`` or a POST body); a bigger one is 413.
    max_request_body_size: Annotated[int, Field(ge=128)] = 65536


class EmulationSettings(Section):
    """The endpoint carrying the commands of HTTP-streaming and SSE clients (served when
    either is enabled); a request reaching another node than the session's is forwarded."""

    #: Its path, which the SDKs' ``emulationEndpoint`` option names.
    handler_prefix: str = "/emulation"
    #: Largest emulation request body in bytes; a bigger one is answered 413.
    max_request_body_size: Annotated[int, Field(ge=128)] = 65536


class UniWebSocketSettings(Section):
    """Centrifugo's ``uni_websocket``: a WebSocket whose client sends one connect request
    (its first message, or the ``cf_connect`` query parameter) and then only receives."""

    #: Serve the endpoint (off by default, as in Centrifugo).
    enabled: bool = False
    #: Its path.
    handler_prefix: str = "/connection/uni_websocket"
    #: Largest incoming frame in bytes (the connect request); bigger ones close with 1009.
    message_size_limit: Annotated[int, Field(ge=128)] = 65536
    #: Several queued messages in one frame, newline-separated (the client must split them);
    #: off: one message per frame.
    join_push_messages: bool = False
    #: No ``disconnect`` message before the close frame (which carries the same code).
    disable_disconnect_push: bool = False


class UniStreamSettings(Section):
    #: Serve the endpoint (off by default, as in Centrifugo).
    enabled: bool = False
    #: Its path.
    handler_prefix: str = ""
    #: Largest connect request body in bytes; a bigger one is answered 413.
    max_request_body_size: Annotated[int, Field(ge=1)] = 65536


class UniSSESettings(UniStreamSettings):
    """Centrifugo's ``uni_sse``: an EventSource stream (``GET`` with the connect request in
    the ``cf_connect`` query parameter, or ``POST`` with it as the body)."""

    #: Its path.
    handler_prefix: str = "/connection/uni_sse"


class UniHTTPStreamSettings(UniStreamSettings):
    """Centrifugo's ``uni_http_stream``: ``POST`` the connect request as the body, read
    newline-delimited JSON messages."""

    #: Its path.
    handler_prefix: str = "/connection/uni_http_stream"


class TlsSettings(Section):
    """Centrifugo's ``http_server.tls``: ``cert_pem``/``key_pem`` are a file path or the PEM itself."""

    enabled: bool = False
    cert_pem: str = ""
    key_pem: str = ""

    @model_validator(mode="after")
    def _both_given(self) -> TlsSettings:
        if self.enabled and not (self.cert_pem and self.key_pem):
            raise ValueError("tls.enabled needs cert_pem and key_pem (file paths or PEM text)")
        return self

    def files(self) -> tuple[str, str]:
        """(certificate file, key file) for the server; PEM text is written to private temp files."""
        return _pem_file(self.cert_pem, "cert"), _pem_file(self.key_pem, "key")


def _pem_file(value: str, what: str) -> str:
    if "-----BEGIN" not in value:
        if not Path(value).is_file():
            raise ConfigError(f"http_server.tls.{what}_pem: no such file {value!r}")
        return value
    import tempfile

    fd, path = tempfile.mkstemp(prefix=f"livehub-{what}-", suffix=".pem")  # mode 0600
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return path


class HttpServerSettings(Section):
    address: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    tls: TlsSettings = TlsSettings()


class RedisOptions(Section):
    """Centrifugo's ``engine.redis`` (and ``broker.redis``, ``presence_manager.redis``)."""

    #: ``host:port`` or ``redis://…``/``rediss://…`` URLs; several are shards.
    address: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = [
        "redis://127.0.0.1:6379"
    ]
    #: One node of a Redis Cluster (instead of ``address``).
    cluster_address: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = []
    #: Key and channel prefix; livehub's default differs from Centrifugo's (``centrifugo``)
    #: because the two do not share a Redis layout.
    prefix: str = "livehub"
    db: Annotated[int, Field(ge=0)] = 0
    user: str = ""
    password: str = ""
    connect_timeout: Duration = 1.0
    io_timeout: Duration = 4.0
    presence_ttl: Duration = 60.0
    tls: Enabled = Enabled()

    def url(self) -> str:
        """The livehub engine URL (``redis://…?prefix=…``) these options describe."""
        if self.cluster_address:
            if len(self.cluster_address) > 1:
                raise ValueError("redis.cluster_address: livehub takes one node of the cluster")
            addresses, extra = self.cluster_address, {"cluster": "1"}
        else:
            addresses, extra = self.address, {}
        if not addresses:
            raise ValueError("redis.address is empty")
        query = {
            "prefix": self.prefix,
            "connect_timeout": f"{self.connect_timeout:g}s",
            "io_timeout": f"{self.io_timeout:g}s",
            "presence_ttl": f"{self.presence_ttl:g}s",
            **extra,
        }
        qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        scheme = "rediss" if self.tls.enabled else "redis"
        auth = ""
        if self.user or self.password:
            auth = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}@"
        urls = []
        for address in addresses:
            if "://" in address:
                parts = urlsplit(address)
                if parts.path in ("", "/"):  # no database in the URL: engine.redis.db
                    address = parts._replace(path=f"/{self.db}").geturl()
                sep = "&" if parts.query else "?"
                urls.append(f"{address}{sep}{qs}")
            else:
                urls.append(f"{scheme}://{auth}{address}/{self.db}?{qs}")
        return ",".join(urls)


class NatsOptions(Section):
    """Centrifugo's ``broker.nats``."""

    url: str = "nats://127.0.0.1:4222"
    prefix: str = "livehub"
    dial_timeout: Duration = 1.0


class PostgresBrokerOptions(Section):
    """Centrifugo's ``broker.postgres`` (its connection and table prefix; livehub's tables)."""

    #: ``postgresql://user:pass@host:5432/db`` (asyncpg's URL options may follow).
    dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    #: Prefix of the engine's tables and of its NOTIFY channel (livehub's default; Centrifugo's is ``cf``).
    table_prefix: str = "livehub"
    #: Connections of each node's pool (one more LISTENs).
    pool_size: Annotated[int, Field(ge=1, le=1000)] = 8

    def url(self) -> str:
        """The livehub engine URL these options describe."""
        sep = "&" if "?" in self.dsn else "?"
        return f"{self.dsn}{sep}prefix={quote(self.table_prefix, safe='')}&pool_size={self.pool_size}"


class EngineSettings(Section):
    """Centrifugo's ``engine.type`` + ``engine.redis``, or livehub's ``url`` (which says both)."""

    #: ``memory://`` keeps everything in this process; ``redis://host:6379`` (several: shards),
    #: ``nats://host:4222``, ``postgresql://user@host:5432/db`` (PostgreSQL alone: history,
    #: fan-out by LISTEN/NOTIFY, presence). Empty: from ``type``, ``broker`` and ``presence_manager``.
    url: str = ""
    type: Literal["", "memory", "redis"] = ""
    redis: RedisOptions = RedisOptions()


class BrokerSettings(Section):
    enabled: bool = False
    type: Literal["memory", "redis", "nats", "postgres"] = "memory"
    redis: RedisOptions = RedisOptions()
    nats: NatsOptions = NatsOptions()
    postgres: PostgresBrokerOptions = PostgresBrokerOptions()


class PresenceManagerSettings(Section):
    enabled: bool = False
    type: Literal["memory", "redis"] = "memory"
    redis: RedisOptions = RedisOptions()


class PostgresConsumerOptions(Section):
    """Centrifugo's ``consumers[].postgresql``: an outbox table of server API commands
    (``livehub.consumers.postgresql`` shows the table)."""

    #: The database of the outbox table: ``postgresql://user:pass@host:5432/db``.
    dsn: str = ""
    #: The table the app writes ``(method, payload, partition)`` rows to (``schema.table`` allowed).
    outbox_table_name: str = ""
    #: Partitions ``0 .. n-1``, each run by one worker at a time across all nodes, in id order.
    num_partitions: Annotated[int, Field(ge=1, le=1024)] = 1
    #: Rows read and run per transaction of a partition.
    partition_select_limit: Annotated[int, Field(ge=1, le=10_000)] = 100
    #: How often a partition is read when no notification wakes it.
    partition_poll_interval: Duration = 0.3
    #: LISTEN on this channel for the partition numbers a trigger notifies (empty: poll only).
    partition_notification_channel: str = ""
    #: Another DSN for the LISTEN connection (a direct one, when ``dsn`` goes through PgBouncer).
    partition_notification_dsn: str = ""
    #: ``pg_try_advisory_xact_lock``: a node finding a partition taken waits instead of queueing.
    use_try_lock: bool = False


class AdminSettings(Section):
    """The admin page (``livehub.admin``): a password to sign in, a secret to sign its tokens."""

    enabled: bool = False
    password: str = ""
    secret: str = ""
    #: No sign-in at all: only behind a firewall.
    insecure: bool = False
    handler_prefix: str = "/admin"
    #: Centrifugo's choice of port; livehub serves everything on one port, so any value is honoured.
    external: bool = False

    @model_validator(mode="after")
    def _can_sign_in(self) -> AdminSettings:
        if self.enabled and not self.insecure and not (self.password and self.secret):
            raise ValueError("admin.enabled needs admin.password and admin.secret (or admin.insecure)")
        return self


class PrometheusSettings(Section):
    #: On by default in livehub (Centrifugo: off): ``/metrics`` in Prometheus text format.
    enabled: bool = True
    handler_prefix: str = "/metrics"


class HealthSettings(Section):
    #: On by default in livehub (Centrifugo: off): ``/health`` (alive) and ``/health/ready``
    #: (503 while the engine is unreachable).
    enabled: bool = True
    handler_prefix: str = "/health"


LogLevel = Literal["none", "trace", "debug", "info", "warn", "warning", "error"]


class LogSettings(Section):
    level: LogLevel = "info"
    #: A file to append logs to; empty: standard error.
    file: str = ""
    #: livehub's addition: ``json`` writes one JSON object per line.
    format: Literal["text", "json"] = "text"


class NodeSettings(Section):
    #: This node's name in ``info`` (default: ``host_port``).
    name: str = ""


class DemosSettings(Section):
    """livehub's own: the demo pages, their RPCs and the seed endpoints (``/ws``, ``/chat``,
    ``/echo``). Off unless asked for (``--demos``): their token route lets anyone in as anyone."""

    enabled: bool = False


class RedisStreamPublicationDataMode(Section):
    """A stream entry is data to publish, not an API command: its fields name the channels."""

    #: Publish the ``payload_value`` field into the channels the entry names.
    enabled: bool = False
    #: The entry field with the channels, comma-separated.
    channels_value: str = "centrifugo-channels"
    #: The entry field with the publication's idempotency key.
    idempotency_key_value: str = "centrifugo-idempotency-key"
    #: Entry fields starting with this are the publication's tags (the rest of the name).
    tags_value_prefix: str = "centrifugo-tag-"


class RedisStreamConsumerSettings(Section):
    """Centrifugo's ``consumers[].redis_stream``: read API commands from Redis Streams
    through a consumer group (entries acknowledged once executed)."""

    #: ``host:port`` or a ``redis://`` URL (one Redis).
    address: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = [
        "127.0.0.1:6379"
    ]
    #: The Redis database number.
    db: Annotated[int, Field(ge=0)] = 0
    #: Redis ACL user name, if any.
    user: str = ""
    #: Redis password, if any.
    password: str = ""
    #: The streams (keys) to read.
    streams: list[str] = []
    #: The consumer group every node reading these streams joins (created if missing).
    consumer_group: str = ""
    #: An entry delivered but not acknowledged this long (its node died, or it failed) is
    #: delivered again, to any node of the group.
    visibility_timeout: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = 30.0
    #: Entries executed at once, per stream: also the most read ahead (in flight).
    num_workers: Annotated[int, Field(ge=1, le=1000)] = 1
    #: The entry field holding the command (or, with ``method_value``, its request).
    payload_value: str = "payload"
    #: The entry field naming the API method; without it the payload is
    #: ``{"method": ..., "payload": {...}}``.
    method_value: str = "method"
    publication_data_mode: RedisStreamPublicationDataMode = RedisStreamPublicationDataMode()


class NatsJetStreamPublicationDataMode(Section):
    """A message is data to publish, not an API command: its headers name the channels."""

    #: Publish the message's data into the channels its headers name.
    enabled: bool = False
    #: The header with the channels, comma-separated.
    channels_header: str = "centrifugo-channels"
    #: The header with the publication's idempotency key.
    idempotency_key_header: str = "centrifugo-idempotency-key"
    #: Headers starting with this are the publication's tags (the rest of the name).
    tags_header_prefix: str = "centrifugo-tag-"


class NatsJetStreamConsumerSettings(Section):
    """Centrifugo's ``consumers[].nats_jetstream``: read API commands from a JetStream
    stream through a durable consumer (messages acknowledged once executed)."""

    #: The NATS server.
    url: str = "nats://127.0.0.1:4222"
    #: NATS user name (with ``password``), if any.
    username: str = ""
    #: NATS password, if any.
    password: str = ""
    #: NATS authentication token, if any.
    token: str = ""
    #: A NATS credentials file (wins over username/password and token).
    credentials_file: str = ""
    #: The stream to read (it must exist).
    stream_name: str = ""
    #: Subjects of the stream to read (none: all).
    subjects: list[str] = []
    #: The durable consumer: created (or updated) unless ``use_existing_consumer``.
    durable_consumer_name: str = ""
    #: Attach to a consumer made elsewhere; the options below are then its own.
    use_existing_consumer: bool = False
    #: Where a new consumer starts: ``new`` messages only, or ``all`` the stream holds.
    deliver_policy: Literal["new", "all"] = "new"
    #: Messages delivered and not yet acknowledged, at most (in flight).
    max_ack_pending: Annotated[int, Field(ge=1)] = 100
    #: The header naming the API method; without it the payload is
    #: ``{"method": ..., "payload": {...}}``.
    method_header: str = "centrifugo-method"
    publication_data_mode: NatsJetStreamPublicationDataMode = NatsJetStreamPublicationDataMode()
    #: Connect over TLS (the system's trusted certificates).
    tls: Enabled = Enabled()


#: The consumer types livehub runs (Centrifugo has more: kafka, google_pub_sub, ...).
CONSUMER_TYPES = ("postgresql", "redis_stream", "nats_jetstream")


class ConsumerSettings(Section):
    """One of Centrifugo's ``consumers``: API commands read from a queue and executed as the
    server API would, acknowledged once done (at least once)."""

    #: Names the consumer in logs; unique.
    name: str = ""
    #: Run it (a disabled consumer is checked, not run).
    enabled: bool = False
    #: ``postgresql``, ``redis_stream`` or ``nats_jetstream`` (Centrifugo's other types are
    #: refused when enabled).
    type: str = ""
    postgresql: PostgresConsumerOptions = PostgresConsumerOptions()
    redis_stream: RedisStreamConsumerSettings = RedisStreamConsumerSettings()
    nats_jetstream: NatsJetStreamConsumerSettings = NatsJetStreamConsumerSettings()

    @model_validator(mode="after")
    def _complete(self) -> ConsumerSettings:
        if not self.enabled:
            return self
        if self.type not in CONSUMER_TYPES:
            raise ValueError(
                f"consumer {self.name!r}: type {self.type!r} is not supported "
                f"({', '.join(CONSUMER_TYPES)} are)"
            )
        if not self.name:
            raise ValueError("an enabled consumer needs a name")
        if self.type == "postgresql":
            if not (self.postgresql.dsn and self.postgresql.outbox_table_name):
                raise ValueError(
                    f"consumer {self.name!r}: a postgresql consumer needs postgresql.dsn and "
                    "postgresql.outbox_table_name"
                )
        elif self.type == "redis_stream":
            cfg = self.redis_stream
            if not (cfg.address and cfg.streams and cfg.consumer_group):
                raise ValueError(
                    f"consumer {self.name!r}: redis_stream needs address, streams and consumer_group"
                )
        else:
            jet = self.nats_jetstream
            if not (jet.url and jet.stream_name and jet.durable_consumer_name):
                raise ValueError(
                    f"consumer {self.name!r}: nats_jetstream needs url, stream_name and durable_consumer_name"
                )
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LIVEHUB_", env_nested_delimiter="__", extra="allow", case_sensitive=False
    )

    client: ClientSettings = ClientSettings()
    channel: ChannelSettings = ChannelSettings()
    http_api: HttpApiSettings = HttpApiSettings()
    websocket: WebSocketSettings = WebSocketSettings()
    http_stream: HttpStreamSettings = HttpStreamSettings()
    sse: SseSettings = SseSettings()
    emulation: EmulationSettings = EmulationSettings()
    uni_websocket: UniWebSocketSettings = UniWebSocketSettings()
    uni_sse: UniSSESettings = UniSSESettings()
    uni_http_stream: UniHTTPStreamSettings = UniHTTPStreamSettings()
    http_server: HttpServerSettings = HttpServerSettings()
    engine: EngineSettings = EngineSettings()
    broker: BrokerSettings = BrokerSettings()
    presence_manager: PresenceManagerSettings = PresenceManagerSettings()
    admin: AdminSettings = AdminSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    health: HealthSettings = HealthSettings()
    log: LogSettings = LogSettings()
    node: NodeSettings = NodeSettings()
    demos: DemosSettings = DemosSettings()
    #: Named proxies, which namespaces and RPC namespaces refer to by name.
    proxies: list[NamedProxy] = []
    rpc: RpcSettings = RpcSettings()
    shared_poll: SharedPollSettings = SharedPollSettings()
    #: Async consumers (Centrifugo's): sources of server API commands the node runs.
    consumers: list[ConsumerSettings] = []

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
        return EnvironmentSource(settings_cls), init_settings

    @model_validator(mode="before")
    @classmethod
    def _namespace_environment(cls, data: Any) -> Any:
        """Namespaces named in ``CENTRIFUGO_CHANNEL_NAMESPACES``, added to the file's, and
        ``CENTRIFUGO_CHANNEL_NAMESPACES_<NAME>_<OPTION>`` for every namespace, from the file or
        the environment alike (only here are both known)."""
        if isinstance(data, dict):
            add_namespace_names(data, os.environ)
            apply_namespace_env(data, os.environ)
        return data

    @model_validator(mode="after")
    def _engine_url(self) -> Settings:
        derived = _engine_url_from_sections(self)
        if not self.engine.url:
            self.engine.url = derived or "memory://"
        elif derived and derived != self.engine.url and not _engine_url_from_env():
            raise ValueError(
                "engine.url and engine.type/broker/presence_manager both name an engine: keep one"
            )
        return self

    @model_validator(mode="after")
    def _unique_consumer_names(self) -> Settings:
        names = [c.name for c in self.consumers if c.name]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"consumer name must be unique: {', '.join(twice)}")
        return self

    def namespace(self, name: str) -> NamespaceOptions | None:
        if not name:
            return self.channel.without_namespace
        for ns in self.channel.namespaces:
            if ns.name == name:
                return ns
        return None


def _engine_url_from_env() -> bool:
    """An engine URL in livehub's variable wins over the file's sections (``serve --engine``
    passes its choice to ``--workers`` that way)."""
    return bool(os.environ.get("LIVEHUB_ENGINE__URL"))


def _engine_url_from_sections(settings: Settings) -> str:
    """The engine URL that Centrifugo's ``engine`` / ``broker`` / ``presence_manager`` name,
    or "" when they name none. livehub runs the broker and presence on one engine, so a
    presence manager apart from the broker is refused."""
    engine, broker, presence = settings.engine, settings.broker, settings.presence_manager
    if engine.type and (broker.enabled or presence.enabled):
        raise ValueError("engine.type and broker/presence_manager: Centrifugo takes one or the other")
    if engine.type:
        return engine.redis.url() if engine.type == "redis" else "memory://"
    if not (broker.enabled or presence.enabled):
        return ""
    kind = broker.type if broker.enabled else "memory"
    if kind == "redis":
        url = broker.redis.url()
    elif kind == "postgres":
        url = broker.postgres.url()
    elif kind == "nats":
        url = broker.nats.url + f"?prefix={quote(broker.nats.prefix, safe='')}"
        url += f"&connect_timeout={broker.nats.dial_timeout:g}s"
    else:
        url = "memory://"
    if presence.enabled and presence.type != "memory":
        same = kind == "redis" and presence.redis.url().split("?")[0] == url.split("?")[0]
        if not same:
            raise ValueError(
                "presence_manager: livehub keeps presence on the broker's engine; use the same "
                "Redis for both (or engine.type: redis)"
            )
    elif presence.enabled and kind == "redis":
        raise ValueError("presence_manager.type memory with a Redis broker: livehub keeps presence on Redis")
    return url


# -- the environment


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _is_list(annotation: Any) -> bool:
    origin = getattr(annotation, "__origin__", None)
    if origin is Annotated:
        return _is_list(annotation.__args__[0])
    return origin is list


def _leaves(model: type[BaseModel], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every setting below ``model``: its path -> its annotation (lists of sections excluded)."""
    found: dict[tuple[str, ...], Any] = {}
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        if sub is not None:
            found.update(_leaves(sub, (*path, name)))
        elif name != "namespaces":
            found[(*path, name)] = field.annotation
    return found


def _env_value(raw: str, annotation: Any, name: str) -> Any:
    """A list from a JSON array or space-separated words; anything else as given."""
    if not _is_list(annotation):
        return raw
    text = raw.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{name}: not a JSON list ({exc}); or give the items space-separated") from None
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list")
        return value
    return text.split() if text else []


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        nested = data.get(part)
        if not isinstance(nested, dict):
            nested = data[part] = {}
        data = nested
    data[path[-1]] = value


def _namespaces_from_env(raw: str, name: str) -> list[Any]:
    text = raw.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{name}: not a JSON list of namespaces ({exc})") from None
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list of namespaces")
        return value
    return [{"name": n} for n in text.split()]


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings ``CENTRIFUGO_*`` and then ``LIVEHUB_*`` variables give, as nested keys."""
    data: dict[str, Any] = {}
    leaves = _leaves(Settings)
    for path, annotation in leaves.items():
        name = "CENTRIFUGO_" + "_".join(path).upper()
        if environ.get(name):  # empty: unset, as Centrifugo reads it
            _put(data, path, _env_value(environ[name], annotation, name))
    raw = environ.get("CENTRIFUGO_CHANNEL_NAMESPACES", "")
    if raw.strip().startswith("["):  # a JSON list replaces; names are added (add_namespace_names)
        _put(data, ("channel", "namespaces"), _namespaces_from_env(raw, "CENTRIFUGO_CHANNEL_NAMESPACES"))
    for name, raw in environ.items():
        if not name.upper().startswith("LIVEHUB_") or "__" not in name:
            continue
        path = tuple(part.lower() for part in name[len("LIVEHUB_") :].split("__"))
        if path == ("channel", "namespaces"):
            _put(data, path, _namespaces_from_env(raw, name))
        elif path in leaves:
            _put(data, path, _env_value(raw, leaves[path], name))
        elif path[0] in Settings.model_fields:
            known = ["LIVEHUB_" + "__".join(p).upper() for p in leaves]
            hint = difflib.get_close_matches(name.upper(), known, n=1)
            raise ConfigError(f"{name}: no such setting" + (f"; did you mean {hint[0]}?" if hint else ""))
    return data


def add_namespace_names(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """``CENTRIFUGO_CHANNEL_NAMESPACES="chat feed"`` adds those namespaces to the ones ``data``
    has (the file's), as Centrifugo v6 appends names given this way; a JSON list replaced them
    already (:func:`env_overrides`), and ``LIVEHUB_CHANNEL__NAMESPACES`` wins over both."""
    names = environ.get("CENTRIFUGO_CHANNEL_NAMESPACES", "").split()
    if not names or names[0].startswith("["):
        return
    if any(n.upper() == "LIVEHUB_CHANNEL__NAMESPACES" for n in environ):
        return
    channel = data.get("channel", {})
    if not isinstance(channel, dict):
        return
    namespaces = channel.get("namespaces") or []
    if isinstance(namespaces, list):
        data["channel"] = {**channel, "namespaces": [*namespaces, *({"name": n} for n in names)]}


def apply_namespace_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """``CENTRIFUGO_CHANNEL_NAMESPACES_<NAME>_<OPTION>`` into the namespaces of ``data``
    (the name upper-cased, ``.`` and ``-`` as ``_``, as Centrifugo spells it)."""
    channel = data.get("channel")
    namespaces = channel.get("namespaces") if isinstance(channel, dict) else None
    if not isinstance(namespaces, list):
        return
    options = _leaves(Namespace)
    for i, ns in enumerate(namespaces):
        if not isinstance(ns, dict) or not isinstance(ns.get("name"), str):
            continue
        prefix = "CENTRIFUGO_CHANNEL_NAMESPACES_" + re.sub(r"[.-]", "_", ns["name"]).upper() + "_"
        updated = copy.deepcopy(ns)
        for path, annotation in options.items():
            name = prefix + "_".join(path).upper()
            if environ.get(name) and path != ("name",):  # empty: unset
                _put(updated, path, _env_value(environ[name], annotation, name))  # map.key_ttl too
        namespaces[i] = updated


def unknown_env_vars(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """``CENTRIFUGO_*`` variables that name no setting livehub reads (reported, not fatal)."""
    environ = os.environ if environ is None else environ
    known = {"CENTRIFUGO_" + "_".join(p).upper() for p in _leaves(Settings)}
    known.add("CENTRIFUGO_CHANNEL_NAMESPACES")
    for ns in settings.channel.namespaces:
        prefix = "CENTRIFUGO_CHANNEL_NAMESPACES_" + re.sub(r"[.-]", "_", ns.name).upper() + "_"
        known.update(prefix + "_".join(p).upper() for p in _leaves(Namespace))
    return sorted(n for n in environ if n.startswith("CENTRIFUGO_") and n not in known)


class EnvironmentSource(PydanticBaseSettingsSource):
    """``CENTRIFUGO_*`` and ``LIVEHUB_*`` variables (see the module docstring)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole environment at once

    def __call__(self) -> dict[str, Any]:
        return env_overrides(os.environ)


# -- refusing what livehub would not honour


def _is_off(value: Any) -> bool:
    """A Centrifugo option livehub lacks is honoured when the config switches it off."""
    if isinstance(value, dict):
        return value.get("enabled") is False or all(_is_off(v) for v in value.values())
    if isinstance(value, list):
        return all(_is_off(v) for v in value)
    return value is None or value is False or value == 0 or value == ""


def config_problems(settings: Settings) -> list[str]:
    """Every key livehub would not honour, one message each (empty: all is honoured)."""
    problems: list[str] = []

    def walk(model: BaseModel, path: str, section: str) -> None:
        for key, value in (model.model_extra or {}).items():
            where = f"{path}{key}"
            centrifugo = CENTRIFUGO_KEYS.get(section, frozenset())
            if key in centrifugo:
                if not _is_off(value):
                    problems.append(
                        f"{where}: Centrifugo's option, not supported by livehub: remove it "
                        "(or switch it off)"
                    )
                continue
            known = set(type(model).model_fields) | centrifugo
            hint = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            problems.append(f"{where}: unknown key" + (f"; did you mean {path}{hint[0]}?" if hint else ""))
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                walk(value, f"{path}{name}.", f"{section}.{name}".lstrip("."))
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, BaseModel):
                        walk(item, f"{path}{name}[{i}].", f"{section}.{name}[]".lstrip("."))

    walk(settings, "", "")
    return problems


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
    """Config file (optional) + environment; raises ConfigError naming every key that is bad,
    unknown, or a Centrifugo option livehub cannot honour."""
    data = read_config_file(path) if path else {}
    where = f"{path}: " if path else ""
    try:
        settings = Settings(**data)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"])
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{where}invalid configuration:\n" + "\n".join(lines)) from None
    problems = config_problems(settings)
    if problems:
        raise ConfigError(f"{where}keys livehub would not honour:\n" + "\n".join(f"  {p}" for p in problems))
    return settings
