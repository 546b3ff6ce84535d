"""/metrics with several workers: any worker's scrape shows every worker's counts."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from tests.e2e.serving import ServeFactory, ServeProcess, base_env
from tests.e2e.test_workers import APP, get, started_pids
from tests.integration.observability.helpers import labels, scrape, values

pytestmark = pytest.mark.slow

PID_SERIES = labels(method="GET", route="/pid", status="200")
SCRAPE_DEADLINE = 10.0
"""Seconds for every worker's counts to reach a scrape (they hand them over every second)."""


def requests_total(families: dict[str, Metric]) -> float:
    return values(families["http_requests"], "http_requests_total").get(PID_SERIES, 0.0)


def durations_counted(families: dict[str, Metric]) -> float:
    family = families["http_request_duration_seconds"]
    counts = values(family, "http_request_duration_seconds_count")
    return counts.get(labels(method="GET", route="/pid"), 0.0)


def scrape_until_counted(served: ServeProcess, expected: int) -> dict[str, Metric]:
    """Scrape until GET /pid shows ``expected`` responses; no scrape may show more."""
    deadline = time.monotonic() + SCRAPE_DEADLINE
    while True:
        families = scrape(served.url)
        counted = (requests_total(families), durations_counted(families))
        assert max(counted) <= expected, counted
        if counted == (expected, expected):
            return families
        assert time.monotonic() < deadline, f"scrapes stopped at {counted}, sent {expected}"
        time.sleep(0.05)


def test_any_workers_scrape_counts_every_workers_requests(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2"))
    answered: dict[int, int] = {}
    deadline = time.monotonic() + 15
    while sum(answered.values()) < 60 or len(answered) < 2:
        assert time.monotonic() < deadline, f"requests per worker: {answered}"
        status, body = get(served.address, "/pid")  # a new connection each time
        assert status == 200
        answered[int(body)] = answered.get(int(body), 0) + 1
    pids = set(answered)
    assert pids == set(started_pids(served))
    sent = sum(answered.values())
    assert max(answered.values()) < sent  # so a total of ``sent`` is both workers' sum

    families = scrape_until_counted(served, sent)
    # Multiprocess mode, as docs/OBSERVABILITY.md says: no python_ series (they cannot be
    # aggregated; the process_ ones are per worker, see below) ...
    assert not [name for name in families if name.startswith("python_")]
    # ... and gauges summed over the live workers: two of them are READY.
    state = values(families["nessen_state"])
    assert state[labels(state="READY")] == 2.0
    assert sum(state.values()) == 2.0

    # A dead worker's counts stay in the sum; its gauges leave it (mark_process_dead).
    victim = next(iter(pids))
    os.kill(victim, signal.SIGKILL)
    served.wait_for(f"(pid {victim}) killed by SIGKILL")
    served.wait_for_line(lambda _: len(set(started_pids(served))) == 3)
    deadline = time.monotonic() + SCRAPE_DEADLINE
    while True:
        families = scrape(served.url)
        state = values(families["nessen_state"])
        if state[labels(state="READY")] == 2.0:  # the replacement is READY
            break
        assert state[labels(state="READY")] == 1.0, state  # never the dead one's 1 as well
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    assert sum(state.values()) == 2.0
    assert requests_total(families) == sent
    assert served.stop() == 0


def process_series(families: dict[str, Metric], name: str) -> dict[str, tuple[int, float]]:
    """``worker`` label -> (pid, value) of a per-worker process series."""
    return (
        {
            sample.labels["worker"]: (int(sample.labels["pid"]), sample.value)
            for sample in families[name].samples
        }
        if name in families
        else {}
    )


def scrape_until(
    served: ServeProcess, done: Callable[[dict[str, Metric]], bool]
) -> dict[str, Metric]:
    deadline = time.monotonic() + PROCESS_DEADLINE
    while True:
        families = scrape(served.url)
        if done(families):
            return families
        assert time.monotonic() < deadline, sorted(families)
        time.sleep(0.1)


PROCESS_DEADLINE = 20.0
"""Seconds for a worker's process series to appear (each worker refreshes them every 5 s)."""


def test_each_workers_process_metrics_are_exported_with_its_worker_label(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2"))
    pids = set(started_pids(served))

    def both_workers(families: dict[str, Metric]) -> bool:
        # every series of both workers, with its first value (a series is created at 0
        # the instant before its value is written: a busy machine can show that instant)
        for name in ("process_resident_memory_bytes", "process_open_fds", "process_max_fds"):
            series = process_series(families, name)
            if {pid for pid, _ in series.values()} != pids:
                return False
            if not all(value > 0 for _, value in series.values()):
                return False
        return True

    families = scrape_until(served, both_workers)
    memory = process_series(families, "process_resident_memory_bytes")
    assert set(memory) == {"0", "1"}
    assert all(10_000_000 < rss < 2_000_000_000 for _, rss in memory.values()), memory
    for name in ("process_open_fds", "process_max_fds", "process_start_time_seconds"):
        series = process_series(families, name)
        assert {pid for pid, _ in series.values()} == pids, (name, series)
        assert all(value > 0 for _, value in series.values()), (name, series)
    cpu = families["process_cpu_seconds"]
    assert cpu.type == "counter"
    assert {s.name for s in cpu.samples} == {"process_cpu_seconds_total"}
    assert {s.labels["worker"] for s in cpu.samples} == {"0", "1"}

    # A replaced worker's series leave with it; its replacement's carry the same slot.
    victim_slot, (victim, _) = next(iter(memory.items()))
    os.kill(victim, signal.SIGKILL)
    served.wait_for(f"(pid {victim}) killed by SIGKILL")
    served.wait_for_line(lambda _: len(set(started_pids(served))) == 3)
    (replacement,) = set(started_pids(served)) - pids

    def replaced(families: dict[str, Metric]) -> bool:
        series = process_series(families, "process_resident_memory_bytes")
        return series.get(victim_slot, (0, 0.0))[0] == replacement

    families = scrape_until(served, replaced)
    for name in ("process_resident_memory_bytes", "process_open_fds"):
        assert victim not in {pid for pid, _ in process_series(families, name).values()}
    assert served.stop() == 0


def test_an_operators_metrics_directory_starts_empty_of_the_previous_runs_files(
    nessen_serve: ServeFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "README").write_text("the operator's")
    env = base_env(WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(directory))
    first = nessen_serve(APP, env=env)
    for _ in range(5):
        assert get(first.address, "/pid")[0] == 200
    scrape_until_counted(first, 5)
    assert first.stop() == 0
    assert any(name.startswith("counter_") for name in os.listdir(directory))

    second = nessen_serve(APP, env=env)
    for _ in range(3):
        assert get(second.address, "/pid")[0] == 200
    scrape_until_counted(second, 3)  # not 8: the first run's totals are gone
    assert "removed" in second.wait_for("metrics file(s) of a previous run")
    assert (directory / "README").read_text() == "the operator's"
    assert second.stop() == 0
