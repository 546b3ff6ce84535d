"""The workers' aggregate behind ``/metrics`` in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).

Imported by :class:`~nessen.observability.metrics.PrometheusMetrics` only when several
workers share their values through prometheus-client's files (see that module).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector


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


class MultiProcessView(Collector):
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
        """Every worker's metrics, merged."""
        for family in self._inner.collect():
            if family.name == "process_cpu_seconds" and family.type == "gauge":
                counter = Metric(family.name, family.documentation, "counter")
                counter.samples = [
                    sample._replace(name="process_cpu_seconds_total") for sample in family.samples
                ]
                family = counter
            yield family
