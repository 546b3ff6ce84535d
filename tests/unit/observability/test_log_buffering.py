from __future__ import annotations

import io
import logging
import threading

from nessen.observability.logs import BufferedStreamHandler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.wrote = threading.Event()

    def write(self, text: str) -> int:
        self.writes += 1
        self.wrote.set()
        return super().write(text)


def make_logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_lines_below_the_flush_level_are_written_in_one_batch() -> None:
    stream = CountingStream()
    handler = BufferedStreamHandler(stream, interval=3600.0)
    logger = make_logger(handler, "test.buffered.batch")
    for index in range(100):
        logger.info("line %d", index)
    assert stream.writes == 0
    handler.flush()
    assert stream.writes == 1
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(100)]
    handler.close()


def test_an_error_is_written_at_once_with_what_came_before() -> None:
    stream = CountingStream()
    handler = BufferedStreamHandler(stream, interval=3600.0)
    logger = make_logger(handler, "test.buffered.error")
    logger.info("before")
    logger.error("boom")
    assert stream.getvalue() == "before\nboom\n"
    handler.close()


def test_the_size_bound_triggers_a_write() -> None:
    stream = CountingStream()
    handler = BufferedStreamHandler(stream, interval=3600.0, max_bytes=100)
    logger = make_logger(handler, "test.buffered.size")
    for _ in range(9):
        logger.info("x" * 9)  # 10 characters each with the newline
    assert stream.writes == 0
    logger.info("x" * 9)
    assert stream.writes == 1
    handler.close()


def test_the_timer_flushes_without_further_records() -> None:
    stream = CountingStream()
    handler = BufferedStreamHandler(stream, interval=0.05)
    logger = make_logger(handler, "test.buffered.timer")
    logger.info("soon")
    assert stream.wrote.wait(5.0)
    assert stream.getvalue() == "soon\n"
    handler.close()


def test_close_writes_what_is_left() -> None:
    stream = CountingStream()
    handler = BufferedStreamHandler(stream, interval=3600.0)
    logger = make_logger(handler, "test.buffered.close")
    logger.warning("last words")
    handler.close()
    assert stream.getvalue() == "last words\n"
