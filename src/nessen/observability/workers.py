"""Every worker's figures in any worker's ``/api/health``: snapshots in a shared directory.

With ``WORKERS`` > 1 each worker process counts its own requests, and a poll of
``/api/health`` reaches one of them. So that any worker can answer for all:

- the supervisor creates a directory before it starts the first worker and removes it,
  with everything in it, when it exits (as the metrics directory it makes);
- each worker writes its figures (what ``/api/health`` says of it, with its latency
  histogram) to ``<directory>/<pid>.json`` about once a second, from its event loop's
  ticker, never from a request: one or two KiB to a temporary file, then a rename, so a
  reader sees the previous snapshot or the new one, never part of one;
- the worker that answers a poll reads the others' files: a handful of small files per
  poll. A file whose process has exited is left out and removed; one not rewritten for
  :data:`STALE_SECONDS` (a worker whose event loop is stuck, or a pid another process
  reuses) is left out, and removed once :data:`FORGET_SECONDS` old.

Nothing here runs on the serving path but the poll that asks for it; a file that cannot
be written or read is skipped (the directory is gone while the service stops).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from nessen.observability.stats import merged_percentiles

STALE_SECONDS = 5.0
"""A snapshot older than this is left out: its worker has not written for five intervals."""
FORGET_SECONDS = 60.0
"""A snapshot older than this is removed by the worker that reads it."""
WRITE_INTERVAL = 1.0
"""Seconds between two snapshots of one worker."""
PRIVATE_FIELDS = ("latency_buckets", "latency_max_ms", "content_bytes", "written_at")
"""Snapshot fields for the aggregate only, not shown per worker."""

Figures = dict[str, Any]
"""One worker's figures: ``pid``, ``worker``, ``state``, ``uptime_ms``, ``requests`` (as
``/api/health``'s), ``memory``, ``cpu_percent``, ``event_loop_lag_ms``, and the private
``latency_buckets`` (``[[bucket, count, seconds], ...]``), ``content_bytes``,
``written_at`` (Unix seconds)."""


class WorkerSnapshots:
    """This worker's snapshot file and the other workers' ones, in ``directory``.

    Args:
        directory: The directory the supervisor made for the service's workers.
        slot: This worker's number (0..N-1).
        clock: Unix seconds, for the snapshots' ages.
    """

    def __init__(
        self, directory: str, slot: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = directory
        self.slot = slot
        self.pid = os.getpid()
        self._clock = clock
        self._path = os.path.join(directory, f"{self.pid}.json")
        self._temporary = os.path.join(directory, f".{self.pid}.tmp")
        self._last_write = -float("inf")

    def due(self, now: float) -> bool:
        """Whether a snapshot is due at ``now`` (monotonic seconds); if so, counts it made.

        True at most once per :data:`WRITE_INTERVAL`.
        """
        if now - self._last_write < WRITE_INTERVAL:
            return False
        self._last_write = now
        return True

    def write(self, figures: Mapping[str, Any]) -> bool:
        """Replace this worker's snapshot with ``figures`` (``written_at`` added).

        Args:
            figures: What :meth:`read_others` gives back for this worker (see
                :data:`Figures`).

        Returns:
            Whether it was written (``False`` on an ``OSError``: the directory is gone).
        """
        data = orjson.dumps({**figures, "written_at": self._clock()})
        try:
            with open(self._temporary, "wb") as out:
                out.write(data)
            os.replace(self._temporary, self._path)
        except OSError:
            return False
        return True

    def remove(self) -> None:
        """Remove this worker's snapshot (at its exit)."""
        for path in (self._path, self._temporary):
            with contextlib.suppress(OSError):
                os.unlink(path)

    def read_others(self) -> list[Figures]:
        """The other live workers' snapshots, each with ``age_ms`` added.

        Files of exited processes are removed and left out; files older than
        :data:`STALE_SECONDS` are left out (and removed past :data:`FORGET_SECONDS`).
        """
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        now = self._clock()
        others = []
        for name in names:
            stem, dot, suffix = name.partition(".")
            if suffix != "json" or not dot or not stem.isdigit() or int(stem) == self.pid:
                continue
            path = os.path.join(self.directory, name)
            pid = int(stem)
            if not _alive(pid):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            try:
                with open(path, "rb") as source:
                    figures = orjson.loads(source.read())
            except (OSError, orjson.JSONDecodeError):
                continue
            if not isinstance(figures, dict) or figures.get("pid") != pid:
                continue
            age = now - float(figures.get("written_at", 0.0))
            if age > STALE_SECONDS:
                if age > FORGET_SECONDS:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                continue
            figures["age_ms"] = max(0, round(age * 1000))
            others.append(figures)
        return others


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def aggregate(workers: Iterable[Figures]) -> Figures:
    """The service's figures: the workers' added up, latency over all their requests.

    Args:
        workers: Each worker's figures (see :data:`Figures`).

    Returns:
        ``workers`` (how many), ``requests`` (``total``, ``active``, ``rejected`` by
        reason and ``errors`` summed; ``p50_ms``, ``p95_ms``, ``p99_ms`` over every
        worker's last minute as one, within 2 %, ``null`` with no request then;
        ``max_ms`` the longest of any; ``avg_response_bytes``), ``websockets`` summed,
        ``memory.rss_bytes`` and
        ``cpu_percent`` summed, ``event_loop_lag_ms`` the largest.
    """
    listed = list(workers)
    rejected: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    total = active = content = rss = 0
    cpu = 0.0
    lag: float | None = None
    longest: float | None = None
    for figures in listed:
        requests = figures["requests"]
        total += requests["total"]
        active += requests["active"]
        content += figures.get("content_bytes", 0)
        rejected.update(requests["rejected"])
        errors.update(requests["errors"])
        # The window's own maximum, read with its buckets: ``requests.max_ms`` may be up to
        # 250 ms older than them (its answer is reused), and a percentile of the buckets
        # must not come out above the longest request.
        most = figures.get("latency_max_ms", requests["max_ms"])
        if most is not None:
            longest = max(longest or 0.0, most)
        rss += figures["memory"]["rss_bytes"]
        cpu += figures["cpu_percent"] or 0.0
        if figures["event_loop_lag_ms"] is not None:
            lag = max(lag or 0.0, figures["event_loop_lag_ms"])
    websockets: Counter[str] = Counter()
    for figures in listed:
        websockets.update(figures.get("websockets", {}))  # older snapshots have none
    percentiles = merged_percentiles(
        (figures.get("latency_buckets", ()) for figures in listed), 0.5, 0.95, 0.99
    )
    p50, p95, p99 = (
        [round(value * 1000.0, 3) for value in percentiles] if percentiles else [None] * 3
    )
    return {
        "workers": len(listed),
        "requests": {
            "total": total,
            "active": active,
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "max_ms": longest,
            "avg_response_bytes": round(content / total, 1) if total else None,
            "rejected": dict(rejected),
            "errors": {"4xx": errors["4xx"], "5xx": errors["5xx"]},
        },
        "websockets": {
            key: websockets[key] for key in ("open", "closed", "messages_in", "messages_out")
        },
        "memory": {"rss_bytes": rss},
        "cpu_percent": round(cpu, 1),
        "event_loop_lag_ms": lag,
    }


def shown(figures: Figures) -> Figures:
    """One worker's figures as ``/api/health`` lists them (the private fields left out)."""
    return {key: value for key, value in figures.items() if key not in PRIVATE_FIELDS}
