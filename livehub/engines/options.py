"""Options carried in engine URLs: ``redis://host:6379/0?prefix=app&presence_ttl=30s``.

Engine options are read from the query string and removed before the URL is handed
to the client library, so the library still sees its own options (``ssl_cert_reqs``,
``password``, …) and nothing else. An unknown value type or a bad duration is a
``ValueError`` naming the option, which ``livehub serve`` reports at start.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def split_urls(url: str | Sequence[str]) -> list[str]:
    """One URL, a comma-separated list, or a sequence of either -> a flat list."""
    parts = [url] if isinstance(url, str) else list(url)
    urls = [u.strip() for part in parts for u in part.split(",") if u.strip()]
    if not urls:
        raise ValueError("empty engine URL")
    return urls


def pop_options(url: str, names: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Remove the query options in ``names`` from ``url``; return the rest and them."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in names:
            ours[key] = value
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


def duration(options: dict[str, str], name: str, default: float) -> float:
    """Seconds from ``60``, ``60s``, ``500ms``, ``5m``, ``1h`` or ``7d``."""
    raw = options.get(name)
    if raw is None:
        return default
    match = _DURATION.match(raw)
    if match is None:
        raise ValueError(f"engine option {name}={raw!r}: expected a duration like 500ms, 60s or 5m")
    return float(match.group(1)) * _UNITS[match.group(2)]


def integer(options: dict[str, str], name: str, default: int) -> int:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"engine option {name}={raw!r}: expected an integer") from None


def boolean(options: dict[str, str], name: str, default: bool) -> bool:
    raw = options.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ValueError(f"engine option {name}={raw!r}: expected 1/0, true/false")


def text(options: dict[str, str], name: str, default: str, pattern: str = r"^[A-Za-z0-9_.:-]+$") -> str:
    raw = options.get(name, default)
    if not re.match(pattern, raw):
        raise ValueError(f"engine option {name}={raw!r}: must match {pattern}")
    return raw
