"""Channel names: which namespace a channel belongs to and who it is limited to.

``ns:room`` is in namespace ``ns``; a name without the boundary is in the default
namespace. ``$`` marks a private channel (subscription token required). ``#`` starts
the list of users allowed in a user-limited channel: ``dialog#42,43``, and ``#42`` is
user 42's personal channel. The server API's ``channels`` filters names with :func:`glob`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from livehub.protocol.codes import error_bad_request, error_unknown_channel
from livehub.settings import NamespaceOptions, Settings


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
        self._regex: dict[str, re.Pattern[str]] = {}

    def options(self, channel: str) -> NamespaceOptions:
        """The channel's namespace options; error 107 for a bad name (or one its namespace's
        ``channel_regex`` does not match, as Centrifugo checks it), 102 for an unknown namespace."""
        opts = self._cache.get(channel)
        if opts is not None:
            return opts
        if not channel or len(channel) > self._max_length or not channel.isprintable() or " " in channel:
            raise error_bad_request()
        name = channel.removeprefix(self.private_prefix)
        ns, rest = (
            name.split(self._ns_boundary, 1)
            if self._ns_boundary and self._ns_boundary in name
            else ("", channel)
        )
        found = self._settings.namespace(ns)
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
