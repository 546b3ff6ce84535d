"""Logging setup: one JSON object per line (production) or readable console lines.

Only stdlib :mod:`logging`. Access-log and rejection records carry their fields as
``extra`` attributes (``request_id``, ``method``, ``path``, ``route``, ``status``,
``duration_ms``, ``bytes``, ``client_ip``, ``reason``); both formatters print them.
Control characters in logged data are escaped, so a request path holding ``%0a`` cannot
forge a second log line.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson

FIELDS = (
    "request_id",
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "bytes",
    "client_ip",
    "reason",
    "state",
    "previous_state",
    "address",
)
"""Structured fields copied from a record's ``extra`` into the output, in this order."""

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nessen_request_id", default=None
)
"""The id of the request being handled; the formatters add it to records that lack one, so
every log line written while handling a request (the app's own included) carries it."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_FIELD_CHARS = 2048
"""Longest logged text field; longer ones are cut with ``...`` appended."""


def escape(text: str) -> str:
    r"""Escape control characters (``\n`` -> ``\x0a``) and cut to ``MAX_FIELD_CHARS``."""
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS] + "..."
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _timestamp(record: logging.LogRecord) -> str:
    seconds = int(record.created)
    millis = int((record.created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: timestamp, level, logger, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a single line of JSON (newlines inside are escaped)."""
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        attrs = record.__dict__
        for name in FIELDS:
            value = attrs.get(name)
            if value is not None:
                entry[name] = value
        if "request_id" not in entry:
            request_id = current_request_id.get()
            if request_id is not None:
                entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """Formats a record as one readable line, control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        """Return ``time level logger message key=value ...`` on one line."""
        attrs = record.__dict__
        extras = " ".join(
            f"{name}={escape(str(attrs[name]))}" for name in FIELDS if attrs.get(name) is not None
        )
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {record.name} "
            f"{escape(record.getMessage())}"
        )
        if extras:
            line += " " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(
    level: str = "info", fmt: str = "console", stream: TextIO | None = None
) -> Callable[[], None]:
    """Send the root logger's records to ``stream`` (stderr) in ``fmt`` at ``level``.

    Args:
        level: debug, info, warning, error or critical.
        fmt: ``json`` or ``console``.
        stream: Where to write; ``sys.stderr`` when ``None``.

    Returns:
        A function that undoes this (restores the root logger's handlers and level).
    """
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root.handlers = [handler]
    root.setLevel(level.upper())

    def undo() -> None:
        root.handlers = saved_handlers
        root.setLevel(saved_level)
        handler.close()

    return undo
