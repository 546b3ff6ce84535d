from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from nessen.observability.logs import (
    MAX_FIELD_CHARS,
    ConsoleFormatter,
    JsonFormatter,
    configure_logging,
    escape,
)


def make_record(
    message: str = "hello %s",
    args: tuple[Any, ...] = ("world",),
    level: int = logging.INFO,
    **extra: Any,
) -> logging.LogRecord:
    record = logging.LogRecord("nessen.access", level, __file__, 1, message, args, None)
    record.created = 1_700_000_000.25  # 2023-11-14T22:13:20.250Z
    record.__dict__.update(extra)
    return record


ACCESS = {
    "request_id": "abc-00000001",
    "method": "GET",
    "path": "/users/7",
    "route": "/users/{id}",
    "status": 200,
    "duration_ms": 1.234,
    "bytes": 17,
    "client_ip": "192.0.2.1",
}


def test_json_line_has_the_standard_keys_and_the_extra_fields() -> None:
    line = JsonFormatter().format(make_record(**ACCESS))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry == {
        "timestamp": "2023-11-14T22:13:20.250Z",
        "level": "info",
        "logger": "nessen.access",
        "message": "hello world",
        **ACCESS,
    }


def test_json_skips_absent_fields_and_keeps_unknown_extras_out() -> None:
    entry = json.loads(JsonFormatter().format(make_record(reason="x", color="blue")))
    assert entry["reason"] == "x"
    assert "color" not in entry
    assert "status" not in entry


def test_json_level_names_are_lower_case() -> None:
    entry = json.loads(JsonFormatter().format(make_record(level=logging.WARNING)))
    assert entry["level"] == "warning"


def test_json_includes_the_exception() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = make_record()
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: bad")


@pytest.mark.parametrize("evil", ["/a\nFAKE level=error", "/a\r\nX", "/a\x1b[31m", "/\x00"])
def test_control_characters_stay_on_one_line_in_json(evil: str) -> None:
    line = JsonFormatter().format(make_record("GET %s", (evil,), path=evil))
    assert "\n" not in line
    assert "\r" not in line
    entry = json.loads(line)
    assert entry["message"] == f"GET {evil}"
    assert entry["path"] == evil


def test_console_line() -> None:
    line = ConsoleFormatter().format(make_record("GET %s %d", ("/users/7", 200), **ACCESS))
    assert line == (
        "2023-11-14T22:13:20.250Z INFO    nessen.access GET /users/7 200 "
        "request_id=abc-00000001 method=GET path=/users/7 route=/users/{id} status=200 "
        "duration_ms=1.234 bytes=17 client_ip=192.0.2.1"
    )


def test_console_escapes_newlines_as_hex() -> None:
    evil = "/a\nFAKE 2023 ERROR\r"
    line = ConsoleFormatter().format(make_record("GET %s", (evil,), path=evil))
    assert "\n" not in line
    assert "\r" not in line
    assert "GET /a\\x0aFAKE 2023 ERROR\\x0d" in line
    # Field values with spaces are quoted (logfmt), their backslashes doubled.
    assert line.endswith('path="/a\\\\x0aFAKE 2023 ERROR\\\\x0d"')


def test_console_quotes_values_so_request_data_cannot_forge_fields() -> None:
    evil = "/x status=200 client_ip=6.6.6.6"
    line = ConsoleFormatter().format(make_record("GET", (), path=evil, status=404))
    assert line.endswith('path="/x status=200 client_ip=6.6.6.6" status=404')


def test_unicode_line_separators_are_escaped_in_both_formats() -> None:
    evil = "/x\u2028y\x85z\u2029"
    console = ConsoleFormatter().format(make_record("GET %s", (evil,), path=evil))
    assert len(console.splitlines()) == 1
    assert "/x\\u2028y\\x85z\\u2029" in console
    line = JsonFormatter().format(make_record("GET %s", (evil,), path=evil))
    assert len(line.splitlines()) == 1
    assert json.loads(line)["path"] == evil


def test_escape() -> None:
    assert escape("plain") == "plain"
    assert escape("a\nb\tc\x7f") == "a\\x0ab\\x09c\\x7f"
    long = "x" * (MAX_FIELD_CHARS + 10)
    assert escape(long) == "x" * MAX_FIELD_CHARS + "..."


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers = handlers
    root.setLevel(level)


def test_configure_logging_writes_json_and_undo_restores(root_logger: logging.Logger) -> None:
    before_handlers, before_level = list(root_logger.handlers), root_logger.level
    stream = io.StringIO()
    undo = configure_logging("warning", "json", stream)
    assert len(root_logger.handlers) == 1
    assert root_logger.level == logging.WARNING
    logging.getLogger("nessen.test").info("dropped")
    logging.getLogger("nessen.test").warning("kept %d", 1, extra={"reason": "r"})
    undo()
    assert root_logger.handlers == before_handlers
    assert root_logger.level == before_level
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert (entry["level"], entry["logger"], entry["message"], entry["reason"]) == (
        "warning",
        "nessen.test",
        "kept 1",
        "r",
    )


def test_configure_logging_console(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    undo = configure_logging("debug", "console", stream)
    try:
        assert root_logger.level == logging.DEBUG
        logging.getLogger("nessen.test").debug("line\nbreak")
    finally:
        undo()
    (line,) = stream.getvalue().splitlines()
    assert line.endswith(" DEBUG   nessen.test line\\x0abreak")


def test_json_carries_the_drain_summary_fields() -> None:
    summary = {"served": 12, "cut": 1, "connections_closed": 1, "upgraded_closed": 0}
    entry = json.loads(JsonFormatter().format(make_record(**summary)))
    assert {key: entry[key] for key in summary} == summary
