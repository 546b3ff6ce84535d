from __future__ import annotations

import io
import logging
import threading

from nessen.observability.logs import AccessFields, BufferedStreamHandler, ConsoleFormatter


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


def test_an_error_wakes_the_writer_at_once_with_what_came_before() -> None:
    stream = CountingStream()
    handler = BufferedStreamHandler(stream, interval=3600.0)
    logger = make_logger(handler, "test.buffered.error")
    logger.info("before")
    assert not stream.wrote.is_set()
    logger.error("boom")
    assert stream.wrote.wait(10.0)  # the writer thread, not the hour's timer
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
    assert stream.wrote.wait(10.0)
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


def access_fields(index: int, status: int = 200) -> AccessFields:
    return (
        f"id-{index}",
        "GET",
        f"/items/{index}",
        "/items/{id}",
        status,
        0.5,
        2,
        "127.0.0.1",
        None,
    )


def test_access_lines_are_formatted_later_and_keep_their_place_among_records() -> None:
    stream = CountingStream()
    handler = BufferedStreamHandler(stream, interval=3600.0, format_batch=4)
    logger = make_logger(handler, "test.buffered.access")  # records print their message
    formatter = ConsoleFormatter()
    expected = []
    for index in range(10):  # more than two batches, with a record after every third line
        created = 1_795_000_000.0 + index
        fields = access_fields(index)
        handler.write_access(formatter, created, "INFO", "nessen.access", fields, logging.INFO)
        expected.append(formatter.format_access(created, "INFO", "nessen.access", fields))
        if index % 3 == 2:
            logger.info("between %d", index)
            expected.append(f"between {index}")
    assert stream.writes == 0
    handler.flush()
    assert stream.writes == 1
    assert stream.getvalue().splitlines() == expected
    assert expected[0].startswith("2026-11-18T11:06:40.000Z INFO    nessen.access GET /items/0 200")
    handler.close()


def test_a_5xx_access_line_is_written_at_once_with_the_lines_before_it() -> None:
    stream = CountingStream()
    handler = BufferedStreamHandler(stream, interval=3600.0)
    formatter = ConsoleFormatter()
    handler.write_access(formatter, 1.0, "INFO", "nessen.access", access_fields(1), logging.INFO)
    assert stream.writes == 0
    handler.write_access(
        formatter, 2.0, "ERROR", "nessen.access", access_fields(2, 500), logging.ERROR
    )
    assert stream.wrote.wait(10.0)
    assert stream.writes == 1
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "request_id=id-1 " in lines[0]
    assert " status=200 " in lines[0]
    assert "request_id=id-2 " in lines[1]
    assert " status=500 " in lines[1]
    handler.close()


def test_close_formats_and_writes_pending_access_lines() -> None:
    stream = CountingStream()
    handler = BufferedStreamHandler(stream, interval=3600.0)
    handler.write_access(
        ConsoleFormatter(), 1.0, "INFO", "nessen.access", access_fields(7), logging.INFO
    )
    handler.close()
    assert "request_id=id-7 method=GET path=/items/7 route=/items/{id} status=200" in (
        stream.getvalue()
    )
