"""Worker snapshots in a directory: written whole, read by the others, stale ones dropped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nessen.observability.stats import LatencyWindow, merged_percentiles
from nessen.observability.workers import (
    FORGET_SECONDS,
    STALE_SECONDS,
    WRITE_INTERVAL,
    WorkerSnapshots,
    aggregate,
    shown,
)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def figures(pid: int, total: int, **changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "pid": pid,
        "worker": 1,
        "state": "READY",
        "uptime_ms": 5000,
        "requests": {
            "total": total,
            "active": 1,
            "p50_ms": None,
            "p95_ms": None,
            "p99_ms": None,
            "max_ms": None,
            "avg_response_bytes": None,
            "rejected": {},
            "errors": {"4xx": 0, "5xx": 0},
        },
        "memory": {"rss_bytes": 1000},
        "cpu_percent": 1.5,
        "event_loop_lag_ms": 0.5,
        "latency_buckets": [],
        "content_bytes": 0,
    }
    entry.update(changes)
    return entry


def a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_snapshot_is_read_by_the_other_workers_not_by_its_writer(tmp_path: Path) -> None:
    clock = FakeClock()
    mine = WorkerSnapshots(str(tmp_path), 0, clock=clock)
    assert mine.write(figures(os.getpid(), 3))
    assert mine.read_others() == []  # its own file is not another worker's
    other_pid = os.getppid()  # a live process standing in for another worker
    other = json.dumps({**figures(other_pid, 7), "written_at": clock.now - 2.0})
    (tmp_path / f"{other_pid}.json").write_text(other)
    [seen] = mine.read_others()
    assert seen["requests"]["total"] == 7
    assert seen["age_ms"] == 2000
    assert sorted(os.listdir(tmp_path)) == sorted([f"{os.getpid()}.json", f"{other_pid}.json"])


def test_exited_stale_and_broken_snapshots_are_left_out(tmp_path: Path) -> None:
    clock = FakeClock()
    mine = WorkerSnapshots(str(tmp_path), 0, clock=clock)
    dead = a_dead_pid()
    (tmp_path / f"{dead}.json").write_text(
        json.dumps({**figures(dead, 1), "written_at": clock.now})
    )
    live = os.getppid()
    stale = {**figures(live, 2), "written_at": clock.now - STALE_SECONDS - 0.5}
    (tmp_path / f"{live}.json").write_text(json.dumps(stale))
    (tmp_path / "1.json").write_text("{not json")  # pid 1 lives; its file is not ours
    (tmp_path / "notes.txt").write_text("not a snapshot")
    assert mine.read_others() == []
    assert not (tmp_path / f"{dead}.json").exists()  # removed: its process has exited
    assert (tmp_path / f"{live}.json").exists()  # stale, not yet forgotten
    clock.now += FORGET_SECONDS
    assert mine.read_others() == []
    assert not (tmp_path / f"{live}.json").exists()


def test_a_snapshot_is_due_once_per_interval_and_removed_at_exit(tmp_path: Path) -> None:
    mine = WorkerSnapshots(str(tmp_path), 2)
    assert mine.due(100.0)
    assert not mine.due(100.0 + WRITE_INTERVAL - 0.01)
    assert mine.due(100.0 + WRITE_INTERVAL)
    assert mine.write(figures(os.getpid(), 1))
    mine.remove()
    assert os.listdir(tmp_path) == []


def test_writing_into_a_removed_directory_is_not_an_error(tmp_path: Path) -> None:
    mine = WorkerSnapshots(str(tmp_path / "gone"), 0)
    assert not mine.write(figures(os.getpid(), 1))
    assert mine.read_others() == []


def test_the_aggregate_adds_the_workers_up() -> None:
    first, second = LatencyWindow(), LatencyWindow()
    for ms in (1, 2, 3):
        first.record(ms / 1000)
    for ms in (10, 20):
        second.record(ms / 1000)
    one = figures(11, 3, latency_buckets=first.buckets(), content_bytes=300)
    one["requests"].update(max_ms=3.0, rejected={"body_too_large": 1}, errors={"4xx": 2, "5xx": 0})
    two = figures(12, 2, latency_buckets=second.buckets(), content_bytes=100, cpu_percent=2.0)
    two["requests"].update(max_ms=20.0, rejected={"body_too_large": 2, "uri_too_long": 1})
    two["requests"]["errors"] = {"4xx": 3, "5xx": 1}
    two["event_loop_lag_ms"] = 4.0
    one["websockets"] = {"open": 2, "closed": 5, "messages_in": 40, "messages_out": 41}
    two["websockets"] = {"open": 1, "closed": 0, "messages_in": 7, "messages_out": 7}
    total = aggregate([one, two])
    expected = merged_percentiles([first.buckets(), second.buckets()], 0.5, 0.95, 0.99)
    assert expected is not None
    assert total == {
        "workers": 2,
        "requests": {
            "total": 5,
            "active": 2,
            "p50_ms": round(expected[0] * 1000, 3),
            "p95_ms": round(expected[1] * 1000, 3),
            "p99_ms": round(expected[2] * 1000, 3),
            "max_ms": 20.0,
            "avg_response_bytes": 80.0,
            "rejected": {"body_too_large": 3, "uri_too_long": 1},
            "errors": {"4xx": 5, "5xx": 1},
        },
        "websockets": {"open": 3, "closed": 5, "messages_in": 47, "messages_out": 48},
        "memory": {"rss_bytes": 2000},
        "cpu_percent": 3.5,
        "event_loop_lag_ms": 4.0,
    }
    assert total["requests"]["p50_ms"] == pytest.approx(3.0, rel=0.02)  # 3rd of 5: 3 ms
    assert total["requests"]["p99_ms"] == pytest.approx(20.0, rel=0.02)


def test_no_worker_and_no_request_give_nulls() -> None:
    total = aggregate([figures(11, 0)])
    assert total["requests"]["p50_ms"] is None
    assert total["requests"]["avg_response_bytes"] is None
    assert aggregate([])["workers"] == 0


def test_the_private_fields_are_not_shown() -> None:
    entry = shown({**figures(11, 1), "written_at": 1.0, "age_ms": 3})
    assert set(entry) == {
        "pid",
        "worker",
        "state",
        "uptime_ms",
        "requests",
        "memory",
        "cpu_percent",
        "event_loop_lag_ms",
        "age_ms",
    }


def test_the_aggregate_takes_the_maximum_read_with_the_buckets() -> None:
    """``requests.max_ms`` may be a reused answer, older than the buckets: a percentile of
    the buckets could then come out above it. The maximum read with them wins."""
    window = LatencyWindow()
    for ms in (1, 4):
        window.record(ms / 1000)
    one = figures(11, 2, latency_buckets=window.buckets(), latency_max_ms=4.0)
    one["requests"]["max_ms"] = 1.0  # from before the 4 ms request
    total = aggregate([one])
    assert total["requests"]["max_ms"] == 4.0
    assert total["requests"]["p99_ms"] <= total["requests"]["max_ms"]
    assert "latency_max_ms" not in shown(one)
