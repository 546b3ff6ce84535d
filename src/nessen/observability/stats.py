"""Request statistics for ``/api/health`` and ``runtime.metrics()``: counts and latency percentiles.

Latencies are kept in a fixed ring of the most recent ``WINDOW`` requests (a count window,
as the original runtime had): recording is one array store; the percentiles are computed
only when asked, from a sorted copy of at most ``WINDOW`` floats.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter

WINDOW = 1024
"""Requests the latency percentiles are computed over (the most recent ones)."""


class RequestStats:
    """Counters and a latency window for one process.

    Attributes:
        total: Requests answered (by the handler or by the server on its own).
        content_bytes: Content bytes sent, summed.
        rejected: Rejections by reason, e.g. ``{"header_too_large": 3}``.
    """

    __slots__ = ("_filled", "_next", "_window", "content_bytes", "rejected", "total")

    def __init__(self) -> None:
        self.total = 0
        self.content_bytes = 0
        self.rejected: Counter[str] = Counter()
        self._window = array("d", bytes(8 * WINDOW))
        self._next = 0
        self._filled = 0

    def record(self, duration: float, content_bytes: int) -> None:
        """Count one answered request.

        Args:
            duration: Seconds from its first byte to the response written.
            content_bytes: Content bytes sent.
        """
        self.total += 1
        self.content_bytes += content_bytes
        index = self._next
        self._window[index] = duration
        self._next = (index + 1) % WINDOW
        if self._filled < WINDOW:
            self._filled += 1

    def reject(self, reason: str) -> None:
        """Count one rejection by ``reason``."""
        self.rejected[reason] += 1

    def percentiles_ms(self, *quantiles: float) -> list[float]:
        """Return latency percentiles in milliseconds over the window (nearest rank).

        Args:
            quantiles: Fractions in (0, 1], e.g. ``0.5, 0.95, 0.99``.

        Returns:
            One value per quantile, rounded to 0.001 ms; zeros when nothing was recorded.
        """
        count = self._filled
        if count == 0:
            return [0.0 for _ in quantiles]
        ordered = sorted(self._window[:count])
        out = []
        for q in quantiles:
            rank = max(1, math.ceil(q * count))
            out.append(round(ordered[rank - 1] * 1000.0, 3))
        return out

    @property
    def average_bytes(self) -> float:
        """Mean content bytes per answered request."""
        return self.content_bytes / self.total if self.total else 0.0
