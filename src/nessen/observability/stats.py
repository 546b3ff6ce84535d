"""Request statistics for ``/api/health`` and ``runtime.metrics()``: counts and latency percentiles.

Latency percentiles are computed over a recent time window from log-bucketed histograms,
so recording a request never sorts anything:

- A duration falls in bucket ``i`` when it lies in ``[g**i, g**(i+1))`` microseconds, with
  ``g = 1.02`` (:data:`GROWTH`); bucket 0 also holds everything under 1 µs and the last one
  everything over :data:`MAX_SECONDS`. Recording is a logarithm, two array stores and a
  clock read.
- Each bucket also sums its durations, and a percentile is reported as the mean of the
  bucket that holds the nearest-rank sample. That mean lies inside the bucket, so the
  answer is within 2 % of the exact nearest-rank value (exact when the bucket's samples
  are equal, e.g. a single request).
- The window is :data:`WINDOW_SECONDS` (60 s) long, kept as :data:`INTERVALS` (6) rotating
  10 s histograms plus the current one: a sample counts for between 60 and 70 s after it
  was recorded, then drops out with its whole interval.

Counts (``total``, ``content_bytes``, ``rejected``) cover the whole life of the process.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

GROWTH = 1.02
"""Ratio between the bounds of consecutive latency buckets (2 % relative width)."""
MAX_SECONDS = 1000.0
"""Durations above this share the last latency bucket."""
WINDOW_SECONDS = 60.0
"""Seconds of history the latency percentiles cover (to a granularity of one interval)."""
INTERVALS = 6
"""Intervals the window is divided into; each is ``WINDOW_SECONDS / INTERVALS`` long."""

_INV_LOG_GROWTH = 1.0 / math.log(GROWTH)
BUCKETS = int(math.log(MAX_SECONDS * 1e6) * _INV_LOG_GROWTH) + 1
"""Number of latency buckets (1 µs to ``MAX_SECONDS`` at 2 % width: 1047)."""
_LAST = BUCKETS - 1


def bucket_index(duration: float) -> int:
    """Return the latency bucket of ``duration`` (seconds): ``floor(log_g(µs))``, clamped."""
    micros = duration * 1e6
    if micros <= 1.0:
        return 0
    index = int(math.log(micros) * _INV_LOG_GROWTH)
    return index if index < _LAST else _LAST


class LatencyWindow:
    """Latency histograms for the last ``window`` seconds, rotating per interval.

    Args:
        window: Seconds of history kept (between ``window`` and ``window + window /
            intervals`` in practice, as whole intervals drop out).
        intervals: How many intervals the window is cut into.
        clock: Seconds on a monotonic clock; ``time.monotonic`` by default.
    """

    __slots__ = (
        "_advances",
        "_clock",
        "_closed",
        "_counts",
        "_epoch",
        "_epochs",
        "_interval",
        "_maxes",
        "_slot",
        "_sums",
        "_touched",
    )

    def __init__(
        self,
        window: float = WINDOW_SECONDS,
        intervals: int = INTERVALS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0 or intervals < 1:
            raise ValueError(f"window={window}, intervals={intervals}: both must be positive")
        self._interval = window / intervals
        self._clock = clock
        slots = intervals + 1  # the current, partial interval and the ``intervals`` before it
        self._counts = [array("q", bytes(8 * BUCKETS)) for _ in range(slots)]
        self._sums = [array("d", bytes(8 * BUCKETS)) for _ in range(slots)]
        self._epochs = [-1] * slots  # which interval each slot holds; -1: none yet
        self._touched: list[list[int]] = [[] for _ in range(slots)]  # non-zero buckets
        self._maxes = [-1.0] * slots  # the longest duration of each slot; -1: none yet
        self._epoch = -1
        self._slot = 0
        self._advances = 0
        # The finished intervals in the window, merged: (key, counts, sums, non-zero buckets).
        # They change once per interval, so percentiles() merges them once per interval.
        self._closed: tuple[tuple[int, int], array[int], array[float], list[int]] | None = None

    def record(self, duration: float) -> None:
        """Add one request that took ``duration`` seconds."""
        epoch = int(self._clock() // self._interval)
        if epoch != self._epoch:
            self._advance(epoch)
        micros = duration * 1e6  # bucket_index(), inlined: this runs once per request
        index = int(math.log(micros) * _INV_LOG_GROWTH) if micros > 1.0 else 0
        if index > _LAST:
            index = _LAST
        slot = self._slot
        counts = self._counts[slot]
        counts[index] += 1
        if counts[index] == 1:
            self._touched[slot].append(index)
        self._sums[slot][index] += duration
        if duration > self._maxes[slot]:
            self._maxes[slot] = duration

    def _advance(self, epoch: int) -> None:
        """Make ``epoch`` the current interval, clearing the slot it reuses."""
        self._epoch = epoch
        slot = self._slot = epoch % len(self._epochs)
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._counts[slot] = array("q", bytes(8 * BUCKETS))
            self._sums[slot] = array("d", bytes(8 * BUCKETS))
            self._touched[slot] = []
            self._maxes[slot] = -1.0
            self._advances += 1

    def _live_slots(self) -> list[int]:
        """Slots holding intervals still inside the window."""
        epoch = int(self._clock() // self._interval)
        oldest = epoch - len(self._epochs) + 1
        return [s for s, held in enumerate(self._epochs) if held >= 0 and oldest <= held <= epoch]

    def _merge_closed(
        self, epoch: int
    ) -> tuple[tuple[int, int], array[int], array[float], list[int]]:
        """Merge the finished intervals still in the window (all live slots but ``epoch``'s)."""
        oldest = epoch - len(self._epochs) + 1
        slots = [s for s, held in enumerate(self._epochs) if held >= 0 and oldest <= held < epoch]
        counts = array("q", bytes(8 * BUCKETS))
        sums = array("d", bytes(8 * BUCKETS))
        touched: set[int] = set()
        for slot in slots:
            slot_counts, slot_sums = self._counts[slot], self._sums[slot]
            for index in self._touched[slot]:
                counts[index] += slot_counts[index]
                sums[index] += slot_sums[index]
            touched.update(self._touched[slot])
        return (epoch, self._advances), counts, sums, sorted(touched)

    def count(self) -> int:
        """Requests recorded in the window."""
        return sum(sum(self._counts[slot]) for slot in self._live_slots())

    def max(self) -> float | None:
        """The longest duration recorded in the window, in seconds (exact, not bucketed).

        ``None`` when the window is empty.
        """
        longest = max((self._maxes[slot] for slot in self._live_slots()), default=-1.0)
        return longest if longest >= 0.0 else None

    def percentiles(self, *quantiles: float) -> list[float]:
        """Return latency percentiles in seconds over the window (nearest rank, ±2 %).

        Args:
            quantiles: Fractions in (0, 1], e.g. ``0.5, 0.95, 0.99``.

        Returns:
            One value per quantile, in seconds: the mean of the bucket holding the sample
            of rank ``ceil(q * n)``. Zeros when the window is empty.
        """
        epoch = int(self._clock() // self._interval)
        closed = self._closed
        if closed is None or closed[0] != (epoch, self._advances):
            closed = self._closed = self._merge_closed(epoch)
        _, closed_counts, closed_sums, closed_touched = closed
        current = self._slot if self._epochs[self._slot] == epoch else None
        if current is None:
            indices = closed_touched
            counts: list[int] = [closed_counts[i] for i in indices]
            sums: list[float] = [closed_sums[i] for i in indices]
        else:  # only the buckets in use: a few dozen of the 1047, not all of them
            indices = sorted(set(closed_touched).union(self._touched[current]))
            now_counts, now_sums = self._counts[current], self._sums[current]
            counts = [closed_counts[i] + now_counts[i] for i in indices]
            sums = [closed_sums[i] + now_sums[i] for i in indices]
        return _nearest_rank(counts, sums, quantiles)

    def buckets(self) -> list[tuple[int, int, float]]:
        """The window's histogram: ``(bucket, count, seconds summed)`` per non-empty bucket.

        In bucket order. What :func:`merged_percentiles` takes to compute percentiles
        over several windows (several worker processes) as if they were one.
        """
        merged: dict[int, list[float]] = {}
        for slot in self._live_slots():
            counts, sums = self._counts[slot], self._sums[slot]
            for index in self._touched[slot]:
                entry = merged.setdefault(index, [0, 0.0])
                entry[0] += counts[index]
                entry[1] += sums[index]
        return [(i, int(merged[i][0]), merged[i][1]) for i in sorted(merged)]


def merged_percentiles(
    histograms: Iterable[Iterable[Sequence[float]]], *quantiles: float
) -> list[float] | None:
    """Latency percentiles in seconds over several :meth:`LatencyWindow.buckets` histograms.

    The same nearest-rank rule as :meth:`LatencyWindow.percentiles` (within 2 %), over
    every sample of every histogram, as if one window had recorded them all.

    Args:
        histograms: Each a list of ``(bucket, count, seconds summed)``.
        quantiles: Fractions in (0, 1], e.g. ``0.5, 0.95, 0.99``.

    Returns:
        One value per quantile, or ``None`` when the histograms hold no sample.
    """
    merged: dict[int, list[float]] = {}
    for histogram in histograms:
        for index, count, seconds in histogram:
            entry = merged.setdefault(int(index), [0, 0.0])
            entry[0] += count
            entry[1] += seconds
    if not any(count for count, _ in merged.values()):
        return None
    order = sorted(merged)
    return _nearest_rank(
        [int(merged[i][0]) for i in order], [merged[i][1] for i in order], quantiles
    )


def _nearest_rank(
    counts: Sequence[int], sums: Sequence[float], quantiles: Sequence[float]
) -> list[float]:
    """Per quantile, the mean of the bucket holding the sample of rank ``ceil(q * n)``.

    ``counts`` and ``sums`` are the non-empty buckets' counts and seconds, in bucket order.
    """
    total = sum(counts)
    if total == 0:
        return [0.0 for _ in quantiles]
    ranks = sorted((max(1, math.ceil(q * total)), n) for n, q in enumerate(quantiles))
    out = [0.0] * len(quantiles)
    seen = 0
    next_rank = 0
    for index, count in enumerate(counts):
        if not count:
            continue
        seen += count
        while next_rank < len(ranks) and ranks[next_rank][0] <= seen:
            out[ranks[next_rank][1]] = sums[index] / count
            next_rank += 1
        if next_rank == len(ranks):
            break
    return out


LatencySummary = tuple[list[float | None], float | None]
"""``([percentile ms, ...], max ms)``; ``None`` values when there is no sample."""


class RequestStats:
    """Counters and a latency window for one process.

    Attributes:
        total: Requests answered, by the handler or by the server on its own (a refusal
            that sent a status counts; one that only closed the connection does not).
        content_bytes: Content bytes sent in handler responses, summed.
        rejected: Refusals by reason, e.g. ``{"header_too_large": 3}``.
        client_errors: Answers with a 4xx status, the server's refusals included.
        server_errors: Answers with a 5xx status, the server's refusals included.
        latency: Durations of handler responses over the last minute (refusals carry no
            duration and are not in it).

    Args:
        latency: The window (a new :class:`LatencyWindow` when ``None``).
        refresh: Seconds a :meth:`percentiles_ms` answer is reused for the same
            quantiles; ``0`` recomputes on every call. The runtime uses 0.25 s, so a
            storm of ``/api/health`` calls costs one merge of the window every 250 ms,
            and an answer is at most that much older than the minute it describes.
        clock: Seconds, for ``refresh``.
    """

    __slots__ = (
        "_clock",
        "_memo",
        "_refresh",
        "_summary_memo",
        "client_errors",
        "content_bytes",
        "latency",
        "rejected",
        "server_errors",
        "total",
        "websocket_messages_in",
        "websocket_messages_out",
        "websockets_closed",
        "websockets_open",
    )

    def __init__(
        self,
        latency: LatencyWindow | None = None,
        *,
        refresh: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = 0
        self.client_errors = 0
        self.server_errors = 0
        self.content_bytes = 0
        self.websockets_open = 0
        """WebSockets open now (accepted, not yet ended)."""
        self.websockets_closed = 0
        """WebSockets that ended since start."""
        self.websocket_messages_in = 0
        self.websocket_messages_out = 0
        """WebSocket messages received and sent since start (counted at each ping and end)."""
        self.rejected: Counter[str] = Counter()
        self.latency = latency if latency is not None else LatencyWindow()
        self._refresh = refresh
        self._clock = clock
        self._memo: tuple[float, tuple[float, ...], list[float]] = (-math.inf, (), [])
        self._summary_memo: tuple[float, tuple[float, ...], LatencySummary] = (
            -math.inf,
            (),
            ([], None),
        )

    def record(self, duration: float, content_bytes: int, status: int = 200) -> None:
        """Count one answered request.

        Args:
            duration: Seconds from its first byte to the response written.
            content_bytes: Content bytes sent.
            status: The status sent (4xx and 5xx are counted apart too).
        """
        if status >= 400:
            if status >= 500:
                self.server_errors += 1
            else:
                self.client_errors += 1
        self.total += 1
        self.content_bytes += content_bytes
        self.latency.record(duration)

    def reject(self, reason: str, *, answered: bool = False, status: int = 0) -> None:
        """Count one refusal by ``reason``.

        Args:
            reason: The server's tag, e.g. ``"header_too_large"``.
            answered: A status was sent (the refusal also counts in :attr:`total`).
            status: That status (0: none), counted in :attr:`client_errors` or
                :attr:`server_errors`.
        """
        self.rejected[reason] += 1
        if answered:
            self.total += 1
        if status >= 500:
            self.server_errors += 1
        elif status >= 400:
            self.client_errors += 1

    def percentiles_ms(self, *quantiles: float) -> list[float]:
        """Return latency percentiles in milliseconds over the last minute.

        Args:
            quantiles: Fractions in (0, 1], e.g. ``0.5, 0.95, 0.99``.

        Returns:
            One value per quantile, rounded to 0.001 ms, within 2 % of the exact
            nearest-rank value; zeros when nothing was recorded in the window.
        """
        if self._refresh > 0.0:
            when, asked, answer = self._memo
            now = self._clock()
            if asked == quantiles and now - when < self._refresh:
                return list(answer)
        answer = [round(value * 1000.0, 3) for value in self.latency.percentiles(*quantiles)]
        if self._refresh > 0.0:
            self._memo = (now, quantiles, answer)
        return list(answer)

    def latency_summary_ms(self, *quantiles: float) -> LatencySummary:
        """Latency percentiles and the maximum, in milliseconds, over the last minute.

        What ``/api/health`` reports: unlike :meth:`percentiles_ms`, an empty window gives
        ``None`` for each value ("no sample"), never a 0 that reads as "instant".

        Args:
            quantiles: Fractions in (0, 1], e.g. ``0.5, 0.95, 0.99``.

        Returns:
            ``(percentiles, max)``: one value per quantile (as :meth:`percentiles_ms`,
            within 2 %) and the exact longest duration, rounded to 0.001 ms; ``([None,
            ...], None)`` when nothing was recorded in the window. A non-empty answer is
            reused for ``refresh`` seconds.
        """
        now = self._clock()
        if self._refresh > 0.0:
            when, asked, answer = self._summary_memo
            if asked == quantiles and now - when < self._refresh:
                return list(answer[0]), answer[1]
        longest = self.latency.max()
        if longest is None:  # cheap to find out again: not kept, so a first sample shows
            return [None] * len(quantiles), None
        values = self.latency.percentiles(*quantiles)
        summary: LatencySummary = (
            [round(v * 1000.0, 3) for v in values],
            round(longest * 1000.0, 3),
        )
        if self._refresh > 0.0:
            self._summary_memo = (now, quantiles, summary)
        return list(summary[0]), summary[1]

    @property
    def average_bytes(self) -> float:
        """Mean content bytes per answered request."""
        return self.content_bytes / self.total if self.total else 0.0
