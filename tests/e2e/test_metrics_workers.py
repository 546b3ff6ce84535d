"""/metrics with several workers: any worker's scrape shows every worker's counts."""

from __future__ import annotations

import os
import signal
import time

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
    # Multiprocess mode, as docs/OBSERVABILITY.md says: no per-process series ...
    assert not [name for name in families if name.startswith(("process_", "python_"))]
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
