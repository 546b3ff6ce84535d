"""The worker's pipe to its supervisor: control bytes and a failed start's reason, read back
by the supervisor (a real pipe, no processes)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from nessen import Config
from nessen.server.supervisor import Supervisor, WorkerLink, _Worker, heartbeat_interval


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


def supervisor_with(worker: _Worker) -> Supervisor:
    supervisor = Supervisor(Config(workers=2, max_requests_per_worker=10), lambda *_: 0)
    supervisor.workers[worker.pid] = worker
    return supervisor


def test_a_reason_full_of_control_characters_is_read_as_text(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    link = WorkerLink(write_fd)
    worker = _Worker(slot=0, pid=1, fd=read_fd, started=0.0)
    supervisor = supervisor_with(worker)
    link.failed("RuntimeError: Redis! unreachable.\nsecond line")
    supervisor._read_link(worker)
    assert worker.reason == "RuntimeError: Redis! unreachable. second line"
    assert not worker.ready  # the "!" in the text is not READY ...
    assert not worker.recycling  # ... nor its "R" a recycle request


def test_control_bytes_around_a_reason_split_across_reads_are_kept(
    pipe: tuple[int, int],
) -> None:
    read_fd, write_fd = pipe
    worker = _Worker(slot=0, pid=1, fd=read_fd, started=0.0)
    supervisor = supervisor_with(worker)
    os.write(write_fd, b".!FRuntimeError: da")
    supervisor._read_link(worker)
    assert worker.ready
    os.write(write_fd, b"tabase unreachable\nR")
    supervisor._read_link(worker)
    assert worker.reason == "RuntimeError: database unreachable"
    assert worker.recycling  # the R after the line is a recycle request again


def test_a_short_worker_timeout_gets_several_heartbeats_per_window() -> None:
    assert heartbeat_interval(30.0) == 1.0
    assert heartbeat_interval(1.0) == pytest.approx(0.2)  # five per window, not one
