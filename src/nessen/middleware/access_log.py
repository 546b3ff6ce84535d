r"""The access log: one structured record per request that reaches the app.

Each record goes to the ``nessen.access`` logger with the architecture's fields as
``extra`` attributes (``request_id``, ``method``, ``path``, ``route``, ``status``,
``duration_ms``, ``bytes``, ``client_ip``, and ``outcome`` when the response did not go
out whole), which both formatters of :mod:`nessen.observability.logs` print with control
characters escaped, so a path holding a decoded ``\n`` stays on one line.

The record is written when the server has finished with the response
(:attr:`nessen.http.Request.on_finished`), from what went on the wire: the status really
sent (the server's 500 when it refused the handler's response, its 503 when the handler
overran ``request_timeout``) and the content bytes really handed to the kernel.
Requests the server refuses before the app sees them (408, 413, 431...) are logged by the
server on ``nessen.server``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable

from nessen.app.pipeline import Middleware, Next
from nessen.http import Request, Response
from nessen.http.request import RESPONSE_ERROR, FinishedHook
from nessen.middleware.client_ip import Network, client_address_resolver
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
    "outcome",
)
"""The fields of every access record, in order (``route`` and ``outcome`` only when set)."""


def access_recorder(
    *,
    logger: logging.Logger | str = "nessen.access",
    log_headers: bool = False,
    log_body: bool = False,
    redact_headers: Iterable[str] = (),
    max_body_chars: int = 1024,
    sample_2xx: float = 1.0,
    trusted_networks: Iterable[Network] | None = None,
    sampler: Callable[[], float] = random.random,
) -> FinishedHook:
    """Build the function that writes one request's access record from what went out.

    It is a :attr:`~nessen.http.Request.on_finished` hook: the server calls it once per
    request with the status sent, the content bytes handed to the kernel, the ``outcome``
    and the duration. :func:`logging_middleware` registers one for every request it sees;
    the ASGI host registers one for the app's requests. The arguments are
    :func:`logging_middleware`'s (but ``exclude_paths``, which is the middleware's choice).

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
    redacted = REDACTED_HEADERS | {header.lower() for header in redact_headers}
    client_of = None if trusted_networks is None else client_address_resolver(trusted_networks)
    sampling = sample_2xx < 1.0
    info, warning, error = logging.INFO, logging.WARNING, logging.ERROR
    message = "%s %s %d"

    level_names = {level: logging.getLevelName(level) for level in (info, warning, error)}
    plain = not (log_headers or log_body)
    wall_clock = time.time

    def record(
        request: Request,
        response: Response | None,
        status: int,
        sent: int,
        outcome: str | None,
        duration: float,
    ) -> None:
        level = error if status >= 500 else warning if status >= 400 else info
        if outcome == RESPONSE_ERROR:  # cut after its status line: a server-side failure
            level = error
        if not enabled_for(level):
            return
        if sampling and outcome is None and 200 <= status < 300 and sampler() >= sample_2xx:
            return
        # Request's slots rather than its properties (a property call costs more than
        # the rest of this line's recording): the id once made, the method and path as
        # parsed, the client address once resolved.
        method = request._method
        path = request._path
        resolved = request._resolved
        access = (
            request._id or request.id,
            method,
            path,
            request.route,
            status,
            # Milliseconds to 3 places, halves up (round(x, 3) costs twice as much).
            int(duration * 1_000_000.0 + 0.5) / 1000.0,
            sent,
            (
                (resolved[0] if resolved is not None else request.client_ip)
                if client_of is None
                else client_of(request)
            ),
            outcome,
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
        log_record = logging.getLogRecordFactory()(
            name, level, "(access log)", 0, message, (method, quote_field(path), status), None
        )
        extra = log_record.__dict__
        extra.update(zip(ACCESS_FIELDS, access, strict=True))
        if access[3] is None:
            del extra["route"]
        if outcome is None:
            del extra["outcome"]
        if log_headers:
            extra["headers"] = _fields(request.headers.multi_items(), redacted)
            if response is not None:
                extra["response_headers"] = _fields(response.headers.multi_items(), redacted)
        if log_body:
            text = request.body[: max_body_chars * 4].decode("utf-8", "replace")
            extra["body"] = text[:max_body_chars]
        handle(log_record)

    return record


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
    sampler: Callable[[], float] = random.random,
) -> Middleware:
    """Build the access-log middleware; it belongs right inside the request-id middleware.

    It registers the request's :attr:`~nessen.http.Request.on_finished` hook (keeping one
    an outer middleware set), so the server writes the record once the response is over:
    whole, cut, or answered by the server instead (503 after ``request_timeout``, the
    ``shutdown_cut`` of a drain). Levels follow the status sent: 5xx ``ERROR``, 4xx
    ``WARNING``, anything else ``INFO`` (a client that went away mid-response is an INFO
    line with ``outcome`` ``client_disconnected``); a response that failed after its
    status line went out (``outcome`` ``response_error``) is ``ERROR``. Nothing is built
    for a level the logger would drop.

    Args:
        logger: The logger or its name.
        log_headers: Add ``headers`` (request) and ``response_headers`` fields: dicts of
            lower-case name to value (repeated fields joined with ``", "``), with
            Authorization, Cookie, Set-Cookie, Proxy-Authorization and ``redact_headers``
            replaced by ``"[redacted]"``. The response's are those of the response sent
            (none for an answer the server made itself).
        log_body: Add a ``body`` field: the request content, UTF-8 decoded (undecodable
            bytes replaced), cut to ``max_body_chars`` characters.
        redact_headers: More header names to redact (case-insensitive), e.g. ``X-Api-Key``.
        max_body_chars: Longest logged body, in characters.
        sample_2xx: Fraction of 2xx records kept, 0.0..1.0; 4xx, 5xx and records with an
            ``outcome`` are always kept. The decision is made before the record is built.
        exclude_paths: Exact paths never logged, e.g. ``{"/health", "/ready"}`` to keep
            probes out of the log.
        trusted_networks: ``None`` (default): ``client_ip`` is ``ctx.client_ip``, the
            server's answer under ``TRUST_PROXY``. A list: proxies whose
            ``X-Forwarded-For`` this log believes instead, from the socket peer.
        sampler: Returns a float in [0, 1); a record is kept when it is below
            ``sample_2xx`` (tests pass a fixed one).

    Returns:
        The middleware. ``duration_ms`` runs from the request's first byte to the last
        byte of the response handed to the kernel (or to the cut), as
        ``http_request_duration_seconds``; ``bytes`` is the content handed to the kernel
        (0 for HEAD, 204 and 304; see :attr:`~nessen.http.Request.on_finished`).

    Raises:
        ValueError: ``sample_2xx`` outside 0.0..1.0 or ``max_body_chars < 0``.
    """
    record = access_recorder(
        logger=logger,
        log_headers=log_headers,
        log_body=log_body,
        redact_headers=redact_headers,
        max_body_chars=max_body_chars,
        sample_2xx=sample_2xx,
        trusted_networks=trusted_networks,
        sampler=sampler,
    )
    enabled_for = (logging.getLogger(logger) if isinstance(logger, str) else logger).isEnabledFor
    excluded = frozenset(exclude_paths)
    error = logging.ERROR

    def access_log(request: Request, next: Next) -> Awaitable[Response]:
        # A plain function: it only registers the record, so no coroutine of its own.
        if request.path not in excluded and enabled_for(error):
            previous = request.on_finished
            request.on_finished = record if previous is None else _both(previous, record)
        return next()

    return access_log


def _both(first: FinishedHook, second: FinishedHook) -> FinishedHook:
    """One hook calling ``first``, then ``second``."""

    def both(
        request: Request,
        response: Response | None,
        status: int,
        sent: int,
        outcome: str | None,
        duration: float,
    ) -> None:
        try:
            first(request, response, status, sent, outcome, duration)
        finally:
            second(request, response, status, sent, outcome, duration)

    return both


def _fields(items: list[tuple[str, str]], redacted: frozenset[str]) -> dict[str, str]:
    """Header pairs as one dict: lower-case names, repeated values joined, secrets redacted."""
    fields: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        shown = REDACTED if key in redacted else value
        fields[key] = f"{fields[key]}, {shown}" if key in fields else shown
    return fields
