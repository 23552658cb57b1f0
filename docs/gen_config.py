"""The configuration reference, generated from ``livehub.settings.Settings``.

Every key of every section, with its type, its default, the ``#:`` comment above it in
livehub/settings.py (or the section's docstring), and what Centrifugo calls it: the same name
when ``livehub.centrifugo_keys`` lists it for that section, "livehub only" otherwise.

The page is never committed: ``docs/hooks.py`` renders it on every ``mkdocs build`` (so it
cannot drift from the code), and ``python docs/gen_config.py`` prints it.
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from livehub import settings as settings_module
from livehub.centrifugo_keys import CENTRIFUGO_KEYS
from livehub.settings import Namespace, NamespaceOptions, Settings, parse_duration

#: The page's path inside docs/ (a virtual file: nothing is written there).
PAGE = "configuration.md"

#: What a key does, for the fields livehub/settings.py has no ``#:`` comment for, by
#: "Class.field" (so RedisOptions' notes serve engine.redis, broker.redis and
#: presence_manager.redis alike). tests/test_docs.py fails on a note for a field that is gone
#: or that has gained a comment of its own: the code's comment is the one to keep.
NOTES: dict[str, str] = {
    "ClientSettings.allow_anonymous_connect_without_token": "A connect without a token is let in as the "
    'anonymous user (user id `""`) instead of being refused.',
    "ClientSettings.ping_interval": "The server pings each client this often; 0 disables pings.",
    "ClientSettings.pong_timeout": "A client whose pong has not arrived this long after a ping is closed "
    "(3012); must be shorter than `ping_interval`.",
    "ClientSettings.history_max_publication_limit": "The most publications one `history` call returns.",
    "ClientSettings.recovery_max_publication_limit": "The most publications a recovering subscribe "
    "replays; more missed than this is not recovered (`recovered: false`).",
    "TokenSettings.hmac_secret_key": "Verifies HS256/HS384/HS512 connection tokens (and subscription "
    "tokens, unless `subscription_token.enabled`).",
    "TokenSettings.hmac_previous_secret_key_valid_until": "Unix time until which "
    "`hmac_previous_secret_key` is accepted (0: as long as it is configured).",
    "TokenSettings.rsa_public_key": "PEM public key verifying RS256/RS384/RS512 tokens.",
    "TokenSettings.ecdsa_public_key": "PEM public key verifying ES256/ES384/ES512 tokens.",
    "TokenSettings.audience": "When set, a token's `aud` claim must contain it.",
    "TokenSettings.issuer": "When set, a token's `iss` claim must equal it.",
    "TokenSettings.user_id_claim": "The claim holding the user id.",
    "SubscriptionTokenSettings.enabled": "Verify subscription tokens with the keys of this section "
    "instead of `client.token`'s.",
    "SubscriptionTokenSettings.hmac_secret_key": "As `client.token.hmac_secret_key`, for subscription "
    "tokens.",
    "SubscriptionTokenSettings.hmac_previous_secret_key": "As `client.token.hmac_previous_secret_key`, "
    "for subscription tokens.",
    "SubscriptionTokenSettings.hmac_previous_secret_key_valid_until": "As "
    "`client.token.hmac_previous_secret_key_valid_until`, for subscription tokens.",
    "SubscriptionTokenSettings.rsa_public_key": "As `client.token.rsa_public_key`, for subscription tokens.",
    "SubscriptionTokenSettings.ecdsa_public_key": "As `client.token.ecdsa_public_key`, for subscription "
    "tokens.",
    "SubscriptionTokenSettings.jwks_public_endpoint": "As `client.token.jwks_public_endpoint`, for "
    "subscription tokens.",
    "Enabled.enabled": "Switches the feature of this section on.",
    "ChannelSettings.max_length": "Longest channel name; a longer one is error 107.",
    "ChannelSettings.private_prefix": "Channels starting with it need a subscription token.",
    "ChannelSettings.namespace_boundary": "Separates the namespace from the rest of the name (`chat:lobby`).",
    "ChannelSettings.user_boundary": "Starts the list of users allowed in a user-limited channel "
    "(`dialog#42,43`; `#42` is user 42's personal channel).",
    "ChannelSettings.user_separator": "Separates the users of a user-limited channel.",
    "NamespaceOptions.presence": "Keep the presence of the channels' subscribers (who is in).",
    "NamespaceOptions.join_leave": "Send join and leave pushes to subscribers that ask for them.",
    "NamespaceOptions.force_push_join_leave": "Send join and leave pushes to every subscriber.",
    "NamespaceOptions.history_size": "Publications kept per channel (0: no history; needs `history_ttl` "
    "too).",
    "NamespaceOptions.history_ttl": "How long a channel's history is kept after its last publication "
    "(0: no history).",
    "NamespaceOptions.history_meta_ttl": "How long a stream's position (offset and epoch) is kept "
    "without use; after it, the stream starts again with a new epoch.",
    "NamespaceOptions.force_positioning": "Every subscription is positioned: the server checks it "
    "missed nothing (`client.channel_position_check_delay`).",
    "NamespaceOptions.allow_positioning": "Clients may ask for positioning when they subscribe.",
    "NamespaceOptions.force_recovery": "Every subscription may recover missed publications after a "
    "reconnect, from history.",
    "NamespaceOptions.allow_recovery": "Clients may ask for recovery when they subscribe.",
    "NamespaceOptions.allow_subscribe_for_client": "Any connected, non-anonymous client may subscribe "
    "without a subscription token.",
    "NamespaceOptions.allow_subscribe_for_anonymous": "With `allow_subscribe_for_client`, anonymous "
    "clients may subscribe too.",
    "NamespaceOptions.allow_publish_for_subscriber": "Subscribers may publish from the client.",
    "NamespaceOptions.allow_publish_for_client": "Any connected client may publish, subscribed or not.",
    "NamespaceOptions.allow_publish_for_anonymous": "Anonymous clients may publish where they may.",
    "NamespaceOptions.allow_presence_for_subscriber": "Subscribers may ask for presence and presence stats.",
    "NamespaceOptions.allow_presence_for_client": "Any connected client may ask for presence.",
    "NamespaceOptions.allow_presence_for_anonymous": "Anonymous clients may ask for presence where they may.",
    "NamespaceOptions.allow_history_for_subscriber": "Subscribers may read history.",
    "NamespaceOptions.allow_history_for_client": "Any connected client may read history.",
    "NamespaceOptions.allow_history_for_anonymous": "Anonymous clients may read history where they may.",
    "NamespaceOptions.allow_user_limited_channels": "Channels such as `dialog#42,43` are open to the "
    "users listed after `#` only.",
    "NamespaceOptions.allowed_delta_types": 'Delta types subscribers may ask for: `["fossil"]` sends '
    "fossil deltas to those that do.",
    "NamespaceOptions.delta_publish": "Centrifugo's default for publishing as a delta; accepted.",
    "Namespace.name": "The namespace: channels named `<name>:…` take its options (two characters or "
    "more: letters, digits, `-`, `_`, `.`).",
    "HttpApiSettings.key": "The key the server HTTP API requires (`X-API-Key` or `Authorization: apikey "
    "<key>`); empty: the API answers 401.",
    "HttpApiSettings.insecure": "Serve the server HTTP API without a key (only behind a firewall).",
    "HttpApiSettings.handler_prefix": "Where the server HTTP API is served.",
    "WebSocketSettings.handler_prefix": "Where the client endpoint is served.",
    "HttpServerSettings.address": "Address to listen on (`livehub serve --host`).",
    "HttpServerSettings.port": "Port to listen on (`livehub serve --port`).",
    "TlsSettings.enabled": "Serve HTTPS and WSS (`livehub serve --tls-cert --tls-key`).",
    "TlsSettings.cert_pem": "The certificate: a file path or the PEM text.",
    "TlsSettings.key_pem": "Its private key: a file path or the PEM text.",
    "EngineSettings.type": "Centrifugo's engine choice: `memory` or `redis` (with `engine.redis`); "
    "livehub turns it into `url`.",
    "RedisOptions.db": "Redis database number, for addresses without one.",
    "RedisOptions.user": "Redis ACL user.",
    "RedisOptions.password": "Redis password.",
    "RedisOptions.connect_timeout": "Timeout to connect to Redis.",
    "RedisOptions.io_timeout": "Timeout of one Redis call.",
    "RedisOptions.presence_ttl": "How long a presence entry lives unless its node refreshes it "
    "(`client.presence_update_interval`).",
    "BrokerSettings.enabled": "Use this section's broker (instead of `engine.type`).",
    "BrokerSettings.type": "Which broker: `memory`, `redis` or `nats`.",
    "NatsOptions.url": "The NATS server.",
    "NatsOptions.prefix": "Subject prefix.",
    "NatsOptions.dial_timeout": "Timeout to connect to NATS.",
    "PresenceManagerSettings.enabled": "Use this section's presence manager; livehub keeps presence on "
    "the broker's engine, so it must name the same Redis (or `memory` with a memory broker).",
    "PresenceManagerSettings.type": "`memory` or `redis`.",
    "AdminSettings.enabled": "Serve the admin page.",
    "AdminSettings.password": "The admin page's sign-in password.",
    "AdminSettings.secret": "Signs the admin page's session tokens.",
    "AdminSettings.handler_prefix": "Where the admin page is served.",
    "PrometheusSettings.handler_prefix": "Where the metrics are served.",
    "HealthSettings.handler_prefix": "Where the health checks are served (`/ready` is appended for "
    "readiness).",
    "LogSettings.level": "`none`, `trace`, `debug`, `info`, `warn` (or `warning`) or `error` "
    "(`livehub serve --log-level`).",
    "DemosSettings.enabled": "Serve the demos (`livehub serve --demos`).",
}


def doc_comments() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the ``#:`` comment lines right above the field, joined."""
    source = inspect.getsource(settings_module)
    lines = source.splitlines()
    found: dict[tuple[str, str], str] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            comment: list[str] = []
            row = stmt.lineno - 2
            while row >= 0 and lines[row].strip().startswith("#:"):
                comment.insert(0, lines[row].strip()[2:].strip())
                row -= 1
            if comment:
                found[(node.name, stmt.target.id)] = " ".join(comment)
    return found


def _comment(model: type[BaseModel], name: str, comments: dict[tuple[str, str], str]) -> str:
    """The field's comment, looked up along the class hierarchy (Namespace has NamespaceOptions'),
    else its note."""
    for cls in model.__mro__:
        if (cls.__name__, name) in comments:
            return comments[(cls.__name__, name)]
    for cls in model.__mro__:
        if f"{cls.__name__}.{name}" in NOTES:
            return NOTES[f"{cls.__name__}.{name}"]
    return ""


def _is_duration(field: FieldInfo) -> bool:
    return any(getattr(m, "func", None) is parse_duration for m in field.metadata)


def type_name(annotation: Any, field: FieldInfo | None = None) -> str:
    """A reader's name for a setting's type: string, integer, duration, one of the literals..."""
    if field is not None and _is_duration(field):
        return "duration"
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(json.dumps(v) for v in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return f"list of {type_name(item)}"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, str(annotation))


def default_text(value: Any, field: FieldInfo) -> str:
    if _is_duration(field):
        return f"`{value:g}s`"
    return f"`{json.dumps(value)}`"


def _bounds(field: FieldInfo) -> str:
    """``≥ 1024`` and the like, from the field's constraints."""
    found = []
    for meta in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            bound = getattr(meta, attr, None)
            if bound is not None and not (_is_duration(field) and attr == "ge" and bound == 0):
                found.append(f"{sign} {bound}")
    return ", ".join(found)


def centrifugo_name(section: str, key: str) -> str:
    """Centrifugo's name of ``section.key``, or "" when Centrifugo has no such option."""
    return f"{section}.{key}".lstrip(".") if key in CENTRIFUGO_KEYS.get(section, frozenset()) else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if inspect.isclass(annotation) and issubclass(annotation, BaseModel) else None


def sections(model: type[BaseModel] = Settings, path: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """(dotted path, model) of every section, depth first; ``channel.namespaces[]`` once."""
    if path:
        yield path, model
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        child = f"{path}.{name}".lstrip(".")
        if sub is not None:
            if not path.startswith("channel.namespaces[]"):  # a namespace's map: as without_namespace's
                yield from sections(sub, child)
        elif typing.get_origin(field.annotation) is list:
            (item,) = typing.get_args(field.annotation)
            if _model_of(item) is not None:
                yield from sections(item, f"{child}[]")


def keys(model: type[BaseModel]) -> list[tuple[str, FieldInfo]]:
    """The section's own settings (not its sub-sections)."""
    found = []
    for name, field in model.model_fields.items():
        if _model_of(field.annotation) is not None:
            continue
        if typing.get_origin(field.annotation) is list and _model_of(typing.get_args(field.annotation)[0]):
            continue
        found.append((name, field))
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _env(path: str) -> str:
    """The two environment spellings of a section's keys (``<KEY>`` stands for the key)."""
    if path.startswith("channel.namespaces[]"):
        return (
            "Environment: `CENTRIFUGO_CHANNEL_NAMESPACES_<NAME>_<KEY>` for the namespace `<name>` "
            "(upper-cased, `.` and `-` as `_`); the list itself: `CENTRIFUGO_CHANNEL_NAMESPACES`, "
            "`LIVEHUB_CHANNEL__NAMESPACES` (names space-separated, added to the file's namespaces, "
            "or a JSON list of objects, which replaces them; an empty variable counts as unset)."
        )
    parts = path.split(".")
    return (
        f"Environment: `CENTRIFUGO_{'_'.join(parts).upper()}_<KEY>` or "
        f"`LIVEHUB_{'__'.join(parts).upper()}__<KEY>` (the key upper-cased)."
    )


def render() -> str:
    comments = doc_comments()
    out = [
        "---",
        "hide: [navigation]",  # the width goes to the tables; the sections stay in the contents
        "---",
        "",
        "# Configuration reference",
        "",
        "<!-- Generated by docs/gen_config.py from livehub/settings.py on every build: edit those, "
        "not the page. -->",
        "",
        "Every key livehub reads, section by section: its type, its default, what it does, and "
        "its name in Centrifugo v6.",
        "",
        "**Where settings come from.** A config file, JSON, TOML or YAML by its extension "
        "(`livehub serve --config FILE`), then environment variables, which win: Centrifugo's "
        "spelling (`CENTRIFUGO_CLIENT_INSECURE=true`, lists space-separated) and livehub's "
        "(`LIVEHUB_CLIENT__INSECURE=true`, `__` between levels, lists as JSON or "
        "space-separated), which wins over both. In an app, `Settings()` reads the environment "
        "and `livehub.settings.load_settings(path)` a file too.",
        "",
        "**What is refused.** A key livehub does not know stops the server (exit 2) naming it, "
        "with a suggestion for a typo; so does a Centrifugo option livehub does not implement, "
        'unless the config switches it off (`false`, `0`, `""`, `[]`, `enabled: false`). '
        "`livehub checkconfig FILE` runs the same checks without starting anything. A "
        "`CENTRIFUGO_*` variable that names no setting is only reported at start (other "
        "programs may use the prefix); a `LIVEHUB_*` one is an error.",
        "",
        "**Centrifugo**: *same* means Centrifugo v6 has the option under the same name in the "
        "same section, so a Centrifugo config sets it the same way; *livehub only* means "
        "Centrifugo has no such option (a Centrifugo config never contains it). "
        'Durations take seconds (`25`) or strings such as `"25s"`, `"5m"`, `"1h30m"`.',
        "",
    ]
    for path, model in sections():
        own = keys(model)
        if not own:
            continue
        out += [f"## `{path}`", ""]
        doc = inspect.getdoc(model)
        inherited = model.__doc__ is None or doc in (inspect.getdoc(BaseModel), inspect.getdoc(Namespace))
        if doc and not inherited and model.__doc__:
            out += [textwrap.dedent(doc).replace("\n", " "), ""]
        if model is Namespace:
            out += [
                "Each item of `channel.namespaces` is a namespace: its `name`, and every option "
                "of [`channel.without_namespace`](#channelwithout_namespace), which apply "
                "to channels named `<name>:…`.",
                "",
            ]
        out += ["| key | type | default | Centrifugo | what it does |", "|---|---|---|---|---|"]
        for name, field in own:
            if model is Namespace and name != "name" and name in NamespaceOptions.model_fields:
                continue
            kind = type_name(field.annotation, field)
            bounds = _bounds(field)
            if bounds:
                kind += f" ({bounds})"
            if field.is_required():
                default = "required"
            else:
                default = default_text(field.get_default(call_default_factory=True), field)
            theirs = centrifugo_name(path, name)
            centrifugo = "same" if theirs else "*livehub only*"
            meaning = _cell(_comment(model, name, comments))
            out.append(f"| `{name}` | {_cell(kind)} | {_cell(default)} | {centrifugo} | {meaning} |")
        out += ["", _env(path), ""]
    return "\n".join(out)


def unsupported() -> str:
    """The Centrifugo options livehub does not implement, by section, as a Markdown table: what
    a Centrifugo config may contain only switched off. Sections livehub lacks entirely are
    listed once, as top-level keys."""
    known: dict[str, set[str]] = {"": set(Settings.model_fields)}
    for path, model in sections():
        known[path] = set(model.model_fields)
    known["channel.without_namespace"] = set(NamespaceOptions.model_fields)
    rows = ["| section | Centrifugo options livehub refuses unless switched off |", "|---|---|"]
    for section in sorted(CENTRIFUGO_KEYS):
        if section not in known:
            continue  # inside a section that is refused as a whole
        missing = sorted(CENTRIFUGO_KEYS[section] - known[section])
        if missing:
            name = f"`{section}`" if section else "(top level)"
            rows.append(f"| {name} | {', '.join(f'`{m}`' for m in missing)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(render())
