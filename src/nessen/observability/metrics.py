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

import glob
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Metric,
    PlatformCollector,
    ProcessCollector,
    values,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

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


class _MultiProcessCollector(MultiProcessCollector):
    """prometheus-client's collector, skipping files another process has not yet sized.

    ``MmapedDict`` creates its file at 0 bytes and sizes it a moment later; reading it in
    that moment raises ``struct.error`` and fails the whole merge (prometheus/client_python
    #1199, open). Registering the collector reads every file, so a worker starting next
    to another crashed at startup, and a scrape could fail the same way.
    """

    def collect(self) -> Iterable[Any]:
        """The merged metrics of every worker's files that hold a header."""
        files = [
            name
            for name in glob.glob(os.path.join(self._path, "*.db"))
            if _file_size(name) >= _HEADER_BYTES
        ]
        return self.merge(files, accumulate=True)  # type: ignore[no-untyped-call,no-any-return]


_HEADER_BYTES = 4
"""An ``MmapedDict`` file starts with its used size, a 4-byte integer."""


def _file_size(name: str) -> int:
    try:
        return os.path.getsize(name)
    except OSError:  # a dead worker's file removed meanwhile
        return 0


class _Pending:
    """Histogram observations of one ``(method, route)`` not yet added to the children."""

    __slots__ = ("duration", "duration_counts", "duration_sum", "size", "size_counts", "size_sum")

    def __init__(self, duration: Any, size: Any) -> None:
        self.duration = duration  # the prometheus-client Histogram children
        self.size = size
        self.duration_counts = [0] * len(_DURATION_BOUNDS)
        self.duration_sum = 0.0
        self.size_counts = [0] * len(_SIZE_BOUNDS)
        self.size_sum = 0.0


class _Series:
    """One ``(method, route, status)``: its counter child and its pending count."""

    __slots__ = ("count", "counter", "histograms")

    def __init__(self, counter: Any, histograms: _Pending) -> None:
        self.counter = counter
        self.count = 0
        self.histograms = histograms


class PrometheusMetrics:
    """The runtime's Prometheus metrics and registry; also a :class:`TelemetrySink`.

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
        registry: What ``/metrics`` exposes: a registry of this instance's own (so several
            runtimes in one process never collide), or in multiprocess mode one holding
            only the ``MultiProcessCollector``.
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
        value_class_is_shared = bool(getattr(values.ValueClass, "_multiprocess", False))
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
        self.registry = CollectorRegistry(auto_describe=True)
        own: CollectorRegistry | None = None if multiprocess else self.registry
        self._process_gauges: list[tuple[Any, str]] = []
        self._process_sampled = float("-inf")
        if multiprocess:
            self.registry.register(_MultiProcessView())
            # Each series is created (in the worker's file, at 0) and given its first value
            # at once, read before any is created: another worker's scrape can find a 0 only
            # in the instant between those two writes, not for a whole sampling interval.
            stats = read_process_stats()
            for name, attribute, help_text in _PROCESS_GAUGES:
                gauge = Gauge(
                    name, help_text, ("worker",), registry=None, multiprocess_mode="liveall"
                )
                child = gauge.labels(worker)
                if stats is not None:
                    child.set(getattr(stats, attribute))
                self._process_gauges.append((child, attribute))
            self._process_sampled = time.monotonic()
        else:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

        self.requests = Counter(
            "http_requests_total",
            "HTTP responses sent, by method, route template and status code.",
            ("method", "route", "status"),
            registry=own,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Seconds from a request's first byte to its response written.",
            ("method", "route"),
            buckets=DURATION_BUCKETS,
            registry=own,
        )
        self.size = Histogram(
            "http_response_size_bytes",
            "Content bytes of HTTP responses.",
            ("method", "route"),
            buckets=SIZE_BUCKETS,
            registry=own,
        )
        self.active = Gauge(
            "http_requests_active",
            "Requests being handled now.",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.connections = Gauge(
            "nessen_connections_active",
            "Open client connections.",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.websockets = Gauge(
            "nessen_websockets_active",
            "Open WebSockets (also counted in nessen_connections_active).",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.websocket_messages = Counter(
            "nessen_websocket_messages_total",
            "WebSocket messages, by direction (in: from clients, out: to clients).",
            ("direction",),
            registry=own,
        )
        self.websocket_bytes = Counter(
            "nessen_websocket_bytes_total",
            "WebSocket message payload bytes (after decompression), by direction.",
            ("direction",),
            registry=own,
        )
        self._websocket_closes: Counter | None = None  # created by the first close
        self._ws_messages = (
            self.websocket_messages.labels("in"),
            self.websocket_messages.labels("out"),
        )
        self._ws_bytes = (self.websocket_bytes.labels("in"), self.websocket_bytes.labels("out"))
        self.rejected = Counter(
            "nessen_rejected_requests_total",
            "Requests or connections the server refused on its own, by reason.",
            ("reason",),
            registry=own,
        )
        self.state = Gauge(
            "nessen_state",
            "1 for the lifecycle state the runtime is in, 0 for the others "
            "(with several workers: how many are in each state).",
            ("state",),
            registry=own,
            multiprocess_mode="livesum",
        )
        self.event_loop_lag = Gauge(
            "nessen_event_loop_lag_seconds",
            "How late the runtime's once-a-second tick ran: time the event loop was blocked.",
            registry=own,
            multiprocess_mode="livemax",
        )
        self.reuse_seconds = reuse_seconds
        self.before_render: Callable[[], None] | None = None
        self._rendered: dict[str, tuple[float, bytes]] = {}  # content type -> (when, bytes)
        self.log_lines_dropped = Counter(
            LOG_DROPS_NAME.removesuffix("_total"), LOG_DROPS_HELP, registry=own
        )
        self._log_drops_counted = 0
        self._store_errors: Counter | None = None  # created by the first store_error()
        self._accept_errors: Counter | None = None  # created by the first accept_failed()
        self._state_children = {name: self.state.labels(name) for name in STATES}
        self._series: dict[tuple[str, str | None, int], _Series] = {}
        self._by_labels: dict[tuple[str, str, str], _Series] = {}
        self._pending: dict[tuple[str, str], _Pending] = {}
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
                duration = self.duration.labels(label_method, label_route)
                if not (hasattr(duration, "_buckets") and hasattr(duration, "_sum")):
                    raise RuntimeError(  # pragma: no cover - guards a prometheus-client upgrade
                        "this prometheus-client's Histogram has no _buckets/_sum, which "
                        "nessen's batched recording needs; pin prometheus-client below it"
                    )
                pending = _Pending(duration, self.size.labels(label_method, label_route))
                self._pending[labels[:2]] = pending
            series = _Series(self.requests.labels(*labels), pending)
            self._by_labels[labels] = series
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
        """Add the counts accumulated since the last flush to the prometheus-client metrics."""
        dropped, _ = log_drops()
        if dropped > self._log_drops_counted:
            self.log_lines_dropped.inc(dropped - self._log_drops_counted)
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

    # --- the rest, off the hot path -------------------------------------------------------

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
        self.rejected.labels(reason).inc()
        if status:
            labels = (self.label_method(method or ""), self.label_route(route), str(status))
            self.requests.labels(*labels).inc()

    def store_error(self, store: str, operation: str) -> None:
        """Count one failed store call (``nessen_store_errors_total``).

        Args:
            store: The store's kind, e.g. ``"redis"``.
            operation: The call that failed: take, get, set, delete or ping.
        """
        counter = self._store_errors
        if counter is None:
            counter = self._store_errors = Counter(
                "nessen_store_errors_total",
                "Shared-store calls that failed (unreachable, timed out or refused), by "
                "store and operation.",
                ("store", "operation"),
                registry=None if self.multiprocess else self.registry,
            )
        counter.labels(store, operation).inc()

    def accept_failed(self, error: str) -> None:
        """Count one ``accept()`` that failed for lack of a resource.

        Args:
            error: The errno name, e.g. ``"EMFILE"``.
        """
        counter = self._accept_errors
        if counter is None:
            counter = self._accept_errors = Counter(
                "nessen_accept_errors_total",
                "accept() calls that failed for lack of a resource (EMFILE: out of file "
                "descriptors), by errno; accepting pauses while they fail.",
                ("error",),
                registry=None if self.multiprocess else self.registry,
            )
        counter.labels(error).inc()

    def set_active(self, requests: int, connections: int, websockets: int = 0) -> None:
        """Set the gauges of requests, connections (WebSockets included) and WebSockets."""
        self.active.set(requests)
        self.connections.set(connections)
        self.websockets.set(websockets)

    def websocket_traffic(
        self, messages_in: int, bytes_in: int, messages_out: int, bytes_out: int
    ) -> None:
        """Add to ``nessen_websocket_messages_total`` and ``nessen_websocket_bytes_total``."""
        messages, payload = self._ws_messages, self._ws_bytes
        if messages_in:
            messages[0].inc(messages_in)
            payload[0].inc(bytes_in)
        if messages_out:
            messages[1].inc(messages_out)
            payload[1].inc(bytes_out)

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
        counter = self._websocket_closes
        if counter is None:
            counter = self._websocket_closes = Counter(
                "nessen_websocket_closes_total",
                "WebSockets ended, by close code (1006: no closing handshake) and the side "
                "that closed.",
                ("code", "closed_by"),
                registry=None if self.multiprocess else self.registry,
            )
        counter.labels(label, closed_by).inc()

    def set_state(self, state: str) -> None:
        """Make ``state`` the one ``nessen_state`` series at 1."""
        for name, child in self._state_children.items():
            child.set(1 if name == state else 0)

    def set_event_loop_lag(self, seconds: float) -> None:
        """Set ``nessen_event_loop_lag_seconds``."""
        self.event_loop_lag.set(seconds)

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
        encoder, content_type = choose_encoder(accept)
        now = time.monotonic()
        kept = self._rendered.get(content_type)
        if kept is not None and now - kept[0] < self.reuse_seconds:
            return kept[1], content_type
        if self.before_render is not None:
            self.before_render()
        self.flush()
        content: bytes = encoder(self.registry)
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
        own = None if self.multiprocess else self.registry
        help_text = f"{name} (recorded through the telemetry sink API)"
        try:
            if kind == "counter":
                return Counter(name, help_text, labels, registry=own)
            if kind == "histogram":
                return Histogram(name, help_text, labels, buckets=DURATION_BUCKETS, registry=own)
            return Gauge(name, help_text, labels, registry=own, multiprocess_mode="livesum")
        except ValueError as exc:  # duplicated or invalid name
            raise ValueError(f"cannot create {kind} {name!r}: {exc}") from exc


class _MultiProcessView(Collector):
    """prometheus-client's ``MultiProcessCollector``, the CPU time shown as a counter.

    Files another process has not sized yet are skipped (see :class:`_MultiProcessCollector`).

    Each worker keeps its CPU time in a ``liveall`` gauge (the only kind that stays per
    process and leaves with it), exposed as what it is, ``process_cpu_seconds_total``.
    """

    def __init__(self) -> None:
        self._inner = _MultiProcessCollector(None)  # type: ignore[no-untyped-call]

    def describe(self) -> Iterable[Metric]:
        """Nothing: the names are only known by reading every worker's file, at a scrape."""
        return []

    def collect(self) -> Iterable[Metric]:
        for family in self._inner.collect():
            if family.name == "process_cpu_seconds" and family.type == "gauge":
                counter = Metric(family.name, family.documentation, "counter")
                counter.samples = [
                    sample._replace(name="process_cpu_seconds_total") for sample in family.samples
                ]
                family = counter
            yield family


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
