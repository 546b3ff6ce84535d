"""``nessen serve`` with ADMIN_PORT: one process or several workers sharing the admin socket."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

import pytest

from tests.e2e.serving import ServeFactory, ServeProcess, base_env, run_nessen
from tests.e2e.test_shutdown import refused
from tests.e2e.test_workers import APP, get
from tests.integration.observability.helpers import labels, scrape, values
from tests.rawhttp import RawClient
from tests.rawhttp import get as request_bytes

pytestmark = pytest.mark.slow

ADMIN_LINE = re.compile(r"admin listener on http://([0-9.]+):(\d+)")
SCRAPE_DEADLINE = 15.0
"""Seconds for every worker's counts to reach a scrape (they hand them over every second)."""


def admin_of(served: ServeProcess) -> tuple[str, int]:
    """The admin listener's address, from the first line that announces it."""
    found = ADMIN_LINE.search(served.wait_for("admin listener on http://"))
    assert found is not None
    return found.group(1), int(found.group(2))


def test_one_process_serves_the_ops_endpoints_on_the_admin_port_and_drains_it(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(APP, env=base_env(ADMIN_PORT="0"))
    admin = admin_of(served)
    assert admin[1] != served.port
    assert get(served.address, "/metrics")[0] == 404
    assert get(served.address, "/health") == (200, b"OK")
    status, body = get(admin, "/metrics")
    assert status == 200
    assert b"http_requests_total" in body
    assert get(admin, "/pid")[0] == 404
    with RawClient(served.address, timeout=15.0) as client:
        client.send(request_bytes("/slow?seconds=3"))  # holds the drain open
        served.wait_for("slow handler entered")
        served.signal(signal.SIGTERM)
        served.wait_for("READY -> DRAINING")
        deadline = time.monotonic() + 5.0
        while not refused(admin):  # the admin listener stopped accepting with the main one
            assert time.monotonic() < deadline, "the admin port still accepts 5 s into the drain"
        assert served.process.poll() is None
        assert client.response().status == 200  # the in-flight request still completes
    assert served.wait() == 0
    assert refused(admin)


def test_workers_share_the_admin_socket_and_any_of_them_answers_with_the_aggregate(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2", ADMIN_PORT="0"))
    admin = admin_of(served)  # the supervisor's line: it bound the socket once
    assert "supervisor: admin listener on" in served.wait_for("admin listener on http://")
    main_pids: set[int] = set()
    admin_pids: set[int] = set()
    sent = 0
    deadline = time.monotonic() + 15.0
    while len(main_pids) < 2 or len(admin_pids) < 2:  # a new connection for each request
        assert time.monotonic() < deadline, f"workers seen: {main_pids}, on admin {admin_pids}"
        status, body = get(served.address, "/pid")
        assert status == 200
        main_pids.add(int(body))
        sent += 1
        status, body = get(admin, "/api/health")
        assert status == 200
        admin_pids.add(json.loads(body)["pid"])
    assert admin_pids == main_pids  # both workers accept from the one admin socket
    assert get(served.address, "/api/health")[0] == 404
    # any worker's /metrics on the admin port is the sum over both (multiprocess mode)
    series = labels(method="GET", route="/pid", status="200")
    deadline = time.monotonic() + SCRAPE_DEADLINE
    while True:
        families = scrape(f"http://{admin[0]}:{admin[1]}")
        counted = values(families["http_requests"], "http_requests_total").get(series, 0.0)
        ready = values(families["nessen_state"])[labels(state="READY")]
        if counted == sent and ready == 2.0:
            break
        assert counted <= sent, counted
        assert time.monotonic() < deadline, f"scrapes stopped at {counted}, sent {sent}+"
        time.sleep(0.05)
    assert served.stop() == 0
    assert refused(admin)
    assert served.stderr.count("DRAINING -> STOPPING (drained)") == 2


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_admin_port_in_use_exits_3_naming_it_and_releases_the_main_port(
    workers: str,
) -> None:
    with socket.socket() as taken, socket.socket() as free:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        env = base_env(PORT=str(port), ADMIN_PORT=str(busy), WORKERS=workers)
        result = run_nessen("serve", APP, env=env)
    assert result.returncode == 3, result.stderr
    assert f"cannot listen on 127.0.0.1:{busy} (ADMIN_PORT)" in result.stderr
    assert "Traceback" not in result.stderr
    with socket.socket() as again:  # the main port was released
        again.bind(("127.0.0.1", port))
