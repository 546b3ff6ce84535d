"""The access log's direct path (no LogRecord) prints exactly what the record path prints."""

from __future__ import annotations

import functools
import io
import json
import logging
import re
import shlex
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nessen.http import Response
from nessen.middleware.access_log import logging_middleware
from nessen.observability.logs import (
    BufferedStreamHandler,
    ConsoleFormatter,
    JsonFormatter,
    direct_handler,
)
from tests.unit.middleware.helpers import finish, make_request, responding, run


class Refuses(logging.Filter):
    """Drops nothing, but its presence forces the record path."""

    def filter(self, record: logging.LogRecord) -> bool:
        return True


@pytest.fixture
def pair() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Logger, io.StringIO]]:
    """Two loggers writing through a BufferedStreamHandler: one direct, one via records."""
    made = []
    for name in ("test.direct.fast", "test.direct.record"):
        stream = io.StringIO()
        handler = BufferedStreamHandler(stream, interval=3600.0)
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
        made += [logger, stream]
    made[2].addFilter(Refuses())
    yield tuple(made)  # type: ignore[misc]
    for logger in made[0::2]:
        for handler in logger.handlers:
            handler.close()
        logger.handlers = []
        logger.filters = []


def strip_time_and_logger(line: str, fmt: str) -> str:
    if fmt == "console":  # time, level (padded), logger name
        return re.sub(r"^\S+ \S+ +\S+ ", "", line)
    entry = json.loads(line)
    del entry["timestamp"], entry["logger"]
    return json.dumps(entry)


def test_the_direct_path_applies_only_to_a_lone_buffered_handler() -> None:
    logger = logging.getLogger("test.direct.which")
    logger.propagate = False
    handler = BufferedStreamHandler(io.StringIO(), interval=3600.0)
    handler.setFormatter(ConsoleFormatter())
    try:
        logger.handlers = [handler]
        assert direct_handler(logger) is not None
        logger.handlers = [handler, logging.NullHandler()]
        assert direct_handler(logger) is None  # two handlers: the record path
        logger.handlers = [logging.StreamHandler(io.StringIO())]
        assert direct_handler(logger) is None  # another kind of handler
        logger.handlers = [handler]
        handler.setFormatter(logging.Formatter())
        assert direct_handler(logger) is None  # a formatter of the user's
        handler.setFormatter(ConsoleFormatter())
        handler.addFilter(Refuses())
        assert direct_handler(logger) is None  # a handler filter
    finally:
        logger.handlers = []
        handler.close()


@pytest.mark.parametrize("fmt", ["console", "json"])
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.text(min_size=1, max_size=40).map(lambda t: "/" + t),
    request_id=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20
    ),
    status=st.sampled_from([200, 302, 404, 429, 503]),
    route=st.sampled_from([None, "/users/{id}", 'a "quoted" = route']),
    outcome=st.sampled_from([None, "client_disconnected", "send_timeout", "response_error"]),
)
async def test_both_paths_print_the_same_line(
    pair: tuple[logging.Logger, io.StringIO, logging.Logger, io.StringIO],
    fmt: str,
    path: str,
    request_id: str,
    status: int,
    route: str | None,
    outcome: str | None,
) -> None:
    fast_logger, fast_out, record_logger, record_out = pair
    formatter = ConsoleFormatter() if fmt == "console" else JsonFormatter()
    for logger in (fast_logger, record_logger):
        logger.handlers[0].setFormatter(formatter)
    for logger in (fast_logger, record_logger):  # pytest may have added its capture handler
        logger.handlers = [h for h in logger.handlers if type(h) is BufferedStreamHandler]
    assert direct_handler(fast_logger) is not None
    assert direct_handler(record_logger) is None
    lines = []
    for logger, out in ((fast_logger, fast_out), (record_logger, record_out)):
        request = make_request("GET", "/x")
        request._path = path  # a decoded path may hold anything, control characters too
        request._id = request_id
        request.route = route

        async def handler(_: object) -> Response:
            return Response.text("hello", status)

        await logging_middleware(logger=logger)(request, functools.partial(handler, request))
        finish(request, None, status, 5, duration=0.0123456, outcome=outcome)
        logger.handlers[0].flush()
        lines.append(out.getvalue().splitlines()[-1])
    assert "\n" not in lines[0]
    assert strip_time_and_logger(lines[0], fmt) == strip_time_and_logger(lines[1], fmt)


async def test_the_handler_level_still_filters_direct_lines(
    pair: tuple[logging.Logger, io.StringIO, logging.Logger, io.StringIO],
) -> None:
    fast_logger, fast_out, _, _ = pair
    fast_logger.handlers[0].setFormatter(ConsoleFormatter())
    fast_logger.handlers[0].setLevel(logging.WARNING)
    middleware = logging_middleware(logger=fast_logger)
    await run(middleware, make_request(), responding(lambda: Response.text("ok")))
    await run(middleware, make_request(), responding(lambda: Response.text("no", 404)))
    fast_logger.handlers[0].flush()
    lines = fast_out.getvalue().splitlines()
    assert len(lines) == 1
    assert " 404 " in lines[0]
    assert "WARNING" in lines[0]


@pytest.mark.parametrize("direct", [True, False])
async def test_a_path_cannot_pass_for_fields_in_a_console_line(
    pair: tuple[logging.Logger, io.StringIO, logging.Logger, io.StringIO], direct: bool
) -> None:
    fast_logger, fast_out, record_logger, record_out = pair
    logger, out = (fast_logger, fast_out) if direct else (record_logger, record_out)
    logger.handlers = [h for h in logger.handlers if type(h) is BufferedStreamHandler]
    logger.handlers[0].setFormatter(ConsoleFormatter())
    request = make_request("GET", "/x")
    request._path = "/x request_id=forged status=200"  # what %20 in a target decodes to
    request._id = "real-id"
    await run(logging_middleware(logger=logger), request, responding(lambda: Response.text("")))
    logger.handlers[0].flush()
    line = out.getvalue().splitlines()[-1]
    tokens = shlex.split(line)  # logfmt-style: quoted values are one token
    ids = [token for token in tokens if token.startswith("request_id=")]
    assert ids == ["request_id=real-id"]
    assert '"/x request_id=forged status=200"' in line
