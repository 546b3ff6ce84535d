"""Telemetry sinks: where counters, timings and gauges go besides ``/metrics``.

A :class:`TelemetrySink` is any object with ``increment_counter``, ``record_timing`` and
``record_gauge``. The runtime's Prometheus registry is the default sink; add others with
``runtime.add_sink(sink)`` to forward the same measurements to StatsD, OpenTelemetry or a
log. What the runtime sends every sink:

==========================================  ===============  ============================
name                                        call             tags
==========================================  ===============  ============================
``http_requests_total``                     increment by 1   ``method``, ``route``, ``status``
``http_request_duration_seconds``           timing, seconds  ``method``, ``route``, ``status``
``nessen_rejected_requests_total``          increment by 1   ``reason``
``http_requests_active``                    gauge, each 1 s  (none)
``nessen_connections_active``               gauge, each 1 s  (none)
``nessen_event_loop_lag_seconds``           gauge, each 1 s  (none)
==========================================  ===============  ============================

Tag values are bounded as in ``/metrics``: ``route`` is the route template or
``"unmatched"``, ``method`` is ``"OTHER"`` outside ``allowed_methods``. Sink calls run on
the event loop, once per request: they must be quick and should not block (the StatsD sink
sends one UDP datagram and never waits). An exception from a sink is logged (once per sink
and method) and swallowed, so a broken sink cannot break a request.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Protocol, runtime_checkable

logger = logging.getLogger(__name__)

Tags = Mapping[str, str]
"""Metric dimensions, e.g. ``{"method": "GET", "route": "/users/{id}", "status": "200"}``."""
UNMATCHED = "unmatched"
"""The ``route`` label of requests no route matched (404, 405, refused before routing)."""
OTHER_METHOD = "OTHER"
"""The ``method`` label of methods outside ``allowed_methods``."""


@runtime_checkable
class TelemetrySink(Protocol):
    """Receives measurements; implement the three methods to forward them elsewhere."""

    def increment_counter(self, name: str, value: float = 1, tags: Tags | None = None) -> None:
        """Add ``value`` (>= 0) to the counter ``name``."""

    def record_timing(self, name: str, seconds: float, tags: Tags | None = None) -> None:
        """Record one duration of ``seconds`` under ``name``."""

    def record_gauge(self, name: str, value: float, tags: Tags | None = None) -> None:
        """Set the gauge ``name`` to ``value``."""


class Telemetry:
    """Fans measurements out to several sinks; itself a :class:`TelemetrySink`.

    ``runtime.telemetry`` is one: call it from handlers to count your own events in every
    sink at once (``runtime.telemetry.increment_counter("orders_total", tags={...})``).

    Args:
        sinks: The sinks to start with.
    """

    def __init__(self, sinks: Iterable[TelemetrySink] = ()) -> None:
        self.sinks: list[TelemetrySink] = list(sinks)
        self._failed: set[tuple[int, str]] = set()

    def add(self, sink: TelemetrySink) -> None:
        """Send every later measurement to ``sink`` too.

        Raises:
            TypeError: ``sink`` lacks one of the three methods.
        """
        if not isinstance(sink, TelemetrySink):
            raise TypeError(
                f"{type(sink).__name__} is not a TelemetrySink: it needs increment_counter, "
                "record_timing and record_gauge"
            )
        self.sinks.append(sink)

    def remove(self, sink: TelemetrySink) -> None:
        """Stop sending to ``sink``.

        Raises:
            ValueError: ``sink`` was not added.
        """
        self.sinks.remove(sink)

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def increment_counter(self, name: str, value: float = 1, tags: Tags | None = None) -> None:
        """Add ``value`` to the counter ``name`` in every sink."""
        for sink in self.sinks:
            try:
                sink.increment_counter(name, value, tags)
            except Exception:
                self._log_failure(sink, "increment_counter")

    def record_timing(self, name: str, seconds: float, tags: Tags | None = None) -> None:
        """Record a duration of ``seconds`` under ``name`` in every sink."""
        for sink in self.sinks:
            try:
                sink.record_timing(name, seconds, tags)
            except Exception:
                self._log_failure(sink, "record_timing")

    def record_gauge(self, name: str, value: float, tags: Tags | None = None) -> None:
        """Set the gauge ``name`` to ``value`` in every sink."""
        for sink in self.sinks:
            try:
                sink.record_gauge(name, value, tags)
            except Exception:
                self._log_failure(sink, "record_gauge")

    def _log_failure(self, sink: TelemetrySink, method: str) -> None:
        key = (id(sink), method)
        if key in self._failed:
            return
        self._failed.add(key)
        logger.exception(
            "telemetry sink %s.%s failed (logged once; later failures are dropped quietly)",
            type(sink).__name__,
            method,
        )


class StatsdSink:
    """Sends measurements to a StatsD server over UDP, one datagram each; stdlib only.

    Lines follow the StatsD text protocol, with tags in the DogStatsD form that Datadog,
    Telegraf and statsd_exporter accept (``tag_format=None`` leaves them out)::

        shop.http_requests_total:1|c|#method:GET,route:/users/{id},status:200
        shop.http_request_duration_seconds:12.5|ms|#method:GET,route:/users/{id},status:200
        shop.http_requests_active:3|g

    Timings are sent in milliseconds, as StatsD expects. A negative gauge is sent as
    ``0`` then the value, because a leading ``-`` alone means "decrement" in StatsD.
    Sending never blocks: a datagram the kernel will not take at once is dropped and
    counted in :attr:`dropped`.

    Args:
        host: StatsD host; resolved once, here.
        port: StatsD UDP port.
        prefix: Prepended to every name, e.g. ``"shop."``.
        tag_format: ``"dogstatsd"`` or ``None``.

    Raises:
        OSError: ``host`` cannot be resolved.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8125,
        *,
        prefix: str = "",
        tag_format: str | None = "dogstatsd",
    ) -> None:
        if tag_format not in ("dogstatsd", None):
            raise ValueError(f"tag_format={tag_format!r}: must be 'dogstatsd' or None")
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self.address = address
        self.prefix = prefix
        self.tag_format = tag_format
        self.dropped = 0
        """Datagrams not sent (kernel buffer full, network unreachable)."""
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def increment_counter(self, name: str, value: float = 1, tags: Tags | None = None) -> None:
        """Send ``name:value|c``."""
        self._send(name, _number(value), "c", tags)

    def record_timing(self, name: str, seconds: float, tags: Tags | None = None) -> None:
        """Send ``name:<milliseconds>|ms``."""
        self._send(name, _number(seconds * 1000.0), "ms", tags)

    def record_gauge(self, name: str, value: float, tags: Tags | None = None) -> None:
        """Send ``name:value|g`` (preceded by ``name:0|g`` when ``value`` is negative)."""
        if value < 0:
            self._send(name, "0", "g", tags)
        self._send(name, _number(value), "g", tags)

    def _send(self, name: str, value: str, kind: str, tags: Tags | None) -> None:
        line = f"{self.prefix}{_clean(name)}:{value}|{kind}"
        if tags and self.tag_format == "dogstatsd":
            line += "|#" + ",".join(f"{_clean(k)}:{_clean(v)}" for k, v in tags.items())
        try:
            self._sock.sendto(line.encode(), self.address)
        except OSError:
            self.dropped += 1

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> StatsdSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _number(value: float) -> str:
    """Format a metric value without an exponent or a trailing ``.0``: ``3``, ``12.5``."""
    if not math.isfinite(value):
        raise ValueError(f"metric value {value!r} is not a finite number")
    if value == int(value):
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


_UNSAFE = str.maketrans({c: "_" for c in ":|#,@\n\r\x00"})


def _clean(text: str) -> str:
    """Replace the StatsD separators (``: | # , @`` and line breaks) with ``_``."""
    return text.translate(_UNSAFE)
