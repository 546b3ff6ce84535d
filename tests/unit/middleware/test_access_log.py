from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from nessen.config import Config
from nessen.http import Request, Response
from nessen.middleware.access_log import logging_middleware
from tests.unit.middleware.helpers import FakeClock, make_request, responding, run

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


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in FIELDS}


async def test_one_record_with_the_architecture_s_fields(access: Any) -> None:
    logger, captured = access
    clock = FakeClock(10.0)

    async def handler(ctx: Request) -> Response:
        ctx.route = "/users/{id}"
        clock.advance(0.0125)
        return Response.json({"id": 7})

    request = make_request(target="/users/7?x=1", client="198.51.100.4")
    request._id = "rid-1"
    await run(logging_middleware(logger=logger, clock=clock), request, handler)
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


async def test_a_cancelled_handler_is_left_to_the_server(access: Any) -> None:
    logger, captured = access

    async def handler(ctx: Request) -> Response:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await run(logging_middleware(logger=logger), make_request(), handler)
    assert captured.records == []


async def test_an_escaping_exception_is_logged_as_500_and_re_raised(access: Any) -> None:
    logger, captured = access

    async def handler(ctx: Request) -> Response:
        raise RuntimeError("inner middleware bug")

    with pytest.raises(RuntimeError):
        await run(logging_middleware(logger=logger), make_request(), handler)
    (record,) = captured.records
    assert (record.status, record.bytes, record.levelno) == (500, 0, logging.ERROR)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_no_content_counts_zero_bytes(access: Any, method: str, status: int) -> None:
    logger, captured = access
    await run(
        logging_middleware(logger=logger),
        make_request(method),
        responding(lambda: Response(status, b"12345")),
    )
    assert captured.records[0].bytes == 0  # type: ignore[attr-defined]


async def test_a_stream_is_logged_when_it_ends_with_the_bytes_sent(access: Any) -> None:
    logger, captured = access
    clock = FakeClock()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"abc"
        clock.advance(1.0)
        yield b"defgh"

    async def handler(ctx: Request) -> Response:
        return Response.streaming(chunks(), content_type="text/plain")

    response = await run(logging_middleware(logger=logger, clock=clock), make_request(), handler)
    assert captured.records == []  # not yet: nothing was sent
    sent = [piece async for piece in response.stream]  # type: ignore[union-attr]
    assert sent == [b"abc", b"defgh"]
    (record,) = captured.records
    assert (record.bytes, record.duration_ms) == (8, 1000.0)  # type: ignore[attr-defined]
    await response.stream.aclose()  # type: ignore[union-attr]  # the server always closes
    assert len(captured.records) == 1


async def test_a_stream_closed_early_is_logged_once_and_closes_its_source(access: Any) -> None:
    logger, captured = access
    closed: list[bool] = []

    def chunks() -> Iterator[bytes]:
        try:
            yield b"abc"
            yield b"never"
        finally:
            closed.append(True)

    async def handler(ctx: Request) -> Response:
        return Response.streaming(chunks(), content_type="text/plain")

    response = await run(logging_middleware(logger=logger), make_request(), handler)
    stream = response.stream
    assert await stream.__anext__() == b"abc"  # type: ignore[union-attr]
    await stream.aclose()  # type: ignore[union-attr]
    await stream.aclose()  # type: ignore[union-attr]
    assert closed == [True]
    assert [r.bytes for r in captured.records] == [3]  # type: ignore[attr-defined]


async def test_a_stream_never_iterated_is_logged_on_close(access: Any) -> None:
    logger, captured = access

    async def handler(ctx: Request) -> Response:
        return Response.streaming([b"x"], content_type="text/plain")

    response = await run(logging_middleware(logger=logger), make_request(), handler)
    await response.stream.aclose()  # type: ignore[union-attr]
    assert [r.bytes for r in captured.records] == [0]  # type: ignore[attr-defined]


async def test_a_failing_stream_is_logged_and_the_error_propagates(access: Any) -> None:
    logger, captured = access

    async def chunks() -> AsyncIterator[bytes]:
        yield b"ab"
        raise OSError("disk gone")

    async def handler(ctx: Request) -> Response:
        return Response.streaming(chunks(), content_type="text/plain")

    response = await run(logging_middleware(logger=logger), make_request(), handler)
    with pytest.raises(OSError, match="disk gone"):
        async for _ in response.stream:  # type: ignore[union-attr]
            pass
    assert [r.bytes for r in captured.records] == [2]  # type: ignore[attr-defined]


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
