"""Logging setup: one JSON object per line (production) or readable console lines.

Only stdlib :mod:`logging`. Access-log and rejection records carry their fields as
``extra`` attributes (``request_id``, ``method``, ``path``, ``route``, ``status``,
``duration_ms``, ``bytes``, ``client_ip``, ``reason``); both formatters print them.
Control characters in logged data are escaped, so a request path holding ``%0a`` cannot
forge a second log line.
"""

from __future__ import annotations

import contextvars
import fcntl
import json
import logging
import os
import re
import select
import signal
import stat
import sys
import termios
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

import orjson

from nessen.errors import ConfigError

if TYPE_CHECKING:
    from nessen.config import Config

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
    "served",
    "cut",
    "connections_closed",
    "upgraded_closed",
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


_MILLIS = tuple(f".{fraction:03d}Z" for fraction in range(1000))
"""The end of a timestamp for each millisecond of a second: ``.000Z`` ... ``.999Z``."""


def _timestamp(created: float) -> str:
    """``2026-11-29T12:00:00.123Z`` (UTC, ms) for ``created`` (Unix seconds), cached per ms."""
    global _last_stamp
    millis = int(created * 1000)
    last = _last_stamp
    if last[0] == millis:
        return last[1]
    seconds = millis // 1000
    second_text = (
        last[3] if last[2] == seconds else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    )
    text = second_text + _MILLIS[millis - seconds * 1000]
    _last_stamp = (millis, text, seconds, second_text)
    return text


_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
"""What every ``LogRecord`` has: anything else on a record came from ``extra=``."""


def _record_fields(record: logging.LogRecord) -> Fields:
    """A record's ``extra=`` fields: ``FIELDS`` first, in their order, then the rest as given.

    The current request id is added when the record has none. An extra field of a type
    other than text, number, boolean or ``None`` is given as its ``str()``.
    """
    attrs = record.__dict__
    fields = [(name, value) for name in FIELDS if (value := attrs.get(name)) is not None]
    if len(attrs) > _STANDARD_COUNT:  # extra fields beyond the standard ones (and ours)
        known = _KNOWN_FIELDS
        for name, value in attrs.items():
            if name not in known and name[0] != "_":
                if not isinstance(value, str | int | float | bool) and value is not None:
                    value = str(value)
                fields.append((name, value))
    if attrs.get("request_id") is None:
        request_id = current_request_id.get()
        if request_id is not None:
            fields.insert(0, ("request_id", request_id))
    return fields


_KNOWN_FIELDS = _RECORD_ATTRIBUTES | set(FIELDS)
_STANDARD_COUNT = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)


class RequestIdFilter(logging.Filter):
    """Give each record the id of the request being served as ``record.request_id``.

    For an app's own handlers (Nessen's add it themselves): with this filter on a handler,
    a format such as ``"%(request_id)s %(message)s"`` shows the id the access line and the
    ``X-Request-ID`` response field carry, or ``-`` outside a request. In a
    ``logging.config.dictConfig``: ``"filters": {"request_id": {"()":
    "nessen.observability.logs.RequestIdFilter"}}``. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Set ``record.request_id`` unless the record has one; keep the record."""
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id.get() or "-"
        return True


SAID_IN_MESSAGE = "_said_in_message"
"""A record attribute (``extra={SAID_IN_MESSAGE: True}``): the message already says what its
fields hold, so readable lines leave the fields out; JSON lines keep them, for machines."""


class LineFormatter(logging.Formatter):
    """A formatter whose output is a function of a few plain values, not of the record.

    :meth:`format_fields` is the whole format; :meth:`format` feeds it a record. The
    access log calls :meth:`format_fields` directly (no ``LogRecord`` built) when its
    records would reach only a :class:`BufferedStreamHandler` with one of these
    formatters, so both paths print the same line by construction.
    """

    fields_when_said = True
    """Whether a record marked :data:`SAID_IN_MESSAGE` still gets its fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one line (plus its traceback, when it carries one)."""
        said = not self.fields_when_said and record.__dict__.get(SAID_IN_MESSAGE, False)
        line = self.format_fields(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            [] if said else _record_fields(record),
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

    def format_access(
        self,
        created: float,
        levelname: str,
        name: str,
        access: AccessFields,
    ) -> str:
        """The access line as one dict built in place (the same text as the generic path)."""
        request_id, method, path, route, status, duration_ms, sent, client_ip, outcome = access
        # The dict in one literal (one instruction for its keys); route left out after.
        entry: dict[str, Any] = {
            "timestamp": _timestamp(created),
            "level": _LOWER_LEVELS.get(levelname) or levelname.lower(),
            "logger": name,
            "message": f"{method} {_QUOTED.get(path) or quote_field(path)} {status}",
            "request_id": request_id,
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "bytes": sent,
            "client_ip": client_ip,
        }
        if route is None:
            del entry["route"]
        if outcome is not None:
            entry["outcome"] = outcome
        return _json_line(entry)


_LOWER_LEVELS = {name: name.lower() for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")}


def _json_line(entry: dict[str, Any]) -> str:
    data = orjson.dumps(entry, default=str)
    if data.isascii():  # nearly every line: no line separator can be in it
        return data.decode("ascii")
    line = data.decode()
    if "\u2028" in line or "\u2029" in line or "\x85" in line:
        # Valid JSON, but line separators to some readers (str.splitlines, JavaScript).
        line = (
            line.replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
            .replace("\x85", "\\u0085")
        )
    return line


_LEVEL_COLOURS = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}
"""ANSI colours of the level names on a terminal (dim, green, yellow, red, bold red)."""


def wants_colour(stream: Any) -> bool:
    """Whether console lines to ``stream`` are coloured: a terminal, and no ``NO_COLOR``.

    ``NO_COLOR`` set to anything non-empty turns colour off (https://no-color.org).
    """
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed stream
        return False


class ConsoleFormatter(LineFormatter):
    """Formats a record as one readable line, control characters escaped.

    Args:
        colour: Colour the level name with ANSI codes (see :func:`wants_colour`); the
            rest of the line, the escaped data included, is the same either way.
    """

    fields_when_said = False

    def __init__(self, *, colour: bool = False) -> None:
        super().__init__()
        self._levels = (
            {name: f"{code}{name:<7}\x1b[0m" for name, code in _LEVEL_COLOURS.items()}
            if colour
            else {name: f"{name:<7}" for name in _LEVEL_COLOURS}
        )

    def _level(self, levelname: str) -> str:
        shown = self._levels.get(levelname)
        return shown if shown is not None else f"{levelname:<7}"

    def format_fields(
        self, created: float, levelname: str, name: str, message: str, fields: Fields
    ) -> str:
        """Return ``time level logger message key=value ...`` on one line."""
        line = f"{_timestamp(created)} {self._level(levelname)} {name} {escape(message)}"
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
            f"{_timestamp(created)} {self._level(levelname)} {name} "
            f"{method} {quote_field(path)} {status} request_id={quote_field(request_id)} "
            f"method={quote_field(method)} path={quote_field(path)}{route_field} "
            f"status={status} duration_ms={duration_ms} bytes={sent} "
            f"client_ip={quote_field(client_ip)}{outcome_field}"
        )


_DeferredAccess = tuple[LineFormatter, float, str, str, AccessFields]
"""An access line waiting in :class:`BufferedStreamHandler`: formatter and arguments."""

DEFAULT_BUFFER_BYTES = 1024 * 1024
"""Default bound of a :class:`BufferedStreamHandler`'s buffer (``LOG_BUFFER_SIZE``): the
default ``max-buffer-size`` of Docker's non-blocking log mode, which makes the same trade.
About 4,000 access lines: a log shipper that pauses for a few seconds at moderate traffic
loses nothing, and a process holds at most this much unwritten output."""

LOGGER_NAME = "nessen.logs"
"""The logger name on the handler's own lines (dropping began, how many were dropped)."""

_PROCESS_SIGNALS = {
    getattr(signal, name)
    for name in (
        "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGCHLD", "SIGUSR1", "SIGUSR2", "SIGALRM",
        "SIGWINCH",
    )
}  # fmt: skip
"""Signals sent to the process, which the writer thread blocks."""
_PIPE_BUF = select.PIPE_BUF
"""Largest write to a pipe that POSIX keeps whole when several processes write to it."""
_FIONREAD_ZERO = bytes(4)


class _Episode(NamedTuple):
    """A time of dropping lines: how many, since when, why, whether its warning is out."""

    drops: int
    started: float
    reason: str
    tag: str
    warning_written: bool


class _GiveUp(Exception):
    """The destination did not take the output before the close deadline."""


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that never makes the thread logging wait on the destination.

    Emitting a record (or :meth:`write_line`, :meth:`write_access`) only appends to an
    in-memory buffer under the handler's lock; one writer thread takes the buffer in
    batches and writes them with no lock held that an emitter needs, with ``os.write`` on a
    duplicate of the stream's descriptor (the stream's own ``write`` would hold its
    internal lock while blocked, and other code writes through it). So a destination
    that stops reading (a stalled log shipper, a blocked container log driver, a parent
    that never reads the pipe) can no longer stop the event loop, probes or signals.

    Batches go out when ``max_bytes`` have gathered, every ``interval`` seconds, at once
    for records at ``flush_level`` or above, and on :meth:`flush`/:meth:`close`. A process
    killed with SIGKILL loses at most ``interval`` seconds of lines.

    **Bounded.** Buffered and in-flight lines together hold at most ``buffer_bytes``
    (counted as characters plus one per line: bytes for ASCII text, which nearly every
    line is). A line that does not fit is dropped and counted (:attr:`lines_dropped`,
    :func:`log_drops`), and so is every later one until the writer has written what was
    buffered: then one line at WARNING says dropping began (with its original time) and
    one says how many were dropped, next to each other in the output, and lines flow
    again. A write that fails (``EPIPE``: the reader closed its end) drops its batch the
    same way; nothing is printed to ``sys.stderr`` (no traceback) and nothing raises.
    A record whose formatting raises becomes a line saying so (``handleError`` would print
    to ``sys.stderr``, the very destination that may be stalled).

    **Pipes.** When the destination is a pipe (Linux), writes are at most ``PIPE_BUF``
    bytes (or one line, if longer) and end at a line's end, so lines from several
    processes sharing the pipe (the supervisor and its workers) never interleave; and the
    writer keeps the lines it has queued in the pipe under a quarter of its capacity,
    waiting (polling with back-off) rather than blocking in ``write``. The rest is
    reserved for the two lines above, so that even a pipe that is never read until the
    process has exited ends with the warning and the count.

    **Closing** writes what is left, waiting at most ``close_timeout`` seconds; a
    destination that takes nothing for half of that is given up on: the lines left are
    counted, the count line is written if the pipe has room, and close returns.
    :meth:`flush` returns as soon as the destination is seen not to read.

    **Fork.** In a forked child the handler gets a fresh lock (another thread may have
    held the parent's at the fork), drops the parent's unwritten lines and counts, and
    starts its own writer thread.

    Access lines given to :meth:`write_access` are formatted later, ``format_batch`` at a
    time, in the order they came with the other lines: one tight loop over a batch costs
    the server about half of what formatting each line inside its request did (the
    interpreter's caches stay warm), and a batch is small enough (~0.1 ms) not to stall
    the event loop.

    Args:
        stream: Where to write (``sys.stderr`` when ``None``). A stream without a file
            descriptor (``io.StringIO``) is written with its ``write`` from the writer
            thread.
        interval: Seconds between timed writes.
        max_bytes: Buffered characters that wake the writer before the interval ends.
        flush_level: Records at this level or above wake the writer at once.
        format_batch: Access lines kept unformatted before a batch is formatted.
        buffer_bytes: Most characters held, buffered and being written.
        close_timeout: Seconds :meth:`close` and :meth:`flush` wait for the writer.
    """

    # Its own attributes in slots: with logging.Handler's, there are more than CPython 3.11
    # shares in one instance dict (30), and unshared dicts make every attribute access on
    # the per-line path slower.
    __slots__ = (
        "_close_deadline",
        "_close_started",
        "_closing",
        "_deferred",
        "_done",
        "_done_changed",
        "_dropping",
        "_ending",
        "_episode_drops",
        "_episode_reason",
        "_episode_started",
        "_episode_tag",
        "_fd",
        "_finished",
        "_give_up_at",
        "_inflight",
        "_lines",
        "_mid_line",
        "_pending",
        "_pipe_capacity",
        "_refusing",
        "_room",
        "_stalled",
        "_stuck",
        "_taken",
        "_trigger",
        "_urgent",
        "_warning_written",
        "_work",
        "_writer",
        "buffer_bytes",
        "close_timeout",
        "flush_level",
        "format_batch",
        "interval",
        "lines_dropped",
        "max_bytes",
    )

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval: float = 0.1,
        max_bytes: int = 64 * 1024,
        flush_level: int = logging.ERROR,
        format_batch: int = 64,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        close_timeout: float = 2.0,
    ) -> None:
        super().__init__(stream or sys.stderr)
        self.interval = interval
        self.max_bytes = max_bytes
        self.flush_level = flush_level
        self.format_batch = format_batch
        self.buffer_bytes = buffer_bytes
        self.close_timeout = close_timeout
        self._trigger = min(max_bytes, max(1, buffer_bytes // 2))
        self._fd: int | None = None
        self._pipe_capacity = 0
        try:
            self._fd = os.dup(self.stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass  # no descriptor (io.StringIO, a test's capture): the stream's write
        else:
            self._pipe_capacity = _pipe_capacity(self._fd)
        self._closed = False
        self._reset()
        _HANDLERS.add(self)
        self._start_writer()
        reference = weakref.ref(self)

        def after_fork_in_child() -> None:
            handler = reference()
            if handler is not None:
                handler._after_fork()

        os.register_at_fork(after_in_child=after_fork_in_child)

    def _reset(self) -> None:
        """The buffer, the counts and the writer's signals, all new (init and after fork)."""
        self._lines: list[str] = []
        self._pending = 0  # characters in _lines, one per newline included
        self._deferred: list[_DeferredAccess] = []
        self._inflight = 0  # characters the writer is writing now
        self._room = self.buffer_bytes  # what _pending may reach; -1 while refusing
        self._refusing = False
        self._urgent = False
        self._closing = False
        self._finished = False
        self._stalled = False
        self._mid_line = False  # the last write ended inside a line
        self._stuck = False  # the last batch did not all go out
        self._give_up_at = 0.0
        self._close_deadline = 0.0
        self._taken = 0  # batches taken by the writer
        self._done = 0  # batches it has finished (written, or dropped and counted)
        self.lines_dropped = 0
        """Lines (records) dropped by this handler in this process so far."""
        self._dropping = False
        self._ending = False  # the lines that end an episode are being written
        self._episode_drops = 0
        self._episode_started = 0.0
        self._episode_reason = ""
        self._episode_tag = ""
        self._warning_written = False
        self._work = threading.Condition(self.lock)
        self._done_changed = threading.Condition(self.lock)
        self._close_started = threading.Event()

    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._run, name="nessen-log-writer", daemon=True)
        self._writer.start()

    def _after_fork(self) -> None:
        """In a forked child: a fresh lock, no inherited lines or counts, a writer thread."""
        self.createLock()  # the parent's may have been held by another thread at the fork
        if self._closed:
            return
        self._reset()
        self._start_writer()

    @property
    def dropping(self) -> bool:
        """Whether lines are being dropped now (the destination is not keeping up).

        True from the first line dropped until the line with the count is written.
        """
        return self._dropping or self._ending

    # --- emitters: the caller's thread, a short lock, never I/O --------------------------

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` and buffer it (called with the handler's lock held)."""
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if self._deferred:
            self._format_deferred()  # the earlier access lines go first
        self._add(line, record.levelno)

    def handleError(self, record: logging.LogRecord) -> None:
        """Buffer a line saying ``record`` could not be formatted, and why.

        Replaces :meth:`logging.Handler.handleError`, which prints a traceback to
        ``sys.stderr``: that may be the stalled destination, and this runs on the
        thread that logged, with the handler's lock held.
        """
        error = sys.exc_info()[1]
        message = (
            f"a log record could not be formatted ({type(error).__name__}: {error}): "
            f"logger {record.name}, message {record.msg!r}"
        )
        line = self._own_line(logging.ERROR, message, [("reason", "log_format_error")])
        with self.lock:  # type: ignore[union-attr]
            self._add(line, logging.ERROR)

    def write_line(self, line: str, levelno: int) -> None:
        """Buffer an already formatted line, as :meth:`emit` does with a record's."""
        with self.lock:  # type: ignore[union-attr]
            if self._deferred:
                self._format_deferred()
            self._add(line, levelno)

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
        writer thread). A line at ``flush_level`` or above is formatted at once, with
        everything before it, and wakes the writer.
        """
        with self.lock:  # type: ignore[union-attr]
            deferred = self._deferred
            deferred.append((formatter, created, levelname, name, access))
            if len(deferred) >= self.format_batch or levelno >= self.flush_level:
                self._format_deferred()
                if self._pending >= self._trigger or levelno >= self.flush_level:
                    self._wake()

    def _add(self, line: str, levelno: int) -> None:
        """Buffer one line, or drop and count it (called with the lock held)."""
        size = self._pending + len(line) + 1
        if size > self._room and (self._refusing or self._pending or self._inflight):
            self._refuse(1)  # a line longer than the whole buffer still fits an empty one
            return
        self._lines.append(line)
        self._pending = size
        if size >= self._trigger or levelno >= self.flush_level:
            self._wake()

    def _format_deferred(self) -> None:
        """Format the pending access lines into the buffer (called with the lock held)."""
        deferred, self._deferred = self._deferred, []
        lines = self._lines
        size = self._pending
        room = self._room
        dropped = 0
        for formatter, created, levelname, name, access in deferred:
            try:
                line = formatter.format_access(created, levelname, name, access)
            except Exception:  # a formatter of the user's that fails: say so, keep going
                line = f"(unformattable access line) {escape(repr(access))}"
            size += len(line) + 1
            if size > room:
                size -= len(line) + 1
                dropped += 1
                room = -1  # the rest of the batch too: dropping has begun
                continue
            lines.append(line)
        self._pending = size
        if dropped:
            self._refuse(dropped)

    def _refuse(self, count: int) -> None:
        """Count ``count`` dropped lines; refuse more until the buffer is written."""
        self.lines_dropped += count
        self._episode_drops += count
        if not self._dropping:
            self._begin_dropping(f"buffer of {self.buffer_bytes} bytes full")
        self._refusing = True
        self._room = -1
        self._wake()

    def _begin_dropping(self, detail: str) -> None:
        self._dropping = True
        self._episode_started = time.time()
        self._episode_reason = f"log output stalled ({detail}): dropping lines until it catches up"
        self._episode_tag = (
            "log_buffer_full"
            if detail.startswith("buffer")
            else "log_write_failed"
            if detail.startswith("write failed")
            else "log_not_read_at_exit"
        )
        self._warning_written = False

    def _wake(self) -> None:
        if not self._urgent:
            self._urgent = True
            self._work.notify()

    def _own_line(
        self, levelno: int, message: str, fields: Fields, created: float | None = None
    ) -> str:
        """One of the handler's own lines, in the format of the others."""
        formatter = self.formatter if isinstance(self.formatter, LineFormatter) else _PLAIN
        when = time.time() if created is None else created
        try:
            return formatter.format_fields(
                when, logging.getLevelName(levelno), LOGGER_NAME, message, fields
            )
        except Exception:  # a subclass of the user's that fails: the plain line
            return _PLAIN.format_fields(
                when, logging.getLevelName(levelno), LOGGER_NAME, message, fields
            )

    # --- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        # Signals go to the main thread, whose select/epoll they must interrupt (the
        # supervisor's loop, the event loop); delivered here they would wait for a timeout.
        signal.pthread_sigmask(signal.SIG_BLOCK, _PROCESS_SIGNALS)
        while True:
            with self.lock:  # type: ignore[union-attr]
                if not self._urgent and not self._closing:
                    self._work.wait(self.interval)
                self._urgent = False
                if self._deferred:
                    self._format_deferred()
                batch = self._lines
                markers: _Episode | None = None
                if batch:
                    self._lines = []
                    self._inflight = self._pending
                    self._pending = 0
                    if not self._refusing:
                        self._room = self.buffer_bytes - self._inflight
                elif self._dropping:
                    # The episode ends with these two lines; what comes now goes after them
                    # (and a drop meanwhile begins a new episode, with its own warning).
                    batch, markers = self._markers(), self._end_episode()
                elif self._closing:
                    self._finished = True
                    self._done_changed.notify_all()
                    return
                self._taken += 1
                number = self._taken
                closing = self._closing
            written, failure = 0, ""
            if batch:
                try:
                    written, failure = self._write_lines(batch, markers is not None)
                except Exception as exc:  # a bug must not end the writer: count, go on
                    failure = f"write failed: {type(exc).__name__}: {exc}"
            with self.lock:  # type: ignore[union-attr]
                self._inflight = 0
                if markers is not None:
                    self._ending = False
                    if written < len(batch):
                        self._reopen_episode(markers, written > 0 and len(batch) == 2)
                elif batch:
                    self._stuck = written < len(batch)
                if markers is None and written < len(batch):
                    lost = len(batch) - written
                    self.lines_dropped += lost
                    self._episode_drops += lost
                    if not self._dropping:
                        self._begin_dropping(failure)
                    self._refusing = True
                if self._refusing:
                    self._room = -1
                else:
                    self._room = self.buffer_bytes
                if self._dropping and not failure:
                    self._urgent = True  # the two lines next, without waiting
                self._done = number
                if markers is not None and failure and closing:  # nothing more can go out
                    self._finished = True
                self._done_changed.notify_all()
                if self._finished:
                    return

    def _markers(self) -> list[str]:
        """The lines that close a dropping episode: its warning (once) and the count."""
        lines = []
        if not self._warning_written:
            fields: Fields = [("reason", self._episode_tag)]
            lines.append(
                self._own_line(logging.WARNING, self._episode_reason, fields, self._episode_started)
            )
        count = self._episode_drops
        if self._closing and self._stuck:
            message = f"log output still stalled at exit: {count} lines dropped"
        else:
            message = f"log output caught up: {count} lines dropped"
        lines.append(self._own_line(logging.WARNING, message, [("lines_dropped", count)]))
        return lines

    def _end_episode(self) -> _Episode:
        """End the dropping episode (its lines are being written); return it."""
        episode = _Episode(
            self._episode_drops,
            self._episode_started,
            self._episode_reason,
            self._episode_tag,
            self._warning_written,
        )
        self._dropping = False  # a drop from now on begins a new episode, with its warning
        self._ending = True
        self._episode_drops = 0
        self._refusing = False
        self._room = self.buffer_bytes
        return episode

    def _reopen_episode(self, episode: _Episode, warning_written: bool) -> None:
        """Its lines did not go out: the episode goes on (merged with one begun since)."""
        self._episode_drops += episode.drops
        self._dropping = True
        self._episode_started = episode.started
        self._episode_reason = episode.reason
        self._episode_tag = episode.tag
        self._warning_written = episode.warning_written or warning_written
        self._refusing = True  # refuse again until they are out

    def _write_lines(self, lines: list[str], markers: bool) -> tuple[int, str]:
        """Write ``lines`` (no lock held); return how many were written and why not all."""
        fd = self._fd
        if fd is None:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError) as exc:  # closed or broken: counted, never raised
                return 0, f"write failed: {exc}"
            return len(lines), ""
        capacity = self._pipe_capacity  # 0: a file, a terminal, a socket: one write
        cap = capacity // 2 - _PIPE_BUF if markers else capacity // 4
        index = 0
        while index < len(lines):
            end = len(lines)
            if capacity:
                end, size = index, 0
                while end < len(lines) and (end == index or size + len(lines[end]) < _PIPE_BUF):
                    size += len(lines[end]) + 1
                    end += 1
            data = _encode(lines, index, end)
            prefix = 0
            if self._mid_line:  # a write cut short left a line unfinished: end it first
                data, prefix = b"\n" + data, 1
            if capacity:
                try:
                    self._wait_for_room(fd, len(data), cap)
                except _GiveUp:
                    return index, "not read at exit"
            sent, failure = self._write_all(fd, data)
            if failure:
                if sent:
                    self._mid_line = data[sent - 1] != 0x0A  # b"\n"
                return index + _whole_lines(lines, index, end, sent - prefix), failure
            self._mid_line = False
            index = end
        return index, ""

    def _wait_for_room(self, fd: int, size: int, cap: int) -> None:
        """Wait until the pipe holds at most ``cap - size`` unread bytes (or is empty).

        Raises:
            _GiveUp: Closing, and the deadline passed.
            OSError: The pipe has no reader (the write will fail with ``EPIPE``).
        """
        delay = 0.001
        poller: select.poll | None = None
        last = -1
        try:
            while True:
                try:
                    queued = int.from_bytes(
                        fcntl.ioctl(fd, termios.FIONREAD, _FIONREAD_ZERO), sys.byteorder
                    )
                except OSError:
                    return  # cannot tell: the write decides
                if queued == 0 or queued + size <= cap:
                    return
                if poller is None:
                    poller = select.poll()
                    poller.register(fd, select.POLLOUT)
                    self._set_stalled(True)
                if any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0)):
                    return  # no reader left: let the write fail with EPIPE
                if self._close_started.is_set():
                    now = time.monotonic()
                    if 0 <= queued < last:  # the reader is reading: give it more time
                        self._give_up_at = min(now + self.close_timeout / 2, self._close_deadline)
                    remaining = self._give_up_at - now
                    if remaining <= 0:
                        raise _GiveUp
                    time.sleep(min(delay, remaining))
                else:
                    self._close_started.wait(delay)
                last = queued
                delay = min(delay * 2, self.interval)
        finally:
            if poller is not None:
                self._set_stalled(False)

    def _set_stalled(self, stalled: bool) -> None:
        """Note whether the writer waits for the reader (a flush waits no longer then)."""
        with self.lock:  # type: ignore[union-attr]
            self._stalled = stalled
            self._done_changed.notify_all()

    def _write_all(self, fd: int, data: bytes) -> tuple[int, str]:
        """Write ``data``; return the bytes written and, if not all, why."""
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            try:
                sent += os.write(fd, view[sent:])
            except BlockingIOError:  # someone made the descriptor non-blocking
                if self._close_started.is_set() and time.monotonic() >= self._give_up_at:
                    return sent, "not read at exit"
                select.select([], [fd], [], self.interval)
            except OSError as exc:
                return sent, f"write failed: {exc}"
        return sent, ""

    # --- flush and close -----------------------------------------------------------------

    def flush(self) -> None:
        """Wait until what is buffered now is written (at most ``close_timeout`` seconds).

        Returns as soon as the destination is seen not to read (lines are being dropped,
        or the writer waits for room in the pipe): a flush never waits on a stalled reader.
        """
        with self.lock:  # type: ignore[union-attr]
            if self._dropping or self._ending or self._stalled or self._finished:
                return
            if self._deferred or self._lines:
                target = self._taken + 1
            elif self._inflight:
                target = self._taken
            else:
                return
            self._wake()
            deadline = time.monotonic() + self.close_timeout
            while self._done < target and not (self._dropping or self._stalled or self._finished):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._done_changed.wait(remaining)

    def close(self) -> None:
        """Write what is left, waiting at most ``close_timeout`` seconds, and stop the writer.

        A destination that takes nothing for ``close_timeout / 2`` seconds is given up on:
        the lines left are counted as dropped and the count line goes out if there is
        room. Safe to call with the handler's lock held (``logging.shutdown`` does).
        """
        with self.lock:  # type: ignore[union-attr]
            if self._closed:
                return
            self._closed = True
            self._closing = True
            now = time.monotonic()
            self._give_up_at = now + self.close_timeout / 2
            self._close_deadline = deadline = now + self.close_timeout
            self._close_started.set()
            self._wake()
            while not self._finished and self._writer is not threading.current_thread():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._done_changed.wait(remaining)
            left = len(self._lines) + len(self._deferred)
            if not self._finished and left:
                self.lines_dropped += left  # given up: the writer is stuck in a write
            self._refusing = True  # what still arrives is counted, not kept
            self._room = -1
            self._lines = []
            self._deferred = []
            finished = self._finished
        if finished and self._fd is not None:
            os.close(self._fd)  # a writer still inside a write keeps it: never reused
            self._fd = None
        super().close()


_PLAIN = ConsoleFormatter()
_HANDLERS: weakref.WeakSet[BufferedStreamHandler] = weakref.WeakSet()


def _encode(lines: list[str], start: int, end: int) -> bytes:
    return ("\n".join(lines[start:end]) + "\n").encode("utf-8", "backslashreplace")


def _whole_lines(lines: list[str], start: int, end: int, sent: int) -> int:
    """How many of ``lines[start:end]`` the first ``sent`` bytes of their encoding hold."""
    whole = 0
    for line in lines[start:end]:
        sent -= len(line.encode("utf-8", "backslashreplace")) + 1
        if sent < 0:
            break
        whole += 1
    return whole


def _pipe_capacity(fd: int) -> int:
    """The capacity in bytes of the pipe ``fd`` writes to; 0 if not a pipe or unknown."""
    get_size = getattr(fcntl, "F_GETPIPE_SZ", None)  # Linux
    try:
        if get_size is None or not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return 0
        return int(fcntl.fcntl(fd, get_size))
    except OSError:
        return 0


def log_drops() -> tuple[int, bool]:
    """Log lines dropped in this process so far, and whether lines are being dropped now.

    Over every :class:`BufferedStreamHandler` alive (normally the one
    :func:`configure_logging` installed). Counts start at 0 in a forked child.

    Returns:
        ``(lines dropped, dropping now)``.
    """
    handlers = list(_HANDLERS)
    return sum(h.lines_dropped for h in handlers), any(h.dropping for h in handlers)


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


def read_log_config(path: str) -> dict[str, Any] | None:
    """Read a ``LOG_CONFIG`` file: the dict for ``dictConfig``, or ``None`` for an INI file.

    ``.json`` is JSON, ``.yaml``/``.yml`` YAML (PyYAML must be installed); any other name
    is left to ``logging.config.fileConfig``, and only checked to be readable here.
    ``disable_existing_loggers`` is set to false unless the file sets it, and ``propagate``
    to false on a ``nessen`` logger the file gives handlers (an INI file must say
    ``propagate=0`` itself).

    Raises:
        ConfigError: The file cannot be read or parsed, or is not a mapping with
            ``version: 1``; the problem names ``LOG_CONFIG``.
    """
    suffix = os.path.splitext(path)[1].lower()
    try:
        with open(path, encoding="utf-8") as source:
            text = source.read()
    except OSError as exc:
        raise ConfigError([f"LOG_CONFIG={path!r}: cannot be read: {exc.strerror}"]) from None
    if suffix not in (".json", ".yaml", ".yml"):
        return None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError([f"LOG_CONFIG={path!r}: not valid JSON: {exc}"]) from None
    else:
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                [f"LOG_CONFIG={path!r}: a YAML file needs PyYAML (pip install pyyaml)"]
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"LOG_CONFIG={path!r}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ConfigError([f"LOG_CONFIG={path!r}: must be a mapping with version: 1"])
    data.setdefault("disable_existing_loggers", False)
    loggers = data.get("loggers")
    if isinstance(loggers, dict):
        for name, logger_config in loggers.items():
            # A nessen logger given handlers of its own keeps its records to them: without
            # this they would also reach Nessen's handler on the nessen logger above it.
            if (
                (name == "nessen" or str(name).startswith("nessen."))
                and isinstance(logger_config, dict)
                and logger_config.get("handlers")
            ):
                logger_config.setdefault("propagate", False)
    return data


def apply_log_config(path: str) -> None:
    """Apply a ``LOG_CONFIG`` file (see :func:`read_log_config`) over the current set-up.

    Raises:
        ConfigError: It cannot be read, or ``logging.config`` refuses it (an unknown
            handler class, a missing formatter...).
    """
    import logging.config  # only for LOG_CONFIG: it imports logging.handlers, socketserver

    data = read_log_config(path)
    try:
        if data is None:
            logging.config.fileConfig(path, disable_existing_loggers=False)
        else:
            logging.config.dictConfig(data)
    except Exception as exc:
        raise ConfigError([f"LOG_CONFIG={path!r}: refused by logging.config: {exc}"]) from None


def configure_logging_for(config: Config) -> Callable[[], None]:
    """:func:`configure_logging` as ``config`` says.

    That is ``LOG_LEVEL``, ``LOG_FORMAT``, ``LOG_BUFFER_SIZE`` and ``LOG_CONFIG``.

    Raises:
        ConfigError: ``LOG_CONFIG`` cannot be applied.
    """
    return configure_logging(
        config.log_level,
        config.effective_log_format,
        buffer_bytes=config.log_buffer_bytes,
        log_config=config.log_config,
    )


def configure_logging(
    level: str = "info",
    fmt: str = "console",
    stream: TextIO | None = None,
    *,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    log_config: str | None = None,
) -> Callable[[], None]:
    """Send Nessen's log records (and the app's, if it set up no logging) to ``stream``.

    The ``nessen`` loggers get a handler of their own, at ``level``, and do not propagate:
    an app's handlers, filters and levels are left alone. The root logger gets the same
    handler and ``level`` only when it has no handler yet. Record attributes (file, line,
    thread, process) are left as the ``logging`` module makes them.

    Lines are written in batches from a thread of their own (see
    :class:`BufferedStreamHandler`): errors at once, the rest within 0.1 s; logging never
    waits on the destination, and what does not fit in ``buffer_bytes`` is dropped and
    counted.

    Args:
        level: debug, info, warning, error or critical.
        fmt: ``json`` or ``console``.
        stream: Where to write; ``sys.stderr`` when ``None``.
        buffer_bytes: Most log output held unwritten (``LOG_BUFFER_SIZE``).
        log_config: A ``LOG_CONFIG`` file (see :func:`apply_log_config`), applied first
            (``logging.config`` closes the handlers that exist when it runs); what it
            configures wins: a ``nessen`` logger it gives handlers keeps only those.

    Returns:
        A function that undoes this (writes what is left within a bounded time, restores
        the loggers' handlers, levels and propagation; not what ``log_config`` set).

    Raises:
        ConfigError: ``log_config`` cannot be applied.
    """
    if log_config is not None:
        # First: dictConfig and fileConfig close every handler that exists when they run.
        apply_log_config(log_config)
    root = logging.getLogger()
    ours = logging.getLogger("nessen")
    saved_root = (list(root.handlers), root.level)
    saved_ours = (list(ours.handlers), ours.level, ours.propagate)
    handler = BufferedStreamHandler(stream or sys.stderr, buffer_bytes=buffer_bytes)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else ConsoleFormatter(colour=wants_colour(stream or sys.stderr))
    )
    # Nessen's own loggers write through this handler, and only through it (as uvicorn's
    # do), whatever the app set up; the app's logging is left as it is, unless it set up
    # none: then its records go the same way as ours. A LOG_CONFIG that gives the nessen
    # logger handlers of its own is obeyed instead.
    took_ours = log_config is None or not ours.handlers
    if took_ours:
        ours.handlers = [handler]
        ours.setLevel(level.upper())
        ours.propagate = False
    took_root = not root.handlers
    if took_root:
        root.handlers = [handler]
        root.setLevel(level.upper())

    def undo() -> None:
        handler.close()  # first: a record logged meanwhile is counted, not sent elsewhere
        if took_ours:
            ours.handlers, ours.propagate = saved_ours[0], saved_ours[2]
            ours.setLevel(saved_ours[1])
        if took_root:
            root.handlers = saved_root[0]
            root.setLevel(saved_root[1])

    return undo
