"""A log destination that stops reading must not stop the service.

``nessen serve`` runs with stdout and stderr connected to pipes that the test stops reading
once the server has said where it listens (a stalled log shipper, a blocked container log
driver, a parent that never reads), or whose read end it closes (EPIPE). Before the fix the
server stopped answering after a few hundred requests, ``/health`` included, and ignored
SIGTERM, in single-process and in ``--workers`` mode alike.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.serving import ROOT, START_TIMEOUT, base_env, nessen_command

pytestmark = pytest.mark.slow

APP = "tests.e2e.apps.workers:runtime"
REQUESTS = 4000
CONNECTIONS = 8
PROBE_EVERY = 200
CLIENT_TIMEOUT = 10.0
"""Seconds a request may take; the old server never answered once the pipe was full."""
EXIT_DEADLINE = 30.0
"""Seconds from SIGTERM to exit allowed (the drain is 10 s at most; the old server: never)."""
LISTENING = re.compile(rb"Nessen running on http://([0-9.]+):(\d+)")
CONSOLE_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) ")
DROPPED = re.compile(r"(\d+) lines dropped")


class UnreadServe:
    """``nessen serve`` with stdout and stderr to pipes that are read only when asked."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            nessen_command("serve", APP),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stderr is not None
        self.stderr_fd = self.process.stderr.fileno()
        self.output = b""
        self._changed = threading.Condition()
        self._eof = False
        self._reader: threading.Thread | None = None
        found = self._read_until_listening()
        self.address = (found.group(1).decode(), int(found.group(2)))

    def _read_until_listening(self) -> re.Match[bytes]:
        deadline = time.monotonic() + START_TIMEOUT
        while (found := LISTENING.search(self.output)) is None:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no listening line: {self.output.decode()!r}"
            if select.select([self.stderr_fd], [], [], remaining)[0]:
                chunk = os.read(self.stderr_fd, 4096)
                assert chunk, f"stderr ended: {self.output.decode()!r}"
                self.output += chunk
        return found

    def start_reading(self) -> None:
        """From now on a thread drains stderr (as a log shipper that came back would)."""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := os.read(self.stderr_fd, 65536):
            with self._changed:
                self.output += chunk
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_for(self, done: Callable[[str], bool], timeout: float = 20.0) -> str:
        """Wait until ``done(everything read so far)`` (reading must have started)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(text := self.output.decode()):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"not found in time:\n{text[-3000:]}"
                assert not self._eof, f"not found before the end:\n{text[-3000:]}"
                self._changed.wait(remaining)
        return text

    def stderr_to_end(self, timeout: float = 20.0) -> str:
        """Everything the server and its workers wrote, once they all exited."""
        if self._reader is None:
            self.start_reading()
        return self.wait_for(lambda _: self._eof, timeout)

    def terminate_and_wait(self) -> tuple[int, float]:
        """SIGTERM; return the exit status and the seconds it took (the pipe still unread)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(EXIT_DEADLINE)
        return status, time.monotonic() - started

    def close(self) -> None:
        stderr = self.process.stderr
        if self._reader is None and stderr is not None and not stderr.closed:
            self.start_reading()  # a server that hangs on its log pipe can then go on
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@pytest.fixture
def unread_serve() -> Iterator[Callable[..., UnreadServe]]:
    started: list[UnreadServe] = []

    def start(**env: str) -> UnreadServe:
        server = UnreadServe(
            base_env(LOG_LEVEL="info", SHUTDOWN_TIMEOUT="10000", LOG_BUFFER_SIZE="65536", **env)
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def get(connection: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


def get_once(address: tuple[str, int], path: str) -> tuple[int, bytes, float]:
    """One request on a new connection; also the seconds it took."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(*address, timeout=CLIENT_TIMEOUT)
    try:
        status, body = get(connection, path)
    finally:
        connection.close()
    return status, body, time.monotonic() - started


def flood(server: UnreadServe) -> tuple[list[http.client.HTTPConnection], float]:
    """``REQUESTS`` requests over keep-alive connections, each answered 200, with a probe
    of ``/health`` on a new connection every ``PROBE_EVERY``; returns the connections and
    the slowest probe in seconds."""
    connections = [
        http.client.HTTPConnection(*server.address, timeout=CLIENT_TIMEOUT)
        for _ in range(CONNECTIONS)
    ]
    slowest = 0.0
    for index in range(REQUESTS):
        status, _ = get(connections[index % CONNECTIONS], "/pid")
        assert status == 200, f"request {index}"
        if index % PROBE_EVERY == 0:
            status, body, seconds = get_once(server.address, "/health")
            assert (status, body) == (200, b"OK"), f"probe after {index} requests"
            slowest = max(slowest, seconds)
    return connections, slowest


def log_health(connection: http.client.HTTPConnection) -> dict[str, object]:
    """The ``logs`` member of ``/api/health`` from the worker this connection talks to."""
    status, body = get(connection, "/api/health")
    assert status == 200
    logs = json.loads(body)["logs"]
    assert isinstance(logs, dict)
    return logs


def dropped_metric(connection: http.client.HTTPConnection) -> float:
    status, body = get(connection, "/metrics")
    assert status == 200
    (value,) = [
        float(line.split()[1])
        for line in body.decode().splitlines()
        if line.startswith("nessen_log_lines_dropped_total ")
    ]
    return value


def check_lines(text: str, log_format: str) -> list[str]:
    """Every line whole (no two processes' writes mixed); return the handler's own lines."""
    lines = text.splitlines()
    if log_format == "json":
        entries = [json.loads(line) for line in lines]
        return [e["message"] for e in entries if e["logger"] == "nessen.logs"]
    assert all(CONSOLE_LINE.match(line) for line in lines), "\n".join(
        line for line in lines if not CONSOLE_LINE.match(line) or " ERROR " in line
    )
    return [line for line in lines if " nessen.logs " in line]


def counts(notes: list[str]) -> list[int]:
    """The dropped-line counts, checking that each follows a warning that dropping began."""
    found, open_warnings = [], 0
    for note in notes:
        if "log output stalled" in note:
            open_warnings += 1
        else:
            match = DROPPED.search(note)
            assert match is not None, notes
            assert open_warnings > 0, notes
            open_warnings -= 1
            found.append(int(match.group(1)))
    assert open_warnings == 0, notes
    return found


MODES = [
    pytest.param("1", "console", id="single-console"),
    pytest.param("1", "json", id="single-json"),
    pytest.param("2", "console", id="workers-console"),
    pytest.param("2", "json", id="workers-json"),
]


@pytest.mark.parametrize(("workers", "log_format"), MODES)
def test_a_log_pipe_nobody_reads_stops_nothing(
    unread_serve: Callable[..., UnreadServe], workers: str, log_format: str
) -> None:
    server = unread_serve(WORKERS=workers, LOG_FORMAT=log_format)
    connections, slowest_probe = flood(server)
    assert slowest_probe < CLIENT_TIMEOUT

    # Each worker that served some of them counts what it dropped, and says it is dropping.
    for connection in connections:
        logs = log_health(connection)
        assert isinstance(logs["lines_dropped"], int)
        assert logs["lines_dropped"] > 0
        assert logs["dropping"] is True
    counted = dropped_metric(connections[0])  # the sum over the workers
    assert counted > 0
    status, _, _ = get_once(server.address, "/ready")
    assert status == 200
    for connection in connections:
        connection.close()

    status, seconds = server.terminate_and_wait()  # the pipe is still not read
    assert status == 0
    assert seconds < EXIT_DEADLINE

    notes = check_lines(server.stderr_to_end(), log_format)
    found = counts(notes)  # a warning, then its count, for each process that dropped
    assert found
    assert sum(found) >= counted  # and the lines still buffered at exit


@pytest.mark.parametrize(
    ("workers", "log_format"),
    [
        pytest.param("1", "console", id="single-console"),
        pytest.param("2", "json", id="workers-json"),
    ],
)
def test_once_the_reader_drains_the_pipe_the_output_says_how_many_lines_were_dropped(
    unread_serve: Callable[..., UnreadServe], workers: str, log_format: str
) -> None:
    server = unread_serve(WORKERS=workers, LOG_FORMAT=log_format)
    connections, _ = flood(server)
    pids = {get(connection, "/pid")[1] for connection in connections}  # workers that dropped
    counted = dropped_metric(connections[0])
    assert counted > 0

    server.start_reading()  # the log shipper is back
    text = server.wait_for(lambda text: text.count("log output caught up") >= len(pids))
    for connection in connections:
        # Once a line logged after the count is out, this worker is not dropping any more.
        connection.request("GET", "/pid")
        response = connection.getresponse()
        response.read()
        request_id = response.headers["X-Request-ID"]
        server.wait_for(lambda text, request_id=request_id: request_id in text)
        assert log_health(connection)["dropping"] is False
    status, _, _ = get_once(server.address, "/health")
    assert status == 200
    for connection in connections:
        connection.close()
    status, _ = server.terminate_and_wait()
    assert status == 0

    text = server.stderr_to_end()
    notes = check_lines(text, log_format)
    assert sum(counts(notes)) >= counted
    assert not [note for note in notes if "at exit" in note]  # nothing was left to drop
    stopped = "all workers exited" if workers != "1" else "STOPPING"
    assert stopped in text.splitlines()[-1] or stopped in text  # the last lines got out


@pytest.mark.parametrize("workers", ["1", "2"], ids=["single", "workers"])
def test_a_reader_that_closes_the_pipe_is_counted_and_serving_goes_on(
    unread_serve: Callable[..., UnreadServe], workers: str
) -> None:
    server = unread_serve(WORKERS=workers, LOG_FORMAT="json")
    assert server.process.stderr is not None
    assert server.process.stdout is not None
    server.process.stderr.close()  # EPIPE for every write from now on
    server.process.stdout.close()
    connections = [
        http.client.HTTPConnection(*server.address, timeout=CLIENT_TIMEOUT)
        for _ in range(CONNECTIONS)
    ]
    for index in range(REQUESTS // 4):
        status, _ = get(connections[index % CONNECTIONS], "/pid")
        assert status == 200, f"request {index}"
    for connection in connections:
        logs = log_health(connection)
        assert isinstance(logs["lines_dropped"], int)
        assert logs["lines_dropped"] > 0
        assert logs["dropping"] is True
    assert dropped_metric(connections[0]) > 0
    for connection in connections:
        connection.close()
    assert server.process.poll() is None  # no crash
    status, _ = server.terminate_and_wait()
    assert status == 0
