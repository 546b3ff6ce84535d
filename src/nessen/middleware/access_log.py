r"""The access log: one structured record per request that reaches the app.

Each record goes to the ``nessen.access`` logger with the architecture's fields as
``extra`` attributes (``request_id``, ``method``, ``path``, ``route``, ``status``,
``duration_ms``, ``bytes``, ``client_ip``), which both formatters of
:mod:`nessen.observability.logs` print with control characters escaped, so a path holding
a decoded ``\n`` stays on one line. Requests the server refuses itself (408, 413, 431,
503 handler timeouts...) never reach the app; the server logs those on ``nessen.server``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable

from nessen.app.pipeline import Middleware, Next
from nessen.http import Request, Response
from nessen.http.response import BodyStream
from nessen.middleware.client_ip import Network, client_address_resolver
from nessen.middleware.streams import ChunkIterator, close_stream, next_chunk, open_stream
from nessen.observability.logs import direct_handler, quote_field

REDACTED_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
"""Header fields whose values are never logged (replaced by ``REDACTED``)."""
REDACTED = "[redacted]"
ACCESS_FIELDS = (
    "request_id",
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "bytes",
    "client_ip",
)
"""The fields of every access record, in order."""
NO_CONTENT_STATUSES = frozenset({204, 304})

StreamDone = Callable[[int], None]


def logging_middleware(
    *,
    logger: logging.Logger | str = "nessen.access",
    log_headers: bool = False,
    log_body: bool = False,
    redact_headers: Iterable[str] = (),
    max_body_chars: int = 1024,
    sample_2xx: float = 1.0,
    exclude_paths: Iterable[str] = (),
    trusted_networks: Iterable[Network] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sampler: Callable[[], float] = random.random,
) -> Middleware:
    """Build the access-log middleware; it belongs right inside the request-id middleware.

    Levels follow the status: 5xx ``ERROR``, 4xx ``WARNING``, anything else ``INFO``.
    Nothing is built for a level the logger would drop. A request whose handler is
    cancelled (handler timeout, drain) is logged by the server instead, not here. An
    exception escaping the inner middleware is logged as status 500 and re-raised.

    Args:
        logger: The logger or its name.
        log_headers: Add ``headers`` (request) and ``response_headers`` fields: dicts of
            lower-case name to value (repeated fields joined with ``", "``), with
            Authorization, Cookie, Set-Cookie, Proxy-Authorization and ``redact_headers``
            replaced by ``"[redacted]"``.
        log_body: Add a ``body`` field: the request content, UTF-8 decoded (undecodable
            bytes replaced), cut to ``max_body_chars`` characters.
        redact_headers: More header names to redact (case-insensitive), e.g. ``X-Api-Key``.
        max_body_chars: Longest logged body, in characters.
        sample_2xx: Fraction of 2xx records kept, 0.0..1.0; 4xx and 5xx are always kept.
            The decision is made before the record is built.
        exclude_paths: Exact paths never logged, e.g. ``{"/health", "/ready"}`` to keep
            probes out of the log.
        trusted_networks: ``None`` (default): ``client_ip`` is ``ctx.client_ip``, the
            server's answer under ``TRUST_PROXY``. A list: proxies whose
            ``X-Forwarded-For`` this log believes instead, from the socket peer.
        clock: Seconds, for ``duration_ms``.
        sampler: Returns a float in [0, 1); a record is kept when it is below
            ``sample_2xx`` (tests pass a fixed one).

    Returns:
        The middleware. ``duration_ms`` runs from entering it to the response being
        returned (buffered) or its last chunk being written (streamed); ``bytes`` is the
        content sent (0 for HEAD, 204 and 304).

    Raises:
        ValueError: ``sample_2xx`` outside 0.0..1.0 or ``max_body_chars < 0``.
    """
    if not 0.0 <= sample_2xx <= 1.0:
        raise ValueError(f"sample_2xx={sample_2xx!r}: must be 0.0..1.0")
    if max_body_chars < 0:
        raise ValueError(f"max_body_chars={max_body_chars!r}: must be >= 0")
    log = logging.getLogger(logger) if isinstance(logger, str) else logger
    name = log.name
    enabled_for = log.isEnabledFor
    handle = log.handle
    excluded = frozenset(exclude_paths)
    redacted = REDACTED_HEADERS | {header.lower() for header in redact_headers}
    client_of = None if trusted_networks is None else client_address_resolver(trusted_networks)
    sampling = sample_2xx < 1.0
    info, warning, error = logging.INFO, logging.WARNING, logging.ERROR
    message = "%s %s %d"

    level_names = {level: logging.getLevelName(level) for level in (info, warning, error)}
    plain = not (log_headers or log_body)
    wall_clock = time.time

    def emit(
        request: Request, response: Response | None, status: int, sent: int, start: float
    ) -> None:
        level = error if status >= 500 else warning if status >= 400 else info
        if not enabled_for(level):
            return
        if sampling and 200 <= status < 300 and sampler() >= sample_2xx:
            return
        method = request.method
        path = request.path
        access = (
            request.id,
            method,
            path,
            request.route,
            status,
            round((clock() - start) * 1000.0, 3),
            sent,
            request.client_ip if client_of is None else client_of(request),
        )
        if plain and (direct := direct_handler(log)) is not None:
            # The line the record would print, without building the LogRecord.
            handler, formatter = direct
            if level >= handler.level:
                handler.write_access(
                    formatter, wall_clock(), level_names[level], name, access, level
                )
            return
        # The record factory directly (what Logger.makeRecord calls), then the fields in one
        # update: makeRecord would check each extra name against the record's attributes.
        record = logging.getLogRecordFactory()(
            name, level, "(access log)", 0, message, (method, quote_field(path), status), None
        )
        extra = record.__dict__
        extra.update(zip(ACCESS_FIELDS, access, strict=True))
        if access[3] is None:
            del extra["route"]
        if log_headers:
            extra["headers"] = _fields(request.headers.multi_items(), redacted)
            if response is not None:
                extra["response_headers"] = _fields(response.headers.multi_items(), redacted)
        if log_body:
            text = request.body[: max_body_chars * 4].decode("utf-8", "replace")
            extra["body"] = text[:max_body_chars]
        handle(record)

    async def access_log(request: Request, next: Next) -> Response:
        if request.path in excluded or not enabled_for(error):
            return await next()
        start = clock()
        try:
            response = await next()
        except asyncio.CancelledError:
            raise  # the server answers (503) and logs it
        except Exception:
            emit(request, None, 500, 0, start)
            raise
        status = response.status
        if request.method == "HEAD" or status in NO_CONTENT_STATUSES:
            emit(request, response, status, 0, start)
        elif response.stream is not None:
            response.stream = _CountedStream(
                response.stream, lambda sent: emit(request, response, status, sent, start)
            )
        else:
            emit(request, response, status, len(response.body), start)
        return response

    return access_log


def _fields(items: list[tuple[str, str]], redacted: frozenset[str]) -> dict[str, str]:
    """Header pairs as one dict: lower-case names, repeated values joined, secrets redacted."""
    fields: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        shown = REDACTED if key in redacted else value
        fields[key] = f"{fields[key]}, {shown}" if key in fields else shown
    return fields


class _CountedStream:
    """Wraps a response stream: counts the bytes it yields and reports once when done.

    "Done" is the end of the stream, an error in it, or :meth:`aclose` (the server calls
    it after writing, also when the client went away or the drain cut the stream), so a
    stream the server never iterated is still reported, with 0 bytes.
    """

    __slots__ = ("_done", "_iterator", "_sent", "_source")

    def __init__(self, source: BodyStream, done: StreamDone) -> None:
        self._source = source
        self._iterator: ChunkIterator | None = None
        self._sent = 0
        self._done: StreamDone | None = done

    def __aiter__(self) -> _CountedStream:
        return self

    async def __anext__(self) -> bytes:
        iterator = self._iterator
        if iterator is None:
            iterator = self._iterator = open_stream(self._source)
        try:
            piece = await next_chunk(iterator)
        except BaseException:  # the end, an error or a cancellation: report what went out
            await self.aclose()
            raise
        self._sent += len(piece)
        return piece

    async def aclose(self) -> None:
        """Close the wrapped stream and report the bytes counted (once)."""
        done, self._done = self._done, None
        if done is None:
            return
        try:
            await close_stream(self._source, self._iterator)
        finally:
            done(self._sent)
