"""A once-a-second sampler of the process's CPU use and event-loop lag; its resources.

:func:`read_process_stats` reads what the process holds (memory, CPU seconds, open files).

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
import functools
import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

INTERVAL = 1.0
"""Seconds between samples."""


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """What one process holds, in the units of prometheus-client's ``process_*`` series.

    Attributes:
        resident_memory_bytes: Resident set size.
        virtual_memory_bytes: Virtual memory size.
        cpu_seconds: User plus system CPU time used since the process started.
        open_fds: Open file descriptors.
        max_fds: The open-file limit (soft ``RLIMIT_NOFILE``).
        start_time_seconds: When the process started, Unix time.
    """

    resident_memory_bytes: int
    virtual_memory_bytes: int
    cpu_seconds: float
    open_fds: int
    max_fds: int
    start_time_seconds: float


@functools.cache
def _boot_time() -> float:
    with open("/proc/stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")  # pragma: no cover - every Linux has it


def read_process_stats() -> ProcessStats | None:
    """Read this process's memory, CPU time, open files and start time.

    Read as prometheus-client's ``ProcessCollector`` reads them (``/proc/self/stat``), so
    the values match its ``process_*`` series. The open descriptors are counted with one
    ``stat()`` of ``/proc/self/fd`` (Linux 6.2+ reports the count as its size), falling
    back to listing the directory, which costs about 1 ms per 1000 descriptors.

    Returns:
        The values, or ``None`` where there is no ``/proc`` (not Linux).
    """
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        open_fds = os.stat("/proc/self/fd").st_size or len(os.listdir("/proc/self/fd"))
        boot = _boot_time()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return ProcessStats(
        resident_memory_bytes=int(fields[21]) * resource.getpagesize(),
        virtual_memory_bytes=int(fields[20]),
        cpu_seconds=(int(fields[11]) + int(fields[12])) / ticks,
        open_fds=open_fds,
        max_fds=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        start_time_seconds=boot + int(fields[19]) / ticks,
    )


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
