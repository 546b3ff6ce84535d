"""Prometheus metrics: the registry behind ``GET /metrics``, and the default telemetry sink.

Built on ``prometheus-client``; the exposition (text format 0.0.4, or OpenMetrics when
the scraper's ``Accept`` asks for it) is the library's. The series (type, labels, source):

- ``http_requests_total``: counter ``{method, route, status}``; every response, and every
  refusal that sent a status.
- ``http_request_duration_seconds``: histogram ``{method, route}``, 1 ms to 10 s; every
  handler response, from the request's first byte to the response written.
- ``http_response_size_bytes``: histogram ``{method, route}``, 128 B to 8 MiB; content bytes
  of every handler response.
- ``http_requests_active``: gauge; requests in handlers.
- ``nessen_connections_active``: gauge; open connections.
- ``nessen_rejected_requests_total``: counter ``{reason}``; the server's refusals.
- ``nessen_accept_errors_total``: counter ``{error}``; ``accept()`` calls that failed for
  lack of a resource (``error`` one of EMFILE, ENFILE, ENOBUFS, ENOMEM: out of file
  descriptors or memory); accepting pauses meanwhile. Absent until the first failure.
- ``nessen_state``: gauge ``{state}``; 1 for the current lifecycle state, 0 for the others.
- ``nessen_event_loop_lag_seconds``: gauge; how late the runtime's 1 s tick ran.
- ``nessen_store_errors_total``: counter ``{store, operation}``; shared-store calls that
  failed (``store="redis"``; ``operation`` one of take, get, set, delete, ping), those
  refused at once while the store is known to be down included. Absent until the first
  failure (a process without a shared store never shows it).
- ``nessen_log_lines_dropped_total``: counter; log lines dropped because the log
  destination did not keep up (the buffer of ``LOG_BUFFER_SIZE`` was full) or failed
  (``EPIPE``), read from :func:`nessen.observability.logs.log_drops` on every flush; with
  several workers, the sum of theirs (the supervisor's own few lines are counted in its
  log's count line only: it serves no ``/metrics``).
- ``process_*``, ``python_*``: prometheus-client's process, platform and GC collectors.

Cardinality is bounded by construction: ``route`` is the route template (``/users/{id}``)
or ``"unmatched"`` (404, 405 and refusals before routing), never the raw path; ``method``
is ``"OTHER"`` outside ``allowed_methods``; ``status`` is the numeric code as text.

**Cost per request.** Recording is plain Python arithmetic on a cached per-``(method,
route, status)`` record: the counter and histogram increments are accumulated there and
added to the prometheus-client metrics in one batch by :meth:`PrometheusMetrics.flush`,
which runs on every scrape and every second. So a scrape sees every request its process
has finished, and a request costs about 0.4 µs instead of the ~4 µs of three locked
prometheus-client updates (docs/BENCHMARKS.md). The batch adds to a histogram child's
buckets and sum through its private ``_buckets`` and ``_sum`` values: the first series
created checks they exist, and a unit test checks that the result equals ``observe()``'s,
so a prometheus-client release that changes them fails loudly rather than miscounting.

**Before the first scrape.** In one process prometheus-client is not imported until
``/metrics`` is first scraped (or a user metric first recorded): a server nobody scrapes
does not carry it (about 3 MiB of resident memory, docs/BENCHMARKS.md). Until then the
counts, gauges and the time each series first counted wait in :class:`PrometheusMetrics`,
and the first scrape shows them as if the metrics had existed from the start (a unit test
compares both orders). The import (tens of milliseconds) then happens on that scrape.

**Cost per scrape.** Rendering the exposition costs about 2 ms of CPU in one process (and
more with several workers, whose files are all read), all of it on the event loop; so a
rendered exposition is reused for ``EXPOSITION_REUSE`` (250 ms, as ``/api/health``'s
figures are): a client hammering ``/metrics`` gets at most four renders a second per
process, and every other scrape costs what any small response does (docs/BENCHMARKS.md).
A scrape therefore shows the process as it was at most 250 ms before.

**Several worker processes.** When ``PROMETHEUS_MULTIPROC_DIR`` is set before the
process starts, prometheus-client keeps every value in a per-process file there, and
``/metrics`` in any worker reports the aggregate through its ``MultiProcessCollector``:
counters and histograms summed, gauges summed over live workers (``nessen_state`` then
counts the workers in each state; the event-loop lag is the worst worker's). Gauges are
refreshed from the runtime every second rather than by callbacks, which multiprocess mode
does not support. The per-process ``process_*`` and ``python_*`` series are left out
there, as prometheus-client's collectors cannot be aggregated; instead each worker exports
its own ``process_resident_memory_bytes``, ``process_virtual_memory_bytes``,
``process_cpu_seconds_total`` (a counter), ``process_open_fds``, ``process_max_fds`` and
``process_start_time_seconds``, labelled ``worker`` (its slot, 0..N-1, stable across
restarts) and ``pid``, refreshed every ``PROCESS_SAMPLE_SECONDS``; they leave the
exposition when the worker exits. The supervisor empties the directory of
prometheus-client's files when it starts and calls
``prometheus_client.multiprocess.mark_process_dead`` for every worker that exits.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from nessen.observability.logs import log_drops
from nessen.observability.process import ProcessStats, read_process_stats
from nessen.observability.sinks import OTHER_METHOD, UNMATCHED, Tags

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of ``http_request_duration_seconds``: 1 ms to 10 s, then +Inf."""
SIZE_BUCKETS = (128, 512, 2048, 8192, 32768, 131072, 524288, 2097152, 8388608)
"""Upper bounds (bytes) of ``http_response_size_bytes``: 128 B to 8 MiB by 4x, then +Inf."""
OVERFLOW_ROUTE = "overflow"
"""The ``route`` label once ``max_routes`` distinct routes have been seen."""
STATES = ("STARTING", "READY", "DEGRADED", "DRAINING", "STOPPING")
"""The values of ``nessen_state``'s ``state`` label."""
LOG_DROPS_NAME = "nessen_log_lines_dropped_total"
"""The counter of log lines dropped (see :mod:`nessen.observability.logs`)."""
LOG_DROPS_HELP = "Log lines dropped because the log destination (stderr) did not keep up or failed."

EXPOSITION_REUSE = 0.25
"""Seconds a rendered exposition is served again before the registry is read anew."""
PROCESS_SAMPLE_SECONDS = 5.0
"""Seconds between refreshes of a worker's ``process_*`` series in multiprocess mode."""
_PROCESS_GAUGES = (
    ("process_resident_memory_bytes", "resident_memory_bytes", "Resident memory size in bytes."),
    ("process_virtual_memory_bytes", "virtual_memory_bytes", "Virtual memory size in bytes."),
    ("process_open_fds", "open_fds", "Number of open file descriptors."),
    ("process_max_fds", "max_fds", "Maximum number of open file descriptors."),
    (
        "process_start_time_seconds",
        "start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
    ),
    ("process_cpu_seconds", "cpu_seconds", "Total user and system CPU time spent in seconds."),
)
"""Each worker's process series: (name, ProcessStats field, help), prometheus-client's own.
``process_cpu_seconds`` is kept as a gauge (per-process values need a ``liveall`` gauge)
and exposed as the counter ``process_cpu_seconds_total``."""

_DURATION_BOUNDS = (*DURATION_BUCKETS, float("inf"))
_SIZE_BOUNDS = (*SIZE_BUCKETS, float("inf"))


REQUESTS = "http_requests_total"
DURATION = "http_request_duration_seconds"
SIZE = "http_response_size_bytes"
REJECTED = "nessen_rejected_requests_total"
WS_MESSAGES = "nessen_websocket_messages_total"
WS_BYTES = "nessen_websocket_bytes_total"
_LATER_COUNTERS = {
    "nessen_store_errors_total": (
        "Shared-store calls that failed (unreachable, timed out or refused), by store and "
        "operation.",
        ("store", "operation"),
    ),
    "nessen_accept_errors_total": (
        "accept() calls that failed for lack of a resource (EMFILE: out of file "
        "descriptors), by errno; accepting pauses while they fail.",
        ("error",),
    ),
    "nessen_websocket_closes_total": (
        "WebSockets ended, by close code (1006: no closing handshake) and the side that closed.",
        ("code", "closed_by"),
    ),
}
"""Counters created by their first count (absent from the exposition until then)."""


class _Pending:
    """Histogram observations of one ``(method, route)`` not yet added to the children."""

    __slots__ = (
        "created",
        "duration",
        "duration_counts",
        "duration_sum",
        "labels",
        "size",
        "size_counts",
        "size_sum",
    )

    def __init__(self, labels: tuple[str, str]) -> None:
        self.labels = labels
        self.created = time.time()  # first observed: the children's ``_created``
        self.duration: Any = None  # the prometheus-client Histogram children, once made
        self.size: Any = None
        self.duration_counts = [0] * len(_DURATION_BOUNDS)
        self.duration_sum = 0.0
        self.size_counts = [0] * len(_SIZE_BOUNDS)
        self.size_sum = 0.0


class _Tally:
    """One counter series (``name`` and label values): its pending count and its child."""

    __slots__ = ("count", "counter", "created", "labels", "name")

    def __init__(self, name: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.labels = labels
        self.created = time.time()  # first counted: the child's ``_created``
        self.counter: Any = None  # the prometheus-client child, once made
        self.count = 0


class _Series(_Tally):
    """One ``(method, route, status)`` of ``http_requests_total``, and its histograms."""

    __slots__ = ("histograms",)

    def __init__(self, labels: tuple[str, str, str], histograms: _Pending) -> None:
        super().__init__(REQUESTS, labels)
        self.histograms = histograms


def _values_shared() -> bool:
    """Whether prometheus-client keeps values in ``PROMETHEUS_MULTIPROC_DIR``'s files.

    As it decided when it was imported, or as it will decide (from the same environment
    variables) when it is.
    """
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        return bool(getattr(values.ValueClass, "_multiprocess", False))
    return "prometheus_multiproc_dir" in os.environ or "PROMETHEUS_MULTIPROC_DIR" in os.environ


def _bind(metric: Any, labels: tuple[str, ...], created: float) -> Any:
    """``metric``'s child for ``labels``, dated (``_created``) from its first count."""
    child = metric.labels(*labels) if labels else metric
    if created < getattr(child, "_created", created):
        child._created = created
    return child


class PrometheusMetrics:
    """The runtime's Prometheus metrics and registry; also a :class:`TelemetrySink`.

    In one process, prometheus-client is imported and the metrics made by the first scrape
    (:meth:`exposition`, :attr:`registry`) or the first user metric: until then what is
    recorded waits here, with the time each series first counted, so a server nobody
    scrapes does not carry the library (about 3 MiB), and the first scrape shows the same
    values and ``_created`` times as if the metrics had existed from the start. With
    several workers (multiprocess mode) they are made at once: the others read them.

    Args:
        allowed_methods: Methods that keep their own ``method`` label.
        multiprocess: Aggregate across processes through ``PROMETHEUS_MULTIPROC_DIR``;
            ``None`` follows prometheus-client, which decides when it is first imported.
        max_routes: Distinct ``route`` label values kept; later ones share ``"overflow"``
            (a guard for middleware that sets ``request.route`` to something unbounded).
        reuse_seconds: How long :meth:`exposition` serves a rendering again; 0 renders on
            every call. The runtime uses ``EXPOSITION_REUSE``.
        worker: In multiprocess mode, the ``worker`` label of this process's ``process_*``
            series (the supervisor's slot number).

    Attributes:
        multiprocess: Whether values are aggregated across processes.
        reuse_seconds: As given; may be changed at any time.
        before_render: Called before each rendering (not for a reused one), e.g. to set
            gauges that are read when scraped; ``None`` for nothing.
    """

    def __init__(
        self,
        allowed_methods: Iterable[str] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"),
        *,
        multiprocess: bool | None = None,
        max_routes: int = 1000,
        reuse_seconds: float = 0.0,
        worker: str = "0",
    ) -> None:
        value_class_is_shared = _values_shared()
        if multiprocess is None:
            multiprocess = value_class_is_shared
        elif multiprocess != value_class_is_shared:
            raise RuntimeError(
                f"multiprocess={multiprocess}, but prometheus-client was imported "
                f"{'with' if value_class_is_shared else 'without'} PROMETHEUS_MULTIPROC_DIR "
                "set; set it before the process starts"
            )
        self.multiprocess = multiprocess
        self.allowed_methods = frozenset(allowed_methods)
        self.max_routes = max_routes
        self._worker = worker
        self._created = time.time()
        self._registry: Any = None  # made by _materialise()
        self._metrics: dict[str, Any] = {}  # the prometheus-client metrics, by name
        self._choose_encoder: Any = None
        self._process_gauges: list[tuple[Any, str]] = []
        self._process_sampled = float("-inf")
        self.reuse_seconds = reuse_seconds
        self.before_render: Callable[[], None] | None = None
        self._rendered: dict[str, tuple[float, bytes]] = {}  # content type -> (when, bytes)
        self._log_drops_counted = 0
        self._gauges: dict[str, float] = {}  # gauge name -> value last set
        self._state_name: str | None = None
        self._state_children: dict[str, Any] = {}
        self._series: dict[tuple[str, str | None, int], _Series] = {}
        self._by_labels: dict[tuple[str, str, str], _Series] = {}
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._counts: dict[tuple[str, tuple[str, ...]], _Tally] = {}  # the other counters
        for direction in ("in", "out"):  # shown from the start, at 0
            self._count(WS_MESSAGES, (direction,), 0)
            self._count(WS_BYTES, (direction,), 0)
        self._routes: set[str] = set()
        self._custom: dict[str, tuple[str, Any, tuple[str, ...]]] = {}
        self._reserved = frozenset(
            {
                "http_requests_total",
                "http_request_duration_seconds",
                "http_response_size_bytes",
                "http_requests_active",
                "nessen_connections_active",
                "nessen_rejected_requests_total",
                "nessen_state",
                "nessen_event_loop_lag_seconds",
                "nessen_store_errors_total",
                "nessen_accept_errors_total",
                "nessen_websockets_active",
                "nessen_websocket_messages_total",
                "nessen_websocket_bytes_total",
                "nessen_websocket_closes_total",
                LOG_DROPS_NAME,
            }
        )
        if multiprocess:
            self._materialise()

    @property
    def registry(self) -> Any:
        """What ``/metrics`` exposes (a ``CollectorRegistry``), made on first use.

        A registry of this instance's own (so several runtimes in one process never
        collide), or in multiprocess mode one holding only the ``MultiProcessCollector``.
        """
        self._materialise()
        return self._registry

    def _materialise(self) -> None:
        """Import prometheus-client, make the metrics and give them what was recorded."""
        if self._registry is not None:
            return
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            GCCollector,
            Histogram,
            PlatformCollector,
            ProcessCollector,
        )
        from prometheus_client.exposition import choose_encoder

        if _values_shared() != self.multiprocess:
            raise RuntimeError(
                f"multiprocess={self.multiprocess}, but PROMETHEUS_MULTIPROC_DIR changed "
                "before prometheus-client was imported; set it before the process starts"
            )
        registry = CollectorRegistry(auto_describe=True)
        own: CollectorRegistry | None = None if self.multiprocess else registry
        if self.multiprocess:
            from nessen.observability.multiprocess import MultiProcessView

            registry.register(MultiProcessView())
            # Each series is created (in the worker's file, at 0) and given its first value
            # at once, read before any is created: another worker's scrape can find a 0 only
            # in the instant between those two writes, not for a whole sampling interval.
            stats = read_process_stats()
            for name, attribute, help_text in _PROCESS_GAUGES:
                gauge = Gauge(
                    name, help_text, ("worker",), registry=None, multiprocess_mode="liveall"
                )
                child = gauge.labels(self._worker)
                if stats is not None:
                    child.set(getattr(stats, attribute))
                self._process_gauges.append((child, attribute))
            self._process_sampled = time.monotonic()
        else:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

        metrics = self._metrics
        metrics[REQUESTS] = Counter(
            REQUESTS,
            "HTTP responses sent, by method, route template and status code.",
            ("method", "route", "status"),
            registry=own,
        )
        metrics[DURATION] = Histogram(
            DURATION,
            "Seconds from a request's first byte to its response written.",
            ("method", "route"),
            buckets=DURATION_BUCKETS,
            registry=own,
        )
        metrics[SIZE] = Histogram(
            SIZE,
            "Content bytes of HTTP responses.",
            ("method", "route"),
            buckets=SIZE_BUCKETS,
            registry=own,
        )
        for name, help_text in (
            ("http_requests_active", "Requests being handled now."),
            ("nessen_connections_active", "Open client connections."),
            (
                "nessen_websockets_active",
                "Open WebSockets (also counted in nessen_connections_active).",
            ),
        ):
            metrics[name] = Gauge(name, help_text, registry=own, multiprocess_mode="livesum")
        metrics[WS_MESSAGES] = Counter(
            WS_MESSAGES,
            "WebSocket messages, by direction (in: from clients, out: to clients).",
            ("direction",),
            registry=own,
        )
        metrics[WS_BYTES] = Counter(
            WS_BYTES,
            "WebSocket message payload bytes (after decompression), by direction.",
            ("direction",),
            registry=own,
        )
        metrics[REJECTED] = Counter(
            REJECTED,
            "Requests or connections the server refused on its own, by reason.",
            ("reason",),
            registry=own,
        )
        state = Gauge(
            "nessen_state",
            "1 for the lifecycle state the runtime is in, 0 for the others "
            "(with several workers: how many are in each state).",
            ("state",),
            registry=own,
            multiprocess_mode="livesum",
        )
        metrics["nessen_event_loop_lag_seconds"] = Gauge(
            "nessen_event_loop_lag_seconds",
            "How late the runtime's once-a-second tick ran: time the event loop was blocked.",
            registry=own,
            multiprocess_mode="livemax",
        )
        metrics[LOG_DROPS_NAME] = _bind(
            Counter(LOG_DROPS_NAME.removesuffix("_total"), LOG_DROPS_HELP, registry=own),
            (),
            self._created,
        )
        self._state_children = {name: state.labels(name) for name in STATES}
        self._choose_encoder = choose_encoder
        self._registry = registry
        # What was recorded before: the gauges' values now, the counts at the next flush.
        for name, value in self._gauges.items():
            metrics[name].set(value)
        if self._state_name is not None:
            self.set_state(self._state_name)
        for pending in self._pending.values():
            self._bind_histograms(pending)
        for series in self._by_labels.values():
            series.counter = _bind(metrics[REQUESTS], series.labels, series.created)

    def _counter(self, name: str) -> Any:
        """The counter ``name``, made now if it is one of ``_LATER_COUNTERS``."""
        counter = self._metrics.get(name)
        if counter is None:
            from prometheus_client import Counter

            help_text, label_names = _LATER_COUNTERS[name]
            counter = self._metrics[name] = Counter(
                name, help_text, label_names, registry=None if self.multiprocess else self._registry
            )
        return counter

    def _bind_histograms(self, pending: _Pending) -> None:
        duration = _bind(self._metrics[DURATION], pending.labels, pending.created)
        if not (hasattr(duration, "_buckets") and hasattr(duration, "_sum")):
            raise RuntimeError(  # pragma: no cover - guards a prometheus-client upgrade
                "this prometheus-client's Histogram has no _buckets/_sum, which "
                "nessen's batched recording needs; pin prometheus-client below it"
            )
        pending.duration = duration
        pending.size = _bind(self._metrics[SIZE], pending.labels, pending.created)

    # --- the hot path -----------------------------------------------------------------

    def request_finished(
        self, method: str, route: str | None, status: int, duration: float, content_bytes: int
    ) -> None:
        """Count one response (called once per request, on the event loop).

        Args:
            method: The request method as received.
            route: The matched route template, or ``None``.
            status: The status code sent.
            duration: Seconds from the request's first byte to the response written.
            content_bytes: Content bytes sent.
        """
        series = self._series.get((method, route, status))
        if series is None:
            series = self._new_series(method, route, status)
        series.count += 1
        pending = series.histograms
        pending.duration_counts[bisect_left(DURATION_BUCKETS, duration)] += 1
        pending.duration_sum += duration
        pending.size_counts[bisect_left(SIZE_BUCKETS, content_bytes)] += 1
        pending.size_sum += content_bytes

    def _new_series(self, method: str, route: str | None, status: int) -> _Series:
        label_method = self.label_method(method)
        label_route = self.label_route(route)
        labels = (label_method, label_route, str(status))
        series = self._by_labels.get(labels)
        if series is None:
            pending = self._pending.get(labels[:2])
            if pending is None:
                pending = self._pending[labels[:2]] = _Pending(labels[:2])
                if self._registry is not None:
                    self._bind_histograms(pending)
            series = self._by_labels[labels] = _Series(labels, pending)
            if self._registry is not None:
                series.counter = _bind(self._metrics[REQUESTS], labels, series.created)
        if label_method == method and (label_route == route or route is None):
            # Only bounded keys are cached by raw value; others go through here each time.
            self._series[(method, route, status)] = series
        return series

    def label_method(self, method: str) -> str:
        """The ``method`` label for ``method``: itself if allowed, else ``"OTHER"``."""
        return method if method in self.allowed_methods else OTHER_METHOD

    def label_route(self, route: str | None) -> str:
        """The ``route`` label for a route template (``None``: ``"unmatched"``)."""
        if route is None:
            return UNMATCHED
        if route in self._routes:
            return route
        if len(self._routes) >= self.max_routes:
            return OVERFLOW_ROUTE
        self._routes.add(route)
        return route

    def flush(self) -> None:
        """Add the counts accumulated since the last flush to the prometheus-client metrics.

        Before the metrics are made (one process, not scraped yet) the counts keep waiting.
        """
        if self._registry is None:
            return
        dropped, _ = log_drops()
        if dropped > self._log_drops_counted:
            self._metrics[LOG_DROPS_NAME].inc(dropped - self._log_drops_counted)
            self._log_drops_counted = dropped
        for series in self._by_labels.values():
            if series.count:
                series.counter.inc(series.count)
                series.count = 0
        for pending in self._pending.values():
            _flush_histogram(pending.duration, pending.duration_counts, pending.duration_sum)
            pending.duration_sum = 0.0
            _flush_histogram(pending.size, pending.size_counts, pending.size_sum)
            pending.size_sum = 0.0
        for tally in self._counts.values():
            counter = tally.counter
            if counter is None:
                counter = tally.counter = _bind(
                    self._counter(tally.name), tally.labels, tally.created
                )
            if tally.count:
                counter.inc(tally.count)
                tally.count = 0

    # --- the rest, off the hot path -------------------------------------------------------

    def _count(self, name: str, labels: tuple[str, ...], amount: int = 1) -> None:
        """Add ``amount`` to the series ``labels`` of the counter ``name`` (at the next flush)."""
        tally = self._counts.get((name, labels))
        if tally is None:
            tally = self._counts[(name, labels)] = _Tally(name, labels)
        tally.count += amount

    def _set(self, name: str, value: float) -> None:
        """Set the gauge ``name`` (kept until the metrics are made)."""
        self._gauges[name] = value
        if self._registry is not None:
            self._metrics[name].set(value)

    def request_rejected(
        self, reason: str, status: int, method: str | None, route: str | None
    ) -> None:
        """Count a refusal by ``reason``, and as a response when a status was sent.

        Args:
            reason: The server's tag, e.g. ``"header_too_large"``.
            status: Status code sent, 0 when the connection was closed without one.
            method: The request's method, ``None`` if its request line was not parsed.
            route: The matched route, normally ``None`` (refused before routing).
        """
        self._count(REJECTED, (reason,))
        if status:
            labels = (self.label_method(method or ""), self.label_route(route), str(status))
            self._count(REQUESTS, labels)

    def store_error(self, store: str, operation: str) -> None:
        """Count one failed store call (``nessen_store_errors_total``).

        Args:
            store: The store's kind, e.g. ``"redis"``.
            operation: The call that failed: take, get, set, delete or ping.
        """
        self._count("nessen_store_errors_total", (store, operation))

    def accept_failed(self, error: str) -> None:
        """Count one ``accept()`` that failed for lack of a resource.

        Args:
            error: The errno name, e.g. ``"EMFILE"``.
        """
        self._count("nessen_accept_errors_total", (error,))

    def set_active(self, requests: int, connections: int, websockets: int = 0) -> None:
        """Set the gauges of requests, connections (WebSockets included) and WebSockets."""
        self._set("http_requests_active", requests)
        self._set("nessen_connections_active", connections)
        self._set("nessen_websockets_active", websockets)

    def websocket_traffic(
        self, messages_in: int, bytes_in: int, messages_out: int, bytes_out: int
    ) -> None:
        """Add to ``nessen_websocket_messages_total`` and ``nessen_websocket_bytes_total``."""
        if messages_in:
            self._count(WS_MESSAGES, ("in",), messages_in)
            self._count(WS_BYTES, ("in",), bytes_in)
        if messages_out:
            self._count(WS_MESSAGES, ("out",), messages_out)
            self._count(WS_BYTES, ("out",), bytes_out)

    def websocket_closed(self, code: int, closed_by: str) -> None:
        """Count one ended WebSocket in ``nessen_websocket_closes_total``.

        Args:
            code: Its close code; codes outside 1000..1015 are labelled by range
                (``3xxx``, ``4xxx``, ``other``), so a client cannot make series at will.
            closed_by: ``client`` or ``server``.
        """
        if 1000 <= code <= 1015:
            label = str(code)
        elif 3000 <= code <= 4999:
            label = f"{code // 1000}xxx"
        else:
            label = "other"
        self._count("nessen_websocket_closes_total", (label, closed_by))

    def set_state(self, state: str) -> None:
        """Make ``state`` the one ``nessen_state`` series at 1."""
        self._state_name = state
        for name, child in self._state_children.items():
            child.set(1 if name == state else 0)

    def set_event_loop_lag(self, seconds: float) -> None:
        """Set ``nessen_event_loop_lag_seconds``."""
        self._set("nessen_event_loop_lag_seconds", seconds)

    def sample_process(self, now: float | None = None) -> ProcessStats | None:
        """Refresh this worker's ``process_*`` series (multiprocess mode; else a no-op).

        Called every second; reads ``/proc`` at most once per ``PROCESS_SAMPLE_SECONDS``.

        Args:
            now: ``time.monotonic()``, read when ``None``.

        Returns:
            The values read, or ``None`` when nothing was read.
        """
        if not self._process_gauges:
            return None
        now = time.monotonic() if now is None else now
        if now - self._process_sampled < PROCESS_SAMPLE_SECONDS:
            return None
        self._process_sampled = now
        stats = read_process_stats()
        if stats is not None:
            for child, attribute in self._process_gauges:
                child.set(getattr(stats, attribute))
        return stats

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry rendered for a scrape: reused, or flushed and rendered now.

        A rendering in the same format less than ``reuse_seconds`` old is returned as it
        is; otherwise ``before_render`` runs, the pending counts are flushed and the
        registry is rendered (and kept for the next scrapes).

        Args:
            accept: The scraper's Accept field value; ``application/openmetrics-text``
                gets OpenMetrics, anything else the Prometheus text format 0.0.4.

        Returns:
            ``(content, content type)``.
        """
        self._materialise()
        encoder, content_type = self._choose_encoder(accept)
        now = time.monotonic()
        kept = self._rendered.get(content_type)
        if kept is not None and now - kept[0] < self.reuse_seconds:
            return kept[1], content_type
        if self.before_render is not None:
            self.before_render()
        self.flush()
        content: bytes = encoder(self._registry)
        self._rendered[content_type] = (now, content)
        return content, content_type

    # --- TelemetrySink: the user's own metrics ---------------------------------------------

    def increment_counter(self, name: str, value: float = 1, tags: Tags | None = None) -> None:
        """Add ``value`` to the counter ``name`` (created on first use, labelled by ``tags``).

        Raises:
            ValueError: ``name`` is one of the runtime's own metrics, or was first used
                with other tag names or as another kind of metric, or is not a valid
                Prometheus name.
        """
        self._child("counter", name, tags).inc(value)

    def record_timing(self, name: str, seconds: float, tags: Tags | None = None) -> None:
        """Observe ``seconds`` in the histogram ``name`` (buckets 1 ms .. 10 s).

        Raises:
            ValueError: As for :meth:`increment_counter`.
        """
        self._child("histogram", name, tags).observe(seconds)

    def record_gauge(self, name: str, value: float, tags: Tags | None = None) -> None:
        """Set the gauge ``name`` (summed over live workers in multiprocess mode).

        Raises:
            ValueError: As for :meth:`increment_counter`.
        """
        self._child("gauge", name, tags).set(value)

    def _child(self, kind: str, name: str, tags: Tags | None) -> Any:
        if name in self._reserved:
            raise ValueError(f"{name!r} is one of the runtime's own metrics")
        self._materialise()
        names = tuple(sorted(tags)) if tags else ()
        known = self._custom.get(name)
        if known is None:
            known = self._custom[name] = (kind, self._create(kind, name, names), names)
        known_kind, metric, label_names = known
        if kind != known_kind:
            raise ValueError(f"{name!r} is a {known_kind}, not a {kind}")
        if names != label_names:
            raise ValueError(f"{name!r} has tags {list(label_names)}, not {list(names)}")
        return metric.labels(*(tags[n] for n in names)) if tags else metric

    def _create(self, kind: str, name: str, labels: tuple[str, ...]) -> Any:
        from prometheus_client import Counter, Gauge, Histogram

        own = None if self.multiprocess else self._registry
        help_text = f"{name} (recorded through the telemetry sink API)"
        try:
            if kind == "counter":
                return Counter(name, help_text, labels, registry=own)
            if kind == "histogram":
                return Histogram(name, help_text, labels, buckets=DURATION_BUCKETS, registry=own)
            return Gauge(name, help_text, labels, registry=own, multiprocess_mode="livesum")
        except ValueError as exc:  # duplicated or invalid name
            raise ValueError(f"cannot create {kind} {name!r}: {exc}") from exc


def _flush_histogram(child: Any, counts: list[int], total: float) -> None:
    """Add per-bucket ``counts`` (not cumulative) and their ``total`` to a Histogram child."""
    added = False
    buckets = child._buckets
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)
            counts[index] = 0
            added = True
    if added:
        child._sum.inc(total)
