"""Handler faults over the wire: 500 bodies, response splitting, request_timeout, size."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from typing import Any

import pytest

from nessen import Response, Runtime
from nessen.server.h1.framing import ResponseError
from tests.conftest import ServeFactory
from tests.integration.wire import PHRASES, closed_cleanly, json_body
from tests.rawhttp import RawClient, get

REQUEST_ID = re.compile(r"^[0-9a-f]{12}-[0-9a-f]{8}$")


def _failing_runtime() -> Runtime:
    runtime = Runtime(access_log=False)

    @runtime.route.get("/boom")
    async def boom(ctx):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret detail")

    @runtime.route.get("/boom-later")
    async def boom_later(ctx):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        raise ValueError("after an await")

    @runtime.route.get("/ok")
    async def ok(ctx):  # type: ignore[no-untyped-def]
        return Response.text("ok")

    return runtime


def test_handler_exception_in_production_gets_a_generic_500(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(_failing_runtime(), env="production")
    with caplog.at_level(logging.ERROR, logger="nessen"), RawClient(server.address) as client:
        response = client.request(get("/boom"))
        follow_up = client.request(get("/ok"))
    assert response.status == 500
    body = json_body(response)
    assert set(body) == {"error", "request_id"}
    assert body["error"] == "Internal Server Error"
    assert REQUEST_ID.match(body["request_id"])
    assert b"secret detail" not in response.body
    assert b"Traceback" not in response.body
    assert b"RuntimeError" not in response.body
    assert response.header("connection") is None  # a handler fault is not a framing fault
    assert (follow_up.status, follow_up.body) == (200, b"ok")
    # Issue 2: the detail hidden from the client is always in the log, under the same id.
    record = _one_error_record(caplog)
    assert record.__dict__["request_id"] == body["request_id"]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    logged = caplog.text
    assert "Traceback (most recent call last):" in logged
    assert "RuntimeError: secret detail" in logged
    assert 'raise RuntimeError("secret detail")' in logged  # the handler's own frame


def _one_error_record(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    """The single ERROR record the server logged (it logs before it writes the 500)."""
    records = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(records) == 1, caplog.text
    return records[0]


@pytest.mark.parametrize(
    ("path", "detail"),
    [("/boom", "RuntimeError: secret detail"), ("/boom-later", "ValueError: after an await")],
)
def test_handler_exception_in_development_shows_the_detail(
    serve: ServeFactory, path: str, detail: str
) -> None:
    server = serve(_failing_runtime(), env="development")
    with RawClient(server.address) as client:
        response = client.request(get(path))
    assert response.status == 500
    body = json_body(response)
    assert set(body) == {"error", "request_id", "detail", "traceback"}
    assert body["error"] == "Internal Server Error"
    assert REQUEST_ID.match(body["request_id"])
    assert body["detail"] == detail
    assert body["traceback"][0] == "Traceback (most recent call last):\n"
    assert body["traceback"][-1] == detail + "\n"


def test_each_500_has_its_own_request_id(serve: ServeFactory) -> None:
    server = serve(_failing_runtime(), env="production")
    with RawClient(server.address) as client:
        first = json_body(client.request(get("/boom")))["request_id"]
        second = json_body(client.request(get("/boom-later")))["request_id"]
    assert first != second


# --- response splitting --------------------------------------------------------------------


def _injecting_runtime() -> Runtime:
    runtime = Runtime(access_log=False)

    @runtime.route.get("/crlf")
    async def crlf(ctx):  # type: ignore[no-untyped-def]
        return Response.text("x", headers={"X-Note": "a\r\nSet-Cookie: injected=1"})

    @runtime.route.get("/lf")
    async def lf(ctx):  # type: ignore[no-untyped-def]
        return Response.text("x", headers={"X-Note": "a\nSet-Cookie: injected=1"})

    @runtime.route.get("/nul")
    async def nul(ctx):  # type: ignore[no-untyped-def]
        return Response.text("x", headers={"X-Note": "a\x00b"})

    @runtime.route.get("/content-type")
    async def content_type(ctx):  # type: ignore[no-untyped-def]
        return Response(200, b"x", content_type="text/plain\r\nSet-Cookie: injected=1")

    @runtime.route.get("/name")
    async def name(ctx):  # type: ignore[no-untyped-def]
        return Response.text("x", headers={"Set-Cookie: injected=1\r\nX": "a"})

    @runtime.route.get("/stream")
    async def stream(ctx):  # type: ignore[no-untyped-def]
        return Response.streaming(iter([b"x"]), headers={"X-Note": "a\r\nSet-Cookie: injected=1"})

    return runtime


@pytest.mark.parametrize("path", ["/crlf", "/lf", "/nul", "/content-type", "/name", "/stream"])
def test_header_injection_gets_500_and_never_reaches_the_wire(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    server = serve(_injecting_runtime(), env="production")
    with caplog.at_level(logging.ERROR, logger="nessen"), RawClient(server.address) as client:
        client.send(get(path, extra="Connection: close\r\n"))
        assert closed_cleanly(client)
        wire = client.buffer
    assert wire.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"injected" not in wire
    assert b"x-note" not in wire.lower()
    assert b"\x00" not in wire
    assert wire.count(b"HTTP/1.1 ") == 1
    body = json.loads(wire.partition(b"\r\n\r\n")[2])
    assert body["error"] == "Internal Server Error"
    assert set(body) == {"error", "request_id"}
    # One log line says why, under the id the client got.
    record = _one_error_record(caplog)
    assert record.__dict__["request_id"] == body["request_id"]
    assert isinstance(record.exc_info[1] if record.exc_info else None, ResponseError)
    assert "\n" not in record.getMessage()


# --- request_timeout -----------------------------------------------------------------------


def test_handler_past_request_timeout_gets_503_and_is_cancelled(serve: ServeFactory) -> None:
    runtime = Runtime(access_log=False)
    entered, finished, cleaned_up = threading.Event(), threading.Event(), threading.Event()

    @runtime.route.get("/slow")
    async def slow(ctx):  # type: ignore[no-untyped-def]
        entered.set()
        try:
            await asyncio.sleep(10)
            finished.set()
            return Response.text("too late")
        finally:
            cleaned_up.set()

    server = serve(runtime, request_timeout=0.3)
    with RawClient(server.address) as client:
        response = client.request(get("/slow", extra="X-Request-ID: trace-slow-1\r\n"))
        assert response.status == 503
        assert response.header("retry-after") == "1"
        assert response.header("connection") == "close"
        # The id the handler ran under (the client's, reused by the request-id middleware).
        assert response.header("x-request-id") == "trace-slow-1"
        assert json_body(response) == {
            "error": PHRASES[503],
            "reason": "request_timeout",
            "request_id": "trace-slow-1",
        }
        assert closed_cleanly(client)
        assert client.buffer == b""
    assert entered.is_set()
    assert cleaned_up.wait(5.0)
    assert not finished.is_set()


def test_handler_that_ignores_cancellation_cannot_answer_after_the_deadline(
    serve: ServeFactory,
) -> None:
    runtime = Runtime(access_log=False)
    cleaned_up = threading.Event()

    @runtime.route.get("/stubborn")
    async def stubborn(ctx):  # type: ignore[no-untyped-def]
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return Response.text("LATE ANSWER", headers={"X-Late": "1"})
        finally:
            cleaned_up.set()
        return Response.text("unreachable")

    server = serve(runtime, request_timeout=0.3)
    with RawClient(server.address) as client:
        client.send(get("/stubborn"))
        assert closed_cleanly(client)
        wire = client.buffer
    assert cleaned_up.wait(5.0)
    assert wire.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert wire.count(b"HTTP/1.1 ") == 1
    assert b"LATE ANSWER" not in wire
    assert b"X-Late" not in wire


def test_request_timeout_for_a_head_request_sends_no_content(serve: ServeFactory) -> None:
    runtime = Runtime(access_log=False)

    @runtime.route.get("/slow")
    async def slow(ctx):  # type: ignore[no-untyped-def]
        await asyncio.sleep(10)
        return Response.text("late")

    server = serve(runtime, request_timeout=0.3)
    with RawClient(server.address) as client:
        client.send(b"HEAD /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        assert closed_cleanly(client)
    head, _, rest = client.buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nRetry-After: 1\r\n" in head + b"\r\n"
    assert rest == b""


def test_pipelined_request_behind_a_timed_out_one_is_not_served(serve: ServeFactory) -> None:
    runtime = Runtime(access_log=False)
    served: list[str] = []

    @runtime.route.get("/slow")
    async def slow(ctx):  # type: ignore[no-untyped-def]
        await asyncio.sleep(10)
        return Response.text("late")

    @runtime.route.get("/fast")
    async def fast(ctx):  # type: ignore[no-untyped-def]
        served.append("fast")
        return Response.text("fast")

    server = serve(runtime, request_timeout=0.3)
    with RawClient(server.address) as client:
        client.send(get("/slow") + get("/fast"))
        response = client.response()
        assert (response.status, response.header("connection")) == (503, "close")
        assert closed_cleanly(client)
        assert client.buffer == b""
    assert served == []


# --- max_response_bytes --------------------------------------------------------------------


def _sized_runtime() -> Runtime:
    runtime = Runtime(access_log=False)

    @runtime.route.get("/bytes/{size:int}")
    async def sized(ctx):  # type: ignore[no-untyped-def]
        return Response(200, b"r" * ctx.params["size"], content_type="text/plain")

    return runtime


def test_response_at_max_response_bytes_is_sent(serve: ServeFactory) -> None:
    server = serve(_sized_runtime(), max_response_bytes=100)
    with RawClient(server.address) as client:
        response = client.request(get("/bytes/100"))
    assert (response.status, response.body) == (200, b"r" * 100)


def test_response_over_max_response_bytes_gets_500(serve: ServeFactory) -> None:
    server = serve(_sized_runtime(), max_response_bytes=100, env="production")
    with RawClient(server.address) as client:
        response = client.request(get("/bytes/101"))
        follow_up = client.request(get("/bytes/3"))
    assert response.status == 500
    body = json_body(response)
    assert set(body) == {"error", "request_id"}
    assert body["error"] == "Internal Server Error"
    assert b"r" * 101 not in response.body
    assert (follow_up.status, follow_up.body) == (200, b"rrr")


def test_response_over_max_response_bytes_gets_500_in_development_too(
    serve: ServeFactory,
) -> None:
    # The development 500 carries a traceback far larger than max_response_bytes; the
    # server's own error response must still go out.
    server = serve(_sized_runtime(), max_response_bytes=100, env="development")
    with RawClient(server.address) as client:
        response = client.request(get("/bytes/101"))
        follow_up = client.request(get("/bytes/3"))
    assert response.status == 500
    assert json_body(response)["error"] == "Internal Server Error"
    assert (follow_up.status, follow_up.body) == (200, b"rrr")


# --- header values that cannot be sent ----------------------------------------------------


def _unsendable_runtime() -> Runtime:
    runtime = Runtime(access_log=False)
    bad = "caf\u00e9 \u2615"  # é is obs-text (latin-1) and may be sent; U+2615 cannot

    @runtime.route.get("/value")
    async def value(ctx):  # type: ignore[no-untyped-def]
        return Response.text("x", headers={"X-Name": bad})

    @runtime.route.get("/value-after-await")
    async def value_after_await(ctx):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        return Response.text("x", headers={"X-Name": bad})

    @runtime.route.get("/content-type")
    async def content_type(ctx):  # type: ignore[no-untyped-def]
        return Response(200, b"x", content_type=f"text/{bad}")

    @runtime.route.get("/stream")
    async def stream(ctx):  # type: ignore[no-untyped-def]
        return Response.streaming(iter([b"x"]), headers={"X-Name": bad})

    @runtime.route.get("/latin-1")
    async def latin_1(ctx):  # type: ignore[no-untyped-def]
        return Response.text("x", headers={"X-Name": "caf\u00e9"})

    return runtime


@pytest.mark.parametrize("path", ["/value", "/value-after-await", "/content-type"])
def test_header_value_outside_latin_1_gets_500(serve: ServeFactory, path: str) -> None:
    # RFC 9110 §5.5: field values are octets; text past U+00FF has no encoding on the wire.
    server = serve(_unsendable_runtime(), env="production")
    with RawClient(server.address) as client:
        response = client.request(get(path))
        follow_up = client.request(get("/latin-1"))
    assert response.status == 500
    assert response.header("x-name") is None
    assert response.header("connection") is None
    assert json_body(response)["error"] == "Internal Server Error"
    assert follow_up.status == 200
    assert follow_up.header("x-name") == "caf\u00e9"


def test_streamed_response_with_an_unsendable_header_gets_500(serve: ServeFactory) -> None:
    server = serve(_unsendable_runtime(), env="production")
    with RawClient(server.address) as client:
        response = client.request(get("/stream"))
        assert response.status == 500
        assert response.header("x-name") is None
        assert response.header("transfer-encoding") is None
        assert json_body(response)["error"] == "Internal Server Error"
        assert response.header("connection") == "close"
        assert closed_cleanly(client)
        assert client.buffer == b""


@pytest.mark.parametrize("path", ["/value", "/stream"])
def test_the_500_for_an_unsendable_response_keeps_its_id_cors_and_security_fields(
    serve: ServeFactory, path: str
) -> None:
    # The middleware's fields on the refused response still describe the request: a
    # browser reads the 500 (CORS), the id matches the log line, the policy stays.
    server = serve(_cors_unsendable_runtime(), env="production")
    with RawClient(server.address) as client:
        response = client.request(get(path, extra="Origin: https://app.example\r\n"))
    assert response.status == 500
    assert response.header("x-name") is None
    assert response.header("x-request-id") == json_body(response)["request_id"]
    assert response.header("access-control-allow-origin") == "https://app.example"
    assert response.header("x-content-type-options") == "nosniff"
    assert "Origin" in (response.header("vary") or "").split(", ")


def _cors_unsendable_runtime() -> Runtime:
    runtime = Runtime(middleware={"cors": {"allow_origins": ["https://app.example"]}})
    bad = "caf\u00e9 \u2615"

    @runtime.route.get("/value")
    async def value(ctx):  # type: ignore[no-untyped-def]
        return Response.text("x", headers={"X-Name": bad})

    @runtime.route.get("/stream")
    async def stream(ctx):  # type: ignore[no-untyped-def]
        return Response.streaming(iter([b"x"]), headers={"X-Name": bad})

    return runtime


@pytest.mark.parametrize("status", [100, 101, 199, 600, b"oops", "200", 200.0, True, None])
def test_handler_status_outside_200_599_gets_500(serve: ServeFactory, status: object) -> None:
    # A status that is not an int (Response(b"oops"): the body passed as the status) is
    # refused like one out of range, and the connection goes on.
    runtime = Runtime(access_log=False)

    @runtime.route.get("/status")
    async def handler(ctx):  # type: ignore[no-untyped-def]
        return Response(status, b"body")  # type: ignore[arg-type]

    @runtime.route.get("/ok")
    async def ok(ctx):  # type: ignore[no-untyped-def]
        return Response.text("ok")

    server = serve(runtime, env="production")
    with RawClient(server.address) as client:
        response = client.request(get("/status"))
        assert client.buffer == b""
        follow_up = client.request(get("/ok"))
    assert response.status == 500
    assert json_body(response)["error"] == "Internal Server Error"
    assert (follow_up.status, follow_up.body) == (200, b"ok")


def test_503_after_request_timeout_ends_in_fin_even_with_unread_input(
    serve: ServeFactory,
) -> None:
    # Closing with the client's bytes unread makes the kernel send a reset, which can
    # destroy the 503 before the client reads it; the server must linger as for 4xx.
    runtime = Runtime(access_log=False)
    entered = threading.Event()

    @runtime.route.get("/slow")
    async def slow(ctx):  # type: ignore[no-untyped-def]
        entered.set()
        await asyncio.sleep(10)
        return Response.text("late")

    server = serve(runtime, request_timeout=0.3)
    with RawClient(server.address) as client:
        client.send(get("/slow"))
        assert entered.wait(5.0)
        client.send(get("/slow") * 20_000)  # far more than the server reads while busy
        response = client.response()
        assert (response.status, response.header("connection")) == (503, "close")
        assert closed_cleanly(client)


def test_a_fault_of_the_servers_own_after_the_handler_aborts_the_connection(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Fault injection: reporting the response raises (a bug of ours, not of the handler).
    # The connection must not stay open with nothing left to answer or time it out.
    from nessen.server.exchange import Exchange

    report = Exchange.report

    def faulty_report(self: Exchange, request: Any, *args: Any, **kwargs: Any) -> None:
        if request.path == "/fault":
            raise RuntimeError("injected fault in report")
        report(self, request, *args, **kwargs)

    monkeypatch.setattr(Exchange, "report", faulty_report)
    runtime = Runtime(access_log=False)

    @runtime.route.get("/fault")
    async def fault(ctx):  # type: ignore[no-untyped-def]
        return Response.text("ok")

    @runtime.route.get("/ok")
    async def ok(ctx):  # type: ignore[no-untyped-def]
        return Response.text("ok")

    server = serve(runtime)
    with caplog.at_level(logging.ERROR, logger="nessen"):
        with RawClient(server.address) as client:
            client.send(get("/fault"))
            assert client.closed_by_peer(timeout=10.0)
        with RawClient(server.address) as client:
            assert client.request(get("/ok")).status == 200
    assert any("writing the response failed" in record.getMessage() for record in caplog.records)
