from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import ProcessCollector

from nessen.observability.process import ProcessSampler, read_process_stats


class FakeHandle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """What the sampler uses of a loop: ``time()`` and ``call_at()``."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.handles: list[FakeHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(when, callback)
        self.handles.append(handle)
        return handle

    def fire(self, at: float) -> None:
        """Run the last scheduled callback at loop time ``at``."""
        self.now = at
        self.handles[-1].callback()


class FakeCpu:
    def __init__(self, seconds: float = 5.0) -> None:
        self.seconds = seconds

    def __call__(self) -> float:
        return self.seconds


def started(cpu: FakeCpu, on_tick: Callable[[], None] | None = None) -> tuple[ProcessSampler, Any]:
    loop = FakeLoop(100.0)
    sampler = ProcessSampler(interval=1.0, on_tick=on_tick, cpu_clock=cpu)
    sampler.start(loop)  # type: ignore[arg-type]
    return sampler, loop


def test_nothing_is_measured_before_the_first_tick() -> None:
    sampler, loop = started(FakeCpu())
    assert (sampler.cpu_percent, sampler.event_loop_lag, sampler.samples) == (0.0, 0.0, 0)
    assert loop.handles[0].when == 101.0
    assert sampler.running


def test_lag_is_how_late_the_tick_ran_and_cpu_is_cpu_time_over_wall_time() -> None:
    cpu = FakeCpu(5.0)
    sampler, loop = started(cpu)
    cpu.seconds = 5.5  # half a CPU second ...
    loop.fire(101.25)  # ... in 1.25 s, the tick due at 101.0 running 0.25 s late
    assert sampler.event_loop_lag == 0.25
    assert sampler.event_loop_lag_ms == 250.0
    assert sampler.cpu_percent == 40.0
    assert sampler.samples == 1
    assert loop.handles[-1].when == 102.25  # next one interval after this one ran


def test_an_on_time_tick_has_no_lag_and_two_busy_cores_read_200_percent() -> None:
    cpu = FakeCpu(0.0)
    sampler, loop = started(cpu)
    loop.fire(101.0)
    cpu.seconds = 2.0
    loop.fire(102.0)
    assert sampler.event_loop_lag == 0.0
    assert sampler.cpu_percent == 200.0


def test_on_tick_runs_after_each_sample_and_its_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def on_tick() -> None:
        calls.append(sampler.samples)
        raise RuntimeError("boom")

    sampler, loop = started(FakeCpu(), on_tick)
    loop.fire(101.0)
    loop.fire(102.0)
    assert calls == [1, 2]  # a failing callback does not stop the sampler
    assert caplog.text.count("process sampler callback failed") == 2


def test_stop_cancels_the_next_tick_and_keeps_the_last_values() -> None:
    cpu = FakeCpu(1.0)
    sampler, loop = started(cpu)
    cpu.seconds = 1.1
    loop.fire(101.0)
    sampler.stop()
    assert loop.handles[-1].cancelled
    assert not sampler.running
    assert sampler.cpu_percent == 10.0


def test_start_twice_or_with_a_bad_interval_is_refused() -> None:
    sampler, loop = started(FakeCpu())
    with pytest.raises(RuntimeError, match="already running"):
        sampler.start(loop)
    with pytest.raises(ValueError, match="interval=0"):
        ProcessSampler(interval=0)


async def test_a_blocked_loop_shows_as_lag() -> None:
    ticked = asyncio.Event()
    # This thread's CPU clock: other threads of the test process (servers left
    # by earlier tests) must not count towards the sleeping handler.
    sampler = ProcessSampler(interval=0.05, on_tick=ticked.set, cpu_clock=time.thread_time)
    sampler.start()
    loop = asyncio.get_running_loop()
    loop.call_soon(time.sleep, 0.3)  # a handler that blocks the loop for 300 ms
    await ticked.wait()
    sampler.stop()
    assert sampler.event_loop_lag >= 0.25  # due at +0.05 s, ran at +0.3 s or later
    assert sampler.cpu_percent < 50.0  # sleeping is not CPU time


def test_process_stats_match_prometheus_clients_process_collector() -> None:
    stats = read_process_stats()
    assert stats is not None
    theirs = {
        family.name: family.samples[0].value for family in ProcessCollector(registry=None).collect()
    }
    assert stats.start_time_seconds == pytest.approx(theirs["process_start_time_seconds"])
    assert stats.max_fds == theirs["process_max_fds"]
    assert stats.virtual_memory_bytes > 0
    # Read a moment apart: close, not equal (their listing of /proc/self/fd counts the
    # directory it opens to list it).
    assert abs(stats.open_fds - theirs["process_open_fds"]) <= 2
    assert stats.resident_memory_bytes == pytest.approx(
        theirs["process_resident_memory_bytes"], rel=0.1
    )
    assert stats.cpu_seconds == pytest.approx(theirs["process_cpu_seconds"], abs=0.5)
    opened = [open(__file__, "rb") for _ in range(10)]  # noqa: SIM115 - held on purpose
    try:
        after = read_process_stats()
        assert after is not None
        # Ten more, give or take what another thread of the test process did meanwhile.
        assert 8 <= after.open_fds - stats.open_fds <= 12
    finally:
        for file in opened:
            file.close()
