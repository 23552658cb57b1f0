"""Channel names: which namespace a channel belongs to and who it is limited to.

``ns:room`` is in namespace ``ns``; a name without the boundary is in the default
namespace. ``$`` marks a private channel (subscription token required). ``#`` starts
the list of users allowed in a user-limited channel: ``dialog#42,43``, and ``#42`` is
user 42's personal channel. The server API's ``channels`` filters names with :func:`glob`.

Channels declared in code (``Hub.channel("chat:{room}", presence=True, ...)``) are
:class:`Declaration` values given to :meth:`ChannelRules.declare`; how they merge with the
config is said there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from livehub.protocol.codes import error_bad_request, error_unknown_channel
from livehub.settings import NamespaceOptions, Settings


class ChannelOptions(TypedDict, total=False):
    """The namespace options a channel may be declared with in code: those of
    :class:`~livehub.settings.NamespaceOptions`, under the same names (durations in seconds
    or as ``"10m"``)."""

    presence: bool
    join_leave: bool
    force_push_join_leave: bool
    history_size: int
    history_ttl: float | str
    history_meta_ttl: float | str
    force_positioning: bool
    allow_positioning: bool
    force_recovery: bool
    allow_recovery: bool
    allow_subscribe_for_client: bool
    allow_subscribe_for_anonymous: bool
    allow_publish_for_subscriber: bool
    allow_publish_for_client: bool
    allow_publish_for_anonymous: bool
    allow_presence_for_subscriber: bool
    allow_presence_for_client: bool
    allow_presence_for_anonymous: bool
    allow_history_for_subscriber: bool
    allow_history_for_client: bool
    allow_history_for_anonymous: bool
    allow_user_limited_channels: bool
    allowed_delta_types: list[str]
    delta_publish: bool
    conflate: bool
    conflate_max_keys: int
    subscription_type: str
    map: dict[str, Any]
    map_clients_presence_channel_prefix: str
    map_users_presence_channel_prefix: str
    allow_tags_filter: bool
    client_publish_debounce_interval: float | str


class ChannelConflict(ValueError):
    """The code and the config (or two declarations) give one namespace option two values."""


class ChannelPattern:
    """``"chat:{room}"`` matches ``chat:lobby`` with ``room="lobby"``; parameters stop at ``:``/``#``."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.params: list[str] = re.findall(r"{(\w+)}", pattern)
        parts = re.split(r"({\w+})", pattern)
        regex = "".join(f"(?P<{p[1:-1]}>[^:#]+)" if p.startswith("{") else re.escape(p) for p in parts)
        self._regex = re.compile(f"^{regex}$")

    def match(self, channel: str) -> dict[str, str] | None:
        m = self._regex.match(channel)
        return m.groupdict() if m else None


@dataclass(frozen=True, slots=True)
class Declaration:
    """A channel pattern declared in code, with the namespace options it states."""

    pattern: ChannelPattern
    #: Options given explicitly, validated (``"10m"`` is 600.0): what the code states.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Clients publish here (a typed channel): subscribers may, unless an option says otherwise.
    client_publishes: bool = False


def validate_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked and normalised as the config's would be; TypeError for an unknown name."""
    unknown = sorted(set(options) - set(NamespaceOptions.model_fields))
    if unknown:
        raise TypeError(f"unknown channel option(s): {', '.join(unknown)}")
    parsed = NamespaceOptions.model_validate(options)
    return {name: getattr(parsed, name) for name in options}


@dataclass(slots=True)
class _Declared:
    """One namespace with channels declared in code."""

    #: Options of its channels that match no declared pattern; None: such names are unknown (102).
    plain: NamespaceOptions | None
    patterns: list[tuple[ChannelPattern, NamespaceOptions]]

    def lookup(self, channel: str) -> NamespaceOptions | None:
        for pattern, options in self.patterns:
            if pattern.match(channel) is not None:
                return options
        return self.plain


class ChannelRules:
    def __init__(self, settings: Settings) -> None:
        cfg = settings.channel
        self._settings = settings
        self._max_length = cfg.max_length
        self.private_prefix = cfg.private_prefix
        self._ns_boundary = cfg.namespace_boundary
        self.user_boundary = cfg.user_boundary
        self._user_separator = cfg.user_separator
        self._cache: dict[str, NamespaceOptions] = {}
        self._declared: dict[str, _Declared] = {}
        self._regex: dict[str, re.Pattern[str]] = {}

    def namespace(self, channel: str) -> str:
        """The namespace a channel (or a channel pattern) belongs to; "" is the top level."""
        name = channel.removeprefix(self.private_prefix)
        return name.split(self._ns_boundary, 1)[0] if self._ns_boundary and self._ns_boundary in name else ""

    def options(self, channel: str) -> NamespaceOptions:
        """The channel's namespace options; error 107 for a bad name (or one its namespace's
        ``channel_regex`` does not match, as Centrifugo checks it), 102 for an unknown namespace."""
        opts = self._cache.get(channel)
        if opts is not None:
            return opts
        if not channel or len(channel) > self._max_length or not channel.isprintable() or " " in channel:
            raise error_bad_request()
        ns = self.namespace(channel)
        # what channel_regex is matched against: the name after ``ns:`` (the whole name without one)
        rest = (
            channel.removeprefix(self.private_prefix)[len(ns) + len(self._ns_boundary) :] if ns else channel
        )
        declared = self._declared.get(ns)
        found = declared.lookup(channel) if declared is not None else self._settings.namespace(ns)
        if found is None:
            raise error_unknown_channel()
        if found.channel_regex:
            regex = self._regex.get(ns)
            if regex is None:
                regex = self._regex[ns] = re.compile(found.channel_regex)
            if regex.search(rest) is None:
                raise error_bad_request()
        if len(self._cache) < 65536:
            self._cache[channel] = found
        return found

    def declared_options(self, pattern: ChannelPattern) -> NamespaceOptions | None:
        """The options of the channels matching a declared pattern (None if it is not declared)."""
        declared = self._declared.get(self.namespace(pattern.pattern))
        if declared is None:
            return None
        return next((opts for known, opts in declared.patterns if known is pattern), None)

    def declare(self, declarations: Iterable[Declaration]) -> None:
        """Make channels declared in code real, replacing what an earlier call declared.

        A namespace's options are those the config states and those the code states: the
        namespace is the part of a pattern before the first ``:``, the top level (the
        config's ``without_namespace``) for a pattern without one. The config and the code
        may state different options; one option stated with two values (config and code, or
        two patterns) is a :class:`ChannelConflict` naming both. A namespace only declared in
        code exists; names in it that match none of its patterns are unknown (102).

        What neither states is filled from what the code declared, for the channels
        matching a declared pattern only: clients may subscribe (``on_subscribe`` decides
        when declared), subscribers may publish to a typed channel, read its presence when
        it has presence and its history when it keeps history. Then NamespaceOptions'
        defaults (everything off) apply.
        """
        by_ns: dict[str, list[Declaration]] = {}
        for declaration in declarations:
            ns = self.namespace(declaration.pattern.pattern)
            if "{" in ns:
                raise ValueError(
                    f"channel pattern {declaration.pattern.pattern!r}: the namespace cannot vary"
                )
            by_ns.setdefault(ns, []).append(declaration)
        table: dict[str, _Declared] = {}
        for ns, group in by_ns.items():
            config = self._settings.namespace(ns)
            stated: dict[str, tuple[Any, str]] = {}
            if config is not None:
                where = (
                    f"the config (channel.namespaces {ns!r})"
                    if ns
                    else "the config (channel.without_namespace)"
                )
                for name in config.model_fields_set & set(NamespaceOptions.model_fields):
                    stated[name] = (getattr(config, name), where)
            for declaration in group:
                where = f"hub.channel({declaration.pattern.pattern!r})"
                for name, value in declaration.options.items():
                    if name in stated and stated[name][0] != value:
                        value_was, where_was = stated[name]
                        raise ChannelConflict(
                            f"channel option {name!r} of namespace {ns or '(top level)'!r}: "
                            f"{where} says {value!r}, {where_was} says {value_was!r}; "
                            "state it in one place"
                        )
                    stated.setdefault(name, (value, where))
            plain = NamespaceOptions.model_validate({name: value for name, (value, _) in stated.items()})
            patterns = []
            for declaration in group:
                implied = {"allow_subscribe_for_client": True}
                if declaration.client_publishes:
                    implied["allow_publish_for_subscriber"] = True
                if plain.presence:
                    implied["allow_presence_for_subscriber"] = True
                if plain.history_enabled:
                    implied["allow_history_for_subscriber"] = True
                update = {name: value for name, value in implied.items() if name not in stated}
                patterns.append((declaration.pattern, plain.model_copy(update=update)))
            table[ns] = _Declared(plain if config is not None else None, patterns)
        self._declared = table
        self._cache.clear()

    def is_private(self, channel: str) -> bool:
        return bool(self.private_prefix) and channel.startswith(self.private_prefix)

    def allowed_users(self, channel: str) -> list[str] | None:
        """Users of a user-limited channel (``chat#42,43``), or None if it is not one."""
        if not self.user_boundary or self.user_boundary not in channel:
            return None
        return channel.rsplit(self.user_boundary, 1)[1].split(self._user_separator)

    def personal_channel(self, user: str) -> str:
        return f"{self.user_boundary}{user}"


def glob(pattern: str) -> Callable[[str], bool]:
    """A matcher for channel names, with Centrifugo's pattern syntax (gobwas/glob).

    ``*``, ``?``, ``[a-z]``, ``[!a]``, ``{a,b}`` and ``\\`` to escape; ``*`` also matches
    ``:`` and ``#``. A pattern with an unclosed ``{`` matches only itself.
    """
    out: list[str] = []
    depth = 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\").replace("[", "\\[") + "]")
            i = end
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    regex = re.compile(re.escape(pattern) if depth else "".join(out), re.DOTALL)
    return lambda name: regex.fullmatch(name) is not None
