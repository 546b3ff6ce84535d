"""The buffered log handler writing to a pipe that nobody reads, or whose reader went away.

Every test here hung (or printed a traceback) with the handler that wrote under its lock:
the thread that logs must never wait on the reader.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import select
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nessen.observability import logs
from nessen.observability.logs import (
    BufferedStreamHandler,
    ConsoleFormatter,
    JsonFormatter,
    LineFormatter,
    log_drops,
)

DEADLINE = 10.0
"""Seconds a call may take before the test calls it a hang (the old handler: forever)."""


class Pipe:
    """An ``os.pipe()`` whose write end is given to the handler and read end to the test."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.stream = open(self.write_fd, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        self.received = b""

    def drain(self, until: Callable[[str], bool], timeout: float = DEADLINE) -> str:
        """Read until ``until(text so far)`` holds; return the text read so far."""
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while not until(self.received.decode()):
                assert not deadline.is_set(), f"not found in:\n{self.received.decode()[-3000:]}"
                if poller.poll(100):
                    chunk = os.read(self.read_fd, 65536)
                    assert chunk, f"end of the pipe:\n{self.received.decode()[-3000:]}"
                    self.received += chunk
        finally:
            timer.cancel()
        return self.received.decode()

    def read_all_now(self) -> str:
        """Everything in the pipe at this moment (the writer must be done)."""
        os.set_blocking(self.read_fd, False)
        with contextlib.suppress(BlockingIOError):  # empty now
            while chunk := os.read(self.read_fd, 65536):
                self.received += chunk
        return self.received.decode()

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):  # the read end first: a blocked write ends
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self.stream.close()


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    made = Pipe()
    yield made
    made.close()


def make_logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def finishes(call: Callable[[], Any], timeout: float = DEADLINE) -> bool:
    """Run ``call`` in a thread; whether it returned within ``timeout`` seconds."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


def own_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " nessen.logs " in line]


COUNT = re.compile(r"(\d+) lines dropped")


def episodes(notes: list[str]) -> list[int]:
    """The counts of the dropping episodes in the handler's own lines, checking their shape:
    each is one warning that dropping began, then at once one line with the count."""
    assert len(notes) % 2 == 0, notes
    counts = []
    for warning, count in zip(notes[::2], notes[1::2], strict=True):
        assert "log output stalled" in warning, notes
        found = COUNT.search(count)
        assert found is not None, notes
        counts.append(int(found.group(1)))
    return counts


def accounted(total: int, is_line: Callable[[str], bool]) -> Callable[[str], bool]:
    """A :meth:`Pipe.drain` condition: every one of ``total`` lines written or counted."""

    def done(text: str) -> bool:
        lines = text.splitlines()
        written = sum(1 for line in lines if is_line(line))
        counted = sum(int(m.group(1)) for m in COUNT.finditer(text))
        return text.endswith("\n") and written + counted >= total

    return done


LINE = "x" * 1000  # 5,000 of these are 5 MB: far more than a pipe (64 KiB) and the buffer


def log_lines(logger: logging.Logger, count: int) -> None:
    for index in range(count):
        logger.info("line %05d %s", index, LINE)


def test_logging_to_a_pipe_nobody_reads_never_waits_and_counts_what_it_drops(pipe: Pipe) -> None:
    handler = BufferedStreamHandler(pipe.stream, interval=0.05)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler, "test.pipe.unread")
    assert finishes(lambda: log_lines(logger, 5000))  # the old handler blocked at ~64 KiB
    assert handler.dropping
    dropped = handler.lines_dropped
    assert 0 < dropped < 5000
    assert log_drops()[0] >= dropped
    assert log_drops()[1] is True
    assert finishes(handler.flush)  # returns: the destination is known not to read

    text = pipe.drain(accounted(5000, lambda line: line.startswith("line ")))
    kept = [line for line in text.splitlines() if line.startswith("line ")]
    notes = own_lines(text)
    assert sum(episodes(notes)) == dropped  # each line written or counted, none twice
    assert len(kept) + dropped == 5000
    assert "WARNING nessen.logs log output stalled (buffer of 1048576 bytes full)" in notes[0]
    assert "reason=log_buffer_full" in notes[0]
    assert "WARNING nessen.logs log output caught up: " in notes[-1]
    assert f"lines_dropped={episodes(notes)[-1]}" in notes[-1]
    assert text.rstrip("\n").endswith(notes[-1])  # the two lines close the episode
    numbers = [int(line.split()[1]) for line in kept]
    assert numbers == sorted(numbers)  # what was written kept its order
    assert numbers[0] == 0

    logger.info("after the episode")  # lines flow again once the reader caught up
    handler.flush()
    assert pipe.drain(lambda text: "after the episode" in text).endswith("after the episode\n")
    assert not handler.dropping
    assert handler.lines_dropped == dropped
    handler.close()


@pytest.mark.parametrize("formatter", [ConsoleFormatter(), JsonFormatter()], ids=type)
def test_access_lines_are_dropped_and_counted_the_same_way(
    pipe: Pipe, formatter: LineFormatter
) -> None:
    handler = BufferedStreamHandler(pipe.stream, interval=0.05, buffer_bytes=16 * 1024)
    handler.setFormatter(formatter)
    fields = ("id", "GET", "/" + "a" * 500, "/{path}", 200, 0.5, 2, "127.0.0.1", None)

    def write() -> None:
        for _ in range(5000):
            handler.write_access(formatter, 1.0, "INFO", "nessen.access", fields, logging.INFO)

    assert finishes(write)
    assert handler.lines_dropped > 0
    assert finishes(handler.flush)  # the last, unformatted lines too
    text = pipe.drain(accounted(5000, lambda line: "nessen.access" in line))
    written = [line for line in text.splitlines() if "nessen.access" in line]
    assert len(written) + handler.lines_dropped == 5000
    if isinstance(formatter, JsonFormatter):
        entries = [json.loads(line) for line in text.splitlines()]  # every line whole
        notes = [e for e in entries if e["logger"] == "nessen.logs"]
        assert {e["level"] for e in notes} == {"warning"}
        assert {e["reason"] for e in notes[::2]} == {"log_buffer_full"}
        assert sum(e["lines_dropped"] for e in notes[1::2]) == handler.lines_dropped
    else:
        notes = own_lines(text)
        assert sum(episodes(notes)) == handler.lines_dropped
        assert all("reason=log_buffer_full" in line for line in notes[::2])
    handler.close()


def test_close_on_a_stalled_pipe_gives_up_and_leaves_the_count_in_the_pipe(pipe: Pipe) -> None:
    handler = BufferedStreamHandler(pipe.stream, interval=0.05, close_timeout=1.0)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler, "test.pipe.close")
    assert finishes(lambda: log_lines(logger, 3000))
    assert finishes(handler.close)  # the old handler's last write blocked here forever
    dropped = handler.lines_dropped
    text = pipe.read_all_now()  # read only after close: the pipe was never read before
    notes = own_lines(text)
    assert sum(episodes(notes)) == dropped
    assert "log output still stalled at exit: " in notes[-1]
    assert text.endswith(notes[-1] + "\n")
    kept = [line for line in text.splitlines() if line.startswith("line ")]
    assert len(kept) + dropped == 3000


def test_a_reader_that_closes_its_end_is_counted_without_a_traceback(
    pipe: Pipe, capfd: pytest.CaptureFixture[str]
) -> None:
    handler = BufferedStreamHandler(pipe.stream, interval=0.05)
    logger = make_logger(handler, "test.pipe.epipe")
    os.close(pipe.read_fd)  # EPIPE from now on
    logger.info("into a closed pipe")
    logger.error("an error too")  # wakes the writer at once
    assert finishes(handler.flush)
    for index in range(100):
        logger.info("more %d", index)
    assert finishes(handler.close)
    assert handler.lines_dropped >= 2
    assert handler.dropping
    captured = capfd.readouterr()
    assert captured.err == ""  # no "--- Logging error ---", no BrokenPipeError traceback
    assert captured.out == ""
    pipe.read_fd = -1


def test_a_record_that_cannot_be_formatted_is_reported_in_the_log_not_on_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, interval=3600.0)
    handler.setFormatter(ConsoleFormatter())
    logger = make_logger(handler, "test.pipe.format")
    logger.info("%d requests", "many")  # TypeError while formatting
    handler.close()
    assert capfd.readouterr().err == ""  # logging.Handler.handleError printed a traceback
    (line,) = stream.getvalue().splitlines()
    assert "ERROR   nessen.logs a log record could not be formatted (TypeError:" in line
    assert "logger test.pipe.format, message '%d requests'" in line
    assert "reason=log_format_error" in line


def test_writes_to_a_pipe_are_whole_lines_of_at_most_pipe_buf_bytes(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several processes share one stderr pipe: writes over PIPE_BUF would interleave."""
    sizes: list[tuple[int, bool]] = []
    real_write = os.write

    def spy(fd: int, data: Any) -> int:
        if fd not in (pipe.read_fd, pipe.write_fd, 0, 1, 2):
            sizes.append((len(data), bytes(data).endswith(b"\n")))
        return real_write(fd, data)

    handler = BufferedStreamHandler(pipe.stream, interval=3600.0)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler, "test.pipe.chunks")
    monkeypatch.setattr(logs.os, "write", spy)
    for index in range(40):
        logger.info("%02d %s", index, "y" * (index * 25))
    assert finishes(handler.flush)
    text = pipe.drain(lambda text: text.count("\n") == 40)
    handler.close()
    assert [int(line[:2]) for line in text.splitlines()] == list(range(40))
    assert len(sizes) > 1  # ~22 KB in one flush, cut into several writes
    assert all(size <= select.PIPE_BUF and whole for size, whole in sizes)


def test_a_fork_while_another_thread_holds_the_lock_leaves_a_working_child(pipe: Pipe) -> None:
    handler = BufferedStreamHandler(pipe.stream, interval=3600.0)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler, "test.pipe.fork")
    logger.info("parent line, unwritten at the fork")
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with handler.lock:  # type: ignore[union-attr]
            held.set()
            release.wait(DEADLINE)

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert held.wait(DEADLINE)
    pid = os.fork()
    if pid == 0:  # the child: its lock is free and its buffer its own
        status = 1
        try:
            fresh = handler.lines_dropped == 0 and not handler.dropping
            logger.info("child line")
            logger.error("child error")
            handler.flush()
            status = 0 if fresh else 2
        finally:
            os._exit(status)
    release.set()
    holder.join(DEADLINE)
    pidfd = os.pidfd_open(pid)
    try:
        assert select.select([pidfd], [], [], DEADLINE)[0], "the child hung"
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    handler.flush()
    text = pipe.drain(lambda text: "parent line" in text and "child error" in text)
    handler.close()
    assert sorted(text.splitlines()) == [
        "child error",
        "child line",
        "parent line, unwritten at the fork",  # once: the child did not inherit it
    ]


def test_a_destination_that_fails_its_writes_is_counted(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """/dev/full: every write fails with ENOSPC, as on a full disk."""
    with open("/dev/full", "w") as stream:
        handler = BufferedStreamHandler(stream, interval=3600.0)
        logger = make_logger(handler, "test.pipe.full")
        for index in range(50):
            logger.info("line %d", index)
        logger.error("and an error")  # wakes the writer
        assert finishes(handler.flush)
        assert handler.dropping
        assert finishes(handler.close)
    assert handler.lines_dropped == 51
    assert capfd.readouterr().err == ""


def test_a_non_blocking_socket_that_stops_reading_is_given_up_on_at_close() -> None:
    """Someone else made the descriptor non-blocking (it is shared): EAGAIN, not a hang."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    with ours, theirs, open(ours.fileno(), "w", closefd=False) as stream:
        handler = BufferedStreamHandler(stream, interval=0.05, close_timeout=1.0)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = make_logger(handler, "test.pipe.socket")
        assert finishes(lambda: log_lines(logger, 5000))  # MBs: the socket's buffer fills
        assert handler.dropping
        assert finishes(handler.close)
        received = b""
        while chunk := _recv_nowait(theirs):
            received += chunk
    lines = received.decode().splitlines()
    whole = [line for line in lines if line.startswith("line ") and line.endswith(LINE)]
    assert whole
    assert len(whole) + handler.lines_dropped == 5000  # a line cut by the socket is dropped


def _recv_nowait(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 20, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def test_a_reader_back_by_the_time_of_close_gets_everything_and_caught_up(pipe: Pipe) -> None:
    handler = BufferedStreamHandler(
        pipe.stream, interval=0.05, buffer_bytes=16 * 1024, close_timeout=20.0
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler, "test.pipe.late")
    total = 0

    def log_until_dropping() -> None:
        nonlocal total
        while not handler.dropping or total < 1000:  # an episode is on when close begins
            logger.info("line %05d %s", total, LINE)
            total += 1

    assert finishes(log_until_dropping)
    reader = threading.Thread(
        target=pipe.drain, args=(accounted(total, lambda line: line.startswith("line ")),)
    )
    reader.start()  # the reader comes back as the process stops
    assert finishes(handler.close)
    reader.join(DEADLINE)
    text = pipe.received.decode()
    notes = own_lines(text)
    assert sum(episodes(notes)) == handler.lines_dropped
    assert "log output caught up: " in notes[-1]  # not "still stalled at exit"
    kept = [line for line in text.splitlines() if line.startswith("line ")]
    assert len(kept) + handler.lines_dropped == total


def test_the_writer_thread_leaves_process_signals_to_the_main_thread(pipe: Pipe) -> None:
    """A SIGTERM the writer thread took would not interrupt the supervisor's select."""
    handler = BufferedStreamHandler(pipe.stream, interval=3600.0)
    make_logger(handler, "test.pipe.signals").error("wakes the writer")
    pipe.drain(lambda text: "wakes the writer" in text)  # the thread runs its loop
    tid = handler._writer.native_id
    with open(f"/proc/self/task/{tid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    blocked = int(fields["SigBlk"], 16)
    handler.close()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        assert blocked & (1 << (signum - 1)), signum.name
