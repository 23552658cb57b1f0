"""Logging for ``livehub serve``: text for people, or one JSON object per line for collectors.

``log.level`` takes Centrifugo's names (``trace`` and ``debug`` are Python's DEBUG, ``warn``
is WARNING, ``none`` silences everything); ``log.format: json`` (or ``--log-format json``)
writes ``{"time", "level", "logger", "message", ...}`` lines, exceptions included.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

LEVELS = {
    "none": logging.CRITICAL + 10,
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
#: Always shown, whatever the level: the start banner and what it warns about.
BANNER = "livehub.banner"


class JsonFormatter(logging.Formatter):
    def __init__(self, tag: str = "") -> None:
        super().__init__()
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.tag:
            entry["worker"] = self.tag
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def level_number(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: one of {', '.join(LEVELS)}") from None


def configure_logging(level: str, fmt: str = "text", file: str = "", tag: str = "") -> None:
    """Replace the root logger's handlers with one writing ``fmt`` to ``file`` (or stderr)."""
    handler: logging.Handler = logging.FileHandler(file) if file else logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(tag))
    else:
        prefix = f"[{tag}] " if tag else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_number(level))
    logging.getLogger(BANNER).setLevel(logging.INFO)
