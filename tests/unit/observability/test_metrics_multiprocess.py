"""Multiprocess mode: two simulated workers share PROMETHEUS_MULTIPROC_DIR; /metrics adds them up.

prometheus-client picks its multiprocess value class when it is first imported, from the
environment, so each worker here is a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from nessen.observability.metrics import PrometheusMetrics

WORKER = """
import logging, os, sys
from nessen.observability.logs import BufferedStreamHandler
from nessen.observability.metrics import PrometheusMetrics

requests, lag, show = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "show"
read_end, write_end = os.pipe()
os.close(read_end)  # a log reader that went away: every line is dropped
handler = BufferedStreamHandler(open(write_end, "w"))
log = logging.getLogger("worker")
log.handlers, log.propagate = [handler], False
for _ in range(requests):
    log.error("lost")
handler.close()
metrics = PrometheusMetrics()
assert metrics.multiprocess
for _ in range(requests):
    metrics.request_finished("GET", "/a", 200, 0.003, 100)
metrics.request_finished("GET", None, 500, 0.020, 10)
metrics.request_rejected("uri_too_long", 414, "GET", None)
metrics.set_active(2, 5)
metrics.set_state("READY")
metrics.set_event_loop_lag(lag)
metrics.flush()
print(os.getpid())
if show:
    sys.stdout.write(metrics.exposition()[0].decode())
"""

Families = dict[str, str]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def run_worker(directory: Path, requests: int, lag: float, *, show: bool) -> tuple[int, str]:
    env = {"PATH": os.environ.get("PATH", ""), "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    env.update((k, v) for k, v in os.environ.items() if k.startswith("COVERAGE_"))
    result = subprocess.run(
        [sys.executable, "-c", WORKER, str(requests), str(lag), "show" if show else "quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    pid, _, exposition = result.stdout.partition("\n")
    return int(pid), exposition


def parse(text: str) -> tuple[Families, Samples]:
    families = list(text_string_to_metric_families(text))
    return (
        {family.name: family.type for family in families},
        {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in families
            for s in family.samples
        },
    )


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


def test_any_worker_reports_the_sum_of_all_workers(tmp_path: Path) -> None:
    first_pid, _ = run_worker(tmp_path, 3, 0.010, show=False)
    _, exposition = run_worker(tmp_path, 2, 0.050, show=True)
    families, found = parse(exposition)

    single = PrometheusMetrics()
    single.request_finished("GET", "/a", 200, 0.003, 100)
    single.request_rejected("uri_too_long", 414, "GET", None)
    single_families, _ = parse(single.exposition()[0].decode())
    ours = {
        name: kind
        for name, kind in single_families.items()
        if not name.startswith(("process_", "python_")) and not name.endswith("_created")
    }
    # The same names and types as one process, minus python_* and the _created timestamps
    # (per process, so prometheus-client leaves them out of the aggregate); the process_*
    # series are each worker's own, with the names and types of prometheus-client's.
    process = {name: kind for name, kind in single_families.items() if name.startswith("process_")}
    assert set(process) == {
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_cpu_seconds",
        "process_open_fds",
        "process_max_fds",
    }
    assert families == ours | process

    ok = labels(method="GET", route="/a", status="200")
    assert found[("http_requests_total", ok)] == 5.0
    assert (
        found[("http_requests_total", labels(method="GET", route="unmatched", status="500"))] == 2
    )
    assert (
        found[("http_requests_total", labels(method="GET", route="unmatched", status="414"))] == 2
    )
    assert found[("nessen_rejected_requests_total", labels(reason="uri_too_long"))] == 2.0
    route_a = {"method": "GET", "route": "/a"}
    assert found[("http_request_duration_seconds_count", labels(**route_a))] == 5.0
    assert found[("http_request_duration_seconds_bucket", labels(le="0.0025", **route_a))] == 0
    assert found[("http_request_duration_seconds_bucket", labels(le="0.005", **route_a))] == 5.0
    assert found[("http_response_size_bytes_sum", labels(**route_a))] == 500.0
    assert found[("http_requests_active", ())] == 4.0  # livesum over both workers
    assert found[("nessen_connections_active", ())] == 10.0
    assert found[("nessen_state", labels(state="READY"))] == 2.0  # two workers are READY
    assert found[("nessen_state", labels(state="DRAINING"))] == 0.0
    assert found[("nessen_event_loop_lag_seconds", ())] == 0.05  # the worst worker
    assert found[("nessen_log_lines_dropped_total", ())] == 5.0  # one log line per request

    # The supervisor marks an exited worker dead: its gauges go, its counts stay.
    mark_process_dead(first_pid, str(tmp_path))
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    _, after = parse(generate_latest(registry).decode())
    assert after[("http_requests_total", ok)] == 5.0
    assert after[("http_requests_active", ())] == 2.0
    assert after[("nessen_state", labels(state="READY"))] == 1.0


def test_a_file_another_process_has_not_sized_yet_is_skipped(tmp_path: Path) -> None:
    """prometheus-client creates each file at 0 bytes and sizes it a moment later; a worker
    starting in that moment (or one killed in it, whose file stays) failed to start."""
    (tmp_path / "counter_424242.db").touch()
    (tmp_path / "gauge_livesum_424242.db").touch()
    _, exposition = run_worker(tmp_path, 2, 0.010, show=True)
    _, found = parse(exposition)
    assert found[("http_requests_total", labels(method="GET", route="/a", status="200"))] == 2
