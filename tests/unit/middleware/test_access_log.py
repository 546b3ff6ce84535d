from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from nessen.config import Config
from nessen.http import Request, Response
from nessen.middleware.access_log import logging_middleware
from tests.unit.middleware.helpers import finish, make_request, responding, run

FIELDS = ("request_id", "method", "path", "route", "status", "duration_ms", "bytes", "client_ip")


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def access() -> Iterator[tuple[logging.Logger, ListHandler]]:
    logger = logging.getLogger("test.access_log")
    handler = ListHandler()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, handler
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


async def ok(request: Request) -> Response:
    return Response.text("ok")


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in FIELDS}


async def test_one_record_with_the_architecture_s_fields(access: Any) -> None:
    logger, captured = access

    async def handler(ctx: Request) -> Response:
        ctx.route = "/users/{id}"
        return Response.json({"id": 7})

    request = make_request(target="/users/7?x=1", client="198.51.100.4")
    request._id = "rid-1"
    await run(logging_middleware(logger=logger), request, handler, duration=0.0125)
    (record,) = captured.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == "GET /users/7 200"
    assert record.name == "test.access_log"
    assert fields(record) == {
        "request_id": "rid-1",
        "method": "GET",
        "path": "/users/7",
        "route": "/users/{id}",
        "status": 200,
        "duration_ms": 12.5,
        "bytes": 8,
        "client_ip": "198.51.100.4",
    }
    assert not hasattr(record, "outcome")  # a response that went out whole


async def test_nothing_is_written_until_the_server_finishes_the_response(access: Any) -> None:
    logger, captured = access
    request = make_request()
    middleware = logging_middleware(logger=logger)
    response = await middleware(request, lambda: ok(request))
    assert captured.records == []
    # What the server reports is what is logged: here the 500 it sent instead.
    finish(request, None, 500, 21, duration=0.002)
    (record,) = captured.records
    assert (record.status, record.bytes, record.levelno) == (500, 21, logging.ERROR)  # type: ignore[attr-defined]
    assert response.status == 200  # what the handler hoped, never logged


@pytest.mark.parametrize(
    ("status", "outcome", "level"),
    [
        (200, "client_disconnected", logging.INFO),
        (0, "client_disconnected", logging.INFO),
        (200, "send_timeout", logging.INFO),
        (0, "shutdown_cut", logging.INFO),
        (503, "request_timeout", logging.ERROR),
        (200, "response_error", logging.ERROR),
        (408, "body_timeout", logging.WARNING),
    ],
)
async def test_an_outcome_is_logged_with_the_status_and_bytes_that_went_out(
    access: Any, status: int, outcome: str, level: int
) -> None:
    logger, captured = access
    request = make_request()
    await logging_middleware(logger=logger)(request, lambda: ok(request))
    finish(request, None, status, 1234, duration=1.5, outcome=outcome)
    (record,) = captured.records
    assert (record.status, record.bytes, record.outcome) == (status, 1234, outcome)  # type: ignore[attr-defined]
    assert record.duration_ms == 1500.0  # type: ignore[attr-defined]
    assert record.levelno == level


async def test_a_hook_set_by_an_outer_middleware_is_kept(access: Any) -> None:
    logger, captured = access
    calls: list[tuple[int, int, str | None]] = []
    request = make_request()
    request.on_finished = lambda req, resp, status, sent, outcome, duration: calls.append(
        (status, sent, outcome)
    )
    await run(logging_middleware(logger=logger), request)
    assert calls == [(200, 2, None)]
    assert [r.status for r in captured.records] == [200]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "level"),
    [
        (200, logging.INFO),
        (301, logging.INFO),
        (304, logging.INFO),
        (400, logging.WARNING),
        (404, logging.WARNING),
        (429, logging.WARNING),
        (499, logging.WARNING),
        (500, logging.ERROR),
        (503, logging.ERROR),
    ],
)
async def test_the_level_follows_the_status(access: Any, status: int, level: int) -> None:
    logger, captured = access
    await run(
        logging_middleware(logger=logger),
        make_request(),
        responding(lambda: Response(status, b"x")),
    )
    assert [r.levelno for r in captured.records] == [level]


async def test_nothing_is_built_below_the_logger_s_level(access: Any) -> None:
    logger, captured = access
    logger.setLevel(logging.WARNING)
    middleware = logging_middleware(logger=logger)
    await run(middleware, make_request(), responding(lambda: Response.text("ok")))
    await run(middleware, make_request(), responding(lambda: Response.text("no", 404)))
    assert [r.status for r in captured.records] == [404]  # type: ignore[attr-defined]


async def test_2xx_lines_can_be_sampled(access: Any) -> None:
    logger, captured = access
    draws = iter([0.5, 0.05, 0.99])
    middleware = logging_middleware(logger=logger, sample_2xx=0.1, sampler=lambda: next(draws))
    for _ in range(3):
        await run(middleware, make_request(target="/kept-or-not"))
    for _ in range(2):  # errors are never sampled, and draw nothing
        await run(middleware, make_request(), responding(lambda: Response.text("x", 500)))
    assert [r.status for r in captured.records] == [200, 500, 500]  # type: ignore[attr-defined]
    request = make_request()  # a line with an outcome is kept, and draws nothing
    await middleware(request, lambda: ok(request))
    finish(request, None, 200, 1, outcome="client_disconnected")
    assert [r.status for r in captured.records] == [200, 500, 500, 200]  # type: ignore[attr-defined]


async def test_excluded_paths_are_not_logged(access: Any) -> None:
    logger, captured = access
    middleware = logging_middleware(logger=logger, exclude_paths={"/health", "/ready"})
    for path in ("/health", "/ready", "/users"):
        await run(middleware, make_request(target=path))
    assert [r.path for r in captured.records] == ["/users"]  # type: ignore[attr-defined]


async def test_headers_are_logged_with_secrets_redacted(access: Any) -> None:
    logger, captured = access
    request = make_request(
        headers=[
            ("Authorization", "Bearer secret"),
            ("Cookie", "session=secret"),
            ("Proxy-Authorization", "Basic secret"),
            ("X-Api-Key", "secret"),
            ("Accept", "text/html"),
            ("Accept", "application/json"),
        ]
    )

    async def handler(ctx: Request) -> Response:
        response = Response.text("ok")
        response.headers.add("Set-Cookie", "a=secret")
        response.headers.add("Set-Cookie", "b=secret")
        response.headers.add("X-Trace", "t1")
        return response

    middleware = logging_middleware(logger=logger, log_headers=True, redact_headers=["X-API-Key"])
    await run(middleware, request, handler)
    (record,) = captured.records
    assert record.headers == {  # type: ignore[attr-defined]
        "authorization": "[redacted]",
        "cookie": "[redacted]",
        "proxy-authorization": "[redacted]",
        "x-api-key": "[redacted]",
        "accept": "text/html, application/json",
    }
    assert record.response_headers == {  # type: ignore[attr-defined]
        "set-cookie": "[redacted], [redacted]",
        "x-trace": "t1",
    }
    assert "secret" not in repr(record.__dict__)


async def test_headers_are_not_logged_by_default(access: Any) -> None:
    logger, captured = access
    await run(logging_middleware(logger=logger), make_request(headers=[("Accept", "x")]))
    assert not hasattr(captured.records[0], "headers")
    assert not hasattr(captured.records[0], "body")


async def test_the_body_can_be_logged_cut_to_a_length(access: Any) -> None:
    logger, captured = access
    body = "é".encode() * 10 + b"\xff"
    middleware = logging_middleware(logger=logger, log_body=True, max_body_chars=5)
    await run(middleware, make_request("POST", "/", body=body))
    assert captured.records[0].body == "ééééé"  # type: ignore[attr-defined]
    short = logging_middleware(logger=logger, log_body=True)
    await run(short, make_request("POST", "/", body=b"ok\xff"))
    assert captured.records[1].body == "ok\ufffd"  # type: ignore[attr-defined]


async def test_a_cancelled_handler_is_logged_with_what_the_server_sent(access: Any) -> None:
    logger, captured = access

    async def handler(ctx: Request) -> Response:
        raise asyncio.CancelledError

    request = make_request()
    with pytest.raises(asyncio.CancelledError):
        await run(logging_middleware(logger=logger), request, handler)
    assert captured.records == []
    finish(request, None, 503, 95, duration=0.3, outcome="request_timeout")  # the server's 503
    (record,) = captured.records
    assert (record.status, record.outcome) == (503, "request_timeout")  # type: ignore[attr-defined]


async def test_an_escaping_exception_is_logged_with_the_server_s_500(access: Any) -> None:
    logger, captured = access

    async def handler(ctx: Request) -> Response:
        raise RuntimeError("inner middleware bug")

    request = make_request()
    with pytest.raises(RuntimeError):
        await run(logging_middleware(logger=logger), request, handler)
    finish(request, Response.json({"error": "Internal Server Error"}, 500), 500, 33)
    (record,) = captured.records
    assert (record.status, record.bytes, record.levelno) == (500, 33, logging.ERROR)  # type: ignore[attr-defined]


async def test_client_ip_comes_from_trusted_proxies(access: Any) -> None:
    logger, captured = access
    networks = Config(trust_proxy=("10.0.0.0/8",)).trusted_networks
    middleware = logging_middleware(logger=logger, trusted_networks=networks)
    request = make_request(
        headers=[("X-Forwarded-For", "1.1.1.1, 198.51.100.9")], client="10.1.1.1"
    )
    await run(middleware, request)
    assert captured.records[0].client_ip == "198.51.100.9"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"sample_2xx": 1.5}, "sample_2xx=1.5"), ({"max_body_chars": -1}, "max_body_chars=-1")],
)
def test_invalid_settings_are_refused(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        logging_middleware(**arguments)
