"""The probe endpoints: ``/health``, ``/ready``, ``/api/health`` (JSON) and ``/metrics``.

``/health`` answers 200 ``OK`` until the STOPPING state; it checks nothing else, so a slow
dependency never gets a live process restarted. ``/ready`` answers 200 only when the state
allows traffic and every readiness check passes; ``/api/health`` reads the same cached
check results (see ``Readiness``), so together they cost one round of checks per cache
interval, and its ``ok`` is ``/ready``'s answer. None of them looks at the Host field, so a
kubelet probe or a Prometheus scrape addressed to the pod IP gets the real answer.

``/api/health`` describes the process that answers it (with several workers, one of them,
and then all of them too: ``aggregate`` and ``workers`` below):

.. code-block:: text

    ok                  bool   what ``/ready`` would answer: the state accepts traffic
                               (READY, or DEGRADED when allowed) and every readiness check
                               passes; the status is 200 when true, 503 otherwise
    state               str    STARTING, READY, DEGRADED, DRAINING or STOPPING
    reason              str    why the last transition happened (only when there is one);
                               in production with addresses and URLs redacted (see
                               :func:`redact_addresses`), the log line of the transition
                               keeping them
    checks              {name: {ok, duration_ms, error}}  as in ``/ready`` (only when checks
                               are registered and the state accepts traffic)
    uptime_ms           int    since the runtime was created
    requests.total      int    responses sent, refusals with a status included
    requests.active     int    requests in handlers now, this one not counted
    requests.p50_ms     float  latency percentiles over the last 60-70 s (see stats.py),
    requests.p95_ms            nearest rank within 2 %; null when no request finished then
    requests.p99_ms
    requests.max_ms     float  the longest request over the same window (exact); null when
                               none finished then
    requests.avg_response_bytes  float  mean content bytes per response (null before any)
    requests.rejected   {reason: count}  the server's refusals since start
    requests.errors     {"4xx": int, "5xx": int}  answers with those statuses since start,
                               the server's refusals included
    websockets.open     int    WebSockets open now
    websockets.closed   int    WebSockets ended since start
    websockets.messages_in   int  WebSocket messages received / sent since start (counted
    websockets.messages_out       at each ping and when a WebSocket ends)
    memory.rss_bytes    int    resident set size
    cpu_percent         float  process CPU over the last 1 s, percent of one core
    event_loop_lag_ms   float  how late the last 1 s tick ran
    logs.lines_dropped  int    log lines this process dropped since it started because
                               stderr did not keep up (``LOG_BUFFER_SIZE`` full) or failed
    logs.dropping       bool   true while lines are being dropped (the reader is stalled
                               or gone)
    pid                 int
    version             str
    aggregate           object  only with several workers (see :mod:`.workers`): every live
                               worker's figures added up, ``supervisor_pid`` and
                               ``workers`` (how many) first; percentiles over all their
                               requests of the last minute (merged latency buckets)
    workers             [object]  only with several workers: each live worker's ``pid``,
                               ``worker`` (0..N-1), ``state``, ``uptime_ms``, ``requests``,
                               ``memory``, ``cpu_percent``, ``event_loop_lag_ms`` and
                               ``age_ms`` (how old its figures are; 0 for this one)
"""

from __future__ import annotations

import os
import re
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from nessen.app.lifecycle import CheckResult, Lifecycle, Readiness
from nessen.app.routing import Router
from nessen.http import Request, Response
from nessen.observability.admin import OpsGuard, guarded
from nessen.observability.logs import log_drops
from nessen.observability.process import ProcessSampler
from nessen.observability.stats import RequestStats
from nessen.observability.workers import WorkerSnapshots, aggregate, shown

HEALTH_PATHS = frozenset({"/health", "/ready", "/api/health"})
"""Paths of the probe endpoints (rate limiting and access-log sampling may skip them)."""
METRICS_PATH = "/metrics"
"""Path of the Prometheus exposition."""
NO_STORE = {"Cache-Control": "no-store"}
NO_STORE_FIELD = "Cache-Control: no-store\r\n"
NO_STORE_KEYS = ("cache-control",)


class HealthSource(Protocol):
    """What the probe endpoints read (the Runtime provides it)."""

    stats: RequestStats
    version: str
    process: ProcessSampler

    @property
    def lifecycle(self) -> Lifecycle:
        """The state machine."""

    @property
    def readiness(self) -> Readiness:
        """The readiness checks."""

    @property
    def ready_when_degraded(self) -> bool:
        """Whether DEGRADED still counts as ready."""

    @property
    def active_requests(self) -> int:
        """Requests in handlers now."""

    @property
    def error_details(self) -> bool:
        """Whether clients may see error text (not in production)."""

    @property
    def worker_snapshots(self) -> WorkerSnapshots | None:
        """With several workers, this worker's snapshot and the others' (else ``None``)."""


_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(
    "|".join(
        (
            r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+",  # a URL: redis://user:password@host/0
            r"[^\s'\"<>()@/]+@[^\s'\"<>()/]+",  # user[:password]@host
            r"\(\s*'[^']*'\s*,\s*\d+[^)]*\)",  # a Python socket address: ('host', 6379)
            r"\[[0-9A-Fa-f:.]+(?:%[\w.-]+)?\](?::\d+)?",  # [IPv6%zone]:port
            # IPv6, a port or an embedded IPv4 address included: ::1:6379, ::ffff:10.0.0.5
            r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]*(?:\.\d{1,3}){0,3}(?![\w:])",
            r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b",  # IPv4[:port]
            rf"\b(?:{_HOST_LABEL}\.)*{_HOST_LABEL}:\d{{1,5}}\b",  # host:port
            rf"\b(?:{_HOST_LABEL}\.)+[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]\b",  # a dotted host name
            r"(?<![\w.])/(?:[\w.-]+/)*[\w.-]*[\w-]",  # an absolute path: a Unix socket
        )
    )
)
REDACTED = "<redacted>"
"""What :func:`redact_addresses` puts in place of an address."""


def redact_addresses(text: str) -> str:
    """Replace what names a network address or a credential in ``text`` with ``<redacted>``.

    For reasons shown to clients in production (a DEGRADED reason in ``/api/health`` and
    ``/ready``), which are often an exception's text: redis-py's ``Error 111 connecting to
    10.0.0.5:6379`` becomes ``Error 111 connecting to <redacted>``. It errs on the side of
    hiding: URLs (with any ``user:password@``), ``user@host``, IPv4 and IPv6 addresses with
    or without a port, ``host:port``, dotted host names (``redis.prod.internal``), Python
    socket addresses (``('10.0.0.5', 6379)``) and absolute paths (a Unix socket). A bare
    single-label host without a port (``redis``) is kept: it cannot be told from a word.

    Args:
        text: Any text.

    Returns:
        ``text`` with each such span replaced.
    """
    return _ADDRESS.sub(REDACTED, text)


_rss_memo = [-1.0, 0]
RSS_REFRESH = 0.25
"""Seconds a reading of the resident set size is reused by ``/api/health``."""


def recent_rss_bytes() -> int:
    """:func:`rss_bytes`, read at most every ``RSS_REFRESH`` seconds.

    Saves three system calls per ``/api/health`` call under a probe storm.
    """
    now = time.monotonic()
    if now - _rss_memo[0] >= RSS_REFRESH:
        _rss_memo[:] = [now, rss_bytes()]
    return int(_rss_memo[1])


def rss_bytes() -> int:
    """Resident set size of this process in bytes (peak RSS where /proc is absent)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def process_figures(source: HealthSource, *, leave_out: int = 0) -> dict[str, Any]:
    """What ``/api/health`` says of this process (see the module's table).

    ``pid``, ``state``, ``uptime_ms``, ``requests``, ``websockets``, ``memory``,
    ``cpu_percent`` and ``event_loop_lag_ms``.

    Args:
        source: The runtime.
        leave_out: Requests not to count in ``requests.active`` (the poll itself).
    """
    lifecycle = source.lifecycle
    stats = source.stats
    process = source.process
    (p50, p95, p99), longest = stats.latency_summary_ms(0.5, 0.95, 0.99)
    return {
        "pid": os.getpid(),
        "state": str(lifecycle.state),
        "uptime_ms": int(lifecycle.uptime * 1000),
        "requests": {
            "total": stats.total,
            "active": max(0, source.active_requests - leave_out),
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "max_ms": longest,
            "avg_response_bytes": round(stats.average_bytes, 1) if stats.total else None,
            "rejected": dict(stats.rejected),
            "errors": {"4xx": stats.client_errors, "5xx": stats.server_errors},
        },
        "websockets": {
            "open": stats.websockets_open,
            "closed": stats.websockets_closed,
            "messages_in": stats.websocket_messages_in,
            "messages_out": stats.websocket_messages_out,
        },
        "memory": {"rss_bytes": recent_rss_bytes()},
        "cpu_percent": process.cpu_percent,
        "event_loop_lag_ms": process.event_loop_lag_ms,
    }


def latency_figures(source: HealthSource) -> dict[str, Any]:
    """The private part of a worker's snapshot: its latency histogram and content bytes.

    What :func:`~nessen.observability.workers.aggregate` needs to add workers up: the
    buckets of the last minute (``[[bucket, count, seconds], ...]``), the longest request
    of the same window read at the same moment (ms), and the content bytes sent since
    start.
    """
    latency = source.stats.latency
    longest = latency.max()
    return {
        "latency_buckets": latency.buckets(),
        "latency_max_ms": None if longest is None else round(longest * 1000.0, 3),
        "content_bytes": source.stats.content_bytes,
    }


def worker_snapshot(source: HealthSource, slot: int) -> dict[str, Any]:
    """This worker's figures as it writes them for the others (see :mod:`.workers`).

    Args:
        source: The runtime.
        slot: The worker's number, 0..N-1.
    """
    return {**process_figures(source), "worker": slot, **latency_figures(source)}


def _worker_order(figures: dict[str, Any]) -> tuple[int, int]:
    return int(figures.get("worker", 0)), int(figures["pid"])


def install_health_routes(
    router: Router,
    source: HealthSource,
    *,
    guard: OpsGuard | None = None,
    counts_itself: bool = False,
) -> None:
    """Register ``GET /health``, ``GET /ready`` and ``GET /api/health`` on ``router``.

    ``guard`` (see :mod:`nessen.observability.admin`) decides who gets ``/api/health``;
    ``/health`` and ``/ready`` answer every client, as probes must. ``counts_itself``:
    ``router`` serves on the server whose ``active_requests`` the answer reports, so the
    ``/api/health`` request itself is left out of ``requests.active`` (a status page
    polling it would otherwise always see one request in flight).

    A failing readiness check shows its error text only when ``source.error_details``; in
    production only its kind (``"timeout"``, ``"ConnectionError"``): the probes answer any
    client, and an exception's text may hold a connection string. The text is logged
    either way when the check starts failing. For the same reason the lifecycle's
    ``reason`` (e.g. ``redis unavailable: ConnectionError: Error 111 connecting to
    10.0.0.5:6379``) goes out through :func:`redact_addresses` in production; the
    transition's log line has it whole.
    """

    def public_reason(reason: str) -> str:
        return reason if source.error_details else redact_addresses(reason)

    def checks_json(results: dict[str, CheckResult]) -> dict[str, dict[str, object]]:
        return {
            name: {
                "ok": r.ok,
                "duration_ms": r.duration_ms,
                "error": r.error if source.error_details else r.kind,
            }
            for name, r in results.items()
        }

    async def health(request: Request) -> Response:
        if source.lifecycle.live:
            return Response.text("OK")
        return Response.text("STOPPING", 503)

    async def readiness() -> tuple[bool, dict[str, CheckResult]]:
        """Whether ``/ready`` answers 200, and the check results (cached) it is based on."""
        accepting = source.lifecycle.accepting(source.ready_when_degraded)
        checks = source.readiness
        results = await checks.run() if accepting and len(checks) else {}
        return accepting and all(result.ok for result in results.values()), results

    async def ready(request: Request) -> Response:
        lifecycle = source.lifecycle
        ok, results = await readiness()
        body = {"ready": ok, "state": str(lifecycle.state), "checks": checks_json(results)}
        if lifecycle.reason:
            body["reason"] = public_reason(lifecycle.reason)
        return Response.json(body, 200 if ok else 503)

    async def api_health(request: Request) -> Response:
        lifecycle = source.lifecycle
        ok, results = await readiness()
        lines_dropped, dropping = log_drops()
        figures = process_figures(source, leave_out=int(counts_itself))
        body: dict[str, object] = {
            "ok": ok,
            "state": str(lifecycle.state),
        }
        if lifecycle.reason:
            body["reason"] = public_reason(lifecycle.reason)
        if results:
            body["checks"] = checks_json(results)
        body.update(
            uptime_ms=figures["uptime_ms"],
            requests=figures["requests"],
            websockets=figures["websockets"],
            memory=figures["memory"],
            cpu_percent=figures["cpu_percent"],
            event_loop_lag_ms=figures["event_loop_lag_ms"],
            logs={"lines_dropped": lines_dropped, "dropping": dropping},
            pid=figures["pid"],
            version=source.version,
        )
        snapshots = source.worker_snapshots
        if snapshots is not None:  # one of several workers: the others' figures too
            own = {**figures, "worker": snapshots.slot, "age_ms": 0}
            own.update(latency_figures(source))
            workers = sorted([own, *snapshots.read_others()], key=_worker_order)
            body["aggregate"] = {"supervisor_pid": os.getppid(), **aggregate(workers)}
            body["workers"] = [shown(worker) for worker in workers]
        response = Response.json(body, 200 if ok else 503)
        response.add_encoded_fields(NO_STORE_FIELD, NO_STORE_KEYS)
        return response

    router.get("/health", health)
    router.get("/ready", ready)
    router.get("/api/health", guarded(api_health, guard))


def install_metrics_route(
    router: Router,
    render: Callable[[str], tuple[bytes, str]],
    *,
    guard: OpsGuard | None = None,
) -> None:
    """Register ``GET /metrics``, answered with ``render(accept)``.

    Args:
        router: Where to register it.
        render: Takes the request's Accept field value (``""`` if none) and returns the
            exposition and its content type (see ``PrometheusMetrics.exposition``).
        guard: Decides who gets it (see :mod:`nessen.observability.admin`); ``None``:
            every client.
    """

    async def metrics(request: Request) -> Response:
        content, content_type = render(request.headers.get("accept") or "")
        return Response(200, content, content_type=content_type, headers=NO_STORE)

    router.get(METRICS_PATH, guarded(metrics, guard))
