from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from nessen.observability.logs import (
    MAX_FIELD_CHARS,
    SAID_IN_MESSAGE,
    ConsoleFormatter,
    JsonFormatter,
    LineFormatter,
    RequestIdFilter,
    configure_logging,
    current_request_id,
    escape,
    wants_colour,
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


def test_json_skips_absent_fields_and_keeps_the_callers_extra_fields() -> None:
    entry = json.loads(JsonFormatter().format(make_record(reason="x", color="blue")))
    assert entry["reason"] == "x"
    assert entry["color"] == "blue"  # an app's extra= field is part of its line
    assert "status" not in entry
    assert "lineno" not in entry  # the record's own attributes are not fields


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


@contextlib.contextmanager
def root_set_up(
    *handlers: logging.Handler, level: int = logging.WARNING
) -> Iterator[logging.Logger]:
    """The root logger with only ``handlers`` (none: an app that set up no logging).

    Entered in the test's body: pytest adds its capture handlers to the root logger for the
    call phase, after fixtures ran.
    """
    root = logging.getLogger()
    saved, saved_level = list(root.handlers), root.level
    root.handlers = list(handlers)
    root.setLevel(level)
    try:
        yield root
    finally:
        root.handlers = saved
        root.setLevel(saved_level)


class ListHandler(logging.Handler):
    """An app's own handler: keeps what reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_apps_logging_set_up_is_left_alone() -> None:
    app_handler = ListHandler()
    app_handler.addFilter(RequestIdFilter())
    with root_set_up(app_handler) as root_logger:
        stream = io.StringIO()
        undo = configure_logging("info", "json", stream)
        try:
            assert root_logger.handlers == [app_handler]  # not replaced
            assert root_logger.level == logging.WARNING  # nor its level
            logging.getLogger("nessen.server").info("ours")
            logging.getLogger("app.orders").warning("theirs", extra={"order": 7})
            token = current_request_id.set("req-1")
            try:
                logging.getLogger("app.orders").error("in a request")
            finally:
                current_request_id.reset(token)
        finally:
            undo()
    ours = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry["message"] for entry in ours] == ["ours"]  # only Nessen's lines here
    theirs = app_handler.records
    assert [record.getMessage() for record in theirs] == ["theirs", "in a request"]
    assert theirs[0].order == 7  # type: ignore[attr-defined]
    assert [record.request_id for record in theirs] == ["-", "req-1"]  # type: ignore[attr-defined]
    # the record attributes the logging module fills in are there for the app's formats
    assert theirs[0].lineno > 0
    assert theirs[0].pathname == __file__
    assert theirs[0].process is not None
    assert theirs[0].thread is not None
    assert logging.getLogger("nessen").propagate  # undo restored it


def test_an_apps_records_reach_our_handler_with_their_extra_fields_and_request_id() -> None:
    stream = io.StringIO()
    with root_set_up():
        undo = configure_logging("info", "json", stream)
        token = current_request_id.set("req-9")
        try:
            logging.getLogger("app").info(
                "paid", extra={"order": 7, "amount": 12.5, "tags": ["a"], "user": "u1"}
            )
        finally:
            current_request_id.reset(token)
            undo()
    (entry,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entry["logger"] == "app"
    assert entry["request_id"] == "req-9"
    assert (entry["order"], entry["amount"], entry["user"]) == (7, 12.5, "u1")
    assert entry["tags"] == "['a']"  # not a plain value: its str()


def test_console_lines_carry_extra_fields_escaped() -> None:
    line = ConsoleFormatter().format(make_record(order=7, note="two\nlines"))
    assert line.endswith(' order=7 note="two\\x0alines"') or "order=7" in line
    assert len(line.splitlines()) == 1


def test_configure_logging_writes_json_and_undo_restores() -> None:
    stream = io.StringIO()
    with root_set_up(level=logging.ERROR) as root_logger:
        undo = configure_logging("warning", "json", stream)
        assert len(root_logger.handlers) == 1  # the app set up none: ours
        assert root_logger.level == logging.WARNING
        logging.getLogger("nessen.test").info("dropped")
        logging.getLogger("nessen.test").warning("kept %d", 1, extra={"reason": "r"})
        undo()
        assert root_logger.handlers == []
        assert root_logger.level == logging.ERROR
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert (entry["level"], entry["logger"], entry["message"], entry["reason"]) == (
        "warning",
        "nessen.test",
        "kept 1",
        "r",
    )


def test_configure_logging_console() -> None:
    stream = io.StringIO()
    with root_set_up() as root_logger:
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


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_level_names_are_coloured_on_a_terminal_unless_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert wants_colour(Terminal())
    assert not wants_colour(io.StringIO())  # a pipe or a file: never
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_colour(Terminal())


def test_colour_changes_only_the_level_name() -> None:
    record = make_record(level=logging.WARNING, reason="x\ny")
    plain = ConsoleFormatter().format(record)
    coloured = ConsoleFormatter(colour=True).format(record)
    assert "\x1b[33mWARNING\x1b[0m" in coloured  # yellow
    assert coloured.replace("\x1b[33m", "").replace("\x1b[0m", "") == plain
    assert "\\x0a" in coloured  # the data is escaped as before: no raw control character
    access = ("id-1", "GET", "/a", "/a", 200, 1.5, 10, "192.0.2.1", None)
    formatter = ConsoleFormatter(colour=True)
    direct = formatter.format_access(1_700_000_000.25, "INFO", "n", access)
    assert direct.startswith("2023-11-14T22:13:20.250Z \x1b[32mINFO   \x1b[0m n GET")
    # the access fast path prints what the generic path prints for the same fields
    assert direct == LineFormatter.format_access(formatter, 1_700_000_000.25, "INFO", "n", access)


def test_a_record_that_says_its_fields_in_the_message_is_brief_on_the_console() -> None:
    said = {"address": "http://127.0.0.1:3000", SAID_IN_MESSAGE: True}
    console = ConsoleFormatter().format(make_record("running on %s", ("there",), **said))
    assert console == "2023-11-14T22:13:20.250Z INFO    nessen.access running on there"
    entry = json.loads(JsonFormatter().format(make_record("running on %s", ("there",), **said)))
    assert entry["address"] == "http://127.0.0.1:3000"  # machines still get the field
    assert SAID_IN_MESSAGE not in entry
    plain = ConsoleFormatter().format(make_record(address="x"))
    assert plain.endswith("hello world address=x")  # unmarked records keep their fields
