"""The drain sequence under load, as a Kubernetes rolling update exercises it."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.e2e.serving import ServeFactory, base_env
from tests.e2e.test_workers import get

pytestmark = pytest.mark.slow

APP = "tests.e2e.apps.workers:runtime"


class KeepAliveClient(threading.Thread):
    """One persistent connection sending GET /pid back to back until refused or closed.

    Records ``(started, outcome)`` per request: "200", "503", or "failed: ..." for a reset
    or an empty reply.
    """

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.results: list[tuple[float, str]] = []

    def run(self) -> None:
        with socket.create_connection(self.address, timeout=10) as sock:
            buffer = b""
            for _ in range(100_000):
                started = time.monotonic()
                try:
                    sock.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
                    while b"\r\n\r\n" not in buffer:
                        chunk = sock.recv(65536)
                        if not chunk:
                            raise ConnectionError("empty reply")
                        buffer += chunk
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    while len(buffer) < length:
                        chunk = sock.recv(65536)
                        if not chunk:
                            raise ConnectionError("cut mid-body")
                        buffer += chunk
                    buffer = buffer[length:]
                except OSError as exc:
                    self.results.append((started, f"failed: {exc!r}"))
                    return
                status = head.split(b" ", 2)[1].decode()
                self.results.append((started, status))
                if status != "200" or b"connection: close" in head.lower():
                    return


def test_sigterm_under_load_completes_in_flight_work_and_exits_0(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(APP, env=base_env(SHUTDOWN_DELAY="500", SHUTDOWN_TIMEOUT="10000"))
    slow_results: list[tuple[int, bytes]] = []
    slow = [
        threading.Thread(
            target=lambda: slow_results.append(get(served.address, "/slow?seconds=2")),
            daemon=True,
        )
        for _ in range(5)
    ]
    for thread in slow:
        thread.start()
    served.wait_for_line(lambda _: served.stderr.count("slow handler entered") == 5)
    clients = [KeepAliveClient(served.address) for _ in range(20)]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 15
    while sum(len(c.results) for c in clients) < 200:  # poll the condition, never forever
        assert time.monotonic() < deadline, "the keep-alive clients made no progress"
        time.sleep(0.01)

    served.signal()
    ready_went_503 = 0.0
    while not ready_went_503:
        status, _ = get(served.address, "/ready")
        if status == 503:
            ready_went_503 = time.monotonic()
    # SHUTDOWN_DELAY: still serving normally, new connections included.
    status, _ = get(served.address, "/pid")
    assert status == 200

    assert served.wait() == 0
    for thread in slow:
        thread.join(10)
    for client in clients:
        client.join(10)
    assert [status for status, _ in slow_results] == [200] * 5
    before = [
        outcome for c in clients for started, outcome in c.results if started < ready_went_503
    ]
    assert len(before) >= 200
    assert set(before) <= {"200", "503"}, {o for o in before if o not in ("200", "503")}
    log = served.stderr
    assert "READY -> DRAINING" in log
    assert "DRAINING -> STOPPING (drained)" in log
    assert log.index("still serving for shutdown_delay") < log.index("drained: every in-flight")
