"""``/api/health`` under ``WORKERS=2``: any worker answers with every worker's figures."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.e2e.serving import ServeFactory, base_env

SAMPLE = "tests.e2e.apps.sample:runtime"
DEADLINE = 60.0


def _poll_until(client: httpx.Client, sent: list[int], done: Any) -> dict[str, Any]:
    """Poll /api/health (each poll counted in ``sent[0]``) until ``done(body)``."""
    deadline = time.monotonic() + DEADLINE
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = client.get("/api/health", headers={"Connection": "close"})
        assert answer.status_code == 200
        last = answer.json()
        polls_counted = sent[0]  # this poll is counted once answered, not in its own answer
        sent[0] += 1
        if done(last, polls_counted):
            return last
        time.sleep(0.2)  # the interval between polls; the figures move once a second
    raise AssertionError(f"not seen within {DEADLINE} s; last answer: {last}")


def test_api_health_shows_every_worker_and_their_sum(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(SAMPLE, env=base_env(WORKERS="2"))
    sent = [0]  # every request sent, polls included
    not_found = 0
    with httpx.Client(base_url=served.url, timeout=10.0, trust_env=False) as client:

        def both_served(body: dict[str, Any], counted: int) -> bool:
            return len(body.get("workers", [])) == 2 and all(
                worker["requests"]["total"] > 0 for worker in body["workers"]
            )

        # New connections until each worker has answered some (the kernel picks which).
        deadline = time.monotonic() + DEADLINE
        while True:
            for n in range(10):
                path = f"/missing/{n}" if n % 5 == 0 else "/health"
                answer = client.get(path, headers={"Connection": "close"})
                assert answer.status_code == (404 if n % 5 == 0 else 200)
                not_found += n % 5 == 0
                sent[0] += 1
            body = client.get("/api/health", headers={"Connection": "close"}).json()
            sent[0] += 1
            if both_served(body, 0):
                break
            assert time.monotonic() < deadline, f"one worker answered everything: {body}"

        # Then nothing but polls: the sum settles on exactly what was sent.
        def settled(body: dict[str, Any], counted: int) -> bool:
            return len(body["workers"]) == 2 and body["aggregate"]["requests"]["total"] == counted

        body = _poll_until(client, sent, settled)
    assert served.stop() == 0

    aggregate, workers = body["aggregate"], body["workers"]
    assert aggregate["workers"] == 2
    assert aggregate["supervisor_pid"] == served.process.pid
    assert {worker["worker"] for worker in workers} == {0, 1}
    pids = {worker["pid"] for worker in workers}
    assert len(pids) == 2
    assert body["pid"] in pids  # the worker that answered is one of them
    assert served.process.pid not in pids
    totals = [worker["requests"]["total"] for worker in workers]
    assert all(total > 0 for total in totals)
    assert aggregate["requests"]["total"] == sum(totals)
    assert aggregate["requests"]["errors"] == {"4xx": not_found, "5xx": 0}
    assert sum(worker["requests"]["errors"]["4xx"] for worker in workers) == not_found
    assert aggregate["memory"]["rss_bytes"] == sum(w["memory"]["rss_bytes"] for w in workers)
    p50, p99 = aggregate["requests"]["p50_ms"], aggregate["requests"]["p99_ms"]
    assert 0 < p50 <= p99 <= aggregate["requests"]["max_ms"]
    assert all("latency_buckets" not in worker for worker in workers)


def test_one_process_has_no_workers_section(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(SAMPLE)
    with served.client() as client:
        body = client.get("/api/health").json()
    assert "workers" not in body
    assert "aggregate" not in body
    assert served.stop() == 0
