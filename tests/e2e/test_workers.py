"""The supervisor: pre-forked workers on one socket, restarts, rolling restarts, recycling."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import pytest

from tests.e2e.serving import ServeFactory, ServeProcess, base_env

pytestmark = pytest.mark.slow

APP = "tests.e2e.apps.workers:runtime"


def get(address: tuple[str, int], path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """One request on a new connection (``Connection: close``); returns (status, body)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if not data:
        raise ConnectionError("empty reply")
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def worker_pids(served: ServeProcess, count: int, timeout: float = 15.0) -> set[int]:
    """Ask /pid until ``count`` distinct workers have answered."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only saw workers {seen}"
        status, body = get(served.address, "/pid")
        assert status == 200
        seen.add(int(body))
    return seen


class Load:
    """Threads sending requests on fresh connections until stopped; counts the outcomes."""

    def __init__(self, address: tuple[str, int], threads: int = 4) -> None:
        self.address = address
        self.ok = 0
        self.failed: list[str] = []
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = get(self.address, "/pid", timeout=10.0)
                outcome = None if status == 200 else f"status {status}"
            except OSError as exc:
                outcome, body = repr(exc), b""
            with self._lock:
                if outcome is None:
                    self.ok += 1
                    self.pids.add(int(body))
                else:
                    self.failed.append(outcome)

    def wait_for_requests(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.ok
        while self.ok - start < count:
            assert time.monotonic() < deadline, "load made no progress"
            time.sleep(0.01)


def started_pids(served: ServeProcess) -> list[int]:
    return [int(m) for m in re.findall(r"worker \d+ started \(pid (\d+)\)", served.stderr)]


def test_workers_share_the_port_and_stop_cleanly(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2"))
    pids = worker_pids(served, 2)
    assert pids == set(started_pids(served))
    assert served.stop() == 0
    assert "all workers exited (clean)" in served.stderr
    assert served.stderr.count("DRAINING -> STOPPING") == 2


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2"))
    victim, survivor = sorted(worker_pids(served, 2))
    with Load(served.address) as load:
        load.wait_for_requests(50)
        os.kill(victim, signal.SIGKILL)
        served.wait_for(f"(pid {victim}) killed by SIGKILL")
        served.wait_for_line(
            lambda line: (
                "started (pid" in line and str(victim) not in line and str(survivor) not in line
            )
        )
        replacement = set(started_pids(served)) - {victim, survivor}
        assert len(replacement) == 1
        deadline = time.monotonic() + 15
        while not replacement <= load.pids:
            assert time.monotonic() < deadline, "the replacement never answered"
            time.sleep(0.01)
        load.wait_for_requests(50)
    # Only requests on the killed worker's connections may fail: at most one per thread.
    assert len(load.failed) <= 4, load.failed
    assert load.ok > 100
    assert served.stop() == 0


def test_sighup_replaces_every_worker_without_a_failed_request(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2"))
    old = worker_pids(served, 2)
    with Load(served.address) as load:
        load.wait_for_requests(50)
        served.signal(signal.SIGHUP)
        for pid in old:
            served.wait_for(f"(pid {pid}) exited with status 0", timeout=30)
        new = set(started_pids(served)) - old
        assert len(new) == 2
        deadline = time.monotonic() + 15
        while not new <= load.pids:
            assert time.monotonic() < deadline, f"new workers {new} never answered"
            time.sleep(0.01)
        load.wait_for_requests(50)
    assert load.failed == []
    assert load.ok > 100
    assert served.stop() == 0


def test_a_worker_is_recycled_after_its_request_quota(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="1", MAX_REQUESTS_PER_WORKER="30"))
    first = worker_pids(served, 1)
    with Load(served.address, threads=2) as load:
        served.wait_for("asking to be replaced", timeout=30)
        served.wait_for_line(lambda line: "exited with status 0" in line, timeout=30)
        load.wait_for_requests(20)
    assert load.failed == []
    assert len(load.pids - first) >= 1
    assert served.stop() == 0


def test_a_worker_whose_event_loop_is_stuck_is_killed_and_replaced(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2", WORKER_TIMEOUT="1000"))
    pids = worker_pids(served, 2)
    outcome: list[BaseException] = []

    def send_blocking_request() -> None:
        try:
            get(served.address, "/block?seconds=30", timeout=30)
        except OSError as exc:  # the stuck worker is killed: the connection dies
            outcome.append(exc)

    blocker = threading.Thread(target=send_blocking_request, daemon=True)
    blocker.start()
    line = served.wait_for("sent no heartbeat", timeout=15)
    stuck = int(re.search(r"\(pid (\d+)\)", line).group(1))  # type: ignore[union-attr]
    assert stuck in pids
    served.wait_for(f"(pid {stuck}) killed by SIGKILL")
    blocker.join(15)
    assert len(outcome) == 1
    served.wait_for_line(lambda _: len(set(started_pids(served))) == 3)
    assert served.stop() == 0


def test_a_crash_loop_backs_off_and_the_supervisor_exits_1(nessen_serve: ServeFactory) -> None:
    served = nessen_serve("tests.e2e.apps.sample:broken", env=base_env(WORKERS="2"))
    served.wait_for("worker 0 crashed 1 time(s) in a row: restarting in 0.5 s")
    served.wait_for("worker 0 crashed 2 time(s) in a row: restarting in 1.0 s", timeout=15)
    served.wait_for("worker 0 crashed 3 time(s) in a row: restarting in 2.0 s", timeout=15)
    assert served.stop() == 1
