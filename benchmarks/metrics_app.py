"""Apps for benchmarks/metrics_overhead.sh: one runtime with Prometheus metrics on or off.

- ``on``: the default, nessen's batched recording (plain arithmetic per request, added to
  prometheus-client on each scrape and every second).
- ``off``: ``Runtime(metrics=False)``.
- ``direct``: each request goes straight into prometheus-client (``inc``/``observe`` on
  cached label children, one lock per value), to show what batching saves.
"""

from __future__ import annotations

from typing import Any

from nessen import Runtime
from nessen.observability import metrics as prometheus_metrics

on = Runtime()
off = Runtime(metrics=False)
direct = Runtime()


class _Direct(prometheus_metrics.PrometheusMetrics):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: dict[tuple[str, str | None, int], tuple[Any, Any, Any]] = {}

    def request_finished(
        self, method: str, route: str | None, status: int, duration: float, content_bytes: int
    ) -> None:
        children = self._children.get((method, route, status))
        if children is None:
            labels = (self.label_method(method), self.label_route(route))
            children = self._children[(method, route, status)] = (
                self.requests.labels(*labels, str(status)),
                self.duration.labels(*labels),
                self.size.labels(*labels),
            )
        counter, durations, sizes = children
        counter.inc()
        durations.observe(duration)
        sizes.observe(content_bytes)


@direct.on_startup
async def _record_directly() -> None:
    # Runtime.start imports PrometheusMetrics after the startup hooks; this process only.
    prometheus_metrics.PrometheusMetrics = _Direct  # type: ignore[misc]
