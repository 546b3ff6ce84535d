"""The drain sequence under load, as a Kubernetes rolling update exercises it."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.e2e.serving import ServeFactory, base_env
from tests.rawhttp import RawClient, RawResponse, get

pytestmark = pytest.mark.slow

APP = "tests.e2e.apps.workers:runtime"
SLOW_SECONDS = 2
READY_WITHIN = 10.0
"""Seconds after SIGTERM by which /ready must have turned 503."""


def request_once(address: tuple[str, int], path: str) -> RawResponse:
    """One request on a new connection that asks to be closed after it."""
    with RawClient(address, timeout=10.0) as client:
        return client.request(get(path, host="t", extra="Connection: close\r\n"))


def slow_request(address: tuple[str, int], results: list[RawResponse | OSError]) -> None:
    """GET /slow on a persistent connection: the server alone decides to close it."""
    try:
        with RawClient(address, timeout=15.0) as client:
            results.append(client.request(get(f"/slow?seconds={SLOW_SECONDS}", host="t")))
    except OSError as exc:
        results.append(exc)


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
    clients = [KeepAliveClient(served.address) for _ in range(20)]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 15
    while sum(len(c.results) for c in clients) < 200:  # poll the condition, never forever
        assert time.monotonic() < deadline, "the keep-alive clients made no progress"
        time.sleep(0.01)
    # The slow requests start last and SIGTERM follows as soon as all five are in their
    # handlers, so they are in flight when the drain begins (their responses prove it).
    slow_results: list[RawResponse | OSError] = []
    slow = [
        threading.Thread(target=slow_request, args=(served.address, slow_results), daemon=True)
        for _ in range(5)
    ]
    for thread in slow:
        thread.start()
    served.wait_for_line(lambda _: served.stderr.count("slow handler entered") == 5)

    served.signal()
    signalled = time.monotonic()
    while (status := request_once(served.address, "/ready").status) != 503:
        assert status == 200
        assert time.monotonic() - signalled < READY_WITHIN, "/ready still 200 after SIGTERM"
    ready_went_503 = time.monotonic()
    # SHUTDOWN_DELAY: still serving normally, new connections included.
    assert request_once(served.address, "/pid").status == 200

    assert served.wait() == 0
    for thread in slow:
        thread.join(10)
    for client in clients:
        client.join(10)
    slow_responses = [r for r in slow_results if isinstance(r, RawResponse)]
    assert [r.status for r in slow_responses] == [200] * 5, slow_results
    # Written during the drain, not before it: each says the connection closes, although
    # the client did not ask for that.
    assert [r.header("connection") for r in slow_responses] == ["close"] * 5
    before = [
        outcome for c in clients for started, outcome in c.results if started < ready_went_503
    ]
    assert len(before) >= 200
    assert set(before) <= {"200", "503"}, {o for o in before if o not in ("200", "503")}
    log = served.stderr
    assert "READY -> DRAINING" in log
    assert "DRAINING -> STOPPING (drained)" in log
    assert log.index("still serving for shutdown_delay") < log.index("drained: every in-flight")
