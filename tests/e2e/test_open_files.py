"""Running out of file descriptors: the open-file limit at start, and accept() failing.

The server runs with a lowered ``RLIMIT_NOFILE`` (set in the child before ``nessen serve``
starts, as a host or container would), so a few dozen connections exhaust it.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from tests.e2e.serving import ServeProcess, base_env
from tests.e2e.test_workers import started_pids
from tests.integration.observability.helpers import labels, scrape, values
from tests.rawhttp import RawClient, get

pytestmark = pytest.mark.slow

APP = "tests.e2e.apps.sample:runtime"


def serve_with_nofile(soft: int, hard: int, **env: str) -> ServeProcess:
    """``nessen serve`` whose open-file limit is ``soft``/``hard`` from the start."""
    launcher = (
        "import os, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'nessen', 'serve', *sys.argv[1:]])\n"
    )
    return ServeProcess([], base_env(**env), command=[sys.executable, "-c", launcher, APP])


def open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_low_soft_limit_is_raised_to_the_hard_limit_at_start(workers: str) -> None:
    served = serve_with_nofile(256, 4096, MAX_CONNECTIONS="1000", WORKERS=workers)
    try:
        # The process itself, or with workers the supervisor, whose workers inherit it.
        assert open_files_limit(served.process.pid) == (4096, 4096)
        for pid in started_pids(served):
            assert open_files_limit(pid) == (4096, 4096)
        line = served.wait_for("raised the open-file limit")
        assert "from 256 to 4096: MAX_CONNECTIONS=1000 needs about 1272" in line, line
        assert "below the" not in served.stderr
        assert served.stop() == 0
    finally:
        served.close()


def test_a_hard_limit_below_max_connections_is_warned_about_with_both_numbers() -> None:
    served = serve_with_nofile(512, 512)  # MAX_CONNECTIONS=10000 by default
    try:
        line = served.wait_for("open-file limit (RLIMIT_NOFILE) is 512")
        assert "(hard limit 512), below the 10272 that MAX_CONNECTIONS=10000 needs" in line
        assert '"level":"warning"' in line
        assert served.stop() == 0
    finally:
        served.close()


def test_running_out_of_descriptors_is_logged_once_counted_and_nothing_is_reset() -> None:
    served = serve_with_nofile(64, 64, HEADERS_TIMEOUT="60000", IDLE_TIMEOUT="60000")
    clients: list[socket.socket] = []
    waiting: RawClient | None = None
    try:
        # Idle connections the server keeps open, past what its 64 descriptors allow.
        for _ in range(90):
            clients.append(socket.create_connection(served.address, timeout=10.0))
        served.wait_for("accept() failed: [Errno 24] Too many open files")
        # The kernel completes this one's handshake; it waits in the listen queue.
        waiting = RawClient(served.address, timeout=10.0)
        waiting.send(get("/timeout"))
        for sock in clients[:45]:  # free descriptors
            sock.close()
        served.wait_for("accepting again after")
        response = waiting.response()  # served, not reset
        assert response.status == 200
        assert response.body == b"asyncio.timeout works"
        for sock in clients[45:]:
            sock.close()
        families = scrape(served.url)
        failed = values(families["nessen_accept_errors"], "nessen_accept_errors_total")
        assert failed[labels(error="EMFILE")] >= 1
        # One line when the burst began, one when it ended, however many calls failed.
        assert served.stderr.count("accept() failed") == 1
        assert served.stderr.count("accepting again after") == 1
        assert served.stop() == 0
    finally:
        for sock in clients:
            sock.close()
        if waiting is not None:
            waiting.close()
        served.close()
