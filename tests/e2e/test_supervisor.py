"""The supervisor tells the truth about its port: refused during a full stop's drain, refused
and released when its workers cannot start, kept through rolling restarts."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.serving import START_TIMEOUT, ServeFactory, ServeProcess, base_env
from tests.e2e.test_workers import APP, get, started_pids, worker_pids
from tests.rawhttp import RawClient
from tests.rawhttp import get as request_bytes

pytestmark = pytest.mark.slow

FRAGILE = "tests.e2e.apps.workers:fragile"
BROKEN = "tests.e2e.apps.sample:broken"
STARTING = re.compile(r"supervisor \d+ starting \d+ workers on http://([0-9.]+):(\d+)")


class SupervisorProcess(ServeProcess):
    """``nessen serve`` with workers, followed from the supervisor's own first line (which
    comes before any worker is ready, or when none ever is)."""

    def _wait_listening(self) -> tuple[str, str, int]:
        line = self.wait_for_line(lambda line: STARTING.search(line) is not None, START_TIMEOUT)
        found = STARTING.search(line)
        assert found is not None
        return "http", found.group(1), int(found.group(2))


def connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=10.0)


def error_lines(served: ServeProcess) -> list[str]:
    return [line for line in served.lines if '"level":"error"' in line]


# --- a full stop: the port refuses as soon as the drain begins --------------------------------


def test_a_connection_attempted_during_the_drain_is_refused(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2"))
    pids = worker_pids(served, 2)
    with RawClient(served.address, timeout=15.0) as client:
        busy = int(client.request(request_bytes("/pid")).body)
        (idle,) = pids - {busy}
        client.send(request_bytes("/hold"))
        served.wait_for("hold handler entered")
        served.signal(signal.SIGTERM)
        # The idle worker drains at once and exits; its drain began with the port's close.
        served.wait_for(f"(pid {idle}) exited with status 0")
        assert served.process.poll() is None  # the busy worker still drains
        with pytest.raises(ConnectionRefusedError):
            connect(served.address).close()
        os.kill(busy, signal.SIGUSR1)  # the in-flight request ends
        response = client.response()
        assert response.status == 200
        assert int(response.body) == busy
        assert response.header("connection") == "close"
    assert served.wait() == 0
    assert error_lines(served) == []


def test_the_port_serves_through_shutdown_delay_and_refuses_after(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2", SHUTDOWN_DELAY="5000"))
    worker_pids(served, 2)
    served.signal(signal.SIGTERM)
    served.wait_for_line(lambda _: served.stderr.count("still serving for shutdown_delay") == 2)
    # Within the delay: new connections are taken and served, readiness says 503.
    assert get(served.address, "/ready")[0] == 503
    assert get(served.address, "/pid")[0] == 200
    served.wait_for_line(lambda _: served.stderr.count("exited with status 0") == 2, timeout=20)
    with pytest.raises(ConnectionRefusedError):
        connect(served.address).close()
    assert served.wait() == 0


# --- workers that cannot start ----------------------------------------------------------------


def test_a_worker_that_cannot_start_stops_the_supervisor_with_exit_3_and_frees_the_port() -> None:
    started = time.monotonic()
    served = SupervisorProcess([BROKEN], base_env(WORKERS="2"))
    try:
        # No worker ever listens: a connection attempt is refused, not left hanging.
        with pytest.raises(ConnectionRefusedError):
            connect(served.address).close()
        assert served.wait(timeout=60) == 3
        elapsed = time.monotonic() - started
    finally:
        served.close()
    # It backs off between attempts (0.5, 1, 2, 4 s) ...
    for attempt, delay in ((1, "0.5"), (2, "1.0"), (3, "2.0"), (4, "4.0")):
        assert re.search(
            rf"worker \d failed to start \({attempt} of 5 attempts; exited with status 3: "
            rf"startup hook connect_database failed: RuntimeError: database unreachable\): "
            rf"retrying in {delay} s",
            served.stderr,
        ), served.stderr
    # ... then says once why it stops.
    (line,) = [line for line in served.lines if "failed to start 5 times in a row" in line]
    assert re.search(
        r"worker \d failed to start 5 times in a row \(last: exited with status 3: startup "
        r"hook connect_database failed: RuntimeError: database unreachable\): stopping the "
        r"service, exit status 3",
        line,
    ), line
    assert "Nessen running on" not in served.stderr
    with socket.socket() as again:  # the port is free
        again.bind(served.address)
    print(f"crash loop: exit 3 after {elapsed:.1f} s")


def test_a_replacement_that_cannot_start_leaves_the_old_workers_serving(tmp_path: Path) -> None:
    marker = tmp_path / "broken-deploy"
    env = base_env(WORKERS="2", NESSEN_TEST_FAIL_MARKER=str(marker))
    served = SupervisorProcess([FRAGILE], env)
    try:
        served.wait_for("Nessen running on")
        old = worker_pids(served, 2)
        marker.touch()
        served.signal(signal.SIGHUP)
        line = served.wait_for("failed to start (exited with status 3")
        assert "keeps serving; 1 more worker(s) not replaced" in line, line
        assert worker_pids(served, 2) == old
        # A second deploy that works replaces both, and the slot of the failed replacement
        # was not also restarted behind the rolling restart's back: two workers, no more.
        marker.unlink()
        served.signal(signal.SIGHUP)
        for pid in old:
            served.wait_for(f"(pid {pid}) exited with status 0", timeout=30)
        new = set(started_pids(served)) - old
        assert worker_pids(served, 2) <= new
        assert served.stop() == 0
    finally:
        served.close()
    assert "supervisor: draining 2 workers" in served.stderr
    assert len(started_pids(served)) == 2 + 1 + 2  # first two, the failed one, two new
    assert "failed to start 5 times" not in served.stderr


def test_sighup_then_sigterm_at_once_logs_no_error(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2"))
    old = worker_pids(served, 2)
    served.signal(signal.SIGHUP)
    served.wait_for_line(lambda _: len(set(started_pids(served)) - old) >= 1)
    served.signal(signal.SIGTERM)  # while the first replacement starts
    assert served.wait() == 0
    assert error_lines(served) == [], "\n".join(error_lines(served))
    assert "all workers exited (clean)" in served.stderr
