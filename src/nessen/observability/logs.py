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
import os
import re
import sys
import threading
import time
import weakref
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
    "outcome",
    "reason",
    "state",
    "previous_state",
    "address",
    "headers",
    "response_headers",
    "body",
)
"""Structured fields copied from a record's ``extra`` into the output, in this order."""

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nessen_request_id", default=None
)
"""The id of the request being handled; the formatters add it to records that lack one, so
every log line written while handling a request (the app's own included) carries it."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NEEDS_QUOTES = re.compile(r'[\s="]')
MAX_FIELD_CHARS = 2048
"""Longest logged text field; longer ones are cut with ``...`` appended."""


_QUOTED: dict[str, str] = {}
_MAX_QUOTED = 1024


def quote_field(text: str) -> str:
    """``text`` escaped and, if it holds a space, ``=`` or ``"``, quoted (logfmt style).

    For request data put into a log *message* (the access line's path), so that a path
    like ``/x request_id=forged`` cannot pass for fields in a console line. Repeated values
    come from a bounded cache.
    """
    quoted = _QUOTED.get(text)
    if quoted is None:
        quoted = _quote(escape(text))
        if len(_QUOTED) >= _MAX_QUOTED:
            _QUOTED.clear()  # unbounded distinct values (paths, ids): start over
        _QUOTED[text] = quoted
    return quoted


def _quote(text: str) -> str:
    """logfmt-style quoting, so a value holding ``key=value`` text cannot forge a field."""
    if text and _NEEDS_QUOTES.search(text) is None:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def escape(text: str) -> str:
    r"""Escape control characters (``\n`` -> ``\x0a``) and cut to ``MAX_FIELD_CHARS``."""
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS] + "..."
    if text.isprintable() or _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_last_stamp: tuple[int, str, int, str] = (-1, "", -1, "")
"""The last millisecond formatted and its text, its second and that second's text; replaced
as a whole, so threads formatting at once never mix two entries."""

Fields = list[tuple[str, Any]]
"""A line's structured fields as ``(name, value)`` pairs in output order, ``None`` values
left out."""


AccessFields = tuple[str, str, str, str | None, int, float, int, str, str | None]
"""An access line's values: ``(request_id, method, path, route, status, duration_ms,
bytes, client_ip, outcome)``; ``route`` and ``outcome`` are left out of the line when
``None``."""


def _timestamp(created: float) -> str:
    """``2026-11-29T12:00:00.123Z`` (UTC, ms) for ``created`` (Unix seconds), cached per ms."""
    global _last_stamp
    millis = int(created * 1000)
    last = _last_stamp
    if last[0] == millis:
        return last[1]
    seconds, fraction = divmod(millis, 1000)
    second_text = (
        last[3] if last[2] == seconds else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    )
    text = f"{second_text}.{fraction:03d}Z"
    _last_stamp = (millis, text, seconds, second_text)
    return text


def _record_fields(record: logging.LogRecord) -> Fields:
    """The ``FIELDS`` a record carries, plus the current request id when it has none."""
    attrs = record.__dict__
    fields = [(name, value) for name in FIELDS if (value := attrs.get(name)) is not None]
    if attrs.get("request_id") is None:
        request_id = current_request_id.get()
        if request_id is not None:
            fields.insert(0, ("request_id", request_id))
    return fields


class LineFormatter(logging.Formatter):
    """A formatter whose output is a function of a few plain values, not of the record.

    :meth:`format_fields` is the whole format; :meth:`format` feeds it a record. The
    access log calls :meth:`format_fields` directly (no ``LogRecord`` built) when its
    records would reach only a :class:`BufferedStreamHandler` with one of these
    formatters, so both paths print the same line by construction.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one line (plus its traceback, when it carries one)."""
        line = self.format_fields(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            _record_fields(record),
        )
        if record.exc_info:
            line = self.add_exception(line, self.formatException(record.exc_info))
        return line

    def format_fields(
        self, created: float, levelname: str, name: str, message: str, fields: Fields
    ) -> str:
        """Return one line: ``created`` in Unix seconds, ``levelname`` like ``"INFO"``."""
        raise NotImplementedError

    def add_exception(self, line: str, text: str) -> str:
        """``line`` with a formatted traceback added."""
        return line + "\n" + text

    def format_access(
        self,
        created: float,
        levelname: str,
        name: str,
        access: AccessFields,
    ) -> str:
        """The access log's line: what :meth:`format_fields` prints for its fields.

        ``access`` is ``(request_id, method, path, route, status, duration_ms, bytes,
        client_ip, outcome)``; the message is ``"method path status"``. Subclasses may
        print the same line faster.
        """
        request_id, method, path, route, status, duration_ms, sent, client_ip, outcome = access
        fields: Fields = [
            ("request_id", request_id),
            ("method", method),
            ("path", path),
            ("route", route),
            ("status", status),
            ("duration_ms", duration_ms),
            ("bytes", sent),
            ("client_ip", client_ip),
        ]
        if outcome is not None:
            fields.append(("outcome", outcome))
        if route is None:
            del fields[3]
        message = f"{method} {quote_field(path)} {status}"
        return self.format_fields(created, levelname, name, message, fields)


class JsonFormatter(LineFormatter):
    """Formats a record as one JSON object: timestamp, level, logger, message, fields."""

    def format_fields(
        self, created: float, levelname: str, name: str, message: str, fields: Fields
    ) -> str:
        """Return a single line of JSON (newlines and line separators inside escaped)."""
        entry: dict[str, Any] = {
            "timestamp": _timestamp(created),
            "level": levelname.lower(),
            "logger": name,
            "message": message,
        }
        entry.update(fields)
        return _json_line(entry)

    def add_exception(self, line: str, text: str) -> str:
        """The same object with an ``exception`` member holding the traceback."""
        entry = orjson.loads(line)
        entry["exception"] = text
        return _json_line(entry)


def _json_line(entry: dict[str, Any]) -> str:
    line = orjson.dumps(entry, default=str).decode()
    if "\u2028" in line or "\u2029" in line or "\x85" in line:
        # Valid JSON, but line separators to some readers (str.splitlines, JavaScript).
        line = (
            line.replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
            .replace("\x85", "\\u0085")
        )
    return line


class ConsoleFormatter(LineFormatter):
    """Formats a record as one readable line, control characters escaped."""

    def format_fields(
        self, created: float, levelname: str, name: str, message: str, fields: Fields
    ) -> str:
        """Return ``time level logger message key=value ...`` on one line."""
        line = f"{_timestamp(created)} {levelname:<7} {name} {escape(message)}"
        if not fields:
            return line
        parts = [
            f"{key}={quote_field(value) if type(value) is str else value}" for key, value in fields
        ]
        return line + " " + " ".join(parts)

    def format_access(
        self,
        created: float,
        levelname: str,
        name: str,
        access: AccessFields,
    ) -> str:
        """The access line in one f-string (the same text as the generic path)."""
        request_id, method, path, route, status, duration_ms, sent, client_ip, outcome = access
        route_field = "" if route is None else f" route={quote_field(route)}"
        outcome_field = "" if outcome is None else f" outcome={quote_field(outcome)}"
        return (
            f"{_timestamp(created)} {levelname:<7} {name} "
            f"{method} {quote_field(path)} {status} request_id={quote_field(request_id)} "
            f"method={quote_field(method)} path={quote_field(path)}{route_field} "
            f"status={status} duration_ms={duration_ms} bytes={sent} "
            f"client_ip={quote_field(client_ip)}{outcome_field}"
        )


_DeferredAccess = tuple[LineFormatter, float, str, str, AccessFields]
"""An access line waiting in :class:`BufferedStreamHandler`: formatter and arguments."""


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes lines in batches instead of one ``write`` per record.

    Formatted lines collect in memory and go out in one ``write`` + ``flush`` when
    ``max_bytes`` have gathered, every ``interval`` seconds (from a daemon thread), at once
    for records at ``flush_level`` or above, and on ``flush()``/``close()``. At one access
    line per request this turns a system call per request into one per batch. A process
    killed with SIGKILL loses at most ``interval`` seconds of lines below ``flush_level``.

    Access lines given to :meth:`write_access` are formatted later, ``format_batch`` at a
    time, in the order they came with the other lines: one tight loop over a batch costs
    the server about half of what formatting each line inside its request did (the
    interpreter's caches stay warm), and a batch is small enough (~0.1 ms) not to stall
    the event loop.

    Args:
        stream: Where to write (``sys.stderr`` when ``None``).
        interval: Seconds between timed flushes.
        max_bytes: Buffered characters that trigger a flush.
        flush_level: Records at this level or above are written at once.
        format_batch: Access lines kept unformatted before a batch is formatted.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval: float = 0.1,
        max_bytes: int = 64 * 1024,
        flush_level: int = logging.ERROR,
        format_batch: int = 64,
    ) -> None:
        super().__init__(stream or sys.stderr)
        self.interval = interval
        self.max_bytes = max_bytes
        self.flush_level = flush_level
        self.format_batch = format_batch
        self._lines: list[str] = []
        self._size = 0
        self._deferred: list[_DeferredAccess] = []
        self._start_flusher()
        reference = weakref.ref(self)

        def after_fork_in_child() -> None:
            handler = reference()
            if handler is not None:
                handler._after_fork()

        os.register_at_fork(after_in_child=after_fork_in_child)

    def _start_flusher(self) -> None:
        self._stop = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_periodically, name="nessen-log-flush", daemon=True
        )
        self._flusher.start()

    def _after_fork(self) -> None:
        """In a forked worker: drop the parent's unwritten lines, start a flusher thread."""
        self._lines = []
        self._size = 0
        self._deferred = []
        self._start_flusher()

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` and buffer it (called with the handler's lock held)."""
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if self._deferred:
            self._format_deferred()  # the earlier access lines go first
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= self.max_bytes or record.levelno >= self.flush_level:
            self._write()

    def write_line(self, line: str, levelno: int) -> None:
        """Buffer an already formatted line, as :meth:`emit` does with a record's."""
        with self.lock:  # type: ignore[union-attr]
            if self._deferred:
                self._format_deferred()
            self._lines.append(line)
            self._size += len(line) + 1
            if self._size >= self.max_bytes or levelno >= self.flush_level:
                self._write()

    def write_access(
        self,
        formatter: LineFormatter,
        created: float,
        levelname: str,
        name: str,
        access: AccessFields,
        levelno: int,
    ) -> None:
        """Buffer an access line, to be formatted later (see the class docstring).

        The line is ``formatter.format_access(created, levelname, name, access)``.
        ``access`` must hold only immutable values (it is read later, maybe from the
        flusher thread). A line at ``flush_level`` or above is formatted and written at
        once, with everything before it.
        """
        with self.lock:  # type: ignore[union-attr]
            deferred = self._deferred
            deferred.append((formatter, created, levelname, name, access))
            if len(deferred) >= self.format_batch or levelno >= self.flush_level:
                self._format_deferred()
                if self._size >= self.max_bytes or levelno >= self.flush_level:
                    self._write()

    def _format_deferred(self) -> None:
        """Format the pending access lines into the buffer (called with the lock held)."""
        deferred, self._deferred = self._deferred, []
        lines = self._lines
        size = self._size
        for formatter, created, levelname, name, access in deferred:
            try:
                line = formatter.format_access(created, levelname, name, access)
            except Exception:  # a formatter of the user's that fails: say so, keep going
                line = f"(unformattable access line) {escape(repr(access))}"
            lines.append(line)
            size += len(line) + 1
        self._size = size

    def _write(self) -> None:
        if self._deferred:
            self._format_deferred()
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines = []
        self._size = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stream closed or broken pipe: drop, never crash
            pass

    def flush(self) -> None:
        """Write everything buffered now."""
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def close(self) -> None:
        """Stop the flusher thread and write what is left."""
        self._stop.set()
        if self._flusher.is_alive() and self._flusher is not threading.current_thread():
            self._flusher.join(1.0)
        self.flush()
        super().close()


def direct_handler(
    logger: logging.Logger,
) -> tuple[BufferedStreamHandler, LineFormatter] | None:
    """The only handler ``logger``'s records reach, when a line can be written to it directly.

    That is: no filter, disabled flag or other handler on the way (``logger``, then its
    parents while ``propagate``), and that one handler is a :class:`BufferedStreamHandler`
    without filters whose formatter is a :class:`LineFormatter`. Then formatting the
    fields with the formatter and :meth:`BufferedStreamHandler.write_line` writes exactly
    what ``logger.handle(record)`` would, without building a ``LogRecord``. Checked per
    call (a few attribute reads), so a logging set-up changed at run time is respected;
    the handler's own level is left for the caller to compare.

    Returns:
        ``(handler, formatter)``, or ``None`` when the record path must be taken.
    """
    found: BufferedStreamHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        for handler in current.handlers:
            if found is not None or type(handler) is not BufferedStreamHandler:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if found is None or found.filters:
        return None
    formatter = found.formatter
    if not isinstance(formatter, LineFormatter):
        return None
    return found, formatter


def configure_logging(
    level: str = "info", fmt: str = "console", stream: TextIO | None = None
) -> Callable[[], None]:
    """Send the root logger's records to ``stream`` (stderr) in ``fmt`` at ``level``.

    Lines are written in batches (see :class:`BufferedStreamHandler`): errors at once,
    the rest within 0.1 s.

    Args:
        level: debug, info, warning, error or critical.
        fmt: ``json`` or ``console``.
        stream: Where to write; ``sys.stderr`` when ``None``.

    Returns:
        A function that undoes this (flushes, restores the root logger's handlers and level).
    """
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    # The records carry what they need as fields: skip the stack walk for the caller's file
    # and line, and the thread/process lookups (the logging HOWTO's "Optimization" advice).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedStreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root.handlers = [handler]
    root.setLevel(level.upper())

    def undo() -> None:
        root.handlers = saved_handlers
        root.setLevel(saved_level)
        handler.close()

    return undo
