"""The supervisor: pre-forked workers on one socket, restarts, rolling restarts, recycling."""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import socket
import threading
import time

import pytest

from nessen import Config, Request, Response, Runtime
from nessen.server.supervisor import RECYCLE, WorkerLink
from tests.e2e.serving import ServeFactory, ServeProcess, base_env
from tests.rawhttp import RawClient
from tests.rawhttp import get as request_bytes

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
    # Event-driven: the stuck worker is the one that answered /pid on the connection that
    # then asks /block, so the test knows which worker must be killed, and that no healthy
    # one is. WORKER_TIMEOUT is 3 s, with heartbeats every 0.25-0.6 s: a busy machine
    # delays a healthy worker's tick by milliseconds, not seconds.
    served = nessen_serve(APP, env=base_env(WORKERS="2", WORKER_TIMEOUT="3000"))
    pids = worker_pids(served, 2)
    with RawClient(served.address, timeout=60.0) as client:
        stuck = int(client.request(request_bytes("/pid")).body)
        (healthy,) = pids - {stuck}
        client.send(request_bytes("/block?seconds=60"))  # time.sleep on its event loop
        line = served.wait_for("sent no heartbeat", timeout=30)
        assert f"(pid {stuck}) sent no heartbeat" in line, line
        served.wait_for(f"(pid {stuck}) killed by SIGKILL", timeout=30)
        assert client.closed_by_peer(timeout=30)  # its connection died with it
    served.wait_for_line(lambda _: len(set(started_pids(served)) - pids) >= 1, timeout=30)
    (replacement,) = set(started_pids(served)) - pids
    assert worker_pids(served, 2, timeout=30) == {healthy, replacement}
    assert served.stderr.count("sent no heartbeat") == 1  # the healthy worker was left alone
    assert served.stop() == 0


# --- supervisor signals with a request in flight ----------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_supervisor_lets_the_in_flight_request_finish_and_exits_0(
    nessen_serve: ServeFactory, signum: int
) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2"))
    pids = worker_pids(served, 2)
    with RawClient(served.address, timeout=15.0) as client:
        client.send(request_bytes("/slow?seconds=1.5"))
        served.wait_for("slow handler entered")
        served.signal(signum)
        response = client.response()
        assert client.closed_by_peer(timeout=10.0)
    assert response.status == 200
    assert int(response.body) in pids
    assert response.header("connection") == "close"  # written after its worker's drain began
    assert served.wait() == 0
    log = served.stderr
    assert "supervisor: draining 2 workers" in log
    assert log.count("DRAINING -> STOPPING (drained)") == 2
    assert "all workers exited (clean)" in log


def test_a_second_sigterm_to_the_supervisor_cuts_the_drains_short_and_exits_1(
    nessen_serve: ServeFactory,
) -> None:
    # The supervisor forwards the second signal; each worker still draining takes the
    # immediate path (cancel, abort, exit 1), long before SHUTDOWN_TIMEOUT.
    served = nessen_serve(APP, env=base_env(WORKERS="2", SHUTDOWN_TIMEOUT="60000"))
    worker_pids(served, 2)
    with RawClient(served.address, timeout=15.0) as client:
        client.send(request_bytes("/slow?seconds=30"))
        served.wait_for("slow handler entered")
        served.signal(signal.SIGTERM)
        served.wait_for_line(lambda _: served.stderr.count("READY -> DRAINING") == 2)
        served.signal(signal.SIGTERM)
        served.wait_for("SIGTERM again: cutting the drain short")
        assert served.wait(timeout=10.0) == 1
        cut = client.response()  # its response had not begun: 503, then the close
        assert client.closed_by_peer(timeout=5.0)
    assert (cut.status, cut.header("connection")) == (503, "close")
    log = served.stderr
    assert "drain deadline passed: cut 1 in-flight request(s)" in log
    assert re.search(r"worker \d \(pid \d+\) exited with status 1", log), log
    assert "all workers exited (not clean)" in log


def test_a_drain_cut_by_shutdown_timeout_makes_the_supervisor_exit_1(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2", SHUTDOWN_TIMEOUT="1000"))
    worker_pids(served, 2)
    with RawClient(served.address, timeout=15.0) as client:
        client.send(request_bytes("/slow?seconds=30"))
        served.wait_for("slow handler entered")
        served.signal(signal.SIGTERM)
        cut = client.response()  # its response had not begun: 503, then the close
        assert client.closed_by_peer(timeout=10.0)
    assert (cut.status, cut.header("retry-after")) == (503, "1")
    assert served.wait() == 1
    log = served.stderr
    assert "drain deadline passed: cut 1 in-flight request(s)" in log
    exits = re.findall(r"worker \d \(pid \d+\) exited with status (\d+)", log)
    assert sorted(exits) == ["0", "1"]  # the idle worker drained; the busy one was cut
    assert "all workers exited (not clean)" in log


# --- rolling restart with persistent connections ---------------------------------------------


class NoResponse(ConnectionError):
    """The connection ended (EOF or reset) before one byte of the response arrived."""


def exchange(sock: socket.socket, path: str = "/pid") -> tuple[int, bytes, bool]:
    """Send one GET on ``sock``; return (status, body, whether the response said close).

    Raises:
        NoResponse: Nothing came back: the server had closed the connection.
        OSError: The response was cut short, or a timeout.
    """
    received = b""
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed mid-head after {received!r}")
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        fields = head.lower().split(b"\r\n")
        length = next(int(f.split(b":")[1]) for f in fields if f.startswith(b"content-length:"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-body")
            body += chunk
    except OSError as exc:
        if received or isinstance(exc, TimeoutError):
            raise
        raise NoResponse(repr(exc)) from exc
    close = any(f.replace(b" ", b"") == b"connection:close" for f in fields)
    return int(head.split(b" ", 2)[1]), body, close


def closed_while_idle(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` since its last response (readable means EOF here)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class KeepAliveLoad:
    """Threads that each reuse one persistent connection, as a client's connection pool does.

    A connection is given up when a response says ``Connection: close`` or when the server
    closed it while it sat idle (checked before reuse, as urllib3 does). A request sent on a
    reused connection that gets no byte back (EOF or reset: the server closed it as the
    request went out) is retried once on a fresh connection, as RFC 9112 §9.3.1 allows for
    idempotent requests; that retry is recorded in ``retried``. Everything else that is not a
    200 is a failure: a 503, a response cut short, an error on a fresh connection, a failed
    retry.
    """

    def __init__(self, address: tuple[str, int], threads: int = 4) -> None:
        self.address = address
        self.ok = 0
        self.failed: list[str] = []
        self.retried: list[str] = []
        self.idle_closes = 0
        """Connections found closed by the server between two requests (no request lost)."""
        self.announced_closes = 0
        """Responses that said ``Connection: close``."""
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> KeepAliveLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=10.0)

    def _run(self) -> None:
        sock: socket.socket | None = None
        while not self._stop.is_set():
            if sock is not None and closed_while_idle(sock):
                sock.close()
                sock = None
                with self._lock:
                    self.idle_closes += 1
            try:
                reused = sock is not None
                if sock is None:
                    sock = self._connect()
                try:
                    status, body, close = exchange(sock)
                except NoResponse as exc:
                    sock.close()
                    sock = None
                    if not reused:
                        raise
                    with self._lock:
                        self.retried.append(str(exc))
                    sock = self._connect()
                    status, body, close = exchange(sock)
            except OSError as exc:
                if sock is not None:
                    sock.close()
                    sock = None
                with self._lock:
                    self.failed.append(repr(exc))
                continue
            with self._lock:
                if status == 200:
                    self.ok += 1
                    self.pids.add(int(body))
                else:
                    self.failed.append(f"status {status}")
                if close:
                    self.announced_closes += 1
            if close:
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def wait_for_requests(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.ok
        while self.ok - start < count:
            assert time.monotonic() < deadline, f"load made no progress; failed: {self.failed}"
            time.sleep(0.01)


def test_sighup_with_keep_alive_clients_loses_no_request(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(APP, env=base_env(WORKERS="2"))
    old = worker_pids(served, 2)
    threads = 4
    with KeepAliveLoad(served.address, threads=threads) as load:
        load.wait_for_requests(200)
        served.signal(signal.SIGHUP)
        for pid in old:
            served.wait_for(f"(pid {pid}) exited with status 0", timeout=30)
        new = set(started_pids(served)) - old
        assert len(new) == 2
        # Persistent connections stay with the worker that accepted them, so the load may
        # all sit on one new worker: ask on fresh connections whether both answer.
        assert worker_pids(served, 2) == new
        load.wait_for_requests(200)
        assert load.pids & new
    assert served.stop() == 0
    # Zero failures after the one retry RFC 9112 §9.3.1 permits: a draining worker closes
    # its idle keep-alive connections at once, and a client whose next request crossed that
    # close on the wire sees EOF or a reset with no response byte, and retries. Nothing else
    # may happen: no response cut short, no failed retry, no error on a fresh connection.
    # A 503 would be lost too (clients do not retry one): the drain closes idle
    # connections in the step that starts it, so no request is read on one in between.
    assert load.failed == []
    assert "rejected draining" not in served.stderr
    # Each old worker closes each client connection at most once: a bound, not a tolerance.
    assert len(load.retried) <= threads * len(old), load.retried
    assert load.ok > 400


# --- MAX_REQUESTS_JITTER ---------------------------------------------------------------------


async def recycle_threshold(config: Config) -> int:
    """Serve one worker's runtime in this loop; return after how many requests it asks to go.

    The worker checks its quota on each server tick; the test runs the tick itself after
    every response, so the request count at the first ``R`` on its pipe is its quota.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    runtime = Runtime(config, access_log=False, metrics=False, health_endpoints=False)

    @runtime.route.get("/n")
    async def n(ctx: Request) -> Response:
        return Response.text("n")

    server = await runtime.start(link=WorkerLink(write_fd))
    assert server.on_tick is not None
    reader, writer = await asyncio.open_connection(*server.address)
    try:
        for served in range(1, 1000):
            writer.write(b"GET /n HTTP/1.1\r\nHost: t\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            assert await reader.readexactly(1) == b"n"
            server.on_tick()
            try:
                if RECYCLE in os.read(read_fd, 1024):
                    return served
            except BlockingIOError:
                pass
        raise AssertionError("the worker never asked to be recycled")
    finally:
        writer.close()
        await runtime.stop(grace_period=1.0)
        os.close(read_fd)
        os.close(write_fd)


async def test_max_requests_jitter_gives_each_worker_its_own_quota_in_range() -> None:
    config = Config(
        host="127.0.0.1",
        port=0,
        max_requests_per_worker=3,
        max_requests_jitter=3,
        rate_limit_max=1_000_000,
    )
    quotas = [await recycle_threshold(config) for _ in range(12)]
    assert all(3 <= quota <= 3 + 3 for quota in quotas), quotas
    # Twelve draws from 3..6 all equal: 4 x (1/4)**12, about 2e-7; a missing jitter: always.
    assert len(set(quotas)) > 1, quotas
    without = [await recycle_threshold(config.replace(max_requests_jitter=0)) for _ in range(3)]
    assert without == [3, 3, 3]
