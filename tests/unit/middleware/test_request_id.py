from __future__ import annotations

import io
import json
import logging

import pytest

from nessen.http import Request, Response
from nessen.middleware.request_id import request_id_middleware, valid_request_id
from nessen.observability.logs import JsonFormatter, current_request_id
from tests.unit.middleware.helpers import make_request, run


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("abc-123", True),
        ("a", True),
        ("Az09-_.:" * 16, True),  # every allowed kind, 128 characters
        ("0af7651916cd43dd8448eb211c80319c", True),  # nginx $request_id
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", True),  # traceparent
        ("!" + "~" * 127, False),  # visible ASCII, but not in the safe set
        ("<script>", False),
        ('a"b', False),
        ("a;b", False),
        ("%0a", False),
        ("a/b", False),
        ("x" * 129, False),
        ("", False),
        ("has space", False),
        ("tab\there", False),
        ("line\nbreak", False),
        ("del\x7f", False),
        ("caf\xe9", False),  # latin-1, not ASCII
        ("a, b", False),  # two X-Request-ID fields joined
    ],
)
def test_which_incoming_ids_are_reused(value: str, valid: bool) -> None:
    assert valid_request_id(value) is valid


async def test_a_valid_incoming_id_is_reused_and_echoed() -> None:
    request = make_request(headers=[("X-Request-ID", "trace-42")])
    response = await run(request_id_middleware(), request)
    assert request.id == "trace-42"
    assert response.headers["x-request-id"] == "trace-42"


async def test_an_invalid_incoming_id_is_replaced_by_a_generated_one() -> None:
    request = make_request(headers=[("X-Request-ID", "x" * 129)])
    response = await run(request_id_middleware(), request)
    assert request.id != "x" * 129
    assert response.headers["x-request-id"] == request.id
    assert len(request.id) == 21  # 12 hex, "-", 8 hex (new_request_id)


async def test_no_incoming_id_gets_a_generated_one() -> None:
    first, second = make_request(), make_request()
    one = await run(request_id_middleware(), first)
    two = await run(request_id_middleware(), second)
    assert one.headers["x-request-id"] != two.headers["x-request-id"]


async def test_the_header_name_is_configurable() -> None:
    request = make_request(headers=[("X-Correlation-ID", "corr-1"), ("X-Request-ID", "other")])
    response = await run(request_id_middleware("X-Correlation-ID"), request)
    assert response.headers["x-correlation-id"] == "corr-1"
    assert "x-request-id" not in response.headers


async def test_incoming_ids_can_be_ignored() -> None:
    request = make_request(headers=[("X-Request-ID", "from-client")])
    response = await run(request_id_middleware(trust_incoming=False), request)
    assert response.headers["x-request-id"] != "from-client"


async def test_the_echoed_id_replaces_one_the_handler_set() -> None:
    request = make_request(headers=[("X-Request-ID", "mine")])

    async def handler(ctx: Request) -> Response:
        return Response.text("ok", headers={"X-Request-ID": "handler-made"})

    response = await run(request_id_middleware(), request, handler)
    assert response.headers.getall("x-request-id") == ["mine"]


async def test_log_lines_inside_the_request_carry_its_id() -> None:
    stream = io.StringIO()
    handler_ = logging.StreamHandler(stream)
    handler_.setFormatter(JsonFormatter())
    app_logger = logging.getLogger("test.request_id.app")
    app_logger.addHandler(handler_)
    app_logger.propagate = False
    app_logger.setLevel(logging.INFO)

    async def handler(ctx: Request) -> Response:
        app_logger.info("inside")
        return Response.text("ok")

    try:
        await run(
            request_id_middleware(), make_request(headers=[("X-Request-ID", "ctx-7")]), handler
        )
        app_logger.info("after")
    finally:
        app_logger.removeHandler(handler_)
        handler_.close()
    inside, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["request_id"] == "ctx-7"
    assert "request_id" not in after  # reset once the request is done
    assert current_request_id.get() is None


async def test_the_context_is_reset_when_the_handler_raises() -> None:
    async def handler(ctx: Request) -> Response:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await run(request_id_middleware(), make_request(), handler)
    assert current_request_id.get() is None


def test_a_header_name_that_is_not_a_token_is_refused() -> None:
    with pytest.raises(ValueError, match="token"):
        request_id_middleware("X Request Id")
