"""A once-a-second sampler of the process: CPU use and event-loop lag.

The runtime starts one :class:`ProcessSampler` when it starts serving and stops it when it
stops; nothing runs at import. Each tick is a ``loop.call_at`` timer (no Task), so a tick
costs one timer callback:

- **Event-loop lag** is how late the tick ran compared with when it was due: a handler
  that blocks the loop for 300 ms makes the next tick 300 ms late.
- **CPU** is ``time.process_time()`` (user + system time of every thread of this process)
  spent during the last interval over the interval's length, in percent of one core; a
  process busy on two cores reads 200.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

INTERVAL = 1.0
"""Seconds between samples."""


class ProcessSampler:
    """Samples CPU use and event-loop lag every ``interval`` seconds while started.

    Args:
        interval: Seconds between samples.
        on_tick: Called after every sample, on the event loop (e.g. to refresh gauges);
            an exception from it is logged and the sampler keeps going.
        cpu_clock: CPU seconds used by this process; ``time.process_time`` by default.

    Attributes:
        cpu_percent: CPU use over the last completed interval, percent of one core
            (0.0 before the first interval completes).
        event_loop_lag: Seconds the last tick ran late (0.0 before the first tick).
        samples: Ticks taken since the last :meth:`start`.
    """

    def __init__(
        self,
        interval: float = INTERVAL,
        on_tick: Callable[[], None] | None = None,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval={interval}: must be > 0 seconds")
        self.interval = interval
        self.on_tick = on_tick
        self._cpu_clock = cpu_clock
        self.cpu_percent = 0.0
        self.event_loop_lag = 0.0
        self.samples = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._last_wall = 0.0
        self._last_cpu = 0.0

    @property
    def running(self) -> bool:
        """Whether the sampler is started."""
        return self._timer is not None

    @property
    def event_loop_lag_ms(self) -> float:
        """:attr:`event_loop_lag` in milliseconds, rounded to 0.001 ms."""
        return round(self.event_loop_lag * 1000.0, 3)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Schedule the first sample ``interval`` seconds from now on ``loop``.

        Args:
            loop: The loop to run on; the running loop when ``None``.

        Raises:
            RuntimeError: Already started, or no loop given and none running.
        """
        if self._timer is not None:
            raise RuntimeError("the process sampler is already running")
        loop = loop or asyncio.get_running_loop()
        self._loop = loop
        self.samples = 0
        now = loop.time()
        self._last_wall = now
        self._last_cpu = self._cpu_clock()
        self._due = now + self.interval
        self._timer = loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        """Cancel the next sample; the last values stay readable."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        cpu = self._cpu_clock()
        self.event_loop_lag = max(0.0, now - self._due)
        elapsed = now - self._last_wall
        if elapsed > 0:
            self.cpu_percent = round(100.0 * (cpu - self._last_cpu) / elapsed, 1)
        self._last_wall, self._last_cpu = now, cpu
        self.samples += 1
        # The next tick is due one interval after this one ran, so one long stall shows as
        # one late tick rather than a burst of catch-up ticks.
        self._due = now + self.interval
        self._timer = loop.call_at(self._due, self._tick)
        if self.on_tick is not None:
            try:
                self.on_tick()
            except Exception:
                logger.exception("process sampler callback failed")
